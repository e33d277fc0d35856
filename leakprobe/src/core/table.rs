//! Live allocations keyed by (process, address), and per (process, stack) aggregates.
//!
//! Pure: fed decoded kernel events, with the events' own monotonic timestamps; no I/O, no clock.

use std::collections::HashMap;

use leakprobe_common::{ALLOC_FLAG_REPLACES_OLD, ALLOC_FLAG_STACK_TRUNCATED, AllocEvent, Event};

use super::stacks::{StackId, StackStore};

/// Limits of the table.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The most live allocations tracked over all processes.
    pub max_allocations: usize,
    /// The most distinct stacks stored.
    pub max_stacks: usize,
}

/// One live allocation.
#[derive(Clone, Copy, Debug)]
struct Alloc {
    size: u64,
    stack: StackId,
}

/// Totals of one stack in one process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackStats {
    pub live_bytes: u64,
    pub live_count: u64,
    pub total_bytes: u64,
    pub total_count: u64,
    /// Monotonic ns of the first allocation.
    pub first_ns: u64,
    /// Monotonic ns of the latest allocation.
    pub last_ns: u64,
}

/// State of one process.
#[derive(Debug, Default)]
struct Process {
    comm: String,
    allocs: HashMap<u64, Alloc>,
    stacks: HashMap<StackId, StackStats>,
    live_bytes: u64,
}

/// Counters of what the table saw that it could not use as is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableCounters {
    /// Events applied.
    pub events: u64,
    /// Frees of addresses the table did not hold (should stay 0: the kernel filters them).
    pub unknown_frees: u64,
    /// Allocations at an address already live (a free was lost): the old one was dropped.
    pub replaced_live: u64,
    /// Allocations not tracked because the table was full.
    pub dropped_table_full: u64,
    /// Processes purged on exit or exec.
    pub processes_purged: u64,
}

/// What applying an event changed, for the caller to act on.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Nothing the caller needs to know.
    Nothing,
    /// The first event of a process: the caller may look up its name.
    NewProcess(u32),
    /// A process's state was purged: the kernel's live-address map still holds these addresses, recorded
    /// before `before_ns`.
    Purged { tgid: u32, addrs: Vec<u64>, before_ns: u64 },
}

/// One row of [`Table::top`].
#[derive(Debug)]
pub struct TopRow<'a> {
    pub tgid: u32,
    pub comm: &'a str,
    pub frames: &'a [u64],
    pub truncated: bool,
    pub stack_hash: u64,
    pub stats: StackStats,
}

/// One process of the table, from [`Table::process`].
#[derive(Debug, PartialEq, Eq)]
pub struct ProcessSummary<'a> {
    pub comm: &'a str,
    pub live_bytes: u64,
    pub live_allocations: u64,
}

/// Sizes of the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sizes {
    pub processes: usize,
    pub live_allocations: usize,
    pub live_bytes: u64,
    pub stacks: usize,
    pub stacks_overflowed: u64,
}

/// The live-allocation table.
#[derive(Debug)]
pub struct Table {
    procs: HashMap<u32, Process>,
    stacks: StackStore,
    live_allocations: usize,
    limits: Limits,
    counters: TableCounters,
}

