//! Types shared by the leakprobe eBPF programs and the daemon.
//!
//! This crate is the only definition of every record that crosses the kernel/user boundary, of every map
//! name and size, and of every tunable global. Everything is `#[repr(C)]` with fixed-width fields and
//! explicit padding; sizes are asserted at compile time so both sides agree on the layout.
#![no_std]

#[cfg(feature = "user")]
mod decode;

#[cfg(feature = "user")]
pub use decode::{DecodeError, Event, decode, decode_user_stack};

mod fault;
pub use fault::{
    FAULT_FLAG_STACK_ERROR, FAULT_FLAG_STACK_TRUNCATED, FAULT_PAGE_BYTES, FaultEvent, FaultFields, MAP_ANONYMOUS,
    MAP_SHARED, MapEvent, MapFields, MapSource, PF_INSTR, PF_WRITE, PROT_WRITE,
};

pub mod generator;

mod unwind;
pub use unwind::{
    CFA_END, CFA_NONE, CFA_PLT, CFA_RBP, CFA_RSP, CFA_STOP, KernelOffsets, RBP_AT_CFA, RBP_SAME,
    UNWIND_BINARIES_MAX_ENTRIES, UNWIND_FILE_SEGMENTS, UNWIND_MAPPING_SEARCH_STEPS, UNWIND_MAX_BINARY_ROWS,
    UNWIND_MAX_MAPPINGS, UNWIND_MAX_RETURN_INSTANCES, UNWIND_PROCS_MAX_ENTRIES, UNWIND_ROW_HINT_SLOTS,
    UNWIND_ROW_SEARCH_STEPS, UNWIND_ROWS_DEFAULT_ENTRIES, UNWIND_STACK_WINDOW_BYTES, UnwindBinary, UnwindFile,
    UnwindFileKey, UnwindMapping, UnwindProc, UnwindRow, UnwindSegment, kernel_dev,
};

mod python;
pub use python::{
    FAULT_FLAG_PY_FRAMES, MAX_PY_FRAMES, MAX_PY_THREADS, PY_FRAME_OWNED_BY_CSTACK, PY_FRAMES_NO_THREAD,
    PY_FRAMES_READ_ERROR, PY_FRAMES_TRUNCATED, PY_PROCS_MAX_ENTRIES, PY_TSTATE_CURRENT, PY_TSTATE_THREAD_LIST,
    PY_WINDOW_BYTES, PyFrame, PyFrames, PyProc, decode_py_frames,
};

mod counter;
pub use counter::Counter;
mod cost;
pub use cost::{
    COST_ALL, COST_EMPTY, COST_EMPTY_NO_RETURN, COST_FREE_LOOKUP, COST_FULL_RECORDS, COST_INFLIGHT_REMOVE,
    COST_NESTED_FIRST, COST_NO_CALL_COUNT, COST_NO_FREE_FILTER, COST_NO_LIVE, COST_NO_ROW_HINTS, COST_NO_STACK,
    COST_NO_STACK_WINDOW, COST_WAKEUP,
};
mod oom;
pub use oom::{
    OOM_HAS_ALL, OOM_HAS_COMM, OOM_HAS_OOM_SCORE_ADJ, OOM_HAS_RSS, OOM_HAS_TOTAL_VM, OOM_HAS_UID, OomEvent, OomFields,
};

