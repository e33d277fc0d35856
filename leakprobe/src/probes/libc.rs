//! The host's libc: the one file probed even before discovery looks at any process (`--libc` names another).

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::{
    ProbeError,
    allocators::{self, AllocatorSymbols},
};

/// Entry points without which leakprobe cannot account for memory: a libc given with `--libc` must define them.
pub const REQUIRED: [&str; 4] = ["malloc", "calloc", "realloc", "free"];

/// The libc this process itself runs (its executable mapping): the host's libc.
pub fn host_libc() -> Result<PathBuf, ProbeError> {
    let maps_path = PathBuf::from("/proc/self/maps");
    let maps = fs::read_to_string(&maps_path).map_err(|source| ProbeError::Io { path: maps_path, source })?;
    // The libc this process runs is mapped executable; a read-only mapping of another libc file (blazesym maps
    // the binaries it parses, a container's libc among them) is not it.
    maps.lines()
        .filter(|line| line.split_whitespace().nth(1).is_some_and(|perms| perms.contains('x')))
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| Path::new(path).file_name().is_some_and(|n| n.to_string_lossy().starts_with("libc.so")))
        .map(PathBuf::from)
        .ok_or(ProbeError::LibcNotFound)
}

/// Resolves the malloc family in the C library at `path`; every function of [`REQUIRED`] must be there.
pub fn resolve(path: &Path) -> Result<AllocatorSymbols, ProbeError> {
    let data = fs::read(path).map_err(|source| ProbeError::Io { path: path.to_path_buf(), source })?;
    let symbols = allocators::examine(&data)
        .map_err(|reason| ProbeError::BadElf { path: path.to_path_buf(), reason })?
        .allocator()
        .ok_or(ProbeError::MissingSymbol { path: path.to_path_buf(), symbol: "malloc" })?;
    for symbol in REQUIRED {
        let probed = symbols.entry(symbol).is_some() || symbols.aliases.iter().any(|(alias, _)| alias == symbol);
        if !probed {
            return Err(ProbeError::MissingSymbol { path: path.to_path_buf(), symbol });
        }
    }
    Ok(symbols)
}

#[cfg(test)]
mod tests {
    use leakprobe_common::AllocFn;

    use super::*;

    #[test]
    fn resolves_the_host_libc() {
        let path = host_libc().expect("this test process maps a libc");
        let symbols = resolve(&path).expect("the host libc has the malloc family");
        let malloc = symbols.entry("malloc").expect("malloc");
        assert!(malloc.resolved.offset > 0);
        let free = symbols.entry("free").expect("free");
        assert_ne!(free.resolved.offset, malloc.resolved.offset);
        // glibc's free starts with `test %rdi,%rdi`, which the kernel single-steps: the site is past it.
        if free.resolved.site.emulated {
            let site = &free.resolved.site;
            assert!(site.offset > 0 || site.instruction.starts_with("push"));
        }
        // Every C allocating function is either probed, an alias of a probed one, or reported missing.
        let accounted = |f: AllocFn| {
            symbols.entry(f.symbol()).is_some()
                || symbols.aliases.iter().any(|(a, _)| a == f.symbol())
                || symbols.missing.contains(&f.symbol())
        };
        assert!(AllocFn::ALL.into_iter().all(accounted));
    }

    #[test]
    fn a_file_without_malloc_names_the_symbol() {
        // The test binary itself is an ELF file that defines no `malloc`.
        let exe = std::env::current_exe().expect("current exe");
        let err = resolve(&exe).expect_err("no malloc in the test binary");
        assert!(err.to_string().contains("malloc"), "{err}");
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let err = resolve(Path::new("/nonexistent/libc.so.6")).expect_err("no such file");
        assert!(err.to_string().contains("/nonexistent/libc.so.6"), "{err}");
    }
}
