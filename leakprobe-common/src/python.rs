//! Python frames: what the daemon tells the probes about an interpreter ([`PyProc`], in
//! [`crate::maps::PY_PROCS`]) and what the probes record of its frame chain ([`PyFrames`], the tail of an
//! allocation or fault record flagged [`crate::ALLOC_FLAG_PY_FRAMES`] / [`crate::FAULT_FLAG_PY_FRAMES`]).

use crate::NO_FIELD;

/// Python frames recorded per event at most; deeper chains are cut (flagged [`PY_FRAMES_TRUNCATED`]).
pub const MAX_PY_FRAMES: usize = 32;
const MAX_PY_FRAMES_U32: u32 = 32;
const _: () = assert!(MAX_PY_FRAMES_U32 as usize == MAX_PY_FRAMES);
/// Thread states visited at most when looking for the current thread's in the interpreter's list.
pub const MAX_PY_THREADS: u32 = 32;
/// Bytes of a frame or thread state read at once at most (a window holding every field the walk needs, see
/// [`PyProc::with_windows`]); the probes' per-CPU scratch holds this many. A power of two: the probes mask
/// offsets inside the window with `PY_WINDOW_BYTES - 1`.
pub const PY_WINDOW_BYTES: u32 = 256;
/// Interpreters (processes) registered at once in [`crate::maps::PY_PROCS`].
pub const PY_PROCS_MAX_ENTRIES: u32 = 4096;

/// [`PyProc::tstate_mode`]: the current thread state is the pointer at `runtime + tstate_current` (the GIL
/// holder, 3.10: right for object allocations, which need the GIL).
pub const PY_TSTATE_CURRENT: u32 = 1;
/// [`PyProc::tstate_mode`]: the current thread state is the one in the main interpreter's list whose native
/// thread id is the allocating thread's (3.11+).
pub const PY_TSTATE_THREAD_LIST: u32 = 2;

/// `owner` of a 3.12+ `_PyInterpreterFrame` that is a shim owned by the C stack: the frame below it was
/// entered from C (the end of one `_PyEval_EvalFrameDefault` call's frames).
pub const PY_FRAME_OWNED_BY_CSTACK: u8 = 3;

/// Where the probes find the current Python frame chain of one process: addresses in its memory and byte
/// offsets of the fields on the way, for its interpreter version. [`NO_FIELD`] marks an offset unused.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PyProc {
    /// Address of `_PyRuntime` in the process.
    pub runtime: u64,
    /// [`PY_TSTATE_CURRENT`] or [`PY_TSTATE_THREAD_LIST`].
    pub tstate_mode: u32,
    /// `_PyRuntimeState.gilstate.tstate_current` (mode current).
    pub tstate_current: u32,
    /// `_PyRuntimeState.interpreters.head` (mode thread list).
    pub interpreters_head: u32,
    /// `PyInterpreterState.threads.head` (mode thread list).
    pub threads_head: u32,
    /// `PyThreadState.next` (mode thread list).
    pub tstate_next: u32,
    /// `PyThreadState.native_thread_id` (mode thread list).
    pub tstate_native_thread_id: u32,
    /// The pointer in `PyThreadState` to the innermost frame (3.10 `frame`, 3.13 `current_frame`), or to the
    /// `_PyCFrame` holding it (3.11, 3.12 `cframe`).
    pub tstate_frame: u32,
    /// `_PyCFrame.current_frame`, or [`NO_FIELD`] when `tstate_frame` leads to the frame itself.
    pub cframe_current_frame: u32,
    /// The frame's caller (`previous`; 3.10 `f_back`).
    pub frame_previous: u32,
    /// The frame's code object (`f_code`; 3.13 `f_executable`).
    pub frame_code: u32,
    /// The frame's instruction (`prev_instr`; 3.13 `instr_ptr`; 3.10 the `int` `f_lasti`).
    pub frame_instr: u32,
    /// A byte of the frame recorded as its mark: 3.11 `is_entry`, 3.12+ `owner` (a shim owned by the C
    /// stack ends an evaluation call); [`NO_FIELD`]: none.
    pub frame_mark: u32,
    /// The probes read each frame once: `frame_window_len` bytes at `frame + frame_window`, which hold
    /// `frame_previous`, `frame_code`, `frame_instr` and `frame_mark` ([`PyProc::with_windows`]).
    pub frame_window: u32,
    pub frame_window_len: u32,
    /// Likewise each thread state visited (mode thread list): `tstate_window_len` bytes at
    /// `tstate + tstate_window` hold `tstate_next`, `tstate_native_thread_id` and `tstate_frame`.
    pub tstate_window: u32,
    pub tstate_window_len: u32,
}

