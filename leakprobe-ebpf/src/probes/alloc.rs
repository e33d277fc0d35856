//! Entry probes on the allocating functions and the return probe they share.
//!
//! An entry records the call in `INFLIGHT` (keyed by thread); the return reads it back, captures the user
//! stack (which, from a return probe, starts at the allocator's caller) and emits one `AllocEvent`.
//!
//! Nested calls: an allocator may call another public allocator entry (glibc's `reallocarray` calls
//! `realloc`, `realloc(p, 0)` calls `free`). Only the outermost call is the caller's allocation. The record
//! keeps the stack pointer at entry: a later entry with a lower stack pointer is nested and ignored, and a
//! return belongs to the record only when its stack pointer is above the entry's (the return address has
//! been popped). A tail call (`jmp realloc`) enters with the same stack pointer and replaces the record,
//! which is right: its result is the caller's result.
//!
//! The entry and return halves ([`enter`], [`finish`]) are shared with the session program (`session.rs`),
//! which replaces the uretprobe when the kernel has session uprobes.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_USER_STACK, pt_regs},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_get_stack},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use leakprobe_common::{
    ALLOC_FLAG_REPLACES_OLD, ALLOC_FLAG_STACK_ERROR, ALLOC_FLAG_STACK_TRUNCATED, AllocEvent, AllocFn, Countdown,
    Counter, EventHeader, EventKind, FreeEvent, InFlight, LiveKey, MAX_FRAMES,
};

use crate::maps::{EVENTS, INFLIGHT, LIVE, alloc_interval, count, now_ns, own_tgid, sample, sampling};

/// The user stack pointer in the saved registers.
#[inline(always)]
fn stack_pointer(regs: *const pt_regs) -> u64 {
    // SAFETY: `regs` is the program's context; direct context reads are checked by the verifier.
    #[cfg(bpf_target_arch = "x86_64")]
    let sp = unsafe { (*regs).rsp };
    #[cfg(bpf_target_arch = "aarch64")]
    let sp = unsafe { (*regs).sp };
    sp
}

fn arg(ctx: &ProbeContext, n: usize) -> u64 {
    ctx.arg::<u64>(n).unwrap_or(0)
}

/// The requested size and the pointer argument (`realloc`'s old block, `posix_memalign`'s out-pointer) of
/// a call to `func`, read from the argument registers at entry.
#[inline(always)]
pub(super) fn args(ctx: &ProbeContext, func: AllocFn) -> (u64, u64) {
    match func {
        AllocFn::Malloc | AllocFn::Valloc | AllocFn::Pvalloc => (arg(ctx, 0), 0),
        // An overflowing product makes calloc fail; the failed return is then ignored.
        AllocFn::Calloc => (arg(ctx, 0).wrapping_mul(arg(ctx, 1)), 0),
        AllocFn::Realloc => (arg(ctx, 1), arg(ctx, 0)),
        AllocFn::Reallocarray => (arg(ctx, 1).wrapping_mul(arg(ctx, 2)), arg(ctx, 0)),
        // posix_memalign(void **memptr, size_t alignment, size_t size): the address comes back through memptr.
        AllocFn::PosixMemalign => (arg(ctx, 2), arg(ctx, 0)),
        AllocFn::AlignedAlloc | AllocFn::Memalign => (arg(ctx, 1), 0),
    }
}

#[uprobe]
pub fn malloc_enter(ctx: ProbeContext) -> u32 {
    enter_plain(&ctx, AllocFn::Malloc)
}

#[uprobe]
pub fn calloc_enter(ctx: ProbeContext) -> u32 {
    enter_plain(&ctx, AllocFn::Calloc)
}

#[uprobe]
pub fn realloc_enter(ctx: ProbeContext) -> u32 {
    enter_plain(&ctx, AllocFn::Realloc)
}

#[uprobe]
pub fn reallocarray_enter(ctx: ProbeContext) -> u32 {
    enter_plain(&ctx, AllocFn::Reallocarray)
}

#[uprobe]
pub fn posix_memalign_enter(ctx: ProbeContext) -> u32 {
    enter_plain(&ctx, AllocFn::PosixMemalign)
}

