//! Which allocator an ELF file provides, and where its entry points are.
//!
//! A file provides an allocator when it defines (exports, or for a static executable has in its symbol table)
//! both an allocating entry point and a freeing one. Its family (glibc, musl, jemalloc, tcmalloc, mimalloc)
//! decides which names are looked for beyond the C standard ones. Every entry point is mapped onto one of the
//! existing eBPF entry programs whose argument layout it shares: `mallocx(size, flags)` reads its size where
//! `malloc` does, `rallocx(ptr, size, flags)` is a `realloc`, `sdallocx(ptr, size, flags)` is a `free`,
//! `mi_reallocn(ptr, count, size)` is a `reallocarray`, and so on. Entry points whose semantics no program
//! matches (in-place resizes, functions taking a heap or a pointer-to-pointer) are recognised and listed as
//! not tracked.
//!
//! Some allocators are recognised but cannot be probed ([`Examined::Unsupported`]): a statically linked
//! executable stripped of its symbol table (its allocator is linked in, but no entry point can be found), and a
//! file of a known family that lacks an allocating or a freeing entry point (a static executable keeps only the
//! functions it calls).

use std::collections::HashMap;

use aya::programs::uprobe::UProbeAttachLocation;
use iced_x86::Register;
use leakprobe_common::{AllocFn, FREE_PROGRAM};
use object::{
    Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind,
    read::elf::{Dyn as _, ElfFile, FileHeader, ProgramHeader as _},
};

use super::site::{self, Site};

/// The allocator a file provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Glibc,
    Musl,
    Jemalloc,
    Tcmalloc,
    Mimalloc,
    /// Defines `malloc` and `free` but is none of the above: its C entry points are probed.
    Other,
}

impl Family {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Glibc => "glibc",
            Self::Musl => "musl",
            Self::Jemalloc => "jemalloc",
            Self::Tcmalloc => "tcmalloc",
            Self::Mimalloc => "mimalloc",
            Self::Other => "other",
        }
    }
}

/// What an entry point does, as far as the probes care.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Allocates, with the argument layout of this C function.
    Alloc(AllocFn),
    /// Frees its first argument.
    Free,
}

impl EntryKind {
    /// The eBPF program attached at the entry.
    pub const fn entry_program(self) -> &'static str {
        match self {
            Self::Alloc(func) => func.entry_program(),
            Self::Free => FREE_PROGRAM,
        }
    }

    /// The argument registers the entry program reads (x86-64 `SysV`: `rdi`, `rsi`, `rdx`): the probe site
    /// must come before any instruction that writes them.
    fn args_read(self) -> &'static [Register] {
        match self {
            Self::Alloc(AllocFn::Calloc | AllocFn::Realloc | AllocFn::AlignedAlloc | AllocFn::Memalign) => {
                &[Register::RDI, Register::RSI]
            }
            Self::Alloc(AllocFn::Reallocarray | AllocFn::PosixMemalign) => {
                &[Register::RDI, Register::RSI, Register::RDX]
            }
            Self::Alloc(_) | Self::Free => &[Register::RDI],
        }
    }
}

use EntryKind::{Alloc, Free};

/// The C standard and common libc entry points, probed in every family.
const C_ENTRIES: &[(&str, EntryKind)] = &[
    ("malloc", Alloc(AllocFn::Malloc)),
    ("calloc", Alloc(AllocFn::Calloc)),
    ("realloc", Alloc(AllocFn::Realloc)),
    ("reallocarray", Alloc(AllocFn::Reallocarray)),
    ("posix_memalign", Alloc(AllocFn::PosixMemalign)),
    ("aligned_alloc", Alloc(AllocFn::AlignedAlloc)),
    ("memalign", Alloc(AllocFn::Memalign)),
    ("valloc", Alloc(AllocFn::Valloc)),
    ("pvalloc", Alloc(AllocFn::Pvalloc)),
    ("free", Free),
    ("cfree", Free),
];