/// Names of the maps in the eBPF object.
pub mod maps {
    /// Ring buffer carrying [`crate::AllocEvent`], [`crate::FreeEvent`], [`crate::ProcessEvent`],
    /// [`crate::OomEvent`] and [`crate::FaultEvent`].
    pub const EVENTS: &str = "EVENTS";
    /// Per-thread in-flight allocator call, keyed by `pid_tgid`, value [`crate::InFlight`].
    pub const INFLIGHT: &str = "INFLIGHT";
    /// Addresses reported as live, keyed by [`crate::LiveKey`], value: allocation time (ns, monotonic).
    pub const LIVE: &str = "LIVE";
    /// Per-CPU event and loss counters, indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// Per-CPU byte countdowns to the next sample, one `i64` per CPU and [`crate::Countdown`].
    pub const COUNTDOWN: &str = "COUNTDOWN";
    /// Mean bytes between sampled allocations of one process, keyed by tgid, overriding the global
    /// `SAMPLE_INTERVAL` (0: every allocation). Set for processes traced on request or escalated (tier 1).
    pub const PID_SAMPLE_INTERVAL: &str = "PID_SAMPLE_INTERVAL";
    /// Allocator calls that reached a probe, per process (LRU, per CPU), for the CPU budget.
    pub const PID_CALLS: &str = "PID_CALLS";
    /// The program break of each process after its latest `brk`, keyed by tgid (LRU; removed on exit and exec):
    /// how far a `brk` raised it (tier 0's mapping growth).
    pub const BRK_END: &str = "BRK_END";
    /// The unwind-row arena, an array of [`crate::UnwindRow`] the daemon writes through a memory mapping.
    pub const UNWIND_ROWS: &str = "UNWIND_ROWS";
    /// Binary id -> [`crate::UnwindBinary`], its extent of the arena.
    pub const UNWIND_BINARIES: &str = "UNWIND_BINARIES";
    /// Tgid -> [`crate::UnwindProc`], the process's executable mappings.
    pub const UNWIND_PROCS: &str = "UNWIND_PROCS";
    /// [`crate::UnwindFileKey`] (the kernel's device and inode) -> [`crate::UnwindFile`]: a loaded binary found
    /// from a pc's vma where no process entry places it.
    pub const UNWIND_FILES: &str = "UNWIND_FILES";
    /// Python processes whose frames the probes record, keyed by tgid, value [`crate::PyProc`]: written by the
    /// daemon when it first sees the interpreter, removed on exit and exec.
    pub const PY_PROCS: &str = "PY_PROCS";
    /// Frees of addresses never reported, per CPU, per process that called `execve` while every allocator file
    /// was probed system-wide in full mode (keyed by tgid; created at exec, read and removed by the daemon when
    /// the process exits): allocations the probes missed at the process's start.
    pub const UNSEEN_FREES: &str = "UNSEEN_FREES";
}

/// Index of a per-CPU countdown in [`maps::COUNTDOWN`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Countdown {
    /// Bytes allocated until the next sampled allocation.
    Alloc = 0,
    /// Bytes of faulting pages until the next sampled fault.
    Fault = 1,
    /// Bytes of anonymous mappings (`mmap`, `brk`) until the next sampled mapping growth.
    Map = 2,
}

/// Entries of [`maps::COUNTDOWN`].
pub const COUNTDOWN_ENTRIES: u32 = 3;
/// Processes whose program break is remembered at once ([`maps::BRK_END`]).
pub const BRK_END_MAX_ENTRIES: u32 = 16_384;
/// Processes with their own sampling interval at once ([`maps::PID_SAMPLE_INTERVAL`]).
pub const PID_SAMPLE_MAX_ENTRIES: u32 = 1024;
/// Processes whose allocator calls are counted at once ([`maps::PID_CALLS`], least recently used evicted).
pub const PID_CALLS_MAX_ENTRIES: u32 = 4096;
/// Processes whose frees of never-reported addresses are counted at once ([`maps::UNSEEN_FREES`]).
pub const UNSEEN_FREES_MAX_ENTRIES: u32 = 16_384;

