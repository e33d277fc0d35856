//! Builds the C fixtures with gcc into `OUT_DIR` and exposes their paths:
//! `LEAKER_C` (the leaker program), `LEAKER_C_SRC` (its source), `NOMALLOC_SO` (a shared object without `malloc`),
//! the `ALLOC_LEAKER_*` variants (one per allocator; `ALLOC_LEAKER_STATIC_STRIPPED` the static one without its
//! symbol table), and the frameless fixtures.

use std::path::{Path, PathBuf};
use std::process::Command;

fn gcc(args: &[&str], what: &Path) {
    let status = Command::new("gcc")
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("cannot run gcc to build {}: {e}", what.display()));
    assert!(status.success(), "gcc failed to build {} ({status})", what.display());
}

/// Builds `fixtures/NAME.c` into `OUT_DIR/NAME` (frame pointers, a call per function) and exports its path
/// as `ENV`.
fn build_simple_fixture(manifest: &Path, out: &Path, name: &str, env: &str) {
    let src = manifest.join("fixtures").join(format!("{name}.c"));
    println!("cargo:rerun-if-changed={}", src.display());
    let bin = out.join(name);
    let (src_str, bin_str) = (src.to_str().expect("utf-8 path"), bin.to_str().expect("utf-8 path"));
    let flags = ["-O2", "-g", "-fno-omit-frame-pointer", "-fno-optimize-sibling-calls", "-fno-builtin"];
    let args: Vec<&str> = flags.into_iter().chain(["-Wall", "-Wextra", "-Werror", "-o", bin_str, src_str]).collect();
    gcc(&args, &bin);
    println!("cargo:rustc-env={env}={}", bin.display());
}

/// Builds `fixtures/alloc_leaker.c` once per allocator: `(file name, env, compiler, extra flags)`. The allocator
/// libraries and musl-gcc come from Debian packages that `cargo xtask setup` installs.
fn build_alloc_leakers(manifest: &Path, out: &Path) {
    let variants: [(&str, &str, &str, &[&str]); 6] = [
        ("alloc_leaker_libc", "ALLOC_LEAKER_LIBC", "gcc", &[]),
        ("alloc_leaker_jemalloc", "ALLOC_LEAKER_JEMALLOC", "gcc", &["-DUSE_JEMALLOC", "-ljemalloc"]),
        ("alloc_leaker_tcmalloc", "ALLOC_LEAKER_TCMALLOC", "gcc", &["-DUSE_TCMALLOC", "-ltcmalloc"]),
        ("alloc_leaker_mimalloc", "ALLOC_LEAKER_MIMALLOC", "gcc", &["-DUSE_MIMALLOC", "-lmimalloc"]),
        ("alloc_leaker_dlopen", "ALLOC_LEAKER_DLOPEN", "gcc", &["-DUSE_DLOPEN", "-ldl"]),
        ("alloc_leaker_static", "ALLOC_LEAKER_STATIC", "musl-gcc", &["-static"]),
    ];
    build_variants(manifest, out, "fixtures/alloc_leaker.c", &variants);
    // `fixtures/early_alloc.c`: allocations from main's first instruction (jemalloc kept though only `malloc`
    // is called: it is what provides it).
    let early: [(&str, &str, &str, &[&str]); 3] = [
        ("early_alloc_libc", "EARLY_ALLOC_LIBC", "gcc", &[]),
        ("early_alloc_jemalloc", "EARLY_ALLOC_JEMALLOC", "gcc", &["-Wl,--no-as-needed", "-ljemalloc"]),
        ("early_alloc_dlopen", "EARLY_ALLOC_DLOPEN", "gcc", &["-DUSE_DLOPEN", "-ldl"]),
    ];
    build_variants(manifest, out, "fixtures/early_alloc.c", &early);
    // The static executable stripped of its symbol table: its allocator is linked in, but cannot be found.
    let stat = out.join("alloc_leaker_static");
    let stripped = out.join("alloc_leaker_static_stripped");
    let status = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&stat)
        .status()
        .unwrap_or_else(|e| panic!("cannot run strip (binutils) to build {}: {e}", stripped.display()));
    assert!(status.success(), "strip failed on {} ({status})", stat.display());
    println!("cargo:rustc-env=ALLOC_LEAKER_STATIC_STRIPPED={}", stripped.display());
}