/// jemalloc's non-standard API, also under the prefix the build chose (`je_`, `_rjem_`): the prefix is
/// whatever comes before `mallocx`.
const JEMALLOC_ENTRIES: &[(&str, EntryKind)] =
    &[("mallocx", Alloc(AllocFn::Malloc)), ("rallocx", Alloc(AllocFn::Realloc)), ("sdallocx", Free), ("dallocx", Free)];

/// C++ `operator new`/`delete` (Itanium mangling), probed where an allocator library defines them (in
/// libstdc++ they call `malloc`/`free`, which are probed already). Every `new` takes the size first, every
/// `delete` the pointer first.
const CXX_ENTRIES: &[(&str, EntryKind)] = &[
    ("_Znwm", Alloc(AllocFn::Malloc)),
    ("_Znam", Alloc(AllocFn::Malloc)),
    ("_ZnwmRKSt9nothrow_t", Alloc(AllocFn::Malloc)),
    ("_ZnamRKSt9nothrow_t", Alloc(AllocFn::Malloc)),
    ("_ZnwmSt11align_val_t", Alloc(AllocFn::Malloc)),
    ("_ZnamSt11align_val_t", Alloc(AllocFn::Malloc)),
    ("_ZnwmSt11align_val_tRKSt9nothrow_t", Alloc(AllocFn::Malloc)),
    ("_ZnamSt11align_val_tRKSt9nothrow_t", Alloc(AllocFn::Malloc)),
    ("_ZdlPv", Free),
    ("_ZdaPv", Free),
    ("_ZdlPvm", Free),
    ("_ZdaPvm", Free),
    ("_ZdlPvRKSt9nothrow_t", Free),
    ("_ZdaPvRKSt9nothrow_t", Free),
    ("_ZdlPvSt11align_val_t", Free),
    ("_ZdaPvSt11align_val_t", Free),
    ("_ZdlPvmSt11align_val_t", Free),
    ("_ZdaPvmSt11align_val_t", Free),
    ("_ZdlPvSt11align_val_tRKSt9nothrow_t", Free),
    ("_ZdaPvSt11align_val_tRKSt9nothrow_t", Free),
];

/// gperftools' tcmalloc.
const TCMALLOC_ENTRIES: &[(&str, EntryKind)] = &[
    ("tc_malloc", Alloc(AllocFn::Malloc)),
    ("tc_malloc_skip_new_handler", Alloc(AllocFn::Malloc)),
    ("tc_new", Alloc(AllocFn::Malloc)),
    ("tc_newarray", Alloc(AllocFn::Malloc)),
    ("tc_new_nothrow", Alloc(AllocFn::Malloc)),
    ("tc_newarray_nothrow", Alloc(AllocFn::Malloc)),
    ("tc_new_aligned", Alloc(AllocFn::Malloc)),
    ("tc_newarray_aligned", Alloc(AllocFn::Malloc)),
    ("tc_new_aligned_nothrow", Alloc(AllocFn::Malloc)),
    ("tc_newarray_aligned_nothrow", Alloc(AllocFn::Malloc)),
    ("tc_calloc", Alloc(AllocFn::Calloc)),
    ("tc_realloc", Alloc(AllocFn::Realloc)),
    ("tc_posix_memalign", Alloc(AllocFn::PosixMemalign)),
    ("tc_memalign", Alloc(AllocFn::Memalign)),
    ("tc_valloc", Alloc(AllocFn::Valloc)),
    ("tc_pvalloc", Alloc(AllocFn::Pvalloc)),
    ("tc_free", Free),
    ("tc_free_sized", Free),
    ("tc_cfree", Free),
    ("tc_delete", Free),
    ("tc_delete_sized", Free),
    ("tc_delete_nothrow", Free),
    ("tc_delete_aligned", Free),
    ("tc_delete_sized_aligned", Free),
    ("tc_delete_aligned_nothrow", Free),
    ("tc_deletearray", Free),
    ("tc_deletearray_sized", Free),
    ("tc_deletearray_nothrow", Free),
    ("tc_deletearray_aligned", Free),
    ("tc_deletearray_sized_aligned", Free),
    ("tc_deletearray_aligned_nothrow", Free),
];

