//! Entry probes on the allocating functions and the return probe they share.
//!
//! An entry records the call in `INFLIGHT` (keyed by thread); the return reads it back, captures the user
//! stack (which, from a return probe, starts at the allocator's caller) and emits one `AllocEvent`. The
//! return leaves the thread's record in place, idle (stack pointer 0), for its next tracked call to rewrite:
//! one hash-map update per thread instead of an insert and a delete per call. The thread's exit deletes it.
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

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_USER_STACK, pt_regs},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_user,
        generated::{bpf_get_stack, bpf_probe_read_kernel, bpf_probe_read_user as read_user_bytes},
    },
    macros::{uprobe, uretprobe},
    maps::ring_buf::RingBufBytes,
    programs::{ProbeContext, RetProbeContext},
};
use leakprobe_common::{
    ALLOC_FLAG_PY_FRAMES, ALLOC_FLAG_REPLACES_OLD, ALLOC_FLAG_STACK_COPY, ALLOC_FLAG_STACK_ERROR,
    ALLOC_FLAG_STACK_TRUNCATED, ALLOC_HEAD_BYTES, AllocEvent, AllocFn, COST_EMPTY, COST_FULL_RECORDS,
    COST_INFLIGHT_REMOVE, COST_NESTED_FIRST, COST_NO_LIVE, COST_NO_STACK, Countdown, Counter, EventHeader, EventKind,
    InFlight, LiveKey, MAX_FRAMES, MAX_STACK_COPY_CHUNKS, PyFrames, STACK_COPY_CHUNK, UserStack, alloc_record_bytes,
};

use super::{free::emit_free, unwind};
use crate::maps::{
    EVENTS, INFLIGHT, LIVE, alloc_interval, cost, count, live_filter_add, live_filter_maybe, live_filter_on, now_ns,
    sample, sampling, stack_copy_bytes, submit_flags, traced, unwind_tables,
};

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
    if cost(COST_EMPTY) {
        return 0;
    }
    let _ = enter(ctx, func);
    0
}

/// The entry half shared by the plain and the session paths: decides whether the call is tracked and, if so,
/// records it in `INFLIGHT`. Returns the entry's stack pointer when the return is wanted.
#[inline(always)]
pub(super) fn enter(ctx: &ProbeContext, func: AllocFn) -> Option<u64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !traced((pid_tgid >> 32) as u32) {
        return None;
    }
    let sp = stack_pointer(ctx.regs);
    if cost(COST_NESTED_FIRST) && nested(INFLIGHT.get_ptr_mut(pid_tgid), sp) {
        return None;
    }
    let (size, ptr_arg) = args(ctx, func);
    let tgid = (pid_tgid >> 32) as u32;
    // The sampling decision first: most calls in sampled mode end here, without a map lookup for the nested
    // check. A nested call's bytes then count towards the countdown too; a sample point that falls in one is
    // dropped below, which leaves every outer call's chance of being sampled as it was (the points form a
    // Poisson process over the bytes: where one falls says nothing of the others).
    let sampled = sample(Countdown::Alloc, alloc_interval(tgid), size);
    if !sampled {
        // A realloc of a reported block still ends that block: record it, to report the free at return.
        let old_live = matches!(func, AllocFn::Realloc | AllocFn::Reallocarray)
            && ptr_arg != 0
            && (!live_filter_on() || live_filter_maybe(tgid, ptr_arg))
            && LIVE.get_ptr(LiveKey { tgid, pad: 0, addr: ptr_arg }).is_some();
        if !old_live {
            count(Counter::Unsampled);
            return None;
        }
    }
    let slot = INFLIGHT.get_ptr_mut(pid_tgid);
    if !cost(COST_NESTED_FIRST) && nested(slot, sp) {
        return None;
    }
    let record = InFlight { sp, size, ptr_arg, func: func as u32, sampled: u32::from(sampled) };
    match slot {
        // The thread's idle record, rewritten in place: no hash-map update.
        // SAFETY: a valid value pointer of a preallocated hash map; only this thread writes its own record.
        Some(slot) if !cost(COST_INFLIGHT_REMOVE) => unsafe { *slot = record },
        _ => {
            if INFLIGHT.insert(pid_tgid, record, 0).is_err() {
                count(Counter::InFlightMapFull);
                return None;
            }
        }
    }
    count(Counter::Tracked);
    Some(sp)
}

