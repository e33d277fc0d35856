//! Every map and tunable global of the object. Sizes come from `leakprobe-common`.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use leakprobe_common::{
    BRK_END_MAX_ENTRIES, COST_NO_CALL_COUNT, COST_NO_FREE_FILTER, COST_WAKEUP, COUNTDOWN_ENTRIES, Countdown, Counter,
    EXP_TABLE_LEN, EXP_TABLE_SHIFT, FaultFields, INFLIGHT_MAX_ENTRIES, InFlight, KernelOffsets, LIVE_FILTER_SLOTS,
    LIVE_MAX_ENTRIES, LiveKey, MAX_FRAMES, MAX_SAMPLE_INTERVAL, MapFields, NO_FIELD, OomFields, PID_CALLS_MAX_ENTRIES,
    PID_SAMPLE_MAX_ENTRIES, PY_PROCS_MAX_ENTRIES, PyProc, RING_BUF_BYTES, RING_WAKEUP_BYTES, UNSEEN_FREES_MAX_ENTRIES,
    UNWIND_BINARIES_MAX_ENTRIES, UNWIND_MAX_MAPPINGS, UNWIND_MAX_RETURN_INSTANCES, UNWIND_PROCS_MAX_ENTRIES,
    UNWIND_ROW_HINT_SLOTS, UNWIND_ROWS_DEFAULT_ENTRIES, UNWIND_STACK_WINDOW_BYTES, UnwindBinary, UnwindFile,
    UnwindFileKey, UnwindMapping, UnwindProc, UnwindRow,
};

/// `BPF_F_NO_PREALLOC`: the live-address map grows with use instead of reserving its maximum up front.
const BPF_F_NO_PREALLOC: u32 = 1;
/// `BPF_F_MMAPABLE`: the daemon writes the row arena through a memory mapping, not a syscall per row.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// The unwind-row arena: every loaded binary's rows, each binary a contiguous extent. Sized by the loader.
#[map]
pub static UNWIND_ROWS: Array<UnwindRow> = Array::with_max_entries(UNWIND_ROWS_DEFAULT_ENTRIES, BPF_F_MMAPABLE);

/// Binary id -> its extent of [`UNWIND_ROWS`].
#[map]
pub static UNWIND_BINARIES: HashMap<u64, UnwindBinary> = HashMap::with_max_entries(UNWIND_BINARIES_MAX_ENTRIES, 0);