/// mimalloc's API (its `_aligned`/`_at` variants keep the size or the pointer where the base function has it).
const MIMALLOC_ENTRIES: &[(&str, EntryKind)] = &[
    ("mi_malloc", Alloc(AllocFn::Malloc)),
    ("mi_malloc_small", Alloc(AllocFn::Malloc)),
    ("mi_zalloc", Alloc(AllocFn::Malloc)),
    ("mi_zalloc_small", Alloc(AllocFn::Malloc)),
    ("mi_malloc_aligned", Alloc(AllocFn::Malloc)),
    ("mi_malloc_aligned_at", Alloc(AllocFn::Malloc)),
    ("mi_zalloc_aligned", Alloc(AllocFn::Malloc)),
    ("mi_zalloc_aligned_at", Alloc(AllocFn::Malloc)),
    ("mi_new", Alloc(AllocFn::Malloc)),
    ("mi_new_nothrow", Alloc(AllocFn::Malloc)),
    ("mi_new_aligned", Alloc(AllocFn::Malloc)),
    ("mi_new_aligned_nothrow", Alloc(AllocFn::Malloc)),
    ("mi_calloc", Alloc(AllocFn::Calloc)),
    ("mi_mallocn", Alloc(AllocFn::Calloc)),
    ("mi_new_n", Alloc(AllocFn::Calloc)),
    ("mi_calloc_aligned", Alloc(AllocFn::Calloc)),
    ("mi_calloc_aligned_at", Alloc(AllocFn::Calloc)),
    ("mi_realloc", Alloc(AllocFn::Realloc)),
    ("mi_rezalloc", Alloc(AllocFn::Realloc)),
    ("mi_new_realloc", Alloc(AllocFn::Realloc)),
    ("mi_realloc_aligned", Alloc(AllocFn::Realloc)),
    ("mi_realloc_aligned_at", Alloc(AllocFn::Realloc)),
    ("mi_rezalloc_aligned", Alloc(AllocFn::Realloc)),
    ("mi_rezalloc_aligned_at", Alloc(AllocFn::Realloc)),
    ("mi_reallocn", Alloc(AllocFn::Reallocarray)),
    ("mi_reallocarray", Alloc(AllocFn::Reallocarray)),
    ("mi_recalloc", Alloc(AllocFn::Reallocarray)),
    ("mi_new_reallocn", Alloc(AllocFn::Reallocarray)),
    ("mi_recalloc_aligned", Alloc(AllocFn::Reallocarray)),
    ("mi_recalloc_aligned_at", Alloc(AllocFn::Reallocarray)),
    ("mi_posix_memalign", Alloc(AllocFn::PosixMemalign)),
    ("mi_memalign", Alloc(AllocFn::Memalign)),
    ("mi_aligned_alloc", Alloc(AllocFn::Memalign)),
    ("mi_valloc", Alloc(AllocFn::Valloc)),
    ("mi_pvalloc", Alloc(AllocFn::Pvalloc)),
    ("mi_free", Free),
    ("mi_cfree", Free),
    ("mi_free_size", Free),
    ("mi_free_aligned", Free),
    ("mi_free_size_aligned", Free),
];