/// A `comm` field as text, up to its first NUL.
pub fn comm_str(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

impl Table {
    pub fn new(limits: Limits) -> Self {
        Self {
            procs: HashMap::new(),
            stacks: StackStore::new(limits.max_stacks),
            live_allocations: 0,
            limits,
            counters: TableCounters::default(),
        }
    }

    /// Applies one kernel event.
    pub fn apply(&mut self, event: &Event) -> Applied {
        self.counters.events += 1;
        match event {
            Event::Alloc(alloc) => self.alloc(alloc),
            Event::Free(free) => {
                self.free(free.header.tgid, free.addr);
                Applied::Nothing
            }
            Event::Exit(exit) | Event::Exec(exit) => self.purge(exit.header.tgid, exit.header.ts_ns),
            // The table is unchanged: the caller snapshots the victim, whose exit comes later.
            Event::Oom(_) => Applied::Nothing,
        }
    }

    fn alloc(&mut self, event: &AllocEvent) -> Applied {
        let tgid = event.header.tgid;
        let is_new = !self.procs.contains_key(&tgid);
        if event.flags & ALLOC_FLAG_REPLACES_OLD != 0 {
            self.free(tgid, event.old_addr);
        }
        // The first frames the kernel wrote; `nframes` was bounded by the decoder.
        let frames = &event.frames[..(event.nframes as usize).min(event.frames.len())];
        let truncated = event.flags & ALLOC_FLAG_STACK_TRUNCATED != 0;
        let process = self.procs.entry(tgid).or_default();
        if is_new {
            process.comm = comm_str(&event.comm);
        }
        if let Some(old) = process.allocs.remove(&event.addr) {
            self.counters.replaced_live += 1;
            Self::unaccount(process, old);
            self.live_allocations -= 1;
        }
        if self.live_allocations >= self.limits.max_allocations {
            self.counters.dropped_table_full += 1;
            return if is_new { Applied::NewProcess(tgid) } else { Applied::Nothing };
        }
        let stack = self.stacks.intern(frames, truncated);
        let stats = match process.stacks.entry(stack) {
            std::collections::hash_map::Entry::Occupied(slot) => {
                // The aggregate already holds a reference to this stack.
                self.stacks.release(stack);
                slot.into_mut()
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(StackStats { first_ns: event.header.ts_ns, ..StackStats::default() })
            }
        };
        stats.live_bytes += event.size;
        stats.live_count += 1;
        stats.total_bytes += event.size;
        stats.total_count += 1;
        stats.last_ns = event.header.ts_ns;
        process.live_bytes += event.size;
        process.allocs.insert(event.addr, Alloc { size: event.size, stack });
        self.live_allocations += 1;
        if is_new { Applied::NewProcess(tgid) } else { Applied::Nothing }
    }

    fn free(&mut self, tgid: u32, addr: u64) {
        let Some(process) = self.procs.get_mut(&tgid) else {
            self.counters.unknown_frees += 1;
            return;
        };
        let Some(alloc) = process.allocs.remove(&addr) else {
            self.counters.unknown_frees += 1;
            return;
        };
        Self::unaccount(process, alloc);
        self.live_allocations -= 1;
    }

    /// Removes an allocation's bytes from its stack and process.
    fn unaccount(process: &mut Process, alloc: Alloc) {
        if let Some(stats) = process.stacks.get_mut(&alloc.stack) {
            stats.live_bytes -= alloc.size;
            stats.live_count -= 1;
        }
        process.live_bytes -= alloc.size;
    }

    fn purge(&mut self, tgid: u32, before_ns: u64) -> Applied {
        let Some(process) = self.procs.remove(&tgid) else {
            return Applied::Nothing;
        };
        self.counters.processes_purged += 1;
        self.live_allocations -= process.allocs.len();
        for stack in process.stacks.keys() {
            self.stacks.release(*stack);
        }
        let addrs = process.allocs.into_keys().collect();
        Applied::Purged { tgid, addrs, before_ns }
    }

    /// Sets the name of a process, e.g. from `/proc/PID/comm` (the event carries the thread's name).
    pub fn set_comm(&mut self, tgid: u32, comm: String) {
        if let Some(process) = self.procs.get_mut(&tgid) {
            process.comm = comm;
        }
    }

    /// Name, live bytes and live allocations of a process the table holds.
    pub fn process(&self, tgid: u32) -> Option<ProcessSummary<'_>> {
        self.procs.get(&tgid).map(|p| ProcessSummary {
            comm: &p.comm,
            live_bytes: p.live_bytes,
            live_allocations: p.allocs.len() as u64,
        })
    }

    /// Stacks ordered by live bytes (then total bytes), largest first, optionally of one process.
    pub fn top(&self, pid: Option<u32>, limit: usize) -> Vec<TopRow<'_>> {
        let mut rows: Vec<TopRow<'_>> = self
            .procs
            .iter()
            .filter(|(tgid, _)| pid.is_none_or(|pid| pid == **tgid))
            .flat_map(|(tgid, process)| {
                process.stacks.iter().map(move |(stack, stats)| (*tgid, process, *stack, *stats))
            })
            .map(|(tgid, process, stack, stats)| TopRow {
                tgid,
                comm: &process.comm,
                frames: self.stacks.frames(stack),
                truncated: self.stacks.truncated(stack),
                stack_hash: self.stacks.hash(stack),
                stats,
            })
            .collect();
        rows.sort_unstable_by(|a, b| {
            (b.stats.live_bytes, b.stats.total_bytes, a.tgid, a.stack_hash).cmp(&(
                a.stats.live_bytes,
                a.stats.total_bytes,
                b.tgid,
                b.stack_hash,
            ))
        });
        rows.truncate(limit);
        rows
    }

    /// Current sizes.
    pub fn sizes(&self) -> Sizes {
        Sizes {
            processes: self.procs.len(),
            live_allocations: self.live_allocations,
            live_bytes: self.procs.values().map(|p| p.live_bytes).sum(),
            stacks: self.stacks.len(),
            stacks_overflowed: self.stacks.overflowed(),
        }
    }

    /// The limits the table was made with.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Counters.
    pub fn counters(&self) -> TableCounters {
        self.counters
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
