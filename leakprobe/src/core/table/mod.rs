//! Live allocations keyed by (process, address), per (process, stack) aggregates, and their time series.
//!
//! Pure: fed decoded kernel events and ticks, with the events' own monotonic timestamps; no I/O, no clock.

mod frozen;
mod identity;
mod live;
mod tick;

use std::collections::hash_map::Entry;

use leakprobe_common::{ALLOC_FLAG_REPLACES_OLD, ALLOC_FLAG_STACK_TRUNCATED, AllocEvent, Event};

/// The table's hash maps: keyed by addresses, pids and stack ids, on the event path (several lookups per
/// event). foldhash (randomly seeded) instead of the default `SipHash`: the consumer path's cost per event.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub use self::frozen::Frozen;
use self::live::LiveMap;
pub use self::tick::{AGE_BUCKETS, AnalysisConfig, RssSample, SampleClock, TickLog, TickTimes};
use super::{
    analysis::{Growth, Series, Verdict},
    sampling,
    stacks::{StackId, StackStore},
};

/// Limits of the table.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The most live allocations tracked over all processes.
    pub max_allocations: usize,
    /// The most distinct stacks stored.
    pub max_stacks: usize,
    /// The most time series kept (one per (process, stack) and four per process).
    pub max_series: usize,
}

/// One live allocation.
#[derive(Clone, Copy, Debug)]
struct Alloc {
    /// Bytes this allocation stands for: its size, or in sampled mode its weighted size.
    size: u64,
    ts_ns: u64,
    stack: StackId,
    /// Allocations this one stands for: 1, or in sampled mode its weight.
    count: u32,
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

/// Ages of the live allocations of a stack or process, as of the latest tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ages {
    /// Monotonic ns of the oldest live allocation.
    pub oldest_ns: Option<u64>,
    /// Live bytes older than the "old" age of the verdict rule.
    pub old_bytes: u64,
    /// Live bytes by age, in the buckets of [`AGE_BUCKETS`].
    pub buckets: [u64; AGE_BUCKETS.len() + 1],
}

/// Growth, verdict and ages as of the latest tick.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Analysis {
    pub growth: Growth,
    pub verdict: Verdict,
    pub ages: Ages,
    /// Samples in the series.
    pub points: usize,
}

impl Default for Analysis {
    fn default() -> Self {
        Self { growth: Growth::default(), verdict: Verdict::New, ages: Ages::default(), points: 0 }
    }
}

#[derive(Debug, Default)]
struct StackAgg {
    stats: StackStats,
    /// `None` when the series budget was exhausted when the aggregate was made.
    series: Option<Series>,
    analysis: Analysis,
}

/// Series of one process: heap (tracked live bytes), RSS, anonymous RSS and swap.
#[derive(Debug, Default)]
struct ProcessSeries {
    heap: Series,
    rss: Series,
    anon: Series,
    swap: Series,
}

/// State of one process.
#[derive(Debug, Default)]
struct Process {
    comm: String,
    allocs: LiveMap,
    stacks: HashMap<StackId, StackAgg>,
    live_bytes: u64,
    live_count: u64,
    series: Option<ProcessSeries>,
    analysis: Analysis,
    rss: Option<RssSample>,
    /// Its tier-1 probes were detached: its heap figures stand still (see [`frozen`]).
    frozen: Option<Frozen>,
    /// Stacks merged into another with the same resolved frames: raw stack -> the aggregate's stack (see
    /// [`identity`]). Each holds a reference to its raw stack.
    alias: HashMap<StackId, StackId>,
    /// Resolved identity -> the aggregate's stack.
    by_identity: HashMap<u64, StackId>,
}

impl Process {
    /// The aggregate allocations of `stack` count in.
    fn agg_key(&self, stack: StackId) -> StackId {
        if self.alias.is_empty() {
            return stack;
        }
        self.alias.get(&stack).copied().unwrap_or(stack)
    }
}

/// No allocation can be larger than a user address space (2^56 bytes with 5-level paging): a record that says
/// so is corrupt, and is counted rather than tracked.
pub const MAX_PLAUSIBLE_SIZE: u64 = 1 << 56;

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
    /// Allocations not tracked because their size is larger than any address space ([`MAX_PLAUSIBLE_SIZE`]):
    /// a corrupt record.
    pub implausible_sizes: u64,
    /// Processes purged on exit or exec.
    pub processes_purged: u64,
    /// Of those, processes purged because they were gone from `/proc` at two ticks in a row while the table
    /// still held them: their exit event was lost (ring buffer full).
    pub processes_gone: u64,
    /// Aggregates or processes that got no time series because `max_series` was reached.
    pub series_dropped: u64,
    /// Ticks recorded.
    pub ticks: u64,
    /// Raw stacks merged into another of their process with the same resolved frames (JIT code that moved).
    pub stacks_merged: u64,
    /// New stacks not offered for identification because too many waited ([`identity::MAX_UNIDENTIFIED`]).
    pub identity_skipped: u64,
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

