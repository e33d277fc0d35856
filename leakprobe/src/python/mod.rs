//! Python frames in leakprobe's stacks (see `docs/python.md`).
//!
//! - [`elf`]/[`layout`]: which file of a process is the interpreter, its version and the offsets of what is
//!   read, per version (3.10 to 3.13);
//! - [`find`]: the interpreter of a process, placed in its address space; discovery writes its
//!   [`PyProc`] to the probes' map, and the probes record each event's Python frames;
//! - [`Splicer`]: resolves the recorded frames (code objects read from the process, cached) and splices them
//!   into the native stack where the evaluation loop ran them, as [`names`] words.

pub mod code;
pub mod elf;
pub mod layout;
pub mod linetable;
pub mod memory;
pub mod names;
mod splice;

use std::{collections::HashMap, fs, ops::Range, sync::Arc};

use leakprobe_common::PyProc;

use self::elf::PythonFile;
pub use self::splice::{SpliceStats, Splicer};

/// A process's interpreter, placed in its address space.
#[derive(Clone, Debug)]
pub struct Interpreter {
    pub file: Arc<PythonFile>,
    /// Load bias of the interpreter's file.
    pub bias: u64,
}

impl Interpreter {
    /// What the probes need, with the process's addresses.
    pub fn proc(&self) -> PyProc {
        PyProc { runtime: self.file.runtime.wrapping_add(self.bias), ..self.file.layout.walk }
    }

    /// `PyCode_Type` in the process.
    pub fn code_type(&self) -> u64 {
        self.file.code_type.wrapping_add(self.bias)
    }

    /// `_PyEval_EvalFrameDefault` in the process.
    pub fn eval(&self) -> Range<u64> {
        self.file.eval.start.wrapping_add(self.bias)..self.file.eval.end.wrapping_add(self.bias)
    }
}

/// What is known of mapped files, by (major, minor, inode): an interpreter or nothing. Bounded: cleared
/// when full.
#[derive(Default)]
pub struct FileCache {
    files: HashMap<(u32, u32, u64), Option<Arc<PythonFile>>>,
}

/// Files remembered at most.
const MAX_FILES: usize = 4096;

/// The interpreter a process runs, from its `/proc/PID/maps` text; `None` for every other process.
/// Only files named like an interpreter are parsed, once each.
pub fn find(pid: u32, maps: &str, cache: &mut FileCache) -> Option<Interpreter> {
    for line in crate::procfs::maps_lines(maps) {
        if !line.perms.contains('x') || line.inode == 0 || !elf::may_be_python(line.path) {
            continue;
        }
        let key = (line.major, line.minor, line.inode);
        if cache.files.len() >= MAX_FILES {
            cache.files.clear();
        }
        let file = cache.files.entry(key).or_insert_with(|| examine(pid, &line)).clone();
        if let Some(file) = file {
            let Some(bias) = file.bias(line.start, line.offset) else { continue };
            return Some(Interpreter { file, bias });
        }
    }
    None
}

/// Reads a mapped file through the process's own view of it (`map_files`: any mount namespace).
fn examine(pid: u32, line: &crate::procfs::MapsLine<'_>) -> Option<Arc<PythonFile>> {
    let path = format!("/proc/{pid}/map_files/{:x}-{:x}", line.start, line.end);
    let file = fs::File::open(&path).map_err(|err| log::debug!("python: {path}: {err}")).ok()?;
    // SAFETY: a private read-only mapping of an executable file; running executables are not truncated in
    // place (package managers replace them).
    let data = unsafe { memmap2::Mmap::map(&file) }.map_err(|err| log::debug!("python: {path}: {err}")).ok()?;
    match elf::examine(&data, line.path) {
        Ok(Some(file)) => {
            log::info!("python: {} is CPython {} (pid {pid})", line.path, file.layout.version);
            Some(Arc::new(file))
        }
        Ok(None) => None,
        Err(err) => {
            log::info!("python: {} (pid {pid}): no Python frames: {err}", line.path);
            None
        }
    }
}
