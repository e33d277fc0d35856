//! Every map and tunable global of the object. Sizes come from `leakprobe-common`.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use leakprobe_common::{
    Counter, INFLIGHT_MAX_ENTRIES, InFlight, LIVE_MAX_ENTRIES, LiveKey, NO_FIELD, OomFields, RING_BUF_BYTES,
};

/// `BPF_F_NO_PREALLOC`: the live-address map grows with use instead of reserving its maximum up front.
const BPF_F_NO_PREALLOC: u32 = 1;

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BUF_BYTES, 0);

#[map]
pub static INFLIGHT: HashMap<u64, InFlight> = HashMap::with_max_entries(INFLIGHT_MAX_ENTRIES, 0);

#[map]
pub static LIVE: HashMap<LiveKey, u64> = HashMap::with_max_entries(LIVE_MAX_ENTRIES, BPF_F_NO_PREALLOC);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

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
