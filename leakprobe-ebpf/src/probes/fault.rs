//! Tier 0: write faults of user pages, on `exceptions/page_fault_user`.
//!
//! Every write fault is counted; a Poisson sample over faulting bytes (each fault one base page) is reported
//! with the user stack that touched the page. The cost is one short program run per fault (memory growth), and
//! a stack capture only per sampled fault: nothing per `malloc`.
//!
//! In a registered `CPython` process, a sampled fault's record ends with the faulting thread's Python frames
//! ([`PyFrames`], walked as for an allocation, see `python.rs`): the tracepoint runs in the faulting thread,
//! so the current task's pid and the user memory it reads are the thread's own.

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_F_USER_STACK,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_get_stack},
    macros::tracepoint,
    programs::TracePointContext,
};
use leakprobe_common::{
    Countdown, Counter, EventHeader, EventKind, FAULT_FLAG_PY_FRAMES, FAULT_FLAG_STACK_ERROR,
    FAULT_FLAG_STACK_TRUNCATED, FAULT_PAGE_BYTES, FaultEvent, MAX_FRAMES, NO_FIELD, PF_INSTR, PF_WRITE, PyFrames,
};

use super::unwind;
use crate::maps::{EVENTS, count, fault_fields, fault_interval, now_ns, sample, submit_flags, traced, unwind_tables};

#[tracepoint]
pub fn page_fault_user(ctx: TracePointContext) -> u32 {
    let _ = try_page_fault_user(&ctx);
    0
}

#[allow(
    clippy::cast_ptr_alignment,
    reason = "ring-buffer records are 8-byte aligned; `FaultEvent` is 8-byte aligned and a multiple of 8 in size (asserted in leakprobe-common), so is the `PyFrames` after it"
)]
fn try_page_fault_user(ctx: &TracePointContext) -> Result<(), ()> {
    let fields = fault_fields();
    if fields.error_code == NO_FIELD || fields.address == NO_FIELD {
        return Err(());
    }
    // SAFETY: reads the record through the helper at an offset the loader read from the format file.
    let error_code = unsafe { ctx.read_at::<u64>(fields.error_code as usize) }.map_err(|_| ())?;
    if error_code & PF_WRITE == 0 || error_code & PF_INSTR != 0 {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !traced(tgid) {
        return Ok(());
    }
    count(Counter::Faults);
    if !sample(Countdown::Fault, fault_interval(), FAULT_PAGE_BYTES) {
        return Ok(());
    }
    // SAFETY: as above.
    let addr = unsafe { ctx.read_at::<u64>(fields.address as usize) }.map_err(|_| ())?;
    let py = super::python::registered(tgid);
    let size = if py.is_some() { size_of::<FaultEvent>() + size_of::<PyFrames>() } else { size_of::<FaultEvent>() };
    let Some(mut entry) = EVENTS.reserve_bytes(size, 0) else {
        count(Counter::RingBufFullFault);
        return Err(());
    };
    let event = entry.as_mut_ptr().cast::<FaultEvent>();
    // SAFETY: `event` points to reserved ring-buffer memory at least the size of a `FaultEvent` (8-byte aligned,
    // as ring-buffer records are); every field the consumer reads is written below (frames beyond `nframes` are
    // not read), and the `PyFrames` tail when there is one.
    unsafe {
        (*event).header =
            EventHeader { kind: EventKind::Fault as u32, pad: 0, ts_ns: now_ns(), tgid, tid: pid_tgid as u32 };
        (*event).addr = addr;
        (*event).error_code = error_code;
        (*event).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        let (nframes, mut flags) = user_stack(ctx, tgid, &raw mut (*event).frames);
        (*event).nframes = nframes;
        if let Some(py) = &py {
            flags |= FAULT_FLAG_PY_FRAMES;
            super::python::walk(py, pid_tgid as u32, entry.as_mut_ptr().add(size_of::<FaultEvent>()).cast());
        }
        (*event).flags = flags;
    }
    entry.submit(submit_flags());
    count(Counter::FaultsSampled);
    Ok(())
}

/// Writes the current thread's user stack (of process `tgid`) into `frames`: walked with the unwind tables from
/// the registers the thread entered the kernel with, or by the kernel's frame-pointer walk. Returns the number
/// of frames and the `FAULT_FLAG_*` bits, counting errors and cut stacks.
///
/// # Safety
/// `frames` must point to writable memory of `MAX_FRAMES` entries (ring-buffer memory reserved by the caller).
#[inline(always)]
pub(super) unsafe fn user_stack(ctx: &TracePointContext, tgid: u32, frames: *mut [u64; MAX_FRAMES]) -> (u32, u32) {
    if unwind_tables() {
        let Some(regs) = unwind::task_regs() else {
            count(Counter::StackErrors);
            return (0, FAULT_FLAG_STACK_ERROR);
        };
        // SAFETY: the caller's contract.
        return unsafe { unwind::walk(tgid, regs, frames.cast()) };
    }
    // SAFETY: the caller guarantees `frames` holds MAX_FRAMES entries; the helper writes at most that many bytes.
    let bytes = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            frames.cast::<core::ffi::c_void>(),
            (MAX_FRAMES * 8) as u32,
            u64::from(BPF_F_USER_STACK),
        )
    };
    let mut flags = 0;
    let nframes = if let Ok(bytes) = u32::try_from(bytes) {
        bytes / 8
    } else {
        count(Counter::StackErrors);
        flags |= FAULT_FLAG_STACK_ERROR;
        0
    };
    if nframes as usize >= MAX_FRAMES {
        count(Counter::StackTruncated);
        flags |= FAULT_FLAG_STACK_TRUNCATED;
    }
    (nframes, flags)
}