/// Tgid -> the process's executable mappings.
#[map]
pub static UNWIND_PROCS: HashMap<u32, UnwindProc> =
    HashMap::with_max_entries(UNWIND_PROCS_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// The kernel's (device, inode) of a loaded binary -> its key and segments, for pcs no process entry places.
#[map]
pub static UNWIND_FILES: HashMap<UnwindFileKey, UnwindFile> = HashMap::with_max_entries(UNWIND_BINARIES_MAX_ENTRIES, 0);

/// Set by the loader from the kernel's BTF: where the vma lookup finds a vma's range and file.
#[unsafe(no_mangle)]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets::NONE;

/// Kernel struct member offsets (`vma` 0: no vma lookups; known to the verifier: that branch is pruned).
#[inline(always)]
pub fn kernel_offsets() -> KernelOffsets {
    // SAFETY: a plain read of a loader-set global; volatile so the initializer is not folded in.
    unsafe { core::ptr::read_volatile(&raw const KERNEL_OFFSETS) }
}

/// The table walk's state (per CPU: a program runs to its end on one CPU).
#[repr(C)]
pub struct UnwindState {
    pub pc: u64,
    pub sp: u64,
    pub bp: u64,
    pub tgid: u32,
    pub n: u32,
    pub flags: u32,
    /// Binary search: the extent's first row, the bounds and the key.
    pub first: u32,
    pub lo: u32,
    pub hi: u32,
    pub key: u64,
    pub frames: [u64; MAX_FRAMES],
    /// The mappings of the process's `UnwindProc` in use, copied.
    pub nmappings: u32,
    pub pad: u32,
    pub mappings: [UnwindMapping; UNWIND_MAX_MAPPINGS],
    /// The last vma of a loaded binary this walk placed a pc in (`bpf_find_vma`), as a mapping; `end` 0: none.
    pub vma: UnwindMapping,
    /// What the lookup's callback read of the vma: its page offset, inode, device, whether it maps a file.
    pub vma_pgoff: u64,
    pub vma_ino: u64,
    pub vma_dev: u32,
    /// 1: the vma maps a file.
    pub vma_file: u32,
    /// The thread's uprobe return instances, newest first: where each replaced return address is on the
    /// stack (its slot) and what it was; `nreturns` of them.
    pub return_slots: [u64; UNWIND_MAX_RETURN_INSTANCES],
    pub return_addrs: [u64; UNWIND_MAX_RETURN_INSTANCES],
    pub nreturns: u32,
    pub pad2: u32,
    /// The stack read at the walk's start: `window_len` bytes (a multiple of 8, 0 when the read failed) from
    /// `window_base`, the stack pointer.
    pub window_base: u64,
    pub window_len: u64,
    pub window: [u64; UNWIND_STACK_WINDOW_BYTES as usize / 8],
}

/// Hints of the walk's row search, per CPU: slot (a hash of binary and row pc) -> index of the row last found
/// there in its binary's extent. A hint is used only when the rows around it prove it is the search's answer.
#[map]
pub static UNWIND_ROW_HINTS: PerCpuArray<u32> = PerCpuArray::with_max_entries(UNWIND_ROW_HINT_SLOTS, 0);

#[map]
pub static UNWIND_SCRATCH: PerCpuArray<UnwindState> = PerCpuArray::with_max_entries(1, 0);

/// Set by the loader: 1 walks stacks with the unwind tables, 0 leaves the walk to the kernel's frame pointers.
#[unsafe(no_mangle)]
static UNWIND_TABLES: u32 = 0;

/// Whether stacks are walked with the unwind tables (known to the verifier: the other branch is pruned).
#[inline(always)]
pub fn unwind_tables() -> bool {
    // SAFETY: a plain read of a loader-set global; volatile so the initializer is not folded in.
    unsafe { core::ptr::read_volatile(&raw const UNWIND_TABLES) != 0 }
}

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BUF_BYTES, 0);