impl PyProc {
    /// Nothing registered.
    pub const NONE: Self = Self {
        runtime: 0,
        tstate_mode: 0,
        tstate_current: NO_FIELD,
        interpreters_head: NO_FIELD,
        threads_head: NO_FIELD,
        tstate_next: NO_FIELD,
        tstate_native_thread_id: NO_FIELD,
        tstate_frame: NO_FIELD,
        cframe_current_frame: NO_FIELD,
        frame_previous: NO_FIELD,
        frame_code: NO_FIELD,
        frame_instr: NO_FIELD,
        frame_mark: NO_FIELD,
        frame_window: 0,
        frame_window_len: 0,
        tstate_window: 0,
        tstate_window_len: 0,
    };

    /// These offsets with the windows the probes read set: each window starts at its lowest field (rounded
    /// down to 8) and ends after its highest (8-byte pointers; the mark is one byte). `None` when a window's
    /// fields spread over [`PY_WINDOW_BYTES`] or more (the probes mask the length with `PY_WINDOW_BYTES - 1`), or a pointer field is not 8-byte aligned (the probes
    /// take pointers from the window as whole words).
    #[must_use]
    pub const fn with_windows(self) -> Option<Self> {
        let Some((frame_window, frame_window_len)) =
            window([self.frame_previous, self.frame_code, self.frame_instr], self.frame_mark)
        else {
            return None;
        };
        let (tstate_window, tstate_window_len) = if self.tstate_mode == PY_TSTATE_THREAD_LIST {
            match window([self.tstate_next, self.tstate_native_thread_id, self.tstate_frame], NO_FIELD) {
                Some(window) => window,
                None => return None,
            }
        } else {
            (0, 0)
        };
        Some(Self { frame_window, frame_window_len, tstate_window, tstate_window_len, ..self })
    }
}

/// The (start, length) of the window holding the 8-byte fields at `words` and the byte at `byte`
/// ([`NO_FIELD`]: none); see [`PyProc::with_windows`].
const fn window(words: [u32; 3], byte: u32) -> Option<(u32, u32)> {
    let mut low = u32::MAX;
    let mut end = 0;
    let mut i = 0;
    while i < words.len() {
        let word = words[i];
        if word == NO_FIELD || !word.is_multiple_of(8) {
            return None;
        }
        if word < low {
            low = word;
        }
        if word.saturating_add(8) > end {
            end = word.saturating_add(8);
        }
        i += 1;
    }
    if byte != NO_FIELD {
        if byte < low {
            low = byte;
        }
        if byte.saturating_add(1) > end {
            end = byte.saturating_add(1);
        }
    }
    let start = low - low % 8;
    if end - start >= PY_WINDOW_BYTES { None } else { Some((start, end - start)) }
}

/// `flags` bit of [`crate::FaultEvent`] and [`crate::MapEvent`]: the record ends with a [`PyFrames`].
pub const FAULT_FLAG_PY_FRAMES: u32 = 1 << 2;

/// One Python frame as recorded: raw pointers into the process, resolved by the daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyFrame {
    /// The code object.
    pub code: u64,
    /// The instruction pointer (3.10: `f_lasti` in the low 32 bits).
    pub instr: u64,
}

/// [`PyFrames::flags`] bit: the chain was longer than [`MAX_PY_FRAMES`] and was cut.
pub const PY_FRAMES_TRUNCATED: u32 = 1;
/// [`PyFrames::flags`] bit: no thread state of the allocating thread was found (no Python frames: a thread
/// the interpreter does not know, or one beyond [`MAX_PY_THREADS`]).
pub const PY_FRAMES_NO_THREAD: u32 = 1 << 1;
/// [`PyFrames::flags`] bit: a read of the process's memory failed on the way.
pub const PY_FRAMES_READ_ERROR: u32 = 1 << 2;

/// The Python frames of the thread at the event, innermost first: the tail (last bytes) of a record flagged
/// with Python frames. Shim frames (3.12+) are recorded like the others; their mark tells them apart.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PyFrames {
    /// Valid entries of `frames` and `marks`.
    pub nframes: u32,
    /// `PY_FRAMES_*` bits.
    pub flags: u32,
    /// Per frame, the byte at [`PyProc::frame_mark`] (0 without one).
    pub marks: [u8; MAX_PY_FRAMES],
    pub frames: [PyFrame; MAX_PY_FRAMES],
}

impl PyFrames {
    /// No frames.
    pub const EMPTY: Self = Self {
        nframes: 0,
        flags: 0,
        marks: [0; MAX_PY_FRAMES],
        frames: [PyFrame { code: 0, instr: 0 }; MAX_PY_FRAMES],
    };
}

const _: () = assert!(size_of::<PyProc>() == 8 + 16 * 4);
const _: () = assert!(size_of::<PyFrame>() == 16);
const _: () = assert!(size_of::<PyFrames>() == 8 + 17 * MAX_PY_FRAMES);
const _: () = assert!(size_of::<PyFrames>().is_multiple_of(8));