/// One (process, stack) as queries see it.
#[derive(Debug)]
pub struct StackRow<'a> {
    pub tgid: u32,
    pub comm: &'a str,
    pub frames: &'a [u64],
    pub truncated: bool,
    pub stack_hash: u64,
    pub stats: StackStats,
    pub analysis: Analysis,
    /// The series, to recompute growth over another window.
    pub series: Option<&'a Series>,
    /// Set when the process's probes were detached: the figures are the last ones seen.
    pub frozen: Option<&'a Frozen>,
}

/// One process as queries see it.
#[derive(Debug)]
pub struct ProcessRow<'a> {
    pub tgid: u32,
    pub comm: &'a str,
    pub live_bytes: u64,
    pub live_count: u64,
    pub stacks: usize,
    pub analysis: Analysis,
    /// The heap series, to recompute growth over another window.
    pub heap_series: Option<&'a Series>,
    pub rss: Option<RssSample>,
    /// Growth of RSS, anonymous RSS and swap.
    pub rss_growth: [Growth; 3],
    /// Set when the process's probes were detached: the heap figures are the last ones seen, and the
    /// verdict in `analysis` is its anonymous memory's.
    pub frozen: Option<&'a Frozen>,
}

/// Sizes of the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sizes {
    pub processes: usize,
    pub live_allocations: usize,
    pub live_bytes: u64,
    pub stacks: usize,
    pub stacks_overflowed: u64,
    pub series: usize,
    pub series_points: usize,
}

/// The live-allocation table.
#[derive(Debug)]
pub struct Table {
    procs: HashMap<u32, Process>,
    stacks: StackStore,
    live_allocations: usize,
    series: usize,
    limits: Limits,
    config: AnalysisConfig,
    ticks: TickLog,
    counters: TableCounters,
    /// Sampling intervals of processes traced with their own (tier 1), overriding `config.sample_interval`.
    intervals: HashMap<u32, u64>,
    /// New (process, stack) aggregates not yet identified by their resolved frames (see [`identity`]).
    unidentified: Vec<(u32, StackId)>,
}