/// Names of the tunable globals the loader sets before load.
pub mod globals {
    /// Thread-group id of the daemon itself: its own allocations are never traced.
    pub const OWN_TGID: &str = "OWN_TGID";
    /// Mean bytes between sampled allocations; 0 tracks every allocation (full mode).
    pub const SAMPLE_INTERVAL: &str = "SAMPLE_INTERVAL";
    /// `[u32; EXP_TABLE_LEN]`: quantiles of the unit exponential distribution in fixed point
    /// (`-ln((i + 0.5) / EXP_TABLE_LEN) * 2^EXP_TABLE_SHIFT`), computed by the loader: eBPF has no floats.
    pub const EXP_TABLE: &str = "EXP_TABLE";
    /// Byte offset of `group_dead` in the `sched/sched_process_exit` record, read from the tracepoint's
    /// format file at run time; [`crate::NO_FIELD`] when this kernel has no such field.
    pub const EXIT_GROUP_DEAD_OFFSET: &str = "EXIT_GROUP_DEAD_OFFSET";
    /// Layout of the `oom/mark_victim` record, a [`crate::OomFields`] read from the tracepoint's format file.
    pub const OOM_FIELDS: &str = "OOM_FIELDS";
    /// Layout of the `syscalls/sys_enter_mmap` and `syscalls/sys_exit_brk` records, a [`crate::MapFields`] read
    /// from their format files.
    pub const MAP_FIELDS: &str = "MAP_FIELDS";
    /// Layout of the `exceptions/page_fault_user` record, a [`crate::FaultFields`] read from its format file.
    pub const FAULT_FIELDS: &str = "FAULT_FIELDS";
    /// Mean bytes of faulting pages between two sampled faults (tier 0); never 0.
    pub const FAULT_SAMPLE_INTERVAL: &str = "FAULT_SAMPLE_INTERVAL";
    /// Bytes of user stack copied into each allocation record for unwinding in userspace (`--unwind dwarf`):
    /// a multiple of [`crate::STACK_COPY_CHUNK`] up to [`crate::MAX_STACK_COPY_BYTES`]; 0 walks frame pointers
    /// in the kernel instead (`--unwind fp`).
    pub const STACK_COPY_BYTES: &str = "STACK_COPY_BYTES";
    /// 1: stacks are walked in the kernel with the binaries' unwind tables (`--unwind auto`, `tables`);
    /// 0: by the kernel's frame-pointer walk, or copied (`STACK_COPY_BYTES`).
    pub const UNWIND_TABLES: &str = "UNWIND_TABLES";
    /// Thread-group id of the only process traced (`run --pid`); 0 traces every process.
    pub const TRACED_TGID: &str = "TRACED_TGID";
    /// 1: count each new process's frees of never-reported addresses ([`crate::maps::UNSEEN_FREES`]): full mode
    /// with system-wide allocator probes, where every such free is an allocation the probes missed.
    pub const COUNT_UNSEEN_FREES: &str = "COUNT_UNSEEN_FREES";
    /// Kernel struct member offsets from the kernel's BTF, a [`crate::KernelOffsets`].
    pub const KERNEL_OFFSETS: &str = "KERNEL_OFFSETS";
    /// `COST_*` bits of the bench's cost experiments (see [`crate::COST_EMPTY`]); 0 outside them.
    pub const COST_EXPERIMENT: &str = "COST_EXPERIMENT";
}

/// The user stack is copied in chunks of this many bytes (a page): a chunk that crosses the end of the
/// stack fails as a whole, so the last one is retried up to its page boundary.
pub const STACK_COPY_CHUNK: u32 = 4096;
/// The most user stack bytes copied per allocation.
pub const MAX_STACK_COPY_BYTES: u32 = 32 << 10;
/// The most chunks of a stack copy.
pub const MAX_STACK_COPY_CHUNKS: u32 = MAX_STACK_COPY_BYTES / STACK_COPY_CHUNK;

/// Entries of the exponential table: a draw picks one uniformly (with `bpf_get_prandom_u32`), so countdowns
/// follow an exponential distribution to within 1/1024 in probability.
pub const EXP_TABLE_LEN: usize = 1024;
/// Fixed-point shift of the exponential table's entries.
pub const EXP_TABLE_SHIFT: u32 = 16;
/// The largest sampling interval (1 TiB): countdown arithmetic stays within 64 bits.
pub const MAX_SAMPLE_INTERVAL: u64 = 1 << 40;

/// Value of an offset global meaning "this kernel has no such field".
pub const NO_FIELD: u32 = u32::MAX;

/// Size of the event ring buffer in bytes (a power of two, a multiple of the page size).
pub const RING_BUF_BYTES: u32 = 32 << 20;
/// Unread bytes in the ring buffer past which a record wakes the daemon at once. Below it records are
/// submitted without a wakeup (each would cost the probed thread an `irq_work`) and the daemon reads the ring
/// buffer every [`RING_POLL_MS`].
pub const RING_WAKEUP_BYTES: u64 = RING_BUF_BYTES as u64 / 16;
/// Milliseconds between the daemon's reads of the ring buffer when no record woke it.
pub const RING_POLL_MS: u64 = 10;
/// Live allocations the kernel can track at once, over all processes.
pub const LIVE_MAX_ENTRIES: u32 = 1 << 21;
/// Slots of the sampled mode's filter in front of `LIVE` (a power of two): counts of live addresses per hash
/// slot, so that a free of an address never reported, nearly every free in sampled mode, costs no hash lookup.
pub const LIVE_FILTER_SLOTS: u32 = 1 << 15;
const _: () = assert!(LIVE_FILTER_SLOTS.is_power_of_two());
/// Threads with an `INFLIGHT` record at once: each thread that made a tracked call keeps one (idle between
/// calls) until it exits.
pub const INFLIGHT_MAX_ENTRIES: u32 = 1 << 15;
/// User stack frames captured per allocation; deeper stacks are truncated (and counted).
pub const MAX_FRAMES: usize = 64;

