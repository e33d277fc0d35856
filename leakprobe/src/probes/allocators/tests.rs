//! Which allocator real files provide: the host's libc, the allocators built for the fixtures, static links.

use std::{fs, path::Path};

use super::*;

fn examine_file(path: &str) -> Option<AllocatorSymbols> {
    if !Path::new(path).exists() {
        // Installed by `cargo xtask setup`; the integration tests check them for real.
        eprintln!("{path} is missing: run `cargo xtask setup`");
        return None;
    }
    let data = fs::read(path).expect("readable");
    examine(&data).expect("an ELF file").allocator()
}

#[test]
fn the_host_libc_is_glibc() {
    let path = super::super::libc::host_libc().expect("a libc");
    let data = fs::read(&path).expect("readable");
    let symbols = examine(&data).expect("ELF").allocator().expect("an allocator");
    assert_eq!(symbols.family, Family::Glibc);
    assert!(symbols.entry("malloc").is_some() && symbols.entry("free").is_some());
    // glibc's aligned_alloc is memalign: one probe.
    assert!(symbols.aliases.iter().any(|(a, _)| a == "aligned_alloc" || a == "memalign"), "{:?}", symbols.aliases);
}

#[test]
fn jemalloc_has_its_extended_api() {
    let Some(symbols) = examine_file("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2") else { return };
    assert_eq!(symbols.family, Family::Jemalloc);
    for name in ["malloc", "mallocx", "rallocx", "sdallocx", "dallocx", "_Znwm", "_ZdlPvm"] {
        assert!(symbols.entry(name).is_some(), "{name}: {:?}", symbols.entries);
    }
    assert_eq!(symbols.entry("sdallocx").map(|e| e.kind), Some(Free));
    assert_eq!(symbols.entry("rallocx").map(|e| e.kind), Some(Alloc(AllocFn::Realloc)));
    assert!(symbols.not_tracked.iter().any(|(n, _)| n == "xallocx"));
}

#[test]
fn tcmalloc_probes_each_address_once() {
    let Some(symbols) = examine_file("/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4") else { return };
    assert_eq!(symbols.family, Family::Tcmalloc);
    let mut offsets: Vec<u64> = symbols.entries.iter().map(|e| e.resolved.offset).collect();
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(offsets.len(), symbols.entries.len(), "one probe per address");
    // malloc is tc_malloc in gperftools: either is probed, the other is an alias.
    let malloc_like = ["malloc", "tc_malloc"];
    assert!(malloc_like.iter().any(|n| symbols.entry(n).is_some()));
    assert!(symbols.entries.iter().any(|e| e.resolved.symbol.contains("delete") || e.resolved.symbol == "_ZdlPvm"));
}

#[test]
fn mimalloc_maps_its_api() {
    let Some(symbols) = examine_file("/usr/lib/x86_64-linux-gnu/libmimalloc.so.2") else { return };
    assert_eq!(symbols.family, Family::Mimalloc);
    let kind = |n: &str| {
        symbols.entry(n).map(|e| e.kind).or_else(|| {
            let (_, probed) = symbols.aliases.iter().find(|(a, _)| a == n)?;
            symbols.entry(probed).map(|e| e.kind)
        })
    };
    assert_eq!(kind("mi_malloc"), Some(Alloc(AllocFn::Malloc)));
    assert_eq!(kind("mi_reallocn"), Some(Alloc(AllocFn::Reallocarray)));
    assert_eq!(kind("mi_free"), Some(Free));
    assert!(symbols.not_tracked.iter().any(|(n, _)| n == "mi_expand"));
}

#[test]
fn a_stripped_static_executable_is_recognised_but_not_supported() {
    // Debian's ldconfig: glibc linked into a static PIE, stripped (libc-bin, an essential package).
    let data = fs::read("/sbin/ldconfig").expect("ldconfig");
    let Examined::Unsupported(what) = examine(&data).expect("ELF") else { panic!("not unsupported") };
    assert_eq!(what.family_name(), "unknown");
    assert_eq!(what.reason, "static executable without a symbol table: malloc not found");
}

#[test]
fn a_static_link_without_free_is_recognised_but_not_supported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (src, bin) = (dir.path().join("m.c"), dir.path().join("m"));
    fs::write(&src, "#include <stdlib.h>\nint main(void) { return malloc(10) == 0; }\n").expect("source");
    // musl-gcc comes with `cargo xtask setup` (the static fixtures need it).
    let built = std::process::Command::new("musl-gcc")
        .args(["-static", "-O2", "-fno-builtin", "-o"])
        .arg(&bin)
        .arg(&src)
        .status();
    if !built.is_ok_and(|status| status.success()) {
        eprintln!("musl-gcc is missing: run `cargo xtask setup`");
        return;
    }
    let data = fs::read(&bin).expect("the program");
    let Examined::Unsupported(what) = examine(&data).expect("ELF") else { panic!("not unsupported") };
    assert_eq!(what.family, Some(Family::Musl));
    assert_eq!(
        what.reason,
        "musl allocator recognised, but free not found (a static link keeps only the functions the program calls)"
    );
}

#[test]
fn a_file_without_an_allocator_is_none() {
    let exe = std::env::current_exe().expect("current exe");
    let data = fs::read(exe).expect("readable");
    assert!(matches!(examine(&data).expect("ELF"), Examined::Nothing));
    assert!(examine(b"not an ELF file").is_err());
}
