//! Resolution of recorded Python frames and their splicing into native stacks.

use std::{collections::HashMap, fs, sync::Arc};

use leakprobe_common::{MAX_FRAMES, PY_FRAME_OWNED_BY_CSTACK, PyFrames};

use super::{
    FileCache, Interpreter,
    code::{self, Code},
    layout::Mark,
    names::{self, PyFrameName},
};

/// Frames (code object, instruction) remembered per process; cleared when full.
const MAX_FRAMES_PER_PROCESS: usize = 16_384;

/// Counters of the splicing, for `status` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpliceStats {
    /// Stacks that had Python frames spliced in.
    pub stacks: u64,
    /// Python frames resolved to a name (from the cache or by reading the process).
    pub frames: u64,
    /// Python frames whose code object could not be read or was not one.
    pub unresolved: u64,
    /// Stacks with Python frames but no evaluation-loop frame among their native frames: appended outermost.
    pub no_eval_frame: u64,
    /// Spliced stacks cut at `MAX_FRAMES`.
    pub truncated: u64,
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
    stats: SpliceStats,
}

impl Splicer {
    pub fn stats(&self) -> SpliceStats {
        self.stats
    }

    /// The process exited or exec'd: its code objects are gone (their resolved names stay).
    pub fn forget(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }

    /// Splices `py` into the native stack `frames[..nframes]` of process `pid`; returns whether the result
    /// was cut at `MAX_FRAMES`.
    pub fn splice(&mut self, pid: u32, frames: &mut [u64; MAX_FRAMES], nframes: &mut u32, py: &PyFrames) -> bool {
        if py.nframes == 0 {
            return false;
        }
        let files = &mut self.files;
        let process = self.processes.entry(pid).or_insert_with(|| {
            let maps = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
            let interpreter = super::find(pid, &maps, files)?;
            Some(Process { interpreter, codes: HashMap::new(), words: HashMap::new() })
        });
        let Some(process) = process else { return false };
        let count = (py.nframes as usize).min(py.frames.len());
        let mark = process.interpreter.file.layout.mark;
        let mut words: Vec<(u64, bool)> = Vec::with_capacity(count);
        for i in 0..count {
            let (frame, byte) = (py.frames[i], py.marks[i]);
            match mark {
                Mark::Owner if byte == PY_FRAME_OWNED_BY_CSTACK => {
                    // A shim: the frame before it was the last of its evaluation call.
                    if let Some(last) = words.last_mut() {
                        last.1 = true;
                    }
                    continue;
                }
                _ => {}
            }
            let entry = match mark {
                Mark::EveryFrame => true,
                Mark::IsEntry => byte != 0,
                Mark::Owner => false,
            };
            words.push((process.word(pid, frame.code, frame.instr, &mut self.stats), entry));
        }
        let natives: Vec<u64> = frames[..(*nframes as usize).min(MAX_FRAMES)].to_vec();
        let (spliced, found_eval) = splice_words(&natives, &words, &process.interpreter.eval());
        self.stats.stacks += 1;
        if !found_eval {
            self.stats.no_eval_frame += 1;
        }
        let truncated = spliced.len() > MAX_FRAMES;
        if truncated {
            self.stats.truncated += 1;
        }
        let kept = spliced.len().min(MAX_FRAMES);
        frames[..kept].copy_from_slice(&spliced[..kept]);
        *nframes = u32::try_from(kept).unwrap_or(0);
        truncated
    }
}

impl Process {
    /// The stack word of one recorded frame, resolving its code object on first sight.
    fn word(&mut self, pid: u32, code_addr: u64, instr: u64, stats: &mut SpliceStats) -> u64 {
        if let Some(&word) = self.words.get(&(code_addr, instr)) {
            stats.frames += 1;
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
            stats.unresolved += 1;
            return names::PY_FRAME_TAG;
        };
        let line = code.line(&layout, code_addr, instr).and_then(|l| u32::try_from(l).ok());
        let word = names::intern(PyFrameName { function: code.name.clone(), file: code.file.clone(), line });
        if self.words.len() >= MAX_FRAMES_PER_PROCESS {
            self.words.clear();
        }
        self.words.insert((code_addr, instr), word);
        stats.frames += 1;
        word
    }
}

/// The native stack (innermost first) with each evaluation-loop frame preceded by the Python frames it ran:
/// from the next unplaced one up to and including the next entry frame. Python frames left when the native
/// frames end (a cut native stack) go last. Returns the stack and whether an evaluation frame was found.
pub fn splice_words(natives: &[u64], python: &[(u64, bool)], eval: &std::ops::Range<u64>) -> (Vec<u64>, bool) {
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
    out.extend(rest.map(|&(word, _)| word));
    (out, found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVAL: std::ops::Range<u64> = 0x1000..0x2000;

    #[test]
    fn each_eval_frame_gets_the_frames_up_to_its_entry() {
        // malloc caller, bytes_concat, eval (runs leak <- serve, serve entered from C), PyObject_Call, eval (<module>).
        let natives = [0x500, 0x600, 0x1234, 0x700, 0x1800, 0x800];
        let python = [(0xa, false), (0xb, true), (0xc, true)];
        let (out, found) = splice_words(&natives, &python, &EVAL);
        assert!(found);
        assert_eq!(out, vec![0x500, 0x600, 0xa, 0xb, 0x1234, 0x700, 0xc, 0x1800, 0x800]);
    }

    #[test]
    fn frames_without_an_eval_frame_go_last() {
        let (out, found) = splice_words(&[0x500, 0x600], &[(0xa, false), (0xb, true)], &EVAL);
        assert!(!found);
        assert_eq!(out, vec![0x500, 0x600, 0xa, 0xb]);
    }

    #[test]
    fn a_return_address_just_past_the_function_is_not_inside() {
        let (out, _) = splice_words(&[0x2001, 0x1001], &[(0xa, true)], &EVAL);
        assert_eq!(out, vec![0x2001, 0xa, 0x1001]);
    }
}