/// Kind of a ring-buffer record, the first field of every [`EventHeader`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// An [`AllocEvent`].
    Alloc = 1,
    /// A [`FreeEvent`].
    Free = 2,
    /// A [`ProcessEvent`]: the last thread of a process exited.
    Exit = 3,
    /// A [`ProcessEvent`]: a process called `execve`; its old address space is gone.
    Exec = 4,
    /// An [`OomEvent`]: the OOM killer chose a victim (its exit comes later).
    Oom = 5,
    /// A [`FaultEvent`]: a sampled write fault of a user page (tier 0).
    Fault = 6,
    Map = 7,
}

impl EventKind {
    /// The kind with this raw value, if any.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Alloc),
            2 => Some(Self::Free),
            3 => Some(Self::Exit),
            4 => Some(Self::Exec),
            5 => Some(Self::Oom),
            6 => Some(Self::Fault),
            7 => Some(Self::Map),
            _ => None,
        }
    }
}

/// The allocator entry point an allocation came through.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AllocFn {
    Malloc = 1,
    Calloc = 2,
    Realloc = 3,
    Reallocarray = 4,
    PosixMemalign = 5,
    AlignedAlloc = 6,
    Memalign = 7,
    Valloc = 8,
    Pvalloc = 9,
}

impl AllocFn {
    /// Every allocating entry point, in the order they are attached.
    pub const ALL: [Self; 9] = [
        Self::Malloc,
        Self::Calloc,
        Self::Realloc,
        Self::Reallocarray,
        Self::PosixMemalign,
        Self::AlignedAlloc,
        Self::Memalign,
        Self::Valloc,
        Self::Pvalloc,
    ];

    /// The C symbol of this entry point.
    pub const fn symbol(self) -> &'static str {
        match self {
            Self::Malloc => "malloc",
            Self::Calloc => "calloc",
            Self::Realloc => "realloc",
            Self::Reallocarray => "reallocarray",
            Self::PosixMemalign => "posix_memalign",
            Self::AlignedAlloc => "aligned_alloc",
            Self::Memalign => "memalign",
            Self::Valloc => "valloc",
            Self::Pvalloc => "pvalloc",
        }
    }

    /// Name of the eBPF program attached at this function's entry. Functions with the same argument
    /// layout share a program (`aligned_alloc`/`memalign`, `valloc`/`pvalloc`): the entry records which
    /// one it was from the program's own constant.
    pub const fn entry_program(self) -> &'static str {
        match self {
            Self::Malloc => "malloc_enter",
            Self::Calloc => "calloc_enter",
            Self::Realloc => "realloc_enter",
            Self::Reallocarray => "reallocarray_enter",
            Self::PosixMemalign => "posix_memalign_enter",
            Self::AlignedAlloc => "aligned_alloc_enter",
            Self::Memalign => "memalign_enter",
            Self::Valloc => "valloc_enter",
            Self::Pvalloc => "pvalloc_enter",
        }
    }

    /// The function with this raw value, if any.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Malloc),
            2 => Some(Self::Calloc),
            3 => Some(Self::Realloc),
            4 => Some(Self::Reallocarray),
            5 => Some(Self::PosixMemalign),
            6 => Some(Self::AlignedAlloc),
            7 => Some(Self::Memalign),
            8 => Some(Self::Valloc),
            9 => Some(Self::Pvalloc),
            _ => None,
        }
    }
}

