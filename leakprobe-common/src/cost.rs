//! The cost experiments of `cargo xtask bench --only-cost` (issue 18): bits of the `COST_EXPERIMENT` global
//! that switch one part of the malloc-family programs' work off, or back to an earlier form, so that the
//! kernel's per-program run-time statistics show what that part costs. The loader sets the global only in
//! builds with the `bench` feature, from `LEAKPROBE_COST_EXPERIMENT`; it is 0 in every daemon otherwise. The
//! global is read-only data: the verifier prunes the branches of the bits that are off, so they cost nothing.

/// Every malloc-family program returns at once (the session entry still asks for its return): the cost of an
/// empty program at the same sites. Nothing is tracked; the daemon sees no allocation.
pub const COST_EMPTY: u32 = 1;
/// Records are submitted with the kernel's default wakeup policy (flags 0) instead of `BPF_RB_NO_WAKEUP` below
/// the fill threshold.
pub const COST_WAKEUP: u32 = 1 << 1;
/// Allocation records carry no frames: the cost of the stack walk.
pub const COST_NO_STACK: u32 = 1 << 2;
/// Allocation records always have room for `MAX_FRAMES` frames (the earlier fixed size) instead of the
/// smallest size class that holds the frames captured.
pub const COST_FULL_RECORDS: u32 = 1 << 3;
/// A free looks its address up in `LIVE` and then deletes it (the earlier two map operations) instead of one
/// delete whose result says whether the block was live.
pub const COST_FREE_LOOKUP: u32 = 1 << 4;
/// An allocation's entry looks for an outer call (`INFLIGHT`) before the sampling decision (the earlier order)
/// instead of after it.
pub const COST_NESTED_FIRST: u32 = 1 << 5;
/// No per-process call count (`PID_CALLS`, the CPU budget's input) at an allocation's entry.
pub const COST_NO_CALL_COUNT: u32 = 1 << 6;
/// No `LIVE` map operation: an allocation is not recorded there, a free neither looks up nor deletes and emits
/// nothing. The daemon's table then keeps every block: for measuring the map's share only.
pub const COST_NO_LIVE: u32 = 1 << 7;
/// The unwind-table walk searches every frame's row (a binary search of up to 22 steps) instead of trying the
/// per-CPU hint of the last row found for that pc first.
pub const COST_NO_ROW_HINTS: u32 = 1 << 8;
/// The unwind-table walk reads each stack word it needs with its own `bpf_probe_read_user` instead of serving
/// it from the window of stack read once per walk.
pub const COST_NO_STACK_WINDOW: u32 = 1 << 9;
/// An allocation's entry inserts its `INFLIGHT` record and the return deletes it (two hash-map updates) instead
/// of rewriting the thread's record in place and marking it idle.
pub const COST_INFLIGHT_REMOVE: u32 = 1 << 10;
/// Sampled mode: a free looks its address up in `LIVE` without asking the filter of live addresses first
/// (`LIVE_FILTER`), which the probes then do not keep either.
pub const COST_NO_FREE_FILTER: u32 = 1 << 11;
/// With [`COST_EMPTY`]: the empty session entry also skips the return trap, as an unsampled call does in sampled
/// mode: the floor of sampled mode's sites (two traps per pair) rather than full mode's three.
pub const COST_EMPTY_NO_RETURN: u32 = 1 << 12;
/// Every bit above.
pub const COST_ALL: u32 = COST_EMPTY
    | COST_EMPTY_NO_RETURN
    | COST_WAKEUP
    | COST_NO_STACK
    | COST_FULL_RECORDS
    | COST_FREE_LOOKUP
    | COST_NESTED_FIRST
    | COST_NO_CALL_COUNT
    | COST_NO_LIVE
    | COST_NO_ROW_HINTS
    | COST_NO_STACK_WINDOW
    | COST_INFLIGHT_REMOVE
    | COST_NO_FREE_FILTER;