/// Entry points recognised but not tracked, per family, and why (reported in `status`).
const NOT_TRACKED: &[(Family, &str, &str)] = &[
    (Family::Jemalloc, "xallocx", "resizes in place: the block's new size is not seen"),
    (Family::Mimalloc, "mi_expand", "resizes in place: the block's new size is not seen"),
    (Family::Mimalloc, "mi_reallocf", "frees its argument when it fails: not modelled"),
    (Family::Mimalloc, "reallocf", "frees its argument when it fails: not modelled"),
    (Family::Mimalloc, "mi_reallocarr", "returns the block through a pointer argument: not modelled"),
    (Family::Mimalloc, "reallocarr", "returns the block through a pointer argument: not modelled"),
    (Family::Mimalloc, "mi_heap_malloc", "mi_heap_* take a heap first: allocations from explicit heaps are not seen"),
    (Family::Mimalloc, "mi_strdup", "allocates inside mimalloc without a probed entry point"),
];

/// A resolved function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub symbol: String,
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

/// One probed entry point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    pub resolved: Resolved,
}

/// The allocator entry points of one file.
#[derive(Clone, Debug)]
pub struct AllocatorSymbols {
    pub family: Family,
    /// One per distinct address (aliases such as glibc's `aligned_alloc`, which is `memalign`, or tcmalloc's
    /// `malloc`, which is `tc_malloc`, are probed once, under the first name).
    pub entries: Vec<Entry>,
    /// Functions of the C malloc family this file does not define.
    pub missing: Vec<&'static str>,
    /// Functions probed under another name because they share its address: (alias, probed as).
    pub aliases: Vec<(String, String)>,
    /// Allocator entry points this file defines that are not tracked, with the reason.
    pub not_tracked: Vec<(String, &'static str)>,
    /// The entry points came from the static symbol table (an executable with its allocator linked in).
    pub from_symtab: bool,
}

impl AllocatorSymbols {
    /// The entry probed under `symbol`.
    pub fn entry(&self, symbol: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.resolved.symbol == symbol)
    }
}

/// A defined function: (file offset, virtual address, found only in the static symbol table).
type Defined = (u64, u64, bool);

/// The defined, global functions of an ELF file, from its dynamic and static symbol tables.
fn defined_functions<'data>(file: &object::File<'data>) -> HashMap<&'data str, Defined> {
    let mut offsets: HashMap<&str, Defined> = HashMap::new();
    let dynamic = file.dynamic_symbols().map(|s| (s, false));
    let static_ = file.symbols().map(|s| (s, true));
    for (symbol, in_symtab) in dynamic.chain(static_) {
        if symbol.kind() != SymbolKind::Text || symbol.is_undefined() || symbol.is_local() {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        let Some(index) = symbol.section_index() else { continue };
        let Ok(section) = file.section_by_index(index) else { continue };
        let Some((section_offset, _)) = section.file_range() else { continue };
        if let Ok(UProbeAttachLocation::AbsoluteOffset(offset)) =
            UProbeAttachLocation::from_virtual_address(symbol.address(), section.address(), section_offset)
        {
            offsets.entry(name).or_insert((offset, symbol.address(), in_symtab));
        }
    }
    offsets
}

/// The family of a file defining `defined`, or `None` when it provides no allocator. A family is recognised by
/// its own names (which only its implementation defines), whether or not its C entry points are there too;
/// a file of no known family must define both `malloc` and `free`.
fn family(defined: &HashMap<&str, Defined>) -> Option<(Family, Option<String>)> {
    let has = |name: &str| defined.contains_key(name);
    if has("mi_malloc") || has("mi_free") {
        return Some((Family::Mimalloc, None));
    }
    if has("tc_malloc") || has("tc_free") {
        return Some((Family::Tcmalloc, None));
    }
    // jemalloc under any prefix: the shortest name ending in `mallocx` whose `dallocx` or `sdallocx` exists too
    // (a static link may keep only one of them).
    let jemalloc_prefix = defined
        .keys()
        .filter_map(|name| name.strip_suffix("mallocx"))
        .filter(|prefix| has(&format!("{prefix}dallocx")) || has(&format!("{prefix}sdallocx")))
        .min_by_key(|prefix| prefix.len());
    if let Some(prefix) = jemalloc_prefix {
        return Some((Family::Jemalloc, Some(prefix.to_owned())));
    }
    if has("__libc_malloc_impl") || has("__malloc_donate") || (has("__libc_malloc") && has("__libc_start_init")) {
        return Some((Family::Musl, None));
    }
    if has("__libc_malloc") {
        return Some((Family::Glibc, None));
    }
    if !(has("malloc") && has("free")) {
        return None;
    }
    if has("gnu_get_libc_version") {
        return Some((Family::Glibc, None));
    }
    Some((Family::Other, None))
}