/// Name of the return program shared by every allocating entry point.
pub const ALLOC_EXIT_PROGRAM: &str = "alloc_exit";
/// Name of the session program (entry and return in one, `BPF_TRACE_UPROBE_SESSION`) shared by every
/// allocating entry point; its attach cookie is the [`AllocFn`].
pub const ALLOC_SESSION_PROGRAM: &str = "alloc_session";
/// Kernel functions the session program calls, rewritten into kfunc calls by the loader.
pub const SESSION_KFUNCS: [&str; 2] = ["bpf_session_cookie", "bpf_session_is_return"];
/// Name of the program on `free`.
pub const FREE_PROGRAM: &str = "free_enter";
/// Name of the `sched/sched_process_exit` program.
pub const EXIT_PROGRAM: &str = "sched_process_exit";
/// Name of the `sched/sched_process_exec` program.
pub const EXEC_PROGRAM: &str = "sched_process_exec";
/// Name of the `oom/mark_victim` program.
pub const OOM_PROGRAM: &str = "oom_mark_victim";
/// Name of the `exceptions/page_fault_user` program (tier 0).
pub const FAULT_PROGRAM: &str = "page_fault_user";
/// Name of the `syscalls/sys_enter_mmap` program (tier 0's mapping growth).
pub const MMAP_PROGRAM: &str = "sys_enter_mmap";
/// Name of the `syscalls/sys_exit_brk` program (tier 0's mapping growth).
pub const BRK_PROGRAM: &str = "sys_exit_brk";
/// Name of the ingest benchmark's event generator (see [`generator`]): loaded only by `leakprobe bench-ingest`,
/// never by `leakprobe run`.
pub const GENERATOR_PROGRAM: &str = "ingest_generator";

/// Leading part of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] as `u32`.
    pub kind: u32,
    /// Padding, always zero.
    pub pad: u32,
    /// `bpf_ktime_get_ns()` (`CLOCK_MONOTONIC`) when the event happened.
    pub ts_ns: u64,
    /// Thread-group id (the process id as userspace sees it, in the root pid namespace).
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
}

/// `flags` bit of [`AllocEvent`]: `bpf_get_stack` failed; `nframes` is 0.
pub const ALLOC_FLAG_STACK_ERROR: u32 = 1;
/// `flags` bit of [`AllocEvent`]: the stack was deeper than [`MAX_FRAMES`] and was cut.
pub const ALLOC_FLAG_STACK_TRUNCATED: u32 = 1 << 1;
/// `flags` bit of [`AllocEvent`]: `old_addr` was live and is freed by this event (a moving or
/// in-place `realloc`).
pub const ALLOC_FLAG_REPLACES_OLD: u32 = 1 << 2;

/// `flags` bit of [`AllocEvent`]: the record carries no frames but a [`UserStack`] and the copied stack bytes
/// right after the event, to be unwound in userspace.
pub const ALLOC_FLAG_STACK_COPY: u32 = 1 << 3;

/// `flags` bit of [`AllocEvent`]: the record ends with a [`PyFrames`] (after the stack copy, if any): the
/// process is a registered Python interpreter.
pub const ALLOC_FLAG_PY_FRAMES: u32 = 1 << 4;

/// Bytes of an [`AllocEvent`] before its frames.
pub const ALLOC_HEAD_BYTES: usize = 80;

/// Frames an allocation record has room for, by size class: a record is [`ALLOC_HEAD_BYTES`] and room for the
/// smallest class that holds the frames captured (`nframes`), so that a shallow stack costs a short record.
/// Records with a stack copy or Python frames always have room for [`MAX_FRAMES`] (the tail follows a whole
/// [`AllocEvent`]).
pub const ALLOC_FRAME_CLASSES: [usize; 4] = [8, 16, 32, MAX_FRAMES];

/// Bytes of an allocation record with room for `frames` frames.
pub const fn alloc_record_bytes(frames: usize) -> usize {
    ALLOC_HEAD_BYTES + 8 * frames
}

/// A successful allocation, emitted from the return probe. A record may end after its frame count's size class
/// (see [`ALLOC_FRAME_CLASSES`]); the decoder fills the frames it does not carry with zeros. With
/// [`ALLOC_FLAG_STACK_COPY`], the record is whole and followed by a [`UserStack`] and then `UserStack::len`
/// bytes of the user stack from `UserStack::sp` up.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocEvent {
    pub header: EventHeader,
    /// Address returned to the caller.
    pub addr: u64,
    /// Bytes the caller asked for (`nmemb * size` for `calloc`/`reallocarray`).
    pub size: u64,
    /// For `realloc`/`reallocarray` of a live block: the old address, freed by this event when
    /// [`ALLOC_FLAG_REPLACES_OLD`] is set. Zero otherwise.
    pub old_addr: u64,
    /// An [`AllocFn`] as `u32`.
    pub func: u32,
    /// Number of valid entries in `frames`.
    pub nframes: u32,
    /// `ALLOC_FLAG_*` bits.
    pub flags: u32,
    /// Padding, always zero.
    pub pad: u32,
    /// `comm` of the allocating thread, NUL-padded.
    pub comm: [u8; 16],
    /// User stack, innermost first: the first frame is the allocator's caller.
    pub frames: [u64; MAX_FRAMES],
}