/// Builds `src` (relative to the crate) once per variant `(file name, env, compiler, extra flags)`, exporting each
/// binary's path in `env`.
fn build_variants(manifest: &Path, out: &Path, src: &str, variants: &[(&str, &str, &str, &[&str])]) {
    let src = manifest.join(src);
    println!("cargo:rerun-if-changed={}", src.display());
    let src = src.to_str().expect("utf-8 path");
    for &(name, env, cc, extra) in variants {
        let bin = out.join(name);
        let bin_str = bin.to_str().expect("utf-8 path");
        let flags = ["-O2", "-g", "-fno-omit-frame-pointer", "-fno-optimize-sibling-calls", "-fno-builtin"];
        let mut args: Vec<&str> =
            flags.into_iter().chain(["-Wall", "-Wextra", "-Werror", "-o", bin_str, src]).collect();
        // Libraries after the source, so the linker resolves the fixture's references against them.
        args.extend(extra);
        let status = Command::new(cc)
            .args(&args)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cc} to build {name} (run `cargo xtask setup`): {e}"));
        assert!(status.success(), "{cc} failed to build {name} ({status}); `cargo xtask setup` installs its libraries");
        println!("cargo:rustc-env={env}={}", bin.display());
    }
}

/// The fixtures without frame pointers: `frameless` (-O2, the compiler's default of no frame pointers) linked
/// with `libframeless.so` (-fomit-frame-pointer explicitly), and `frameless_cxx` (C++, -fomit-frame-pointer).
/// Also `framed` and `framed_cxx`: the same programs with frame pointers. Exports `FRAMELESS_C`, `FRAMED_C`,
/// `FRAMELESS_CXX` and `FRAMED_CXX`.
fn build_frameless(manifest: &Path, out: &Path) {
    let fixtures = manifest.join("fixtures");
    for name in ["frameless.c", "frameless_lib.c", "frameless_cxx.cc"] {
        println!("cargo:rerun-if-changed={}", fixtures.join(name).display());
    }
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
    let warnings = ["-Wall", "-Wextra", "-Werror"];
    let lib = out.join("libframeless.so");
    let lib_src = path(&fixtures.join("frameless_lib.c"));
    let mut args = vec!["-shared", "-fPIC", "-O2", "-g", "-fomit-frame-pointer"];
    let lib_out = path(&lib);
    args.extend(warnings);
    args.extend(["-o", &lib_out, &lib_src]);
    gcc(&args, &lib);

    // A second copy, for `frameless dlopen`: -Bsymbolic binds its calls to its own functions, not to
    // libframeless.so's of the same names that the program links.
    let dl = out.join("libframeless_dl.so");
    let dl_out = path(&dl);
    let mut args = vec!["-shared", "-fPIC", "-O2", "-g", "-fomit-frame-pointer", "-Wl,-Bsymbolic"];
    args.extend(warnings);
    args.extend(["-o", &dl_out, &lib_src]);
    gcc(&args, &dl);
    println!("cargo:rustc-env=FRAMELESS_DL_SO={}", dl.display());

    let bin = out.join("frameless");
    let (src, bin_out, out_dir) = (path(&fixtures.join("frameless.c")), path(&bin), path(out));
    let rpath = format!("-Wl,-rpath,{out_dir}");
    let mut args = vec!["-O2", "-g"];
    args.extend(warnings);
    args.extend(["-o", &bin_out, &src, "-L", &out_dir, "-lframeless", &rpath]);
    gcc(&args, &bin);

    // The same program with frame pointers, to compare the two unwinders on it.
    let framed = out.join("framed");
    let framed_out = path(&framed);
    let mut args = vec!["-O2", "-g", "-fno-omit-frame-pointer"];
    args.extend(warnings);
    args.extend(["-o", &framed_out, &src, "-L", &out_dir, "-lframeless", &rpath]);
    gcc(&args, &framed);
    println!("cargo:rustc-env=FRAMED_C={}", framed.display());

    // The C++ program without frame pointers, and with them (libstdc++'s `operator new` keeps none either way).
    let src = path(&fixtures.join("frameless_cxx.cc"));
    for (name, frame_pointers, var) in [
        ("frameless_cxx", "-fomit-frame-pointer", "FRAMELESS_CXX"),
        ("framed_cxx", "-fno-omit-frame-pointer", "FRAMED_CXX"),
    ] {
        let cxx = out.join(name);
        let cxx_out = path(&cxx);
        let status = Command::new("g++")
            .args(["-O2", "-g", frame_pointers])
            .args(warnings)
            .args(["-o", &cxx_out, &src])
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run g++ to build {} (cargo xtask setup installs it): {e}", cxx.display())
            });
        assert!(status.success(), "g++ failed to build {} ({status})", cxx.display());
        println!("cargo:rustc-env={var}={}", cxx.display());
    }
    println!("cargo:rustc-env=FRAMELESS_C={}", bin.display());
}

