//! The kernel's per-CPU event and loss counters: one index per [`Counter`] in [`crate::maps::COUNTERS`], and
//! the stable names `status` and the metrics show.

/// Index of a per-CPU counter in [`crate::maps::COUNTERS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Allocations reported to userspace.
    Allocs = 0,
    /// Frees of reported addresses sent to userspace.
    Frees = 1,
    /// Frees of addresses never reported (allocated before attach, or untracked): no event sent.
    FreesUnknown = 2,
    /// Allocator calls that failed (NULL or an error code): not allocations.
    FailedAllocs = 3,
    /// Allocator calls made inside another allocator call on the same thread: ignored.
    NestedCalls = 4,
    /// Returns with no matching entry (entry missed or in-flight state lost).
    UnmatchedReturns = 5,
    /// Allocation events lost: ring buffer full.
    RingBufFullAlloc = 6,
    /// Free events lost: ring buffer full (the block stays counted as live).
    RingBufFullFree = 7,
    /// Exit/exec events lost: ring buffer full.
    RingBufFullProcess = 8,
    /// Allocations not tracked: the live-address map was full.
    LiveMapFull = 9,
    /// Allocator calls not tracked: the in-flight map was full.
    InFlightMapFull = 10,
    /// `bpf_get_stack` failed: the allocation is reported with no stack.
    StackErrors = 11,
    /// Stacks deeper than [`crate::MAX_FRAMES`], cut.
    StackTruncated = 12,
    /// `posix_memalign`'s out-pointer could not be read.
    ReadErrors = 13,
    /// OOM-kill events lost: ring buffer full, or the victim's pid could not be read from the record.
    OomLost = 14,
    /// Allocator calls not sampled (sampled mode): neither recorded nor reported, by design.
    Unsampled = 15,
    /// Allocator calls whose return is handled: a record kept in the in-flight map for their return.
    Tracked = 16,
    /// Runs of the return program (a uretprobe runs on every call's return; a session return only on
    /// tracked calls: compare with [`Counter::Tracked`]).
    ReturnRuns = 17,
    /// Stack copies (`--unwind dwarf`) that read nothing: the allocation is reported with its caller only.
    StackCopyErrors = 18,
    /// Stack copies cut short by the end of the stack (not an error: the stack is smaller than the copy size).
    StackCopyShort = 19,
    /// Write faults of user pages seen (tier 0), sampled or not.
    Faults = 20,
    /// Write faults sampled and reported with their stack.
    FaultsSampled = 21,
    /// Sampled fault events lost: ring buffer full.
    RingBufFullFault = 22,
    /// Anonymous mapping growths seen (private writable anonymous `mmap` calls, `brk` rises), sampled or not.
    Maps = 23,
    /// Mapping growths sampled and reported with their stack.
    MapsSampled = 24,
    /// Sampled mapping-growth events lost: ring buffer full.
    RingBufFullMap = 25,
    /// Frames unwound with a binary's unwind-table row (in the kernel).
    UnwindTableFrames = 26,
    /// Frames walked by frame pointers instead: the process's mappings are not loaded (yet).
    UnwindFpNoProcess = 27,
    /// Frames walked by frame pointers instead: the pc is in no known executable file mapping (JIT code, a
    /// library loaded since the last scan, the vDSO).
    UnwindFpNoMapping = 28,
    /// Frames walked by frame pointers instead: the binary's rows are not loaded (not yet, evicted, or none).
    UnwindFpNoBinary = 29,
    /// Frames walked by frame pointers instead: no usable row (an expression the kernel does not evaluate, code
    /// between functions).
    UnwindFpNoRule = 30,
    /// Table walks ended by an unreadable return address or saved rbp.
    UnwindReadErrors = 31,
    /// Records carrying Python frames (registered Python processes).
    PyStacks = 32,
    /// Records of a registered Python process with no Python frame: no thread state for the thread, or a
    /// read of the interpreter's memory failed (see `PY_FRAMES_*` flags).
    PyStackMisses = 33,
    /// Python frame chains longer than [`crate::MAX_PY_FRAMES`], cut.
    PyStackTruncated = 34,
    /// Frames no process entry placed, whose vma (`bpf_find_vma`) is a file with loaded tables.
    UnwindVmaFound = 35,
    /// Vma lookups refused: the process's memory map was locked (walked by frame pointers).
    UnwindVmaBusy = 36,
    /// Vma lookups that found no vma or one without a file (the vDSO, JIT code, the stack).
    UnwindVmaNotFile = 37,
    /// Vma lookups that found a file whose tables are not loaded.
    UnwindVmaUnknownFile = 38,
    /// Return addresses replaced by a uretprobe's trampoline, restored from the thread's return instances.
    UnwindUretprobeRestored = 39,
    /// New processes whose frees of never-reported addresses could not be counted: [`crate::maps::UNSEEN_FREES`] full.
    UnseenFreesMapFull = 40,
}

