//! The session program (`BPF_TRACE_UPROBE_SESSION`, kernel 6.13+): entry and return of every allocating
//! function in one program, attached by the loader through an `uprobe_multi` link whose per-offset attach
//! cookie is the [`AllocFn`].
//!
//! The entry returns 1 for a call it does not track (unsampled, nested, the daemon's own), and the kernel
//! then skips the return trap altogether: in sampled mode most calls cost one trap instead of two. A tracked
//! call returns 0, and its return runs the same program with `bpf_session_is_return()` true.
//!
//! State between the halves. The session cookie is one `u64` per call, too small for the 32-byte record
//! (size, pointer argument, function, sampled flag), so tracked calls keep their record in the per-thread
//! `INFLIGHT` map exactly as on the plain path, and the cookie holds the entry's stack pointer, which the
//! return checks against the record. The per-thread record is needed anyway for the nested-call check (an
//! allocator calling another probed entry): only a tracked outer call writes it, and only a tracked call's
//! nested calls must be ignored (an untracked outer call's return is skipped and its nested call is judged
//! on its own, as on the plain path, where unsampled calls leave no record either). What the kernel pairing
//! adds: a return always belongs to its own entry, so the plain path's "return above the entry's stack
//! pointer" test is not needed, and untracked calls touch no map at entry beyond the nested-check lookup.
//!
//! aya-ebpf 0.2's `#[uprobe]` always returns 0, so the program is a plain function in a `uprobe/` section.
//! The two kfuncs are `extern` functions; the loader rewrites their calls into kfunc calls (BTF ids from the
//! running kernel) before aya sees the object.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_attach_cookie},
    programs::{ProbeContext, RetProbeContext},
};
use leakprobe_common::{AllocFn, COST_EMPTY, COST_EMPTY_NO_RETURN, Counter};

use super::alloc::{enter, finish, release};
use crate::maps::{INFLIGHT, cost, count};

unsafe extern "C" {
    /// The per-call cookie shared by a session program's entry and return.
    fn bpf_session_cookie() -> *mut u64;
    /// Whether the session program runs at the function's return.
    fn bpf_session_is_return() -> bool;
}

/// Entry value that keeps the return trap.
const WANT_RETURN: u32 = 0;
/// Entry value that makes the kernel skip the return trap.
const SKIP_RETURN: u32 = 1;

#[unsafe(no_mangle)]
#[unsafe(link_section = "uprobe/alloc_session")]
pub extern "C" fn alloc_session(ctx: *mut c_void) -> u32 {
    // SAFETY: kfuncs without arguments or preconditions; the verifier checks the call is allowed here.
    if unsafe { bpf_session_is_return() } {
        if !cost(COST_EMPTY) {
            let _ = session_return(&RetProbeContext::new(ctx));
        }
        return 0;
    }
    if cost(COST_EMPTY) {
        // The cost experiment's empty program keeps full mode's three traps, or sampled mode's two.
        return if cost(COST_EMPTY_NO_RETURN) { SKIP_RETURN } else { WANT_RETURN };
    }
    // SAFETY: the helper reads this link's cookie for the probed offset; it has no preconditions.
    let cookie = unsafe { bpf_get_attach_cookie(ctx) };
    let Some(func) = AllocFn::from_raw(cookie as u32) else {
        return SKIP_RETURN;
    };
    let Some(sp) = enter(&ProbeContext::new(ctx), func) else {
        return SKIP_RETURN;
    };
    // SAFETY: the kfunc returns a valid pointer to this call's cookie in a session program.
    unsafe { *bpf_session_cookie() = sp };
    WANT_RETURN
}

fn session_return(ctx: &RetProbeContext) -> Result<(), ()> {
    count(Counter::ReturnRuns);
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: as in `alloc_session`.
    let entry_sp = unsafe { *bpf_session_cookie() };
    let Some(slot) = INFLIGHT.get_ptr_mut(pid_tgid) else {
        count(Counter::UnmatchedReturns);
        return Err(());
    };
    // SAFETY: a valid map value pointer, copied out before the record is released.
    let record = unsafe { *slot };
    if record.sp != entry_sp {
        // The record is another call's (a tail call replaced it and already returned) or idle: leave it.
        count(Counter::UnmatchedReturns);
        return Err(());
    }
    release(pid_tgid, slot);
    finish(ctx, pid_tgid, &record)
}