/// Ends the tracked call whose record is `slot` (the thread's `INFLIGHT` entry): marks the record idle (stack
/// pointer 0), where the thread's next tracked call writes its own. The thread's exit deletes it.
#[inline(always)]
pub(super) fn release(pid_tgid: u64, slot: *mut InFlight) {
    if cost(COST_INFLIGHT_REMOVE) {
        let _ = INFLIGHT.remove(pid_tgid);
    } else {
        // SAFETY: a valid value pointer of a preallocated hash map; only this thread writes its own record.
        unsafe { (*slot).sp = IDLE };
    }
}

/// The stack pointer of an idle `INFLIGHT` record: no call of the thread is tracked (a user stack pointer is
/// never 0).
pub(super) const IDLE: u64 = 0;

/// Whether a call with stack pointer `sp` is nested in a tracked call of the same thread (counted); `slot` is
/// the thread's `INFLIGHT` record, if it has one (an idle one is below every stack pointer).
#[inline(always)]
fn nested(slot: Option<*mut InFlight>, sp: u64) -> bool {
    if let Some(outer) = slot {
        // SAFETY: a valid map value pointer; a racing update only comes from this same thread.
        if unsafe { (*outer).sp } > sp {
            count(Counter::NestedCalls);
            return true;
        }
    }
    false
}

#[uretprobe]
pub fn alloc_exit(ctx: RetProbeContext) -> u32 {
    if cost(COST_EMPTY) {
        return 0;
    }
    let _ = try_alloc_exit(&ctx);
    0
}

fn try_alloc_exit(ctx: &RetProbeContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !traced(tgid) {
        return Ok(());
    }
    count(Counter::ReturnRuns);
    // SAFETY: a valid map value pointer, copied out before the record is released.
    let found = INFLIGHT.get_ptr_mut(pid_tgid).map(|slot| (slot, unsafe { *slot }));
    let Some((slot, record)) = found.filter(|(_, record)| record.sp != IDLE) else {
        // In sampled mode most calls leave no record on purpose.
        if !sampling(tgid) {
            count(Counter::UnmatchedReturns);
        }
        return Err(());
    };
    if stack_pointer(ctx.regs) <= record.sp {
        // The return of a nested call: the outer call is still running.
        return Ok(());
    }
    release(pid_tgid, slot);
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
    emit_alloc(ctx.as_ptr(), tgid, pid_tgid as u32, addr, record, old_addr)
}

