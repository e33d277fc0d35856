//! Unwinding user stacks in the kernel from the binaries' unwind tables (`.eh_frame`, `.debug_frame`).
//!
//! The daemon compiles each binary's tables into sorted [`UnwindRow`]s (x86-64) and loads them into one arena,
//! [`crate::maps::UNWIND_ROWS`]; a binary's extent of it is in [`crate::maps::UNWIND_BINARIES`], and each
//! process's executable mappings (pc -> binary, row pc) in [`crate::maps::UNWIND_PROCS`]. The eBPF walk looks
//! each frame's pc up there and falls back to frame pointers, counted by reason, for a frame it cannot look up.

/// [`UnwindRow::cfa_kind`]: no usable rule (an unsupported expression, a gap between functions, a CFA offset
/// out of range): this frame is walked by frame pointers.
pub const CFA_NONE: u8 = 0;
/// [`UnwindRow::cfa_kind`]: CFA = rsp + `cfa_offset`.
pub const CFA_RSP: u8 = 1;
/// [`UnwindRow::cfa_kind`]: CFA = rbp + `cfa_offset`.
pub const CFA_RBP: u8 = 2;
/// [`UnwindRow::cfa_kind`]: a PLT stub's expression, CFA = rsp + 8 + (((pc & 15) >= `cfa_offset`) ? 8 : 0).
pub const CFA_PLT: u8 = 3;
/// [`UnwindRow::cfa_kind`]: the return address is undefined (`_start`, a thread's start): the outermost frame.
pub const CFA_END: u8 = 4;
/// [`UnwindRow::cfa_kind`]: the C library's start routine (glibc's `__libc_start_main`), below the function that
/// calls `main`: the walk ends before this frame. A frame-pointer walk ends there too (the routine keeps no
/// frame pointer), so both walks give a program's stacks the same outermost frame.
pub const CFA_STOP: u8 = 5;

/// [`UnwindRow::rbp_kind`]: the caller's rbp is this frame's rbp.
pub const RBP_SAME: u8 = 0;
/// [`UnwindRow::rbp_kind`]: the caller's rbp is saved at CFA + `rbp_offset`.
pub const RBP_AT_CFA: u8 = 1;

/// One row of a binary's unwind table: the rule from `pc` up to the next row's `pc`. The return address is
/// at CFA - 8 (x86-64), always.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UnwindRow {
    /// First code address of the row, relative to the binary's row base (its lowest covered ELF address).
    pub pc: u32,
    /// Offset added to the CFA register (for [`CFA_PLT`]: the threshold of `pc & 15`).
    pub cfa_offset: i32,
    /// Offset of the saved rbp from the CFA, with [`RBP_AT_CFA`].
    pub rbp_offset: i32,
    /// A `CFA_*` value.
    pub cfa_kind: u8,
    /// A `RBP_*` value.
    pub rbp_kind: u8,
    /// Padding, always zero: array elements are 8-byte aligned in the kernel anyway, so the arena's
    /// memory-mapped layout is this struct's.
    pub pad: u16,
}

/// Value of [`crate::maps::UNWIND_BINARIES`]: where a binary's rows are in the arena.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindBinary {
    /// Index of the binary's first row in [`crate::maps::UNWIND_ROWS`].
    pub first_row: u32,
    /// Rows of the binary (at least one).
    pub nrows: u32,
}

/// One executable mapping of a process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindMapping {
    /// First address of the mapping.
    pub start: u64,
    /// End (exclusive) of the mapping.
    pub end: u64,
    /// `pc - bias` is the row pc (the ELF address minus the binary's row base).
    pub bias: u64,
    /// Key of the binary in [`crate::maps::UNWIND_BINARIES`].
    pub binary: u64,
}

/// Executable mappings of a process kept at most; further ones (more libraries) are walked by frame pointers.
pub const UNWIND_MAX_MAPPINGS: usize = 128;

/// Value of [`crate::maps::UNWIND_PROCS`]: a process's executable mappings, sorted by start, not overlapping.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnwindProc {
    /// Valid entries of `mappings`.
    pub count: u32,
    /// Padding, always zero.
    pub pad: u32,
    pub mappings: [UnwindMapping; UNWIND_MAX_MAPPINGS],
}

/// Processes with mapping entries at once ([`crate::maps::UNWIND_PROCS`]).
pub const UNWIND_PROCS_MAX_ENTRIES: u32 = 4096;
/// Binaries with rows loaded at once ([`crate::maps::UNWIND_BINARIES`]).
pub const UNWIND_BINARIES_MAX_ENTRIES: u32 = 4096;
/// Default size of the row arena ([`crate::maps::UNWIND_ROWS`]), in rows; the loader sets the real size from
/// the configured memory (`--unwind-table-memory`).
pub const UNWIND_ROWS_DEFAULT_ENTRIES: u32 = 1 << 20;
/// Binary-search steps over a binary's rows: enough for 2^22 rows, more than any one binary has (the daemon
/// refuses binaries with more).
pub const UNWIND_ROW_SEARCH_STEPS: u32 = 22;
/// The most rows one binary may have.
pub const UNWIND_MAX_BINARY_ROWS: u32 = 1 << UNWIND_ROW_SEARCH_STEPS;
/// Binary-search steps over a process's mappings (2^8 > [`UNWIND_MAX_MAPPINGS`]).
pub const UNWIND_MAPPING_SEARCH_STEPS: u32 = 8;

const _: () = assert!(size_of::<UnwindRow>() == 16);
const _: () = assert!(size_of::<UnwindBinary>() == 8);
const _: () = assert!(size_of::<UnwindMapping>() == 32);
const _: () = assert!(size_of::<UnwindProc>() == 8 + 32 * UNWIND_MAX_MAPPINGS);
const _: () = assert!(1 << UNWIND_MAPPING_SEARCH_STEPS > UNWIND_MAX_MAPPINGS);
