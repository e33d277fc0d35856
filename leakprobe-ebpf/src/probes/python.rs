//! Python frames: for a process the daemon registered in `PY_PROCS`, walks the interpreter's frame chain of
//! the current thread (bounded) and records each frame's code object, instruction and mark byte into a
//! [`PyFrames`] tail. The daemon resolves them to function, file and line and splices them into the native
//! stack.
//!
//! Each frame is one `bpf_probe_read_user` of a small window (`PyProc::frame_window`, at most
//! `PY_WINDOW_BYTES`) into per-CPU scratch ([`PY_SCRATCH`]), and each thread state visited in the
//! interpreter's list one more: the helper call, not the bytes, is what costs (docs/python.md, "Cost"). The
//! fields come out of the window at offsets masked to it, so the verifier bounds every load whatever the
//! daemon wrote. A read that fails ends the walk (flagged and counted); it never faults, and a frame is
//! taken from one copy, never from reads made at different times. The loop has one exit per kind, and
//! the masks apply to offsets that are the same at every iteration: the verifier sees few distinct states
//! per iteration (a mask built from a varying value made the session program too complex to verify).

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_probe_read_user, generated::bpf_probe_read_user as read_user_bytes};
use leakprobe_common::{
    Counter, MAX_PY_FRAMES, MAX_PY_THREADS, NO_FIELD, PY_FRAMES_NO_THREAD, PY_FRAMES_READ_ERROR, PY_FRAMES_TRUNCATED,
    PY_TSTATE_CURRENT, PY_WINDOW_BYTES, PyFrame, PyFrames, PyProc,
};

use crate::maps::{PY_PROCS, PY_SCRATCH, count};

/// The scratch a window is read into.
type Window = [u64; PY_WINDOW_BYTES as usize / 8];

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

/// Copies the `len` bytes at `base + start` (one frame's or thread state's window) into `window`; false when
/// unreadable.
#[inline(always)]
fn read_window(window: *mut Window, base: u64, start: u32, len: u32) -> bool {
    let src = base.wrapping_add(u64::from(start));
    // SAFETY: `window` is the per-CPU scratch, `PY_WINDOW_BYTES` long, and the mask keeps `len` below that;
    // the helper fails cleanly on a bad source address.
    unsafe { read_user_bytes(window.cast::<c_void>(), len & (PY_WINDOW_BYTES - 1), src as *const c_void) == 0 }
}

/// The word of field `offset` in a window read from `start` (`PyProc::with_windows` makes it a multiple of 8
/// inside the window; the mask keeps any value inside the scratch).
#[inline(always)]
fn word(window: &Window, offset: u32, start: u32) -> u64 {
    window[((offset.wrapping_sub(start) >> 3) & (PY_WINDOW_BYTES / 8 - 1)) as usize]
}

/// The byte of field `offset` in a window read from `start`.
#[inline(always)]
fn byte(window: &Window, offset: u32, start: u32) -> u8 {
    let bytes = window.as_ptr().cast::<u8>();
    // SAFETY: the mask keeps the index inside the `PY_WINDOW_BYTES` of the scratch.
    unsafe { *bytes.add((offset.wrapping_sub(start) & (PY_WINDOW_BYTES - 1)) as usize) }
}

/// The thread state of thread `tid`'s pointer to its innermost frame (or to the `_PyCFrame` holding it), or
/// `Ok(None)` when the interpreter has no thread state for it.
#[inline(always)]
fn frame_holder(proc: &PyProc, tid: u32, window: *mut Window) -> Result<Option<u64>, ()> {
    if proc.tstate_mode == PY_TSTATE_CURRENT {
        let tstate = field(proc.runtime, proc.tstate_current)?;
        return if tstate == 0 { Ok(None) } else { field(tstate, proc.tstate_frame).map(Some) };
    }
    let interp = field(proc.runtime, proc.interpreters_head)?;
    let mut tstate = field(interp, proc.threads_head)?;
    for _ in 0..MAX_PY_THREADS {
        if tstate == 0 || !read_window(window, tstate, proc.tstate_window, proc.tstate_window_len) {
            return if tstate == 0 { Ok(None) } else { Err(()) };
        }
        // SAFETY: the scratch holds the window just read.
        let state = unsafe { &*window };
        if word(state, proc.tstate_native_thread_id, proc.tstate_window) == u64::from(tid) {
            return Ok(Some(word(state, proc.tstate_frame, proc.tstate_window)));
        }
        tstate = word(state, proc.tstate_next, proc.tstate_window);
    }
    Ok(None)
}

/// The innermost frame of thread `tid`: 0 with `PY_FRAMES_*` flags when there is none.
#[inline(always)]
fn innermost(proc: &PyProc, tid: u32, window: *mut Window) -> (u64, u32) {
    let holder = match frame_holder(proc, tid, window) {
        Ok(None) => return (0, PY_FRAMES_NO_THREAD),
        Ok(Some(holder)) => Ok(holder),
        Err(()) => Err(()),
    };
    let frame = if proc.cframe_current_frame == NO_FIELD {
        holder
    } else {
        holder.and_then(|cframe| field(cframe, proc.cframe_current_frame))
    };
    frame.map_or((0, PY_FRAMES_READ_ERROR), |frame| (frame, 0))
}

/// Fills `out` with the Python frames of thread `tid` (innermost first), and counts the outcome.
///
/// # Safety
/// `out` points to writable memory of a `PyFrames` (ring-buffer memory reserved by the caller).
#[inline(always)]
pub unsafe fn walk(proc: &PyProc, tid: u32, out: *mut PyFrames) {
    let Some(window) = PY_SCRATCH.get_ptr_mut(0) else {
        count(Counter::PyStackMisses);
        // SAFETY: the caller's contract.
        unsafe {
            (*out).nframes = 0;
            (*out).flags = PY_FRAMES_READ_ERROR;
        }
        return;
    };
    let (mut frame, mut flags) = innermost(proc, tid, window);
    let start = proc.frame_window;
    let mut nframes = 0u32;
    for i in 0..MAX_PY_FRAMES {
        if frame == 0 {
            break;
        }
        if !read_window(window, frame, start, proc.frame_window_len) {
            flags |= PY_FRAMES_READ_ERROR;
            break;
        }
        // SAFETY: the scratch holds the frame's window just read; `i < MAX_PY_FRAMES`: every destination is
        // inside the caller's reservation.
        unsafe {
            let fields = &*window;
            (*out).frames[i] =
                PyFrame { code: word(fields, proc.frame_code, start), instr: word(fields, proc.frame_instr, start) };
            (*out).marks[i] = if proc.frame_mark == NO_FIELD { 0 } else { byte(fields, proc.frame_mark, start) };
            frame = word(fields, proc.frame_previous, start);
        }
        nframes += 1;
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
