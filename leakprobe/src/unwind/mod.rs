//! Unwinding user stacks in the daemon (`--unwind dwarf`) from the registers and the stack copy the return
//! probe took, with the binaries' own unwind tables (`.eh_frame`, `.debug_frame`) through framehop.
//!
//! Caches, all bounded (least recently used first out):
//! - per binary, by (device, inode): its parsed tables, shared by every process that maps it and kept after
//!   those processes exit;
//! - per process: its executable mappings as framehop modules, built from `/proc/PID/maps` when the process
//!   is first unwound and rebuilt when an address is not covered (a library loaded later), at most once per
//!   [`MAPS_REREAD_INTERVAL`];
//! - framehop's rule cache (the unwind rule per code address), shared by all processes.
//!
//! Code with no unwind table entry (or no module) falls back to frame pointers, framehop's fallback rule.

pub mod own;
pub mod rows;
pub mod tables;

use std::{
    num::NonZeroUsize,
    ops::Range,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use framehop::{
    Error as FrameError, FrameAddress, MayAllocateDuringUnwind, Module, Unwinder as _,
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
};
use leakprobe_common::{MAX_FRAMES, UserStack};
use lru::LruCache;

use self::tables::BinaryTables;
use crate::symbolize::maps::{self, Mapping};

/// Least time between two reads of one process's maps caused by an address outside every known module.
pub const MAPS_REREAD_INTERVAL: Duration = Duration::from_secs(1);
/// framehop numbers module sets with a global 16-bit generation shared by its rule cache: before it can
/// wrap around, every per-process unwinder and the rule cache start afresh.
const MODULES_BEFORE_RESET: u64 = 60_000;

/// Bounds of the unwinder's caches.
#[derive(Clone, Copy, Debug)]
pub struct UnwindLimits {
    /// Processes whose modules are kept.
    pub processes: NonZeroUsize,
    /// Binaries whose tables are kept.
    pub binaries: NonZeroUsize,
}

impl Default for UnwindLimits {
    fn default() -> Self {
        Self {
            processes: NonZeroUsize::new(1_024).unwrap_or(NonZeroUsize::MIN),
            binaries: NonZeroUsize::new(512).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

/// Counters of the stacks produced, shared with the state owner for `status`.
#[derive(Debug, Default)]
pub struct UnwindStats {
    /// Stacks walked by frame pointers in the kernel.
    pub fp: AtomicU64,
    /// Of those, cut at the frame limit.
    pub fp_truncated: AtomicU64,
    /// Stacks unwound here.
    pub dwarf: AtomicU64,
    /// Of those, cut by the end of the stack copy or the frame limit.
    pub dwarf_truncated: AtomicU64,
    /// Of those, stopped early at code with no usable rule, or with no maps for the process.
    pub dwarf_incomplete: AtomicU64,
    /// `/proc/PID/maps` reads.
    pub maps_reads: AtomicU64,
    /// Binaries whose tables were read, and binaries that could not be.
    pub binaries_loaded: AtomicU64,
    pub binary_errors: AtomicU64,
    /// Time spent unwinding, in nanoseconds.
    pub unwind_ns: AtomicU64,
}

impl UnwindStats {
    /// Seconds spent unwinding.
    #[expect(clippy::cast_precision_loss, reason = "a total of nanoseconds shown as seconds")]
    pub fn unwind_seconds(&self) -> f64 {
        self.unwind_ns.load(Ordering::Relaxed) as f64 / 1e9
    }
}

impl UnwindStats {
    /// `(name, value)` pairs for `status`'s daemon counters.
    pub fn counters(&self) -> [(&'static str, u64); 8] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("stacks_fp", get(&self.fp)),
            ("stacks_fp_truncated", get(&self.fp_truncated)),
            ("stacks_dwarf", get(&self.dwarf)),
            ("stacks_dwarf_truncated", get(&self.dwarf_truncated)),
            ("stacks_dwarf_incomplete", get(&self.dwarf_incomplete)),
            ("unwind_maps_reads", get(&self.maps_reads)),
            ("unwind_binaries_loaded", get(&self.binaries_loaded)),
            ("unwind_binary_errors", get(&self.binary_errors)),
        ]
    }
}

/// How one stack ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Reached the outermost frame.
    Complete,
    /// Cut: the stack copy ended (the stack is deeper than the copy) or the frame limit was reached.
    Truncated,
    /// Stopped at an address with no usable rule, or the process's maps were not readable.
    Incomplete,
}

type ProcessUnwinder = UnwinderX86_64<Arc<[u8]>, MayAllocateDuringUnwind>;

struct Process {
    unwinder: ProcessUnwinder,
    /// Every executable file mapping, with or without tables: an address outside all of them is new code.
    code: Vec<Range<u64>>,
    read_at: Instant,
}

/// Binary key: (device, inode).
type BinaryKey = (u64, u64);

/// The unwinder and its caches. Used by one task (ingest); not shared.
pub struct Unwinder {
    processes: LruCache<u32, Process>,
    binaries: LruCache<BinaryKey, Option<Arc<BinaryTables>>>,
    cache: CacheX86_64<MayAllocateDuringUnwind>,
    modules_added: u64,
    stats: Arc<UnwindStats>,
}

impl Unwinder {
    pub fn new(limits: UnwindLimits, stats: Arc<UnwindStats>) -> Self {
        Self {
            processes: LruCache::new(limits.processes),
            binaries: LruCache::new(limits.binaries),
            cache: CacheX86_64::new(),
            modules_added: 0,
            stats,
        }
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<UnwindStats> {
        &self.stats
    }

    /// Empties framehop's rule cache (for the micro-benchmark: the cost of looking rules up in the tables).
    pub fn clear_rule_cache(&mut self) {
        self.cache = CacheX86_64::new();
    }

    /// Forgets a process (it exited or exec'd: its modules are gone). Its binaries' tables stay cached.
    pub fn forget(&mut self, pid: u32) {
        self.processes.pop(&pid);
    }

    /// Unwinds the stack of process `pid` from `regs` and the stack bytes `stack` (copied from `regs.sp` up)
    /// into `frames`, innermost first (`frames[0]` is `regs.ip`, the return address in the allocator's
    /// caller). Returns the number of frames written and how the walk ended.
    pub fn unwind(
        &mut self,
        pid: u32,
        regs: &UserStack,
        stack: &[u8],
        frames: &mut [u64; MAX_FRAMES],
    ) -> (u32, Outcome) {
        let started = Instant::now();
        let result = self.unwind_inner(pid, regs, stack, frames);
        let elapsed = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.stats.unwind_ns.fetch_add(elapsed, Ordering::Relaxed);
        self.stats.dwarf.fetch_add(1, Ordering::Relaxed);
        match result.1 {
            Outcome::Complete => {}
            Outcome::Truncated => {
                self.stats.dwarf_truncated.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Incomplete => {
                self.stats.dwarf_incomplete.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    fn unwind_inner(
        &mut self,
        pid: u32,
        regs: &UserStack,
        stack: &[u8],
        frames: &mut [u64; MAX_FRAMES],
    ) -> (u32, Outcome) {
        frames[0] = regs.ip;
        if !self.ensure_process(pid, regs.ip) {
            return (1, Outcome::Incomplete);
        }
        let Some(process) = self.processes.get(&pid) else { return (1, Outcome::Incomplete) };
        let copy_end = regs.sp.saturating_add(stack.len() as u64);
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let offset = usize::try_from(addr.checked_sub(regs.sp).ok_or(())?).map_err(|_| ())?;
            let bytes = stack.get(offset..offset.checked_add(8).ok_or(())?).ok_or(())?;
            Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
        };
        let unwind_regs = UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp);
        let mut iter = process.unwinder.iter_frames(regs.ip, unwind_regs, &mut self.cache, &mut read_stack);
        let mut n = 0usize;
        loop {
            match iter.next() {
                Ok(Some(address)) => {
                    if n == MAX_FRAMES {
                        return (frame_count(MAX_FRAMES), Outcome::Truncated);
                    }
                    frames[n] = match address {
                        FrameAddress::InstructionPointer(a) => a,
                        FrameAddress::ReturnAddress(a) => a.get(),
                    };
                    n += 1;
                }
                Ok(None) => return (frame_count(n), Outcome::Complete),
                // Reading past the end of the copy: the stack goes on beyond what was copied.
                Err(FrameError::CouldNotReadStack(addr)) if addr >= copy_end && !stack.is_empty() => {
                    return (frame_count(n), Outcome::Truncated);
                }
                Err(_) => return (frame_count(n.max(1)), Outcome::Incomplete),
            }
        }
    }

    /// Makes sure `pid` has an unwinder whose modules cover `ip`, reading its maps if needed. False when the
    /// process's maps cannot be read (it is gone).
    fn ensure_process(&mut self, pid: u32, ip: u64) -> bool {
        if let Some(process) = self.processes.get(&pid) {
            let covered = process.code.iter().any(|range| range.contains(&ip));
            if covered || process.read_at.elapsed() < MAPS_REREAD_INTERVAL {
                return true;
            }
        }
        let Some(mappings) = maps::read_parsed(pid) else { return self.processes.contains(&pid) };
        self.stats.maps_reads.fetch_add(1, Ordering::Relaxed);
        if self.modules_added >= MODULES_BEFORE_RESET {
            self.processes.clear();
            self.cache = CacheX86_64::new();
            self.modules_added = 0;
        }
        let mut unwinder = ProcessUnwinder::new();
        let code = mappings.iter().filter(|m| m.executable).map(|m| m.start..m.end).collect();
        for mapping in mappings.iter().filter(|m| m.executable) {
            let Some(tables) = self.tables(pid, mapping) else { continue };
            let Some(base) = tables.base_avma(mapping.start, mapping.file_offset) else { continue };
            let name = mapping.path.display().to_string();
            unwinder.add_module(Module::new(name, mapping.start..mapping.end, base, tables.section_info()));
            self.modules_added += 1;
        }
        self.processes.put(pid, Process { unwinder, code, read_at: Instant::now() });
        true
    }

    /// The tables of the binary at `mapping`, read on first sight (a failure is remembered too).
    fn tables(&mut self, pid: u32, mapping: &Mapping) -> Option<Arc<BinaryTables>> {
        let key = (mapping.dev, mapping.inode);
        if let Some(cached) = self.binaries.get(&key) {
            return cached.clone();
        }
        let tables = match BinaryTables::read(pid, mapping) {
            Ok(tables) => {
                self.stats.binaries_loaded.fetch_add(1, Ordering::Relaxed);
                Some(Arc::new(tables))
            }
            Err(err) => {
                log::debug!("no unwind tables: {err}");
                self.stats.binary_errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        self.binaries.put(key, tables.clone());
        tables
    }
}

/// A frame count (at most `MAX_FRAMES`) as the event's `u32`.
fn frame_count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