/// Records `addr` as live and emits its `AllocEvent` with the user stack: walked here with the unwind tables
/// (`unwind.rs`) or by the kernel's frame-pointer walk, or (when the loader set a stack-copy size) as the
/// registers and a copy of the stack, unwound by the daemon.
///
/// `ctx` is the return's `pt_regs` (the context of the return probe). Every return path of an allocation
/// calls this one function, so every path reports the same record.
///
/// A record with frames only (no stack copy, no Python frames: the common case) is as long as the smallest
/// size class that holds its frames (`ALLOC_FRAME_CLASSES`): the stack is walked first, into per-CPU scratch,
/// and then copied into a record of that class. Records with a tail are whole `AllocEvent`s.
#[inline(always)]
#[allow(
    clippy::cast_ptr_alignment,
    reason = "ring-buffer records are 8-byte aligned; only the head's fields are written through the event pointer"
)]
pub fn emit_alloc(
    ctx: *mut c_void,
    tgid: u32,
    tid: u32,
    addr: u64,
    record: &InFlight,
    old_addr: u64,
) -> Result<(), ()> {
    if stack_copy_bytes() != 0 {
        return emit_whole(ctx, tgid, tid, addr, record, old_addr);
    }
    if super::python::registered(tgid).is_some() {
        return emit_whole(ctx, tgid, tid, addr, record, old_addr);
    }
    let (nframes, stack_flags) = if cost(COST_NO_STACK) {
        (0, 0)
    } else if unwind_tables() {
        unwind::walk_scratch(tgid, unwind::context_regs(ctx.cast()))
    } else {
        let Some(frames) = unwind::scratch_frames() else { return Err(()) };
        // SAFETY: the scratch frame buffer holds MAX_FRAMES frames.
        unsafe { walk_frame_pointers(ctx, frames.cast()) }
    };
    let Some(frames) = unwind::scratch_frames() else { return Err(()) };
    let entry = if cost(COST_FULL_RECORDS) || nframes > 32 {
        reserve_frames::<MAX_FRAMES>(frames)
    } else if nframes > 16 {
        reserve_frames::<32>(frames)
    } else if nframes > 8 {
        reserve_frames::<16>(frames)
    } else {
        reserve_frames::<8>(frames)
    };
    let Some(mut entry) = entry else { return Err(()) };
    let now = now_ns();
    let Ok(old_live) = track_live(tgid, addr, old_addr, now) else {
        entry.discard(0);
        return Err(());
    };
    let event = entry.as_mut_ptr().cast::<AllocEvent>();
    let flags = stack_flags | if old_live { ALLOC_FLAG_REPLACES_OLD } else { 0 };
    let header = EventHeader { kind: EventKind::Alloc as u32, pad: 0, ts_ns: now, tgid, tid };
    let old_addr = if old_live { old_addr } else { 0 };
    // SAFETY: `event` points to a reserved record of at least `ALLOC_HEAD_BYTES`, the bytes before the frames:
    // every field written here is in them.
    unsafe {
        write_alloc(event, header, addr, record.size, old_addr, record.func, bpf_get_current_comm().unwrap_or([0; 16]));
        (*event).nframes = nframes;
        (*event).flags = flags;
    }
    submit_alloc(entry);
    Ok(())
}

/// Reserves an allocation record with room for `N` frames and copies `N` frames from `frames` (the walk's
/// scratch buffer) into it; a full ring buffer is counted. Each class is its own constant-sized reservation, as
/// `bpf_ringbuf_reserve` requires.
#[inline(always)]
fn reserve_frames<const N: usize>(frames: *const u64) -> Option<RingBufBytes<'static>> {
    let mut entry = reserve_alloc(alloc_record_bytes(N))?;
    // SAFETY: the record has `8 * N` bytes after its head; `frames` holds MAX_FRAMES >= N frames in map memory.
    unsafe {
        bpf_probe_read_kernel(entry.as_mut_ptr().add(ALLOC_HEAD_BYTES).cast(), (8 * N) as u32, frames.cast());
    }
    Some(entry)
}

/// [`emit_alloc`] for a record with a tail (a stack copy, Python frames): a whole `AllocEvent`, reserved first.
#[inline(always)]
#[allow(
    clippy::cast_ptr_alignment,
    reason = "ring-buffer records are 8-byte aligned; the event and register sizes are multiples of 8 (asserted in leakprobe-common)"
)]
fn emit_whole(ctx: *mut c_void, tgid: u32, tid: u32, addr: u64, record: &InFlight, old_addr: u64) -> Result<(), ()> {
    let copy = stack_copy_bytes();
    // Reserve first: if the ring buffer is full, nothing changes in LIVE, so the kernel and the daemon
    // keep agreeing on what is live. The verifier knows `copy` (read-only data): both sizes are constants.
    let size = if copy == 0 { size_of::<AllocEvent>() } else { COPY_HEADER + copy as usize };
    // CPython processes: a `PyFrames` tail at the end of the record (see `python.rs`).
    let py = super::python::registered(tgid);
    let size = if py.is_some() { size + size_of::<PyFrames>() } else { size };
    let Some(mut entry) = reserve_alloc(size) else {
        return Err(());
    };
    let now = now_ns();
    let Ok(old_live) = track_live(tgid, addr, old_addr, now) else {
        entry.discard(0);
        return Err(());
    };
    // Ring-buffer records are 8-byte aligned, as is `AllocEvent`.
    let event = entry.as_mut_ptr().cast::<AllocEvent>();
    let mut flags = if old_live { ALLOC_FLAG_REPLACES_OLD } else { 0 };
    let header = EventHeader { kind: EventKind::Alloc as u32, pad: 0, ts_ns: now, tgid, tid };
    let old_addr = if old_live { old_addr } else { 0 };
    // SAFETY: `event` points to reserved ring-buffer memory at least the size of an `AllocEvent`; every field
    // the consumer reads is written here and below (frames beyond `nframes` are not read).
    unsafe {
        write_alloc(event, header, addr, record.size, old_addr, record.func, bpf_get_current_comm().unwrap_or([0; 16]));
        if copy == 0 {
            let frames = (&raw mut (*event).frames).cast::<u64>();
            let (nframes, stack_flags) = if cost(COST_NO_STACK) {
                (0, 0)
            } else if unwind_tables() {
                unwind::walk(tgid, unwind::context_regs(ctx.cast()), frames)
            } else {
                walk_frame_pointers(ctx, frames.cast())
            };
            (*event).nframes = nframes;
            flags |= stack_flags;
        } else {
            (*event).nframes = 0;
            flags |= ALLOC_FLAG_STACK_COPY;
            let regs = entry.as_mut_ptr().add(size_of::<AllocEvent>()).cast::<UserStack>();
            let stack = entry.as_mut_ptr().add(COPY_HEADER);
            copy_user_stack(ctx.cast(), regs, stack, copy);
        }
        if let Some(py) = &py {
            flags |= ALLOC_FLAG_PY_FRAMES;
            super::python::walk(py, tid, entry.as_mut_ptr().add(size - size_of::<PyFrames>()).cast());
        }
        (*event).flags = flags;
    }
    submit_alloc(entry);
    Ok(())
}

