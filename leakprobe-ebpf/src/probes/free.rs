//! The probe on `free`, and the free path every free takes: [`emit_free`] reports a free of a live block, and
//! the ingest generator reserves and submits its records here too.

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP, helpers::bpf_get_current_pid_tgid, macros::uprobe, maps::ring_buf::RingBufEntry,
    programs::ProbeContext,
};
use leakprobe_common::{
    COST_EMPTY, COST_FREE_LOOKUP, COST_NO_LIVE, Counter, EventHeader, EventKind, FreeEvent, LiveKey,
};

use crate::maps::{
    EVENTS, LIVE, UNSEEN_FREES, cost, count, global_sample_interval, live_filter_add, live_filter_maybe,
    live_filter_on, now_ns, own_tgid, submit_flags,
};

#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    if cost(COST_EMPTY) {
        return 0;
    }
    let addr: u64 = ctx.arg(0).unwrap_or(0);
    if addr == 0 {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid != own_tgid() {
        emit_free(tgid, pid_tgid as u32, addr);
    }
    0
}

/// Reports a free of `addr` if it is live; a free of an address never reported costs no event.
///
/// In full mode (the loader's global sampling interval 0) nearly every free is of a live block: the record is
/// reserved first and one map operation, the delete, says whether the block was live (a free of an unknown
/// address then costs a discarded reservation). In sampled mode most frees are of blocks never reported: one
/// lookup, and a reservation and a delete only for a live block; and before the lookup, the filter of live
/// addresses (`LIVE_FILTER`), whose slot at 0 says the address is not live without a hash lookup.
pub fn emit_free(tgid: u32, tid: u32, addr: u64) {
    let key = LiveKey { tgid, pad: 0, addr };
    if cost(COST_NO_LIVE) {
        free_unknown(tgid);
        return;
    }
    if global_sample_interval() == 0 && !cost(COST_FREE_LOOKUP) {
        let Some(entry) = EVENTS.reserve::<FreeEvent>(0) else {
            // No room: the block stays live in LIVE and in the daemon, which still agree. A loss only if it was.
            if LIVE.get_ptr(key).is_some() {
                count(Counter::RingBufFullFree);
            } else {
                free_unknown(tgid);
            }
            return;
        };
        if LIVE.remove(key).is_err() {
            // Never reported, or another thread freed it first (a double free in the traced program).
            entry.discard(u64::from(BPF_RB_NO_WAKEUP));
            free_unknown(tgid);
            return;
        }
        submit_free(entry, tgid, tid, addr);
        return;
    }
    let filter = live_filter_on();
    // The filter first: a slot at 0 holds no live address, and most frees here are of blocks never reported.
    if filter && !live_filter_maybe(tgid, addr) || LIVE.get_ptr(key).is_none() {
        free_unknown(tgid);
        return;
    }
    // With no room, the block stays live in LIVE and in the daemon: both still agree.
    let Some(entry) = reserve_free() else { return };
    if LIVE.remove(key).is_err() {
        // Another thread freed it first (a double free in the traced program).
        entry.discard(0);
        return;
    }
    if filter {
        live_filter_add(tgid, addr, u64::MAX);
    }
    submit_free(entry, tgid, tid, addr);
}

/// Counts a free of an address not live (`frees_unknown`, and the process's unseen frees when counted).
#[inline(always)]
fn free_unknown(tgid: u32) {
    count(Counter::FreesUnknown);
    if let Some(unseen) = UNSEEN_FREES.get_ptr_mut(tgid) {
        // SAFETY: per-CPU storage, so no other program writes this slot concurrently.
        unsafe { *unseen += 1 };
    }
}

/// Reserves a free record; a full ring buffer is counted (`ringbuf_full_free`). Every free record is reserved
/// here: the probes' and the ingest generator's.
#[inline(always)]
pub fn reserve_free() -> Option<RingBufEntry<FreeEvent>> {
    let entry = EVENTS.reserve::<FreeEvent>(0);
    if entry.is_none() {
        count(Counter::RingBufFullFree);
    }
    entry
}

/// Writes and submits a free record of `addr`, and counts it (`frees`).
#[inline(always)]
pub fn submit_free(mut entry: RingBufEntry<FreeEvent>, tgid: u32, tid: u32, addr: u64) {
    let header = EventHeader { kind: EventKind::Free as u32, pad: 0, ts_ns: now_ns(), tgid, tid };
    entry.write(FreeEvent { header, addr });
    entry.submit(submit_flags());
    count(Counter::Frees);
}
