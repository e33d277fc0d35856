//! Finding the host's libc and the allocator entry points in it.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use aya::programs::uprobe::UProbeAttachLocation;
use iced_x86::Register;
use leakprobe_common::AllocFn;
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind};

use super::{
    ProbeError,
    site::{self, Site},
};

/// Entry points without which leakprobe cannot account for memory: it refuses to start when one is missing.
pub const REQUIRED: [&str; 4] = ["malloc", "calloc", "realloc", "free"];

/// A resolved function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub symbol: &'static str,
    /// File offset of the symbol.
    pub offset: u64,
    /// Where in the function the probe goes (see [`site`]).
    pub site: Site,
}

impl Resolved {
    /// File offset of the probe, as uprobes take it.
    pub fn probe_offset(&self) -> u64 {
        self.offset + self.site.offset
    }
}

/// The argument registers the entry program of `symbol` reads (x86-64 `SysV`: `rdi`, `rsi`, `rdx`).
fn args_read(symbol: &str) -> &'static [Register] {
    match symbol {
        "calloc" | "realloc" | "aligned_alloc" | "memalign" => &[Register::RDI, Register::RSI],
        "reallocarray" | "posix_memalign" => &[Register::RDI, Register::RSI, Register::RDX],
        _ => &[Register::RDI],
    }
}

/// The allocator entry points of one libc.
#[derive(Clone, Debug)]
pub struct LibcSymbols {
    pub path: PathBuf,
    /// Allocating functions, one per distinct address (aliases such as glibc's `aligned_alloc`, which is
    /// `memalign`, are probed once, under the first name).
    pub allocs: Vec<(AllocFn, Resolved)>,
    pub free: Resolved,
    /// Functions of the malloc family this libc does not export.
    pub missing: Vec<&'static str>,
    /// Functions probed under another name because they share its address: (alias, probed as).
    pub aliases: Vec<(&'static str, &'static str)>,
}

/// The libc this process itself maps: the host's libc.
pub fn host_libc() -> Result<PathBuf, ProbeError> {
    let maps_path = PathBuf::from("/proc/self/maps");
    let maps = fs::read_to_string(&maps_path).map_err(|source| ProbeError::Io { path: maps_path, source })?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| Path::new(path).file_name().is_some_and(|n| n.to_string_lossy().starts_with("libc.so")))
        .map(PathBuf::from)
        .ok_or(ProbeError::LibcNotFound)
}

/// Resolves the malloc family in the ELF file at `path`.
pub fn resolve(path: &Path) -> Result<LibcSymbols, ProbeError> {
    let data = fs::read(path).map_err(|source| ProbeError::Io { path: path.to_path_buf(), source })?;
    let file = object::File::parse(&*data)
        .map_err(|e| ProbeError::BadElf { path: path.to_path_buf(), reason: e.to_string() })?;
    let mut offsets: HashMap<&str, (u64, u64)> = HashMap::new();
    for symbol in file.dynamic_symbols().chain(file.symbols()) {
        if symbol.kind() != SymbolKind::Text || symbol.is_undefined() {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        let Some(index) = symbol.section_index() else { continue };
        let Ok(section) = file.section_by_index(index) else { continue };
        let Some((section_offset, _)) = section.file_range() else { continue };
        if let Ok(UProbeAttachLocation::AbsoluteOffset(offset)) =
            UProbeAttachLocation::from_virtual_address(symbol.address(), section.address(), section_offset)
        {
            offsets.entry(name).or_insert((offset, symbol.address()));
        }
    }
    let find = |symbol: &'static str| {
        offsets.get(symbol).map(|&(offset, address)| {
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
            let code = &data[start..(start + site::WINDOW).min(data.len())];
            Resolved { symbol, offset, site: site::choose(code, address, args_read(symbol)) }
        })
    };
    for symbol in REQUIRED {
        if find(symbol).is_none() {
            return Err(ProbeError::MissingSymbol { path: path.to_path_buf(), symbol });
        }
    }
    let mut allocs: Vec<(AllocFn, Resolved)> = Vec::new();
    let mut missing = Vec::new();
    let mut aliases = Vec::new();
    for func in AllocFn::ALL {
        let Some(resolved) = find(func.symbol()) else {
            missing.push(func.symbol());
            continue;
        };
        if let Some((_, first)) = allocs.iter().find(|(_, r)| r.offset == resolved.offset) {
            aliases.push((func.symbol(), first.symbol));
            continue;
        }
        allocs.push((func, resolved));
    }
    let free = find("free").ok_or(ProbeError::MissingSymbol { path: path.to_path_buf(), symbol: "free" })?;
    Ok(LibcSymbols { path: path.to_path_buf(), allocs, free, missing, aliases })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_the_host_libc() {
        let path = host_libc().expect("this test process maps a libc");
        let symbols = resolve(&path).expect("the host libc has the malloc family");
        let malloc = symbols.allocs.iter().find(|(f, _)| *f == AllocFn::Malloc).expect("malloc");
        assert!(malloc.1.offset > 0);
        assert_ne!(symbols.free.offset, malloc.1.offset);
        // glibc's free starts with `test %rdi,%rdi`, which the kernel single-steps: the site is past it.
        if symbols.free.site.emulated {
            assert!(symbols.free.site.offset > 0 || symbols.free.site.instruction.starts_with("push"));
        }
        // Every function of the family is either probed, an alias of a probed one, or reported missing.
        assert_eq!(symbols.allocs.len() + symbols.aliases.len() + symbols.missing.len(), AllocFn::ALL.len());
    }

    #[test]
    fn a_file_without_malloc_names_the_symbol() {
        // The test binary itself is an ELF file that exports no `malloc`.
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