/// What a file is, as far as allocators go.
#[derive(Clone, Debug)]
pub enum Examined {
    /// No allocator in it.
    Nothing,
    /// An allocator whose entry points were found.
    Allocator(AllocatorSymbols),
    /// An allocator recognised that cannot be probed.
    Unsupported(Unsupported),
}

/// An allocator recognised in a file that cannot be probed, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    /// Its family, when it can be told.
    pub family: Option<Family>,
    /// Why it cannot be probed, e.g. `static executable without a symbol table: malloc not found`.
    pub reason: String,
}

impl Examined {
    /// The allocator's entry points, when it has them.
    pub fn allocator(self) -> Option<AllocatorSymbols> {
        match self {
            Self::Allocator(symbols) => Some(symbols),
            Self::Nothing | Self::Unsupported(_) => None,
        }
    }
}

impl Unsupported {
    /// The family's name, `unknown` when it cannot be told.
    pub fn family_name(&self) -> &'static str {
        self.family.map_or("unknown", Family::name)
    }
}

/// Sections only Go binaries have: the Go runtime allocates with its own allocator, not `malloc` (tier 0 sees
/// its memory), so a stripped static Go executable is no unprobed allocator.
const GO_SECTIONS: [&str; 3] = [".go.buildinfo", ".gopclntab", ".note.go.buildid"];

/// Whether `file` is a statically linked executable stripped of its symbol table: an executable (or static
/// PIE) without a program interpreter or needed libraries, with no static symbol table and no function in its
/// dynamic one. Its C library, and so its allocator, is linked in, but nothing says where `malloc` is.
fn stripped_static_executable(file: &object::File<'_>, defined: &HashMap<&str, Defined>) -> bool {
    if file.symbol_table().is_some() || !defined.is_empty() {
        return false;
    }
    if GO_SECTIONS.iter().any(|name| file.section_by_name(name).is_some()) {
        return false;
    }
    match file {
        object::File::Elf64(elf) => static_executable(elf),
        object::File::Elf32(elf) => static_executable(elf),
        // Not ELF: nothing to say.
        _ => false,
    }
}

/// Whether an ELF file is a statically linked executable: `ET_EXEC`, or `ET_DYN` marked as a position-independent
/// executable (`DF_1_PIE`; a shared library is not), with neither a program interpreter nor a needed library.
fn static_executable<Elf: FileHeader>(elf: &ElfFile<'_, Elf>) -> bool {
    use object::elf::{DF_1_PIE, DT_FLAGS_1, DT_NEEDED, ET_DYN, ET_EXEC, PT_INTERP};
    let endian = elf.endian();
    let mut pie = false;
    for header in elf.elf_program_headers() {
        if header.p_type(endian) == PT_INTERP {
            return false;
        }
        let Ok(Some(dynamic)) = header.dynamic(endian, elf.data()) else { continue };
        for entry in dynamic {
            match entry.tag(endian) {
                DT_NEEDED => return false,
                DT_FLAGS_1 => pie |= entry.val(endian) & u64::from(DF_1_PIE) != 0,
                _ => {}
            }
        }
    }
    match elf.elf_header().e_type(endian) {
        ET_EXEC => true,
        ET_DYN => pie,
        _ => false,
    }
}