/// The [`PyFrames`] tail of a record whose flags say it has one (`has_tail`); `None` otherwise, or when the
/// record is too short to hold one (a malformed record: no frames rather than garbage).
pub fn decode_py_frames(record: &[u8], has_tail: bool) -> Option<PyFrames> {
    let size = size_of::<PyFrames>();
    if !has_tail || record.len() < size {
        return None;
    }
    let tail = &record[record.len() - size..];
    // SAFETY: `tail` holds `size` bytes; `PyFrames` is plain integers, valid for every bit pattern;
    // `read_unaligned` has no alignment needs.
    let mut frames = unsafe { tail.as_ptr().cast::<PyFrames>().read_unaligned() };
    if frames.nframes as usize > MAX_PY_FRAMES {
        frames.nframes = MAX_PY_FRAMES_U32;
    }
    Some(frames)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    #[test]
    fn tail_round_trip() {
        let mut frames = PyFrames::EMPTY;
        frames.nframes = 2;
        frames.marks[1] = 1;
        frames.frames[0] = PyFrame { code: 0x7f00_0000_1000, instr: 0x7f00_0000_10c8 };
        frames.frames[1] = PyFrame { code: 0x7f00_0000_2000, instr: 0x7f00_0000_20d0 };
        let mut record: Vec<u8> = std::vec![0xaa; 40];
        // SAFETY: reading the bytes of a plain `#[repr(C)]` value with explicit padding.
        let bytes =
            unsafe { core::slice::from_raw_parts(core::ptr::from_ref(&frames).cast::<u8>(), size_of::<PyFrames>()) };
        record.extend_from_slice(bytes);
        assert_eq!(decode_py_frames(&record, true), Some(frames));
        assert_eq!(decode_py_frames(&record, false), None);
        assert_eq!(decode_py_frames(&record[..100], true), None);
    }

    #[test]
    fn windows_hold_their_fields() {
        // 3.11's frame: previous 48, code 32, prev_instr 56, is_entry 68; thread state: next 8, cframe 56,
        // native_thread_id 160.
        let proc = PyProc {
            tstate_mode: PY_TSTATE_THREAD_LIST,
            tstate_next: 8,
            tstate_native_thread_id: 160,
            tstate_frame: 56,
            frame_previous: 48,
            frame_code: 32,
            frame_instr: 56,
            frame_mark: 68,
            ..PyProc::NONE
        }
        .with_windows()
        .expect("fits");
        assert_eq!((proc.frame_window, proc.frame_window_len), (32, 37));
        assert_eq!((proc.tstate_window, proc.tstate_window_len), (8, 160));
        // 3.10's frame object: f_back 24, f_code 32, f_lasti 96 (read as a word); the GIL holder's state.
        let proc = PyProc {
            tstate_mode: PY_TSTATE_CURRENT,
            tstate_frame: 24,
            frame_previous: 24,
            frame_code: 32,
            frame_instr: 96,
            ..PyProc::NONE
        }
        .with_windows()
        .expect("fits");
        assert_eq!((proc.frame_window, proc.frame_window_len), (24, 80));
        assert_eq!((proc.tstate_window, proc.tstate_window_len), (0, 0));
    }

    #[test]
    fn windows_refuse_what_one_read_cannot_hold() {
        let fits = PyProc { frame_previous: 8, frame_code: 0, frame_instr: 56, frame_mark: 70, ..PyProc::NONE };
        assert!(fits.with_windows().is_some());
        assert_eq!(PyProc { frame_instr: 248, ..fits }.with_windows(), None);
        assert!(PyProc { frame_instr: 240, frame_mark: NO_FIELD, ..fits }.with_windows().is_some());
        assert_eq!(PyProc { frame_mark: 300, ..fits }.with_windows(), None);
        assert_eq!(PyProc { frame_code: 4, ..fits }.with_windows(), None);
        assert_eq!(PyProc { frame_code: NO_FIELD, ..fits }.with_windows(), None);
        assert_eq!(PyProc { frame_instr: u32::MAX - 7, ..fits }.with_windows(), None);
        assert_eq!(PyProc { frame_mark: u32::MAX - 1, ..fits }.with_windows(), None);
        let list = PyProc { tstate_mode: PY_TSTATE_THREAD_LIST, tstate_next: 8, tstate_frame: 56, ..fits };
        assert_eq!(PyProc { tstate_native_thread_id: 4096, ..list }.with_windows(), None);
        assert!(PyProc { tstate_native_thread_id: 160, ..list }.with_windows().is_some());
    }

    #[test]
    fn frame_count_is_bounded() {
        let mut frames = PyFrames::EMPTY;
        frames.nframes = 1000;
        // SAFETY: as above.
        let bytes =
            unsafe { core::slice::from_raw_parts(core::ptr::from_ref(&frames).cast::<u8>(), size_of::<PyFrames>()) };
        assert_eq!(decode_py_frames(bytes, true).map(|f| f.nframes), Some(MAX_PY_FRAMES_U32));
    }
}