impl Counter {
    /// Number of counters (the size of [`crate::maps::COUNTERS`]).
    pub const COUNT: u32 = 41;

    /// Every counter, in index order.
    pub const ALL: [Self; Self::COUNT as usize] = [
        Self::Allocs,
        Self::Frees,
        Self::FreesUnknown,
        Self::FailedAllocs,
        Self::NestedCalls,
        Self::UnmatchedReturns,
        Self::RingBufFullAlloc,
        Self::RingBufFullFree,
        Self::RingBufFullProcess,
        Self::LiveMapFull,
        Self::InFlightMapFull,
        Self::StackErrors,
        Self::StackTruncated,
        Self::ReadErrors,
        Self::OomLost,
        Self::Unsampled,
        Self::Tracked,
        Self::ReturnRuns,
        Self::StackCopyErrors,
        Self::StackCopyShort,
        Self::Faults,
        Self::FaultsSampled,
        Self::RingBufFullFault,
        Self::Maps,
        Self::MapsSampled,
        Self::RingBufFullMap,
        Self::UnwindTableFrames,
        Self::UnwindFpNoProcess,
        Self::UnwindFpNoMapping,
        Self::UnwindFpNoBinary,
        Self::UnwindFpNoRule,
        Self::UnwindReadErrors,
        Self::PyStacks,
        Self::PyStackMisses,
        Self::PyStackTruncated,
        Self::UnwindVmaFound,
        Self::UnwindVmaBusy,
        Self::UnwindVmaNotFile,
        Self::UnwindVmaUnknownFile,
        Self::UnwindUretprobeRestored,
        Self::UnseenFreesMapFull,
    ];

    /// Stable `snake_case` name, used in `status` output and metric names.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Allocs => "allocs",
            Self::Frees => "frees",
            Self::FreesUnknown => "frees_unknown",
            Self::FailedAllocs => "failed_allocs",
            Self::NestedCalls => "nested_calls",
            Self::UnmatchedReturns => "unmatched_returns",
            Self::RingBufFullAlloc => "ringbuf_full_alloc",
            Self::RingBufFullFree => "ringbuf_full_free",
            Self::RingBufFullProcess => "ringbuf_full_process",
            Self::LiveMapFull => "live_map_full",
            Self::InFlightMapFull => "inflight_map_full",
            Self::StackErrors => "stack_errors",
            Self::StackTruncated => "stack_truncated",
            Self::ReadErrors => "read_errors",
            Self::OomLost => "oom_lost",
            Self::Unsampled => "unsampled",
            Self::Tracked => "tracked",
            Self::ReturnRuns => "return_runs",
            Self::StackCopyErrors => "stack_copy_errors",
            Self::StackCopyShort => "stack_copy_short",
            Self::Faults => "faults",
            Self::FaultsSampled => "faults_sampled",
            Self::RingBufFullFault => "ringbuf_full_fault",
            Self::Maps => "maps",
            Self::MapsSampled => "maps_sampled",
            Self::RingBufFullMap => "ringbuf_full_map",
            Self::UnwindTableFrames => "unwind_table_frames",
            Self::UnwindFpNoProcess => "unwind_fp_no_process",
            Self::UnwindFpNoMapping => "unwind_fp_no_mapping",
            Self::UnwindFpNoBinary => "unwind_fp_no_binary",
            Self::UnwindFpNoRule => "unwind_fp_no_rule",
            Self::UnwindReadErrors => "unwind_read_errors",
            Self::PyStacks => "py_stacks",
            Self::PyStackMisses => "py_stack_misses",
            Self::PyStackTruncated => "py_stack_truncated",
            Self::UnwindVmaFound => "unwind_vma_found",
            Self::UnwindVmaBusy => "unwind_vma_busy",
            Self::UnwindVmaNotFile => "unwind_vma_not_file",
            Self::UnwindVmaUnknownFile => "unwind_vma_unknown_file",
            Self::UnwindUretprobeRestored => "unwind_uretprobe_restored",
            Self::UnseenFreesMapFull => "unseen_frees_map_full",
        }
    }
}