/// A `comm` field as text, up to its first NUL.
pub fn comm_str(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

impl Table {
    pub fn new(limits: Limits, config: AnalysisConfig) -> Self {
        Self {
            procs: HashMap::default(),
            stacks: StackStore::new(limits.max_stacks),
            live_allocations: 0,
            series: 0,
            limits,
            config,
            ticks: TickLog::default(),
            counters: TableCounters::default(),
            intervals: HashMap::default(),
            unidentified: Vec::new(),
        }
    }

    /// Sets the sampling interval of one process's allocations (tier 1; 0: every allocation), or back to the
    /// daemon's with `None`.
    pub fn set_interval(&mut self, tgid: u32, interval: Option<u64>) {
        match interval {
            Some(interval) => self.intervals.insert(tgid, interval),
            None => self.intervals.remove(&tgid),
        };
    }

    /// The sampling interval of `tgid`'s allocations.
    pub fn interval(&self, tgid: u32) -> u64 {
        self.intervals.get(&tgid).copied().unwrap_or(self.config.sample_interval)
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
            // The table is unchanged: the caller snapshots an OOM victim, whose exit comes later; faults and
            // mapping growth are tier 0's, for the fault table.
            Event::Oom(_) | Event::Fault(_) | Event::Map(_) => Applied::Nothing,
        }
    }

    /// Takes one series from the budget, if any is left.
    fn take_series(&mut self, n: usize) -> bool {
        if self.series + n > self.limits.max_series {
            self.counters.series_dropped += 1;
            return false;
        }
        self.series += n;
        true
    }

    fn alloc(&mut self, event: &AllocEvent) -> Applied {
        let tgid = event.header.tgid;
        let is_new = !self.procs.contains_key(&tgid);
        if is_new {
            let series = self.take_series(4).then(ProcessSeries::default);
            self.procs.insert(tgid, Process { comm: comm_str(&event.comm), series, ..Process::default() });
        }
        if event.flags & ALLOC_FLAG_REPLACES_OLD != 0 {
            self.free(tgid, event.old_addr);
        }
        let new_process = if is_new { Applied::NewProcess(tgid) } else { Applied::Nothing };
        // The first frames the kernel wrote; `nframes` was bounded by the decoder.
        let frames = &event.frames[..(event.nframes as usize).min(event.frames.len())];
        let truncated = event.flags & ALLOC_FLAG_STACK_TRUNCATED != 0;
        let Some(process) = self.procs.get_mut(&tgid) else { return new_process };
        let full = self.live_allocations >= self.limits.max_allocations;
        if full || event.size > MAX_PLAUSIBLE_SIZE {
            // Not tracked; still, a new allocation at an address ends the block the table held there.
            if let Some(old) = process.allocs.remove(event.addr) {
                self.counters.replaced_live += 1;
                unaccount(process, old);
                self.live_allocations -= 1;
            }
            if self.live_allocations >= self.limits.max_allocations {
                self.counters.dropped_table_full += 1;
                return new_process;
            }
            if event.size > MAX_PLAUSIBLE_SIZE {
                self.counters.implausible_sizes += 1;
                return new_process;
            }
        }
        let raw = self.stacks.intern(frames, truncated);
        let stack = process.agg_key(raw);
        let has_agg = process.stacks.contains_key(&stack);
        if has_agg || stack != raw {
            // The aggregate (or the alias) already holds a reference to this stack.
            self.stacks.release(raw);
        }
        let series = !has_agg && self.take_series(1);
        if !has_agg {
            self.unidentified(tgid, stack);
        }
        let Some(process) = self.procs.get_mut(&tgid) else { return new_process };
        let agg = match process.stacks.entry(stack) {
            Entry::Occupied(slot) => slot.into_mut(),
            Entry::Vacant(slot) => slot.insert(StackAgg {
                stats: StackStats { first_ns: event.header.ts_ns, ..StackStats::default() },
                series: series.then(Series::default),
                analysis: Analysis::default(),
            }),
        };
        let (bytes, count) = match self.intervals.get(&tgid).copied().unwrap_or(self.config.sample_interval) {
            0 => (event.size, 1),
            interval => sampling::weigh(event.size, interval)(event.addr ^ event.header.ts_ns),
        };
        // What is added here is exactly what `unaccount` takes away. Sums saturate rather than wrap: sizes are
        // bounded, but totals grow for as long as the daemon runs.
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        let stats = &mut agg.stats;
        stats.live_bytes = stats.live_bytes.saturating_add(bytes);
        stats.live_count = stats.live_count.saturating_add(u64::from(count));
        stats.total_bytes = stats.total_bytes.saturating_add(bytes);
        stats.total_count = stats.total_count.saturating_add(u64::from(count));
        stats.last_ns = event.header.ts_ns;
        process.live_bytes = process.live_bytes.saturating_add(bytes);
        process.live_count = process.live_count.saturating_add(u64::from(count));
        // One lookup of the address on the common path: the insert returns the block the address held, if any.
        let alloc = Alloc { size: bytes, stack, ts_ns: event.header.ts_ns, count };
        if let Some(old) = process.allocs.insert(event.addr, alloc) {
            self.counters.replaced_live += 1;
            unaccount(process, old);
        } else {
            self.live_allocations += 1;
        }
        new_process
    }

    fn free(&mut self, tgid: u32, addr: u64) {
        let Some(process) = self.procs.get_mut(&tgid) else {
            self.counters.unknown_frees += 1;
            return;
        };
        let Some(alloc) = process.allocs.remove(addr) else {
            self.counters.unknown_frees += 1;
            return;
        };
        unaccount(process, alloc);
        self.live_allocations -= 1;
    }

    /// Purges a process found gone from `/proc` (its exit event was lost): its entries recorded before
    /// `before_ns` go.
    pub fn purge_gone(&mut self, tgid: u32, before_ns: u64) -> Applied {
        let applied = self.purge(tgid, before_ns);
        if applied != Applied::Nothing {
            self.counters.processes_gone += 1;
        }
        applied
    }

    fn purge(&mut self, tgid: u32, before_ns: u64) -> Applied {
        self.intervals.remove(&tgid);
        let Some(process) = self.procs.remove(&tgid) else {
            return Applied::Nothing;
        };
        self.counters.processes_purged += 1;
        self.live_allocations -= process.allocs.len();
        self.series -= process.stacks.values().filter(|agg| agg.series.is_some()).count();
        if process.series.is_some() {
            self.series -= 4;
        }
        for stack in process.stacks.keys().chain(process.alias.keys()) {
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

    /// Every (process, stack), optionally of one process, unordered.
    pub fn stacks(&self, pid: Option<u32>) -> impl Iterator<Item = StackRow<'_>> {
        self.procs.iter().filter(move |(tgid, _)| pid.is_none_or(|pid| pid == **tgid)).flat_map(
            move |(tgid, process)| {
                process.stacks.iter().map(move |(stack, agg)| StackRow {
                    tgid: *tgid,
                    comm: &process.comm,
                    frames: self.stacks.frames(*stack),
                    truncated: self.stacks.truncated(*stack),
                    stack_hash: self.stacks.hash(*stack),
                    stats: agg.stats,
                    // A stack first seen after the detach (an event still in the ring buffer) is frozen too.
                    analysis: match process.frozen {
                        Some(_) => Analysis { verdict: Verdict::Frozen, ..agg.analysis },
                        None => agg.analysis,
                    },
                    series: agg.series.as_ref(),
                    frozen: process.frozen.as_ref(),
                })
            },
        )
    }

    /// Stacks ordered by live bytes (then total bytes), largest first, optionally of one process.
    pub fn top(&self, pid: Option<u32>, limit: usize) -> Vec<StackRow<'_>> {
        let mut rows: Vec<StackRow<'_>> = self.stacks(pid).collect();
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

    /// Every process, optionally only one, unordered; RSS growth over the last `window_s` seconds (the whole
    /// window when `None`).
    pub fn processes(&self, pid: Option<u32>, window_s: Option<f64>) -> impl Iterator<Item = ProcessRow<'_>> {
        self.procs.iter().filter(move |(tgid, _)| pid.is_none_or(|pid| pid == **tgid)).map(move |(tgid, p)| {
            let rss_growth = p.series.as_ref().map_or([Growth::default(); 3], |s| {
                [&s.rss, &s.anon, &s.swap].map(|series| match window_s {
                    Some(window_s) => self.config.growth_within(&self.ticks, series, window_s, SampleClock::Rss).0,
                    None => self.config.growth(&self.ticks, series, self.config.window_points(), SampleClock::Rss),
                })
            });
            let analysis = match p.frozen {
                Some(_) => Analysis { verdict: frozen::anon_verdict(self, p), ..p.analysis },
                None => p.analysis,
            };
            ProcessRow {
                tgid: *tgid,
                comm: &p.comm,
                live_bytes: p.live_bytes,
                live_count: p.live_count,
                stacks: p.stacks.len(),
                analysis,
                heap_series: p.series.as_ref().map(|s| &s.heap),
                rss: p.rss,
                rss_growth,
                frozen: p.frozen.as_ref(),
            }
        })
    }

    /// Thread-group ids of every tracked process.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.keys().copied().collect()
    }

    /// Current sizes.
    pub fn sizes(&self) -> Sizes {
        let series_points = self
            .procs
            .values()
            .map(|p| {
                p.stacks.values().filter_map(|a| a.series.as_ref()).map(Series::len).sum::<usize>()
                    + p.series.as_ref().map_or(0, |s| s.heap.len() + s.rss.len() + s.anon.len() + s.swap.len())
            })
            .sum();
        Sizes {
            processes: self.procs.len(),
            live_allocations: self.live_allocations,
            live_bytes: self.procs.values().map(|p| p.live_bytes).sum(),
            stacks: self.stacks.len(),
            stacks_overflowed: self.stacks.overflowed(),
            series: self.series,
            series_points,
        }
    }

    /// The limits the table was made with.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The analysis settings.
    pub fn config(&self) -> &AnalysisConfig {
        &self.config
    }

    /// Growth over the last `points` samples of a heap series (a row's `series`).
    /// Heap growth over the last `window_s` seconds of a series, and the samples it took.
    pub fn heap_growth_within(&self, series: &Series, window_s: f64) -> (Growth, usize) {
        self.config.growth_within(&self.ticks, series, window_s, SampleClock::Heap)
    }

    /// Counters.
    pub fn counters(&self) -> TableCounters {
        self.counters
    }
}

/// Removes an allocation's bytes from its stack and process.
fn unaccount(process: &mut Process, alloc: Alloc) {
    let key = process.agg_key(alloc.stack);
    if let Some(agg) = process.stacks.get_mut(&key) {
        agg.stats.live_bytes = agg.stats.live_bytes.saturating_sub(alloc.size);
        agg.stats.live_count = agg.stats.live_count.saturating_sub(u64::from(alloc.count));
    }
    process.live_bytes = process.live_bytes.saturating_sub(alloc.size);
    process.live_count = process.live_count.saturating_sub(u64::from(alloc.count));
}

#[cfg(test)]
pub(crate) mod tests;