#[uprobe]
pub fn aligned_alloc_enter(ctx: ProbeContext) -> u32 {
    enter_plain(&ctx, AllocFn::AlignedAlloc)
}

#[uprobe]
pub fn memalign_enter(ctx: ProbeContext) -> u32 {
    enter_plain(&ctx, AllocFn::Memalign)
}

#[uprobe]
pub fn valloc_enter(ctx: ProbeContext) -> u32 {
    enter_plain(&ctx, AllocFn::Valloc)
}

#[uprobe]
pub fn pvalloc_enter(ctx: ProbeContext) -> u32 {
    enter_plain(&ctx, AllocFn::Pvalloc)
}

#[inline(always)]
fn enter_plain(ctx: &ProbeContext, func: AllocFn) -> u32 {
    let _ = enter(ctx, func);
    0
}

/// The entry half shared by the plain and the session paths: decides whether the call is tracked and, if so,
/// records it in `INFLIGHT`. Returns the entry's stack pointer when the return is wanted.
#[inline(always)]
pub(super) fn enter(ctx: &ProbeContext, func: AllocFn) -> Option<u64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == own_tgid() {
        return None;
    }
    let sp = stack_pointer(ctx.regs);
    if let Some(outer) = INFLIGHT.get_ptr(pid_tgid) {
        // SAFETY: a valid map value pointer; a racing update only comes from this same thread.
        if unsafe { (*outer).sp } > sp {
            count(Counter::NestedCalls);
            return None;
        }
    }
    let (size, ptr_arg) = args(ctx, func);
    let tgid = (pid_tgid >> 32) as u32;
    let sampled = sample(Countdown::Alloc, alloc_interval(tgid), size);
    if !sampled {
        // A realloc of a reported block still ends that block: record it, to report the free at return.
        let old_live = matches!(func, AllocFn::Realloc | AllocFn::Reallocarray)
            && ptr_arg != 0
            && LIVE.get_ptr(LiveKey { tgid, pad: 0, addr: ptr_arg }).is_some();
        if !old_live {
            count(Counter::Unsampled);
            return None;
        }
    }
    let record = InFlight { sp, size, ptr_arg, func: func as u32, sampled: u32::from(sampled) };
    if INFLIGHT.insert(pid_tgid, record, 0).is_err() {
        count(Counter::InFlightMapFull);
        return None;
    }
    count(Counter::Tracked);
    Some(sp)
}

#[uretprobe]
pub fn alloc_exit(ctx: RetProbeContext) -> u32 {
    let _ = try_alloc_exit(&ctx);
    0
}

fn try_alloc_exit(ctx: &RetProbeContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == own_tgid() {
        return Ok(());
    }
    count(Counter::ReturnRuns);
    let Some(record) = INFLIGHT.get_ptr(pid_tgid) else {
        // In sampled mode most calls leave no record on purpose.
        if !sampling(tgid) {
            count(Counter::UnmatchedReturns);
        }
        return Err(());
    };
    // SAFETY: a valid map value pointer, copied out before the entry is removed.
    let record = unsafe { *record };
    if stack_pointer(ctx.regs) <= record.sp {
        // The return of a nested call: the outer call is still running.
        return Ok(());
    }
    let _ = INFLIGHT.remove(pid_tgid);
    finish(ctx, pid_tgid, &record)
}

/// The return half shared by the plain and the session paths, once the call's record is found and removed:
/// reads the result and emits the allocation (or the free of a realloc'd block).
#[inline(always)]
pub(super) fn finish(ctx: &RetProbeContext, pid_tgid: u64, record: &InFlight) -> Result<(), ()> {
    let tgid = (pid_tgid >> 32) as u32;
    let ret: u64 = ctx.ret();
    let func = AllocFn::from_raw(record.func).ok_or(())?;
    let (addr, old_addr) = match func {
        AllocFn::PosixMemalign => {
            if ret as u32 != 0 {
                count(Counter::FailedAllocs);
                return Ok(());
            }
            // SAFETY: reads user memory through the helper, which fails cleanly on a bad address.
            let Ok(addr) = (unsafe { bpf_probe_read_user(record.ptr_arg as *const u64) }) else {
                count(Counter::ReadErrors);
                return Err(());
            };
            (addr, 0)
        }
        AllocFn::Realloc | AllocFn::Reallocarray => (ret, record.ptr_arg),
        _ => (ret, 0),
    };
    if record.sampled == 0 {
        // A reported block reallocated to an unsampled size: it ends (moved or resized), nothing new starts.
        if addr != 0 || record.size == 0 {
            emit_free(tgid, pid_tgid as u32, old_addr);
        }
        return Ok(());
    }
    if addr == 0 {
        if old_addr != 0 && record.size == 0 {
            // realloc(p, 0) freed p and returned NULL (glibc); `free` may already have reported it.
            emit_free(tgid, pid_tgid as u32, old_addr);
        } else {
            count(Counter::FailedAllocs);
        }
        return Ok(());
    }
    emit_alloc(ctx, tgid, pid_tgid as u32, addr, record, old_addr)
}