/// Reserves `size` bytes of ring buffer for an allocation record; a full ring buffer is counted
/// (`ringbuf_full_alloc`). Every allocation record is reserved here: the probes' and the ingest generator's.
#[inline(always)]
pub fn reserve_alloc(size: usize) -> Option<RingBufBytes<'static>> {
    let entry = EVENTS.reserve_bytes(size, 0);
    if entry.is_none() {
        count(Counter::RingBufFullAlloc);
    }
    entry
}

/// Writes every field of an allocation record but its stack (`nframes`, `frames`, `flags`, and what follows
/// the event).
///
/// # Safety
/// `event` points to writable, 8-byte aligned memory of at least `size_of::<AllocEvent>()` bytes.
#[inline(always)]
pub unsafe fn write_alloc(
    event: *mut AllocEvent,
    header: EventHeader,
    addr: u64,
    size: u64,
    old_addr: u64,
    func: u32,
    comm: [u8; 16],
) {
    // SAFETY: the caller's contract.
    unsafe {
        (*event).header = header;
        (*event).addr = addr;
        (*event).size = size;
        (*event).old_addr = old_addr;
        (*event).func = func;
        (*event).pad = 0;
        (*event).comm = comm;
    }
}

/// Submits an allocation record and counts it (`allocs`).
#[inline(always)]
pub fn submit_alloc(entry: RingBufBytes<'static>) {
    entry.submit(submit_flags());
    count(Counter::Allocs);
}

/// Bytes before the stack copy in a record with one: the event and the registers.
const COPY_HEADER: usize = size_of::<AllocEvent>() + size_of::<UserStack>();

/// Marks `addr` live (and `old_addr` gone, for a moving realloc). Returns whether `old_addr` was live; fails
/// (counted) when the live map is full.
#[inline(always)]
fn track_live(tgid: u32, addr: u64, old_addr: u64, now: u64) -> Result<bool, ()> {
    if cost(COST_NO_LIVE) {
        return Ok(false);
    }
    let old_key = LiveKey { tgid, pad: 0, addr: old_addr };
    let old_live = old_addr != 0 && LIVE.get_ptr(old_key).is_some();
    let filter = live_filter_on();
    // Counted up before the insert: a slot is never 0 while its address is live.
    if filter {
        live_filter_add(tgid, addr, 1);
    }
    if LIVE.insert(LiveKey { tgid, pad: 0, addr }, now, 0).is_err() {
        if filter {
            live_filter_add(tgid, addr, u64::MAX);
        }
        count(Counter::LiveMapFull);
        return Err(());
    }
    if old_live && old_addr != addr && LIVE.remove(old_key).is_ok() && filter {
        live_filter_add(tgid, old_addr, u64::MAX);
    }
    Ok(old_live)
}