/// The user registers an unwinder starts from, taken in the allocator's return probe (so `ip` is the return
/// address in the allocator's caller), and the length of the stack copy that follows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserStack {
    /// Instruction pointer: the return address in the allocator's caller.
    pub ip: u64,
    /// Stack pointer (after the allocator returned): the copy starts here.
    pub sp: u64,
    /// Frame pointer (`rbp`; `x29` on aarch64).
    pub bp: u64,
    /// Link register (`x30` on aarch64); 0 on x86-64.
    pub lr: u64,
    /// Bytes of stack copied after this header (a failed copy is 0).
    pub len: u32,
    /// Padding, always zero.
    pub pad: u32,
}

/// A `free` (or `realloc(p, 0)`) of an address that was reported live.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreeEvent {
    pub header: EventHeader,
    /// The freed address.
    pub addr: u64,
}

/// A process exited (its last thread) or exec'd.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessEvent {
    pub header: EventHeader,
    /// `comm` of the process (after exec: the new one), NUL-padded.
    pub comm: [u8; 16],
}

/// Per-thread state between an allocator's entry and its return, in [`maps::INFLIGHT`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// Stack pointer at entry. A later entry whose stack pointer is below it is a nested call
    /// (the allocator calling itself) and is ignored; a return whose stack pointer is above it is
    /// this call's return.
    pub sp: u64,
    /// Requested bytes.
    pub size: u64,
    /// `realloc`'s old pointer, or `posix_memalign`'s out-pointer; zero otherwise.
    pub ptr_arg: u64,
    /// An [`AllocFn`] as `u32`.
    pub func: u32,
    /// 1 when the new block is to be reported; 0 for a `realloc` of a reported block whose new size was not
    /// sampled: only the old block's free is reported (sampled mode).
    pub sampled: u32,
}

/// Key of [`maps::LIVE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LiveKey {
    pub tgid: u32,
    /// Padding, always zero.
    pub pad: u32,
    pub addr: u64,
}

const _: () = assert!(size_of::<EventHeader>() == 24);
const _: () = assert!(size_of::<AllocEvent>() == 24 + 8 * 3 + 4 * 4 + 16 + 8 * MAX_FRAMES);
const _: () = assert!(core::mem::offset_of!(AllocEvent, frames) == ALLOC_HEAD_BYTES);
const _: () = assert!(alloc_record_bytes(MAX_FRAMES) == size_of::<AllocEvent>());
const _: () = assert!(size_of::<UserStack>() == 40);
const _: () = assert!(size_of::<AllocEvent>().is_multiple_of(8) && size_of::<UserStack>().is_multiple_of(8));
const _: () = assert!(MAX_STACK_COPY_BYTES.is_multiple_of(STACK_COPY_CHUNK));
const _: () = assert!(size_of::<FreeEvent>() == 32);
const _: () = assert!(size_of::<ProcessEvent>() == 40);
const _: () = assert!(size_of::<InFlight>() == 32);
const _: () = assert!(size_of::<LiveKey>() == 16);
const _: () = assert!(align_of::<AllocEvent>() == 8);
const _: () = assert!(Counter::ALL.len() == Counter::COUNT as usize);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` structs of integers with explicit padding fields: every bit pattern is valid.
    unsafe impl aya::Pod for super::InFlight {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LiveKey {}
    // SAFETY: as above (eight `u32`s).
    unsafe impl aya::Pod for super::OomFields {}
    // SAFETY: as above (two `u32`s).
    unsafe impl aya::Pod for super::FaultFields {}
    // SAFETY: as above (four `u32`s).
    unsafe impl aya::Pod for super::MapFields {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnwindRow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnwindBinary {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnwindProc {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnwindFileKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnwindFile {}
    // SAFETY: as above (sixteen `u32`s).
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: as above (a `u64` and fourteen `u32`s).
    unsafe impl aya::Pod for super::PyProc {}
}