// Inlined: six arguments are more than a BPF call passes in registers.
#[inline(always)]
fn emit_alloc(
    ctx: &RetProbeContext,
    tgid: u32,
    tid: u32,
    addr: u64,
    record: &InFlight,
    old_addr: u64,
) -> Result<(), ()> {
    // Reserve first: if the ring buffer is full, nothing changes in LIVE, so the kernel and the daemon
    // keep agreeing on what is live.
    let Some(mut entry) = EVENTS.reserve::<AllocEvent>(0) else {
        count(Counter::RingBufFullAlloc);
        return Err(());
    };
    let old_key = LiveKey { tgid, pad: 0, addr: old_addr };
    let old_live = old_addr != 0 && LIVE.get_ptr(old_key).is_some();
    let now = now_ns();
    if LIVE.insert(LiveKey { tgid, pad: 0, addr }, now, 0).is_err() {
        count(Counter::LiveMapFull);
        entry.discard(0);
        return Err(());
    }
    if old_live && old_addr != addr {
        let _ = LIVE.remove(old_key);
    }
    let event = entry.as_mut_ptr();
    let mut flags = if old_live { ALLOC_FLAG_REPLACES_OLD } else { 0 };
    // SAFETY: `event` points to reserved ring-buffer memory the size of an `AllocEvent`; every field the
    // consumer reads is written below (frames beyond `nframes` are not read).
    unsafe {
        (*event).header = EventHeader { kind: EventKind::Alloc as u32, pad: 0, ts_ns: now, tgid, tid };
        (*event).addr = addr;
        (*event).size = record.size;
        (*event).old_addr = if old_live { old_addr } else { 0 };
        (*event).func = record.func;
        (*event).pad = 0;
        (*event).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        let frames = (&raw mut (*event).frames).cast::<core::ffi::c_void>();
        let bytes = bpf_get_stack(ctx.as_ptr(), frames, (MAX_FRAMES * 8) as u32, u64::from(BPF_F_USER_STACK));
        // A negative return is an error; a non-negative one is at most MAX_FRAMES * 8 bytes.
        let nframes = if let Ok(bytes) = u32::try_from(bytes) {
            bytes / 8
        } else {
            count(Counter::StackErrors);
            flags |= ALLOC_FLAG_STACK_ERROR;
            0
        };
        if nframes as usize >= MAX_FRAMES {
            count(Counter::StackTruncated);
            flags |= ALLOC_FLAG_STACK_TRUNCATED;
        }
        (*event).nframes = nframes;
        (*event).flags = flags;
    }
    entry.submit(0);
    count(Counter::Allocs);
    Ok(())
}

/// Reports a free of `addr` if it is live; a free of an address never reported costs no event.
pub fn emit_free(tgid: u32, tid: u32, addr: u64) {
    let key = LiveKey { tgid, pad: 0, addr };
    if LIVE.get_ptr(key).is_none() {
        count(Counter::FreesUnknown);
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<FreeEvent>(0) else {
        // The block stays live in LIVE and in the daemon: both still agree.
        count(Counter::RingBufFullFree);
        return;
    };
    if LIVE.remove(key).is_err() {
        // Another thread freed it first (a double free in the traced program).
        entry.discard(0);
        return;
    }
    let header = EventHeader { kind: EventKind::Free as u32, pad: 0, ts_ns: now_ns(), tgid, tid };
    entry.write(FreeEvent { header, addr });
    entry.submit(0);
    count(Counter::Frees);
}
