//! Python frames: for a process the daemon registered in `PY_PROCS`, walks the interpreter's frame chain of
//! the current thread (bounded) and records each frame's code object, instruction and mark byte into a
//! [`PyFrames`] tail. The daemon resolves them to function, file and line and splices them into the native
//! stack.
//!
//! Every read goes through `bpf_probe_read_user`: a wrong offset or a torn chain ends the walk (flagged and
//! counted), it never faults. Values go straight to the ring buffer, not through registers, and the loop
//! has one exit per kind: the verifier then sees few distinct states per iteration (a mask built in a
//! register made the session program too complex to verify).

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_probe_read_user, generated::bpf_probe_read_user as read_user_bytes};
use leakprobe_common::{
    Counter, MAX_PY_FRAMES, MAX_PY_THREADS, NO_FIELD, PY_FRAMES_NO_THREAD, PY_FRAMES_READ_ERROR, PY_FRAMES_TRUNCATED,
    PY_TSTATE_CURRENT, PyFrames, PyProc,
};

use crate::maps::{PY_PROCS, count};

/// The registered interpreter of process `tgid`, if any: a copy, so the walk does not hold a map pointer.
#[inline(always)]
pub fn registered(tgid: u32) -> Option<PyProc> {
    // SAFETY: a valid map value pointer, copied out at once.
    PY_PROCS.get_ptr(tgid).map(|proc| unsafe { *proc })
}

#[inline(always)]
fn field(base: u64, offset: u32) -> Result<u64, ()> {
    if offset == NO_FIELD || base == 0 {
        return Err(());
    }
    // SAFETY: the helper reads user memory and fails cleanly on a bad address.
    unsafe { bpf_probe_read_user(base.wrapping_add(u64::from(offset)) as *const u64) }.map_err(|_| ())
}

/// Copies `len` bytes of user memory at `base + offset` to `dst`; false when unreadable.
///
/// # Safety
/// `dst` points to `len` writable bytes.
#[inline(always)]
unsafe fn copy_field(dst: *mut u8, len: u32, base: u64, offset: u32) -> bool {
    let src = base.wrapping_add(u64::from(offset));
    // SAFETY: the caller's contract for `dst`; the helper fails cleanly on a bad source address.
    unsafe { read_user_bytes(dst.cast::<c_void>(), len, src as *const c_void) == 0 }
}

/// The thread state of thread `tid`, or `Ok(0)` when the interpreter has none for it.
#[inline(always)]
fn thread_state(proc: &PyProc, tid: u32) -> Result<u64, ()> {
    if proc.tstate_mode == PY_TSTATE_CURRENT {
        return field(proc.runtime, proc.tstate_current);
    }
    let interp = field(proc.runtime, proc.interpreters_head)?;
    let mut tstate = field(interp, proc.threads_head)?;
    for _ in 0..MAX_PY_THREADS {
        if tstate == 0 || field(tstate, proc.tstate_native_thread_id)? == u64::from(tid) {
            return Ok(tstate);
        }
        tstate = field(tstate, proc.tstate_next)?;
    }
    Ok(0)
}

/// The innermost frame of thread `tid`: 0 with `PY_FRAMES_*` flags when there is none.
#[inline(always)]
fn innermost(proc: &PyProc, tid: u32) -> (u64, u32) {
    let tstate = match thread_state(proc, tid) {
        Ok(0) => return (0, PY_FRAMES_NO_THREAD),
        Ok(tstate) => tstate,
        Err(()) => return (0, PY_FRAMES_READ_ERROR),
    };
    let mut frame = field(tstate, proc.tstate_frame);
    if proc.cframe_current_frame != NO_FIELD {
        frame = frame.and_then(|cframe| field(cframe, proc.cframe_current_frame));
    }
    frame.map_or((0, PY_FRAMES_READ_ERROR), |frame| (frame, 0))
}

/// Fills `out` with the Python frames of thread `tid` (innermost first), and counts the outcome.
///
/// # Safety
/// `out` points to writable memory of a `PyFrames` (ring-buffer memory reserved by the caller).
#[inline(always)]
pub unsafe fn walk(proc: &PyProc, tid: u32, out: *mut PyFrames) {
    let (mut frame, mut flags) = innermost(proc, tid);
    let mut nframes = 0u32;
    for i in 0..MAX_PY_FRAMES {
        if frame == 0 {
            break;
        }
        // SAFETY: `i < MAX_PY_FRAMES`: every destination is inside the caller's reservation.
        let read = unsafe {
            let slot = &raw mut (*out).frames[i];
            let mark = &raw mut (*out).marks[i];
            *mark = 0;
            if proc.frame_mark != NO_FIELD {
                let _ = copy_field(mark, 1, frame, proc.frame_mark);
            }
            copy_field((&raw mut (*slot).code).cast(), 8, frame, proc.frame_code)
                && copy_field((&raw mut (*slot).instr).cast(), 8, frame, proc.frame_instr)
        };
        let Ok(previous) = field(frame, proc.frame_previous).and_then(|p| if read { Ok(p) } else { Err(()) }) else {
            flags |= PY_FRAMES_READ_ERROR;
            break;
        };
        nframes += 1;
        frame = previous;
    }
    if frame != 0 && nframes as usize == MAX_PY_FRAMES {
        flags |= PY_FRAMES_TRUNCATED;
        count(Counter::PyStackTruncated);
    }
    count(if nframes > 0 { Counter::PyStacks } else { Counter::PyStackMisses });
    // SAFETY: the caller's contract.
    unsafe {
        (*out).nframes = nframes;
        (*out).flags = flags;
    }
}
