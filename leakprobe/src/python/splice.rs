//! Resolution of recorded Python frames and their splicing into native stacks.

use std::{
    collections::HashMap,
    fs,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use leakprobe_common::{MAX_FRAMES, PY_FRAME_OWNED_BY_CSTACK, PY_FRAMES_READ_ERROR, PyFrames};

use super::{
    FileCache, Interpreter,
    code::{self, Code},
    layout::Mark,
    names::{self, PyFrameName},
};

/// Frames (code object, instruction) remembered per process; cleared when full.
const MAX_FRAMES_PER_PROCESS: usize = 16_384;

/// Counters of the splicing, for `status` and metrics (`daemon_counters`, see `docs/python.md`). Every record
/// with a Python-frames tail counts in `stacks` and in exactly one of `empty`, `no_interpreter`, `spliced`,
/// `no_eval_frame` and `frames_left`; `torn` and `cut` count alongside.
#[derive(Debug, Default)]
pub struct SpliceStats {
    /// Records (allocations and sampled faults) that came with a Python-frames tail.
    pub stacks: AtomicU64,
    /// Of those, with no Python frame: the thread had no thread state or frame (not running Python), or the
    /// first read failed.
    pub empty: AtomicU64,
    /// Whose process the daemon could not read as an interpreter: native frames only.
    pub no_interpreter: AtomicU64,
    /// Whose every Python frame was placed at its evaluation-loop frame.
    pub spliced: AtomicU64,
    /// With Python frames but no evaluation-loop frame among the native frames: appended outermost.
    pub no_eval_frame: AtomicU64,
    /// With more evaluation calls' frames than evaluation-loop frames in the native stack (a native stack cut
    /// short): the rest appended outermost.
    pub frames_left: AtomicU64,
    /// Whose walk ended on a failed read (a torn or changing chain): the frames up to it are kept.
    pub torn: AtomicU64,
    /// Spliced stacks cut at `MAX_FRAMES`.
    pub cut: AtomicU64,
    /// Python frames resolved to a name (from the cache or by reading the process).
    pub frames: AtomicU64,
    /// Python frames whose code object could not be read or was not one: `<unresolved Python frame>`.
    pub unresolved: AtomicU64,
}

impl SpliceStats {
    /// The counters by their names in `daemon_counters`.
    pub fn counters(&self) -> [(&'static str, u64); 10] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("python_stacks", get(&self.stacks)),
            ("python_stacks_empty", get(&self.empty)),
            ("python_stacks_no_interpreter", get(&self.no_interpreter)),
            ("python_stacks_spliced", get(&self.spliced)),
            ("python_stacks_no_eval_frame", get(&self.no_eval_frame)),
            ("python_stacks_frames_left", get(&self.frames_left)),
            ("python_stacks_torn", get(&self.torn)),
            ("python_stacks_cut", get(&self.cut)),
            ("python_frames_resolved", get(&self.frames)),
            ("python_frames_unresolved", get(&self.unresolved)),
        ]
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct Process {
    interpreter: Interpreter,
    /// Code objects read, by address (`None`: not a code object, or unreadable).
    codes: HashMap<u64, Option<Arc<Code>>>,
    /// Stack words of (code, instruction) pairs.
    words: HashMap<(u64, u64), u64>,
}

/// Resolves and splices the Python frames of events, per process (the ingest task owns it).
#[derive(Default)]
pub struct Splicer {
    files: FileCache,
    /// `None`: the process is no interpreter this daemon reads (asked once per process).
    processes: HashMap<u32, Option<Process>>,
    stats: Arc<SpliceStats>,
}

impl Splicer {
    /// The counters, shared with the state owner.
    pub fn stats(&self) -> &Arc<SpliceStats> {
        &self.stats
    }

    /// The process exited or exec'd: its code objects are gone (their resolved names stay).
    pub fn forget(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }

    /// Splices `py` into the native stack `frames[..nframes]` of process `pid`; returns whether the result
    /// was cut at `MAX_FRAMES`.
    pub fn splice(&mut self, pid: u32, frames: &mut [u64; MAX_FRAMES], nframes: &mut u32, py: &PyFrames) -> bool {
        bump(&self.stats.stacks);
        if py.flags & PY_FRAMES_READ_ERROR != 0 {
            bump(&self.stats.torn);
        }
        if py.nframes == 0 {
            bump(&self.stats.empty);
            return false;
        }
        let files = &mut self.files;
        let process = self.processes.entry(pid).or_insert_with(|| {
            let maps = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
            let interpreter = super::find(pid, &maps, files)?;
            Some(Process { interpreter, codes: HashMap::new(), words: HashMap::new() })
        });
        let Some(process) = process else {
            bump(&self.stats.no_interpreter);
            return false;
        };
        let mark = process.interpreter.file.layout.mark;
        let words: Vec<(u64, bool)> = calls(py, mark)
            .into_iter()
            .map(|(i, last)| (process.word(pid, py.frames[i].code, py.frames[i].instr, &self.stats), last))
            .collect();
        let natives: Vec<u64> = frames[..(*nframes as usize).min(MAX_FRAMES)].to_vec();
        let (spliced, found_eval, left) = splice_words(&natives, &words, &process.interpreter.eval());
        bump(if !found_eval {
            &self.stats.no_eval_frame
        } else if left > 0 {
            &self.stats.frames_left
        } else {
            &self.stats.spliced
        });
        let truncated = spliced.len() > MAX_FRAMES;
        if truncated {
            bump(&self.stats.cut);
        }
        let kept = spliced.len().min(MAX_FRAMES);
        frames[..kept].copy_from_slice(&spliced[..kept]);
        *nframes = u32::try_from(kept).unwrap_or(0);
        truncated
    }
}

impl Process {
    /// The stack word of one recorded frame, resolving its code object on first sight.
    fn word(&mut self, pid: u32, code_addr: u64, instr: u64, stats: &SpliceStats) -> u64 {
        if let Some(&word) = self.words.get(&(code_addr, instr)) {
            bump(&stats.frames);
            return word;
        }
        let layout = self.interpreter.file.layout.code;
        let code_type = self.interpreter.code_type();
        if self.codes.len() >= MAX_FRAMES_PER_PROCESS {
            self.codes.clear();
        }
        let code = self
            .codes
            .entry(code_addr)
            .or_insert_with(|| code::read(pid, &layout, code_type, code_addr).map(Arc::new))
            .clone();
        let Some(code) = code else {
            // Not cached as a word: a code object being set up may read right later.
            bump(&stats.unresolved);
            return names::PY_FRAME_TAG;
        };
        let line = code.line(&layout, code_addr, instr).and_then(|l| u32::try_from(l).ok());
        let word = names::intern(PyFrameName { function: code.name.clone(), file: code.file.clone(), line });
        if self.words.len() >= MAX_FRAMES_PER_PROCESS {
            self.words.clear();
        }
        self.words.insert((code_addr, instr), word);
        bump(&stats.frames);
        word
    }
}

/// The recorded frames that are Python frames (3.12+'s shims are not), innermost first, by their index in
/// `py`, each with whether it is the last (outermost) of its evaluation call, as the layout's `mark` tells.
fn calls(py: &PyFrames, mark: Mark) -> Vec<(usize, bool)> {
    let count = (py.nframes as usize).min(py.frames.len());
    let mut out: Vec<(usize, bool)> = Vec::with_capacity(count);
    for (i, &byte) in py.marks[..count].iter().enumerate() {
        let last = match mark {
            Mark::Owner if byte == PY_FRAME_OWNED_BY_CSTACK => {
                // A shim: the frame before it was the last of its evaluation call.
                if let Some(previous) = out.last_mut() {
                    previous.1 = true;
                }
                continue;
            }
            Mark::Owner => false,
            Mark::EveryFrame => true,
            Mark::IsEntry => byte != 0,
        };
        out.push((i, last));
    }
    out
}

/// The native stack (innermost first) with each evaluation-loop frame preceded by the Python frames it ran:
/// from the next unplaced one up to and including the next entry frame. Python frames left when the native
/// frames end (a cut native stack) go last. Returns the stack, whether an evaluation frame was found, and how
/// many Python frames went last.
pub fn splice_words(natives: &[u64], python: &[(u64, bool)], eval: &std::ops::Range<u64>) -> (Vec<u64>, bool, usize) {
    let mut out = Vec::with_capacity(natives.len() + python.len());
    let mut rest = python.iter();
    let mut found = false;
    for &native in natives {
        // A return address: the call is just before it.
        if eval.contains(&native.saturating_sub(1)) {
            found = true;
            for &(word, entry) in rest.by_ref() {
                out.push(word);
                if entry {
                    break;
                }
            }
        }
        out.push(native);
    }
    let placed = out.len();
    out.extend(rest.map(|&(word, _)| word));
    let left = out.len() - placed;
    (out, found, left)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVAL: std::ops::Range<u64> = 0x1000..0x2000;

    fn recorded(marks: &[u8]) -> PyFrames {
        let mut py = PyFrames::EMPTY;
        py.nframes = u32::try_from(marks.len()).expect("few frames");
        py.marks[..marks.len()].copy_from_slice(marks);
        py
    }

    #[test]
    fn shims_end_evaluation_calls_and_are_no_frames() {
        // 3.12+: leak, serve (first of its call), shim, <module>, shim (the outermost call's).
        let py = recorded(&[0, 0, PY_FRAME_OWNED_BY_CSTACK, 0, PY_FRAME_OWNED_BY_CSTACK]);
        assert_eq!(calls(&py, Mark::Owner), vec![(0, false), (1, true), (3, true)]);
        // A generator's frame (owner 1) is a Python frame like the others.
        let py = recorded(&[1, 0, PY_FRAME_OWNED_BY_CSTACK]);
        assert_eq!(calls(&py, Mark::Owner), vec![(0, false), (1, true)]);
        // A chain cut before its shim: its last call stays open (placed at the next evaluation frame anyway).
        assert_eq!(calls(&recorded(&[0, 0]), Mark::Owner), vec![(0, false), (1, false)]);
    }

    #[test]
    fn entry_frames_end_evaluation_calls_in_3_11() {
        assert_eq!(calls(&recorded(&[0, 1, 1]), Mark::IsEntry), vec![(0, false), (1, true), (2, true)]);
    }

    #[test]
    fn every_frame_is_its_own_call_in_3_10() {
        assert_eq!(calls(&recorded(&[0, 0]), Mark::EveryFrame), vec![(0, true), (1, true)]);
    }

    #[test]
    fn recorded_frames_beyond_the_count_are_ignored() {
        let mut py = recorded(&[0, 1]);
        py.nframes = 1000;
        assert_eq!(calls(&py, Mark::IsEntry).len(), leakprobe_common::MAX_PY_FRAMES);
        py.nframes = 1;
        assert_eq!(calls(&py, Mark::IsEntry), vec![(0, false)]);
    }

    #[test]
    fn each_eval_frame_gets_the_frames_up_to_its_entry() {
        // malloc caller, bytes_concat, eval (runs leak <- serve, serve entered from C), PyObject_Call, eval (<module>).
        let natives = [0x500, 0x600, 0x1234, 0x700, 0x1800, 0x800];
        let python = [(0xa, false), (0xb, true), (0xc, true)];
        let (out, found, left) = splice_words(&natives, &python, &EVAL);
        assert!(found);
        assert_eq!(left, 0);
        assert_eq!(out, vec![0x500, 0x600, 0xa, 0xb, 0x1234, 0x700, 0xc, 0x1800, 0x800]);
    }

    #[test]
    fn frames_without_an_eval_frame_go_last() {
        let (out, found, left) = splice_words(&[0x500, 0x600], &[(0xa, false), (0xb, true)], &EVAL);
        assert!(!found);
        assert_eq!(left, 2);
        assert_eq!(out, vec![0x500, 0x600, 0xa, 0xb]);
    }

    #[test]
    fn a_return_address_just_past_the_function_is_not_inside() {
        let (out, _, _) = splice_words(&[0x2001, 0x1001], &[(0xa, true)], &EVAL);
        assert_eq!(out, vec![0x2001, 0xa, 0x1001]);
    }

    #[test]
    fn more_evaluation_calls_than_loop_frames_leave_frames_last() {
        // Two evaluation calls recorded (b ends the first), one loop frame in a native stack cut after it.
        let (out, found, left) = splice_words(&[0x500, 0x1234], &[(0xa, false), (0xb, true), (0xc, true)], &EVAL);
        assert!(found);
        assert_eq!(left, 1);
        assert_eq!(out, vec![0x500, 0xa, 0xb, 0x1234, 0xc]);
    }
}