/// The flags to submit a record with: no wakeup while the daemon has less than `RING_WAKEUP_BYTES` to read (it
/// reads the ring buffer on a timer), a forced one past that. The kernel's default wakes the reader for every
/// record submitted while it is idle, which at moderate rates is nearly every record.
#[inline(always)]
pub fn submit_flags() -> u64 {
    if cost(COST_WAKEUP) {
        return 0;
    }
    if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= RING_WAKEUP_BYTES {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

#[map]
pub static INFLIGHT: HashMap<u64, InFlight> = HashMap::with_max_entries(INFLIGHT_MAX_ENTRIES, 0);

#[map]
pub static LIVE: HashMap<LiveKey, u64> = HashMap::with_max_entries(LIVE_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// Sampled mode's filter in front of [`LIVE`]: per slot (a hash of process and address), the probes' inserts
/// into `LIVE` less their deletes ([`live_filter_add`]). A slot at 0 holds no live address: the free of an
/// address there needs no lookup. The daemon's purges of `LIVE` do not count down, which only leaves a slot
/// above 0 (a lookup that finds nothing), never at 0 with an address live.
#[map]
pub static LIVE_FILTER: Array<u64> = Array::with_max_entries(LIVE_FILTER_SLOTS, 0);

/// Whether the probes keep [`LIVE_FILTER`]: in sampled mode, where most frees are of addresses never reported.
#[inline(always)]
pub fn live_filter_on() -> bool {
    global_sample_interval() != 0 && !cost(COST_NO_FREE_FILTER)
}

/// The filter slot of `addr` in process `tgid`.
#[inline(always)]
fn live_filter_slot(tgid: u32, addr: u64) -> u32 {
    // Allocations are 16-byte aligned: the low bits say nothing.
    let mixed = ((addr >> 4) ^ (addr >> 36)) as u32 ^ tgid.wrapping_mul(0x85EB_CA6B);
    mixed.wrapping_mul(0x9E37_79B1) >> (32 - LIVE_FILTER_SLOTS.trailing_zeros())
}

/// Adds `delta` (1 for an insert into `LIVE`, `u64::MAX` for a delete) to the filter slot of (`tgid`, `addr`),
/// atomically: other CPUs update slots too.
#[inline(always)]
pub fn live_filter_add(tgid: u32, addr: u64, delta: u64) {
    if let Some(slot) = LIVE_FILTER.get_ptr_mut(live_filter_slot(tgid, addr)) {
        // The BPF target has 64-bit atomic adds (`lock xadd`) but no compare-and-swap, hence no `AtomicU64`
        // arithmetic in `core`: the intrinsic. The host build (clippy) uses the atomic type.
        // SAFETY: a valid, 8-byte aligned array value pointer, only ever written atomically.
        #[cfg(target_arch = "bpf")]
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(slot, delta)
        };
        // SAFETY: as above.
        #[cfg(not(target_arch = "bpf"))]
        unsafe { core::sync::atomic::AtomicU64::from_ptr(slot) }
            .fetch_add(delta, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether (`tgid`, `addr`) may be live in `LIVE`: false only when its filter slot is 0.
#[inline(always)]
pub fn live_filter_maybe(tgid: u32, addr: u64) -> bool {
    match LIVE_FILTER.get_ptr(live_filter_slot(tgid, addr)) {
        // SAFETY: a valid, 8-byte aligned array value pointer: an aligned 64-bit load is atomic.
        Some(slot) => (unsafe { core::ptr::read_volatile(slot) }) != 0,
        None => true,
    }
}

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map]
pub static COUNTDOWN: PerCpuArray<i64> = PerCpuArray::with_max_entries(COUNTDOWN_ENTRIES, 0);

#[map]
pub static PID_SAMPLE_INTERVAL: HashMap<u32, u64> = HashMap::with_max_entries(PID_SAMPLE_MAX_ENTRIES, 0);

#[map]
pub static PID_CALLS: LruPerCpuHashMap<u32, u64> = LruPerCpuHashMap::with_max_entries(PID_CALLS_MAX_ENTRIES, 0);

#[map]
pub static PY_PROCS: HashMap<u32, PyProc> = HashMap::with_max_entries(PY_PROCS_MAX_ENTRIES, 0);

/// The Python walk's per-CPU scratch: one frame's or thread state's window, read at once (`probes/python.rs`).
#[map]
pub static PY_SCRATCH: PerCpuArray<[u64; leakprobe_common::PY_WINDOW_BYTES as usize / 8]> =
    PerCpuArray::with_max_entries(1, 0);

#[map]
pub static BRK_END: LruHashMap<u32, u64> = LruHashMap::with_max_entries(BRK_END_MAX_ENTRIES, 0);

#[map]
pub static UNSEEN_FREES: PerCpuHashMap<u32, u64> = PerCpuHashMap::with_max_entries(UNSEEN_FREES_MAX_ENTRIES, 0);

/// Set by the loader in bench builds only: `COST_*` bits of the cost experiments (`leakprobe_common::COST_EMPTY`).
#[unsafe(no_mangle)]
static COST_EXPERIMENT: u32 = 0;

/// Whether the cost experiment `bit` is on (read-only data: the verifier prunes the branch of a bit that is off).
#[inline(always)]
pub fn cost(bit: u32) -> bool {
    // SAFETY: as in `own_tgid`.
    unsafe { core::ptr::read_volatile(&raw const COST_EXPERIMENT) & bit != 0 }
}

/// Set by the loader: 1 when new processes' frees of never-reported addresses are counted.
#[unsafe(no_mangle)]
static COUNT_UNSEEN_FREES: u32 = 0;

/// Whether new processes' frees of never-reported addresses are counted ([`UNSEEN_FREES`]).
#[inline(always)]
pub fn count_unseen_frees() -> bool {
    // SAFETY: as in `own_tgid`.
    unsafe { core::ptr::read_volatile(&raw const COUNT_UNSEEN_FREES) != 0 }
}

/// Set by the loader: mean bytes between samples, 0 for full mode.
#[unsafe(no_mangle)]
static SAMPLE_INTERVAL: u64 = 0;

/// Set by the loader: mean bytes of faulting pages between sampled faults (tier 0).
#[unsafe(no_mangle)]
static FAULT_SAMPLE_INTERVAL: u64 = 0;

/// Set by the loader from the `exceptions/page_fault_user` format file.
#[unsafe(no_mangle)]
static FAULT_FIELDS: FaultFields = FaultFields::NONE;

/// Set by the loader from the `syscalls/sys_enter_mmap` and `syscalls/sys_exit_brk` format files.
#[unsafe(no_mangle)]
static MAP_FIELDS: MapFields = MapFields::NONE;

/// Offsets of the mapping-growth records' fields.
#[inline(always)]
pub fn map_fields() -> MapFields {
    // SAFETY: a plain read of a loader-set global; volatile so the initializer is not folded in.
    unsafe { core::ptr::read_volatile(&raw const MAP_FIELDS) }
}

/// Offsets of the `exceptions/page_fault_user` record's fields.
#[inline(always)]
pub fn fault_fields() -> FaultFields {
    // SAFETY: a plain read of a loader-set global; volatile so the initializer is not folded in.
    unsafe { core::ptr::read_volatile(&raw const FAULT_FIELDS) }
}

/// The sampling interval of allocations in process `tgid`: its own if the daemon set one (tier 1), else the
/// global one. Counts the call for the CPU budget.
#[inline(always)]
pub fn alloc_interval(tgid: u32) -> u64 {
    if cost(COST_NO_CALL_COUNT) {
        // The cost experiment without the budget's count.
    } else if let Some(calls) = PID_CALLS.get_ptr_mut(tgid) {
        // SAFETY: per-CPU storage: no other program writes this CPU's slot now.
        unsafe { *calls += 1 };
    } else {
        let _ = PID_CALLS.insert(tgid, 1, 0);
    }
    if let Some(interval) = PID_SAMPLE_INTERVAL.get_ptr(tgid) {
        // SAFETY: a valid map value pointer; the daemon replaces values whole.
        return unsafe { *interval };
    }
    global_sample_interval()
}

/// The daemon's sampling interval of allocations (`--mode`): 0 in full mode. Read-only data, known to the verifier.
#[inline(always)]
pub fn global_sample_interval() -> u64 {
    // SAFETY: a plain read of a loader-set global; volatile so the zero initializer is not folded in.
    unsafe { core::ptr::read_volatile(&raw const SAMPLE_INTERVAL) }
}

/// The sampling interval of faults.
#[inline(always)]
pub fn fault_interval() -> u64 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&raw const FAULT_SAMPLE_INTERVAL) }
}

/// Set by the loader: the exponential quantile table.
#[unsafe(no_mangle)]
static EXP_TABLE: [u32; EXP_TABLE_LEN] = [0; EXP_TABLE_LEN];

/// Whether only a sample of allocations is tracked in process `tgid`.
#[inline(always)]
pub fn sampling(tgid: u32) -> bool {
    if let Some(interval) = PID_SAMPLE_INTERVAL.get_ptr(tgid) {
        // SAFETY: a valid map value pointer.
        return unsafe { *interval } != 0;
    }
    global_sample_interval() != 0
}

/// A draw from the exponential distribution of mean `interval`, from the loader's quantile table.
#[inline(always)]
fn draw(interval: u64) -> i64 {
    // SAFETY: the helper has no preconditions.
    let index = unsafe { aya_ebpf::helpers::bpf_get_prandom_u32() } as usize & (EXP_TABLE_LEN - 1);
    // SAFETY: the index is masked to the table's length; volatile so the zero initializer is not folded in.
    let quantile = u64::from(unsafe { core::ptr::read_volatile((&raw const EXP_TABLE).cast::<u32>().add(index)) });
    // interval < 2^40 (the loader refuses more) and quantile < 2^20: the product fits in 64 bits (a
    // checked multiply would need a 128-bit one, which BPF does not have).
    let product = interval.min(MAX_SAMPLE_INTERVAL).wrapping_mul(quantile);
    i64::try_from((product >> EXP_TABLE_SHIFT).max(1)).unwrap_or(i64::MAX)
}

/// Whether `size` bytes (an allocation, a faulting page) are sampled: a Poisson process over bytes with mean
/// `interval`. The per-CPU countdown `which` holds the bytes left to the next sample point; an allocation that
/// reaches it is sampled (probability `1 - exp(-size / interval)`, the countdown being exponential and
/// memoryless), and the next point is drawn afresh past its end. Always true when `interval` is 0.
#[inline(always)]
pub fn sample(which: Countdown, interval: u64, size: u64) -> bool {
    if interval == 0 {
        return true;
    }
    let Some(countdown) = COUNTDOWN.get_ptr_mut(which as u32) else { return true };
    let size = i64::try_from(size).unwrap_or(i64::MAX);
    // SAFETY: per-CPU storage; uprobe programs run with migration disabled, so nothing else writes it now.
    unsafe {
        // 0 is the initial value: the first countdown on this CPU is drawn here.
        let left = if *countdown == 0 { draw(interval) } else { *countdown };
        if left > size {
            *countdown = left - size;
            return false;
        }
        *countdown = draw(interval);
    }
    true
}

/// Set by the loader: bytes of user stack copied per allocation, 0 for the kernel's frame-pointer walk.
#[unsafe(no_mangle)]
static STACK_COPY_BYTES: u32 = 0;

/// Bytes of user stack to copy per allocation (a multiple of `STACK_COPY_CHUNK`), or 0. The global lives in
/// the frozen read-only data map, so the verifier knows its value: ring-buffer reservations sized by it are
/// constant-sized, as `bpf_ringbuf_reserve` requires, and the branch not taken is pruned.
#[inline(always)]
pub fn stack_copy_bytes() -> u32 {
    // SAFETY: as in `own_tgid`.
    unsafe { core::ptr::read_volatile(&raw const STACK_COPY_BYTES) }
}

/// Set by the loader: the only process traced, or 0 for all.
#[unsafe(no_mangle)]
static TRACED_TGID: u32 = 0;

/// Whether allocations of process `tgid` are traced: not the daemon's own, and the one chosen if any.
#[inline(always)]
pub fn traced(tgid: u32) -> bool {
    // SAFETY: as in `own_tgid`.
    let only = unsafe { core::ptr::read_volatile(&raw const TRACED_TGID) };
    tgid != own_tgid() && (only == 0 || only == tgid)
}

/// Set by the loader: the daemon's own thread-group id.
#[unsafe(no_mangle)]
static OWN_TGID: u32 = 0;

/// Set by the loader from the tracepoint's format file.
#[unsafe(no_mangle)]
static EXIT_GROUP_DEAD_OFFSET: u32 = NO_FIELD;

/// Set by the loader from the `oom/mark_victim` format file.
#[unsafe(no_mangle)]
static OOM_FIELDS: OomFields = OomFields::NONE;

/// The daemon's own thread-group id.
#[inline(always)]
pub fn own_tgid() -> u32 {
    // SAFETY: a plain read of a global the loader set before load; volatile so the compiler does not
    // fold the zero initializer into the code.
    unsafe { core::ptr::read_volatile(&raw const OWN_TGID) }
}

/// Offset of `group_dead` in the exit tracepoint record, or `NO_FIELD`.
#[inline(always)]
pub fn exit_group_dead_offset() -> u32 {
    // SAFETY: as in `own_tgid`.
    unsafe { core::ptr::read_volatile(&raw const EXIT_GROUP_DEAD_OFFSET) }
}

/// Offsets of the `oom/mark_victim` record's fields.
#[inline(always)]
pub fn oom_fields() -> OomFields {
    // SAFETY: as in `own_tgid`.
    unsafe { core::ptr::read_volatile(&raw const OOM_FIELDS) }
}

/// Adds one to a per-CPU counter.
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(value) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU storage, so no other program writes this slot concurrently.
        unsafe { *value += 1 };
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: the helper takes no arguments and has no preconditions.
    unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() }
}