/// The kernel's frame-pointer walk into `frames` (room for `MAX_FRAMES`): the frame count and `ALLOC_FLAG_*` bits.
///
/// # Safety
/// `frames` points to writable memory of `MAX_FRAMES` `u64`s.
#[inline(always)]
unsafe fn walk_frame_pointers(ctx: *mut c_void, frames: *mut c_void) -> (u32, u32) {
    // SAFETY: the helper writes at most the given size into `frames`.
    let bytes = unsafe { bpf_get_stack(ctx, frames, (MAX_FRAMES * 8) as u32, u64::from(BPF_F_USER_STACK)) };
    // A negative return is an error; a non-negative one is at most MAX_FRAMES * 8 bytes.
    let Ok(bytes) = u32::try_from(bytes) else {
        count(Counter::StackErrors);
        return (0, ALLOC_FLAG_STACK_ERROR);
    };
    let nframes = bytes / 8;
    if nframes as usize >= MAX_FRAMES {
        count(Counter::StackTruncated);
        return (nframes, ALLOC_FLAG_STACK_TRUNCATED);
    }
    (nframes, 0)
}

/// Writes the user registers to `regs` and copies up to `copy` bytes of the user stack from its stack pointer
/// to `stack`, a page at a time; a page that crosses the end of the stack is retried up to its page boundary.
///
/// # Safety
/// `regs` points to a writable `UserStack` and `stack` to `copy` writable bytes; `copy` is a multiple of
/// `STACK_COPY_CHUNK` of at most `MAX_STACK_COPY_BYTES`.
#[inline(always)]
unsafe fn copy_user_stack(ctx: *const pt_regs, regs: *mut UserStack, stack: *mut u8, copy: u32) {
    let (ip, sp, bp, lr) = user_registers(ctx);
    let chunks = copy / STACK_COPY_CHUNK;
    let mut len = 0u32;
    let mut short = false;
    for i in 0..MAX_STACK_COPY_CHUNKS {
        if i >= chunks {
            break;
        }
        let offset = i * STACK_COPY_CHUNK;
        let src = sp.wrapping_add(u64::from(offset));
        // SAFETY: `offset + STACK_COPY_CHUNK <= copy`: the destination is inside the reservation; the helper
        // reads user memory and fails cleanly on an unmapped address.
        let dst = unsafe { stack.add(offset as usize) }.cast::<c_void>();
        if unsafe { read_user_bytes(dst, STACK_COPY_CHUNK, src as *const c_void) } == 0 {
            len += STACK_COPY_CHUNK;
            continue;
        }
        // In 1..=STACK_COPY_CHUNK: the bytes left before the page boundary.
        let tail = STACK_COPY_CHUNK - (src as u32 & (STACK_COPY_CHUNK - 1));
        // SAFETY: as above, `tail <= STACK_COPY_CHUNK`.
        if tail < STACK_COPY_CHUNK && unsafe { read_user_bytes(dst, tail, src as *const c_void) } == 0 {
            len += tail;
        }
        short = true;
        break;
    }
    if len == 0 {
        count(Counter::StackCopyErrors);
    } else if short {
        count(Counter::StackCopyShort);
    }
    // SAFETY: `regs` is inside the reservation (the caller's contract).
    unsafe { *regs = UserStack { ip, sp, bp, lr, len, pad: 0 } };
}

/// Instruction, stack, frame pointers and link register of the user context.
#[inline(always)]
fn user_registers(regs: *const pt_regs) -> (u64, u64, u64, u64) {
    // SAFETY: `regs` is the program's context; direct context reads are checked by the verifier.
    #[cfg(bpf_target_arch = "x86_64")]
    let values = unsafe { ((*regs).rip, (*regs).rsp, (*regs).rbp, 0) };
    #[cfg(bpf_target_arch = "aarch64")]
    let values = unsafe { ((*regs).pc, (*regs).sp, (*regs).regs[29], (*regs).regs[30]) };
    values
}
