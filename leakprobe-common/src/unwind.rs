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

/// Slots of the walk's per-CPU row hints ([`crate::maps::UNWIND_ROW_HINTS`]): a power of two, one `u32` each.
pub const UNWIND_ROW_HINT_SLOTS: u32 = 1 << 12;
/// Bytes of user stack the walk reads at once from the stack pointer, and serves the frames' return addresses
/// and saved rbps from when they are in it (a power of two, a multiple of 8).
pub const UNWIND_STACK_WINDOW_BYTES: u32 = 1024;
const _: () = assert!(size_of::<UnwindRow>() == 16);
const _: () = assert!(size_of::<UnwindBinary>() == 8);
const _: () = assert!(size_of::<UnwindMapping>() == 32);
const _: () = assert!(size_of::<UnwindProc>() == 8 + 32 * UNWIND_MAX_MAPPINGS);
const _: () = assert!(1 << UNWIND_MAPPING_SEARCH_STEPS > UNWIND_MAX_MAPPINGS);
const _: () = assert!(UNWIND_ROW_HINT_SLOTS.is_power_of_two());
const _: () = assert!(UNWIND_STACK_WINDOW_BYTES.is_power_of_two() && UNWIND_STACK_WINDOW_BYTES >= 8);

/// Byte offsets of the kernel struct members the walk reads, read by the daemon from the kernel's BTF
/// (`/sys/kernel/btf/vmlinux`): the eBPF side has no CO-RE. Two groups, each on only when all its members were
/// found: `vma`, to place a pc no process entry covers (a new process before its scan, a library loaded with
/// `dlopen` since), and `uretprobe`, to restore return addresses replaced by a uretprobe's trampoline.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// 1: every `vm_*`, `f_*`, `i_*` and `s_*` offset below was found.
    pub vma: u32,
    /// `vm_area_struct.vm_start`, `.vm_end`, `.vm_pgoff` (`unsigned long` each), `.vm_file` (a pointer).
    pub vm_start: u32,
    pub vm_end: u32,
    pub vm_pgoff: u32,
    pub vm_file: u32,
    /// `file.f_inode` (a pointer).
    pub f_inode: u32,
    /// `inode.i_ino` (`unsigned long`), `inode.i_sb` (a pointer).
    pub i_ino: u32,
    pub i_sb: u32,
    /// `super_block.s_dev` (the kernel's `dev_t`, 32 bits: major << 20 | minor).
    pub s_dev: u32,
    /// 1: every `task_*`, `utask_*` and `ri_*` offset below was found.
    pub uretprobe: u32,
    /// `task_struct.utask` (a pointer to `struct uprobe_task`).
    pub task_utask: u32,
    /// `uprobe_task.return_instances` (the newest `struct return_instance`, a list linked by `next`).
    pub utask_return_instances: u32,
    /// `return_instance.stack` (the stack pointer at the probed function's entry: where its return address
    /// is), `.orig_ret_vaddr` (that return address, before the trampoline replaced it), `.next`.
    pub ri_stack: u32,
    pub ri_orig_ret_vaddr: u32,
    pub ri_next: u32,
    /// Padding, always zero.
    pub pad: u32,
}

impl KernelOffsets {
    /// Nothing known: no vma lookups, no return addresses restored.
    pub const NONE: Self = Self {
        vma: 0,
        vm_start: 0,
        vm_end: 0,
        vm_pgoff: 0,
        vm_file: 0,
        f_inode: 0,
        i_ino: 0,
        i_sb: 0,
        s_dev: 0,
        uretprobe: 0,
        task_utask: 0,
        utask_return_instances: 0,
        ri_stack: 0,
        ri_orig_ret_vaddr: 0,
        ri_next: 0,
        pad: 0,
    };
}

/// A thread's uprobe return instances a walk reads at most (nested probed calls on its stack).
pub const UNWIND_MAX_RETURN_INSTANCES: usize = 8;

/// Key of [`crate::maps::UNWIND_FILES`]: a file as the kernel names it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UnwindFileKey {
    /// The kernel's `dev_t` of the file system (`major << 20 | minor`, not the userspace `st_dev` encoding).
    pub dev: u32,
    /// Padding, always zero.
    pub pad: u32,
    pub ino: u64,
}

/// One loadable segment of a binary: a pc whose file offset is in `[offset, offset + size)` has the row pc
/// `file offset + delta`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindSegment {
    pub offset: u64,
    pub size: u64,
    /// Segment address minus segment offset minus the binary's row base (wrapping).
    pub delta: u64,
}

/// Segments of a binary kept in [`UnwindFile`] at most (x86-64 binaries have 2 to 5 loadable segments).
pub const UNWIND_FILE_SEGMENTS: usize = 8;

/// Value of [`crate::maps::UNWIND_FILES`]: a loaded binary's key and its segments, to place a pc from its vma
/// (start, page offset, file) where no process entry does.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindFile {
    /// Key of the binary in [`crate::maps::UNWIND_BINARIES`].
    pub binary: u64,
    /// Valid entries of `segments`.
    pub count: u32,
    /// Padding, always zero.
    pub pad: u32,
    pub segments: [UnwindSegment; UNWIND_FILE_SEGMENTS],
}

/// The kernel's `dev_t` of a device numbered `major:minor` (as `/proc/PID/maps` prints it): `MKDEV`.
pub const fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xf_ffff)
}

const _: () = assert!(size_of::<KernelOffsets>() == 64);
const _: () = assert!(size_of::<UnwindFileKey>() == 16);
const _: () = assert!(size_of::<UnwindSegment>() == 24);
const _: () = assert!(size_of::<UnwindFile>() == 16 + 24 * UNWIND_FILE_SEGMENTS);