/// The allocator `data` (an ELF file) provides, if any, and whether it can be probed. An unparsable file is an
/// error with the parser's reason.
pub fn examine(data: &[u8]) -> Result<Examined, String> {
    let file = object::File::parse(data).map_err(|e| e.to_string())?;
    let defined = defined_functions(&file);
    let Some((family, prefix)) = family(&defined) else {
        if stripped_static_executable(&file, &defined) {
            return Ok(Examined::Unsupported(Unsupported {
                family: None,
                reason: "static executable without a symbol table: malloc not found".to_owned(),
            }));
        }
        return Ok(Examined::Nothing);
    };
    let mut wanted: Vec<(String, EntryKind)> = C_ENTRIES.iter().map(|&(n, k)| (n.to_owned(), k)).collect();
    match family {
        Family::Jemalloc => {
            let prefix = prefix.unwrap_or_default();
            if !prefix.is_empty() {
                wanted.extend(C_ENTRIES.iter().map(|&(n, k)| (format!("{prefix}{n}"), k)));
            }
            wanted.extend(JEMALLOC_ENTRIES.iter().map(|&(n, k)| (format!("{prefix}{n}"), k)));
        }
        Family::Tcmalloc => wanted.extend(TCMALLOC_ENTRIES.iter().map(|&(n, k)| (n.to_owned(), k))),
        Family::Mimalloc => wanted.extend(MIMALLOC_ENTRIES.iter().map(|&(n, k)| (n.to_owned(), k))),
        Family::Glibc | Family::Musl | Family::Other => {}
    }
    if matches!(family, Family::Jemalloc | Family::Tcmalloc | Family::Mimalloc) {
        wanted.extend(CXX_ENTRIES.iter().map(|&(n, k)| (n.to_owned(), k)));
    }
    let mut symbols = AllocatorSymbols {
        family,
        entries: Vec::new(),
        missing: Vec::new(),
        aliases: Vec::new(),
        not_tracked: Vec::new(),
        from_symtab: false,
    };
    for (name, kind) in wanted {
        let Some(&(offset, address, in_symtab)) = defined.get(name.as_str()) else {
            if let Some(&(c_name, _)) = C_ENTRIES.iter().find(|(n, _)| *n == name && *n != "cfree") {
                symbols.missing.push(c_name);
            }
            continue;
        };
        if let Some(first) = symbols.entries.iter().find(|e| e.resolved.offset == offset) {
            symbols.aliases.push((name, first.resolved.symbol.clone()));
            continue;
        }
        symbols.from_symtab |= in_symtab;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
        let code = &data[start..(start + site::WINDOW).min(data.len())];
        let site = site::choose(code, address, kind.args_read());
        symbols.entries.push(Entry { kind, resolved: Resolved { symbol: name, offset, site } });
    }
    for &(f, name, why) in NOT_TRACKED {
        if f == family && defined.contains_key(name) {
            symbols.not_tracked.push((name.to_owned(), why));
        }
    }
    let allocates = symbols.entries.iter().any(|e| matches!(e.kind, Alloc(_)));
    let frees = symbols.entries.iter().any(|e| e.kind == Free);
    let lacking = match (allocates, frees) {
        (true, true) => return Ok(Examined::Allocator(symbols)),
        (false, true) => "no allocating entry point (malloc) found",
        (true, false) => "free not found",
        (false, false) => "neither malloc nor free found",
    };
    // Linked into an executable (its names only in the static symbol table): the link kept only the functions
    // the program calls.
    let linked_in = symbols.from_symtab || (symbols.entries.is_empty() && defined.values().all(|&(_, _, s)| s));
    let hint = if linked_in { " (a static link keeps only the functions the program calls)" } else { "" };
    Ok(Examined::Unsupported(Unsupported {
        family: Some(family),
        reason: format!("{} allocator recognised, but {lacking}{hint}", family.name()),
    }))
}

#[cfg(test)]
mod tests;