/// The Go fixture, with Debian's Go toolchain (`golang-go`, installed by `cargo xtask setup`): one file, no
/// module, its build cache in `OUT_DIR`.
fn build_go(manifest: &Path, out: &Path) {
    let src = manifest.join("fixtures/golang/main.go");
    println!("cargo:rerun-if-changed={}", src.display());
    let bin = out.join("golang_leak");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(&src)
        .env("GOCACHE", out.join("gocache"))
        .env("GO111MODULE", "off")
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run go to build {} (cargo xtask setup installs golang-go): {e}", src.display())
        });
    assert!(status.success(), "go build failed for {} ({status})", src.display());
    println!("cargo:rustc-env=GOLANG_LEAK={}", bin.display());
}

/// The Rust fixture (`src/bin/rust-leaker.rs`) built again without frame pointers, as `rustc` builds by
/// default (linked by its own lld, whose segments share pages), exported as `RUST_LEAKER_FRAMELESS`.
fn build_rust_frameless(manifest: &Path, out: &Path) {
    let src = manifest.join("src/bin/rust-leaker.rs");
    println!("cargo:rerun-if-changed={}", src.display());
    let bin = out.join("rustleak_nofp");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let status = Command::new(&rustc)
        .args(["--edition", "2024", "-C", "opt-level=2", "-g", "-C", "force-frame-pointers=no", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {rustc} to build {}: {e}", bin.display()));
    assert!(status.success(), "{rustc} failed to build {} ({status})", bin.display());
    println!("cargo:rustc-env=RUST_LEAKER_FRAMELESS={}", bin.display());
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR is set by cargo"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let leaker_src = manifest.join("fixtures/leaker.c");
    let nomalloc_src = manifest.join("fixtures/nomalloc.c");
    println!("cargo:rerun-if-changed={}", leaker_src.display());
    println!("cargo:rerun-if-changed={}", nomalloc_src.display());
    println!("cargo:rerun-if-changed=build.rs");
    build_rust_frameless(&manifest, &out);

    let leaker = out.join("leaker");
    let (src, bin) = (leaker_src.to_str().expect("utf-8 path"), leaker.to_str().expect("utf-8 path"));
    // Frame pointers for the kernel's unwinder; no builtins, sibling calls or unrolling so that every leak keeps
    // its own call site and caller.
    gcc(
        &[
            "-O2",
            "-g",
            "-fno-omit-frame-pointer",
            "-fno-optimize-sibling-calls",
            "-fno-builtin",
            "-fno-builtin-malloc",
            "-fno-unroll-loops",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pthread",
            "-o",
            bin,
            src,
        ],
        &leaker,
    );

    // Single-file fixtures with no special needs.
    for (name, env) in [("growth", "GROWTH_C"), ("sampling", "SAMPLING_C"), ("flood", "FLOOD_C"), ("tier0", "TIER0_C")]
    {
        build_simple_fixture(&manifest, &out, name, env);
    }

    let nomalloc = out.join("libnomalloc.so");
    let (src, lib) = (nomalloc_src.to_str().expect("utf-8 path"), nomalloc.to_str().expect("utf-8 path"));
    gcc(&["-shared", "-fPIC", "-nostdlib", "-O2", "-o", lib, src], &nomalloc);

    build_alloc_leakers(&manifest, &out);
    build_frameless(&manifest, &out);
    build_go(&manifest, &out);

    println!("cargo:rustc-env=LEAKER_C={}", leaker.display());
    println!("cargo:rustc-env=LEAKER_C_SRC={}", leaker_src.display());
    println!("cargo:rustc-env=NOMALLOC_SO={}", nomalloc.display());
}
