//! Tier 0: growth of anonymous memory attributed to the user stacks that first touched it.
//!
//! Pure: fed sampled write-fault events (see `leakprobe_common::FaultEvent`) and per-tick samples of each
//! process's anonymous memory. The kernel samples faults as a Poisson process over faulting bytes (each fault one
//! base page) with mean interval `R`; each sampled fault stands for `page / p` bytes, `p = 1 - exp(-page / R)`,
//! so the bytes per stack are unbiased estimates of the bytes faulted in from it (Horvitz-Thompson).
//!
//! Mapping growth (see `leakprobe_common::MapEvent`): private anonymous writable `mmap` calls and `brk` rises,
//! sampled over the mapped bytes with the same interval, each sample weighing `len / p`: the bytes each stack
//! asked the kernel for, touched or not. Next to it, each process's `VmData` at each tick: what it holds mapped
//! (unmaps netted out), and its growth.
//!
//! A process is *growing* when its anonymous memory (resident + swapped) grows steadily over the window: the
//! least-squares slope is at least `min_growth_rate`, R² at least `min_r2`, it never fell back by more than
//! `max_leak_drawdown`, and the recent part still grows (the heap verdict's rule without the age condition,
//! which needs allocations). Growing processes are tier 1's candidates.

use std::collections::{HashMap, VecDeque};

use leakprobe_common::{FAULT_FLAG_STACK_TRUNCATED, FAULT_PAGE_BYTES, FaultEvent, MapEvent, MapSource};

use super::{
    analysis::{self, Growth, Sample, VerdictConfig},
    sampling,
    stacks::{StackId, StackStore},
    table::comm_str,
};

/// Limits of the fault table.
#[derive(Clone, Copy, Debug)]
pub struct FaultLimits {
    /// The most processes followed (further ones are counted in `dropped_processes`).
    pub max_processes: usize,
    /// The most distinct fault stacks stored (further ones go to the overflow stack).
    pub max_stacks: usize,
    /// The most stacks kept per process (further ones are counted in `dropped_stacks`).
    pub max_stacks_per_process: usize,
}

impl Default for FaultLimits {
    fn default() -> Self {
        Self { max_processes: 4096, max_stacks: 16_384, max_stacks_per_process: 256 }
    }
}

/// Faults attributed to one stack of one process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Estimated bytes faulted in from this stack.
    pub bytes: u64,
    /// Sampled faults.
    pub samples: u64,
    /// Monotonic ns of the first and latest sampled fault.
    pub first_ns: u64,
    pub last_ns: u64,
}

/// Mapping growth attributed to one stack of one process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapStats {
    /// Estimated bytes mapped from this stack, and sampled calls, first and latest (as for faults).
    pub stats: FaultStats,
    /// The [`MapSource`]s seen, one bit each (`1 << source`).
    pub sources: u32,
}

impl MapStats {
    /// The sources seen, by name.
    pub fn source_names(&self) -> Vec<&'static str> {
        [MapSource::Mmap, MapSource::Brk]
            .into_iter()
            .filter(|s| self.sources & (1 << *s as u32) != 0)
            .map(MapSource::name)
            .collect()
    }
}

impl FaultStats {
    /// One more sample standing for `bytes`, at monotonic `ts` ns.
    fn add(&mut self, bytes: u64, ts: u64) {
        self.bytes = self.bytes.saturating_add(bytes);
        self.samples += 1;
        self.last_ns = ts;
        if self.first_ns == 0 {
            self.first_ns = ts;
        }
    }
}

/// The anonymous memory (resident + swap) and the data mappings of a process at a tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnonSample {
    pub anon: u64,
    pub swap: u64,
    /// `VmData`: private writable mappings and the heap, touched or not.
    pub data: u64,
}

#[derive(Debug, Default)]
struct FaultProcess {
    comm: String,
    stacks: HashMap<StackId, FaultStats>,
    totals: FaultStats,
    /// Mapping growth per stack, and in all.
    maps: HashMap<StackId, MapStats>,
    map_totals: FaultStats,
    /// (seconds, anonymous bytes) at each tick, oldest first.
    anon: VecDeque<Sample>,
    /// (seconds, `VmData` bytes) at each tick, oldest first.
    data: VecDeque<Sample>,
    latest: Option<AnonSample>,
    growth: Growth,
    data_growth: Growth,
    growing: bool,
}

/// Counters of the fault table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounters {
    /// Sampled fault events applied.
    pub events: u64,
    /// Sampled mapping-growth events applied.
    pub map_events: u64,
    /// Fault events of processes beyond `max_processes`: not attributed.
    pub dropped_processes: u64,
    /// Fault events of new stacks beyond `max_stacks_per_process`: not attributed.
    pub dropped_stacks: u64,
    /// Processes forgotten on exit or exec.
    pub purged: u64,
    /// Sampled faults that mapped a large anonymous folio (a transparent huge page) at once, weighed by its size.
    pub large_folios: u64,
}

/// One process as queries see it.
#[derive(Debug)]
pub struct FaultProcessRow<'a> {
    pub tgid: u32,
    pub comm: &'a str,
    pub totals: FaultStats,
    /// Estimated bytes mapped (`mmap`, `brk`) and sampled calls.
    pub map_totals: FaultStats,
    pub latest: Option<AnonSample>,
    pub growth: Growth,
    /// Growth of `VmData` over the window.
    pub data_growth: Growth,
    pub growing: bool,
    /// Points in the anonymous-memory series.
    pub points: usize,
}

/// One stack of one process as queries see it, with its faults ([`FaultStackRow`]) or mappings
/// ([`MapStackRow`]).
#[derive(Debug)]
pub struct StackRow<'a, S> {
    pub frames: &'a [u64],
    pub truncated: bool,
    pub stack_hash: u64,
    pub stats: S,
}

/// A fault stack of one process.
pub type FaultStackRow<'a> = StackRow<'a, FaultStats>;
/// A mapping stack of one process.
pub type MapStackRow<'a> = StackRow<'a, MapStats>;

/// Sampled faults and mapping growth per process and stack, and each process's anonymous-memory growth.
#[derive(Debug)]
pub struct FaultTable {
    procs: HashMap<u32, FaultProcess>,
    stacks: StackStore,
    limits: FaultLimits,
    /// Mean bytes between sampled faults.
    interval: u64,
    counters: FaultCounters,
}

impl FaultTable {
    pub fn new(limits: FaultLimits, interval: u64) -> Self {
        Self {
            procs: HashMap::new(),
            stacks: StackStore::new(limits.max_stacks),
            limits,
            interval: interval.max(1),
            counters: FaultCounters::default(),
        }
    }

    /// The sampling interval, in bytes.
    pub fn interval(&self) -> u64 {
        self.interval
    }

    /// Applies one sampled fault that mapped `mapped` bytes (one base page, or a whole transparent huge page);
    /// true when it is the first of its process.
    ///
    /// The kernel samples every fault as one base page: a fault that mapped a large folio was sampled with the
    /// probability of a base page, so its weight is scaled by the folio's pages, which keeps the estimate unbiased.
    pub fn apply(&mut self, event: &FaultEvent, mapped: u64) -> bool {
        self.counters.events += 1;
        let (weight, _) = sampling::weigh(FAULT_PAGE_BYTES, self.interval)(event.addr ^ event.header.ts_ns);
        let pages = (mapped / FAULT_PAGE_BYTES).max(1);
        if pages > 1 {
            self.counters.large_folios += 1;
        }
        let bytes = weight.saturating_mul(pages);
        let tgid = event.header.tgid;
        let frames = &event.frames[..(event.nframes as usize).min(event.frames.len())];
        let (is_new, stack) = match self.admit(tgid, &event.comm, frames, event.flags, |p| &p.stacks) {
            Ok(admitted) => admitted,
            Err(is_new) => return is_new,
        };
        let Some(process) = self.procs.get_mut(&tgid) else { return is_new };
        let ts = event.header.ts_ns;
        let stats = process.stacks.entry(stack).or_default();
        for stats in [stats, &mut process.totals] {
            stats.add(bytes, ts);
        }
        is_new
    }

    /// Applies one sampled mapping growth (an `mmap`, a `brk` rise); true when it is the first event of its
    /// process.
    pub fn apply_map(&mut self, event: &MapEvent) -> bool {
        self.counters.map_events += 1;
        let (bytes, _) = sampling::weigh(event.len, self.interval)(event.len ^ event.header.ts_ns);
        let tgid = event.header.tgid;
        let frames = &event.frames[..(event.nframes as usize).min(event.frames.len())];
        let (is_new, stack) = match self.admit(tgid, &event.comm, frames, event.flags, |p| &p.maps) {
            Ok(admitted) => admitted,
            Err(is_new) => return is_new,
        };
        let Some(process) = self.procs.get_mut(&tgid) else { return is_new };
        let ts = event.header.ts_ns;
        let entry = process.maps.entry(stack).or_default();
        entry.stats.add(bytes, ts);
        if let Some(source) = MapSource::from_raw(event.source) {
            entry.sources |= 1 << source as u32;
        }
        process.map_totals.add(bytes, ts);
        is_new
    }

    /// The process of an event (created if new and there is room) and the stack of its frames, interned,
    /// when `stacks_of` (faults' or mappings') has it already or room for it; each refusal is counted, and says
    /// whether the process is new.
    fn admit<V>(
        &mut self,
        tgid: u32,
        comm: &[u8; 16],
        frames: &[u64],
        flags: u32,
        stacks_of: impl Fn(&FaultProcess) -> &HashMap<StackId, V>,
    ) -> Result<(bool, StackId), bool> {
        let is_new = !self.procs.contains_key(&tgid);
        if is_new {
            if self.procs.len() >= self.limits.max_processes {
                self.counters.dropped_processes += 1;
                return Err(false);
            }
            self.procs.insert(tgid, FaultProcess { comm: comm_str(comm), ..FaultProcess::default() });
        }
        let Some(process) = self.procs.get(&tgid) else { return Err(is_new) };
        let stack = self.stacks.intern(frames, flags & FAULT_FLAG_STACK_TRUNCATED != 0);
        let stacks = stacks_of(process);
        if stacks.contains_key(&stack) {
            self.stacks.release(stack);
        } else if stacks.len() >= self.limits.max_stacks_per_process {
            self.stacks.release(stack);
            self.counters.dropped_stacks += 1;
            return Err(is_new);
        }
        Ok((is_new, stack))
    }

    /// Forgets a process (exit, exec).
    pub fn purge(&mut self, tgid: u32) {
        if let Some(process) = self.procs.remove(&tgid) {
            self.counters.purged += 1;
            for stack in process.stacks.keys().chain(process.maps.keys()) {
                self.stacks.release(*stack);
            }
        }
    }

    /// Sets the name of a process (from `/proc/PID/comm`).
    pub fn set_comm(&mut self, tgid: u32, comm: String) {
        if let Some(process) = self.procs.get_mut(&tgid) {
            process.comm = comm;
        }
    }

    /// Every followed process.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.keys().copied().collect()
    }

    /// Records a process's anonymous memory at `t_s` seconds (monotonic), keeping `capacity` points, and
    /// recomputes its growth and whether it is growing.
    pub fn record_anon(&mut self, tgid: u32, t_s: f64, sample: AnonSample, capacity: usize, rule: &VerdictConfig) {
        let Some(process) = self.procs.get_mut(&tgid) else { return };
        process.latest = Some(sample);
        #[expect(clippy::cast_precision_loss, reason = "byte counts fit f64 closely enough")]
        let points = [(t_s, (sample.anon + sample.swap) as f64), (t_s, sample.data as f64)];
        for (series, point) in [&mut process.anon, &mut process.data].into_iter().zip(points) {
            series.push_back(point);
            while series.len() > capacity.max(2) {
                series.pop_front();
            }
        }
        process.growth = analysis::growth(process.anon.make_contiguous(), rule);
        process.growing = steady(process.anon.len(), &process.growth, rule);
        process.data_growth = analysis::growth(process.data.make_contiguous(), rule);
    }

    /// Processes, optionally only one, unordered.
    pub fn processes(&self, pid: Option<u32>) -> impl Iterator<Item = FaultProcessRow<'_>> {
        self.procs.iter().filter(move |(tgid, _)| pid.is_none_or(|p| p == **tgid)).map(|(tgid, p)| FaultProcessRow {
            tgid: *tgid,
            comm: &p.comm,
            totals: p.totals,
            map_totals: p.map_totals,
            latest: p.latest,
            growth: p.growth,
            data_growth: p.data_growth,
            growing: p.growing,
            points: p.anon.len(),
        })
    }

    /// The fault stacks of one process, most bytes first, at most `limit`.
    pub fn stacks_of(&self, tgid: u32, limit: usize) -> Vec<FaultStackRow<'_>> {
        self.rows(tgid, limit, |p| &p.stacks, |s| s.bytes)
    }

    /// The mapping stacks of one process, most bytes first, at most `limit`.
    pub fn map_stacks_of(&self, tgid: u32, limit: usize) -> Vec<MapStackRow<'_>> {
        self.rows(tgid, limit, |p| &p.maps, |s| s.stats.bytes)
    }

    fn rows<S: Copy>(
        &self,
        tgid: u32,
        limit: usize,
        stacks_of: impl Fn(&FaultProcess) -> &HashMap<StackId, S>,
        bytes: impl Fn(&S) -> u64,
    ) -> Vec<StackRow<'_, S>> {
        let Some(process) = self.procs.get(&tgid) else { return Vec::new() };
        let mut rows: Vec<StackRow<'_, S>> = stacks_of(process)
            .iter()
            .map(|(stack, stats)| StackRow {
                frames: self.stacks.frames(*stack),
                truncated: self.stacks.truncated(*stack),
                stack_hash: self.stacks.hash(*stack),
                stats: *stats,
            })
            .collect();
        rows.sort_by(|a, b| bytes(&b.stats).cmp(&bytes(&a.stats)).then(a.stack_hash.cmp(&b.stack_hash)));
        rows.truncate(limit);
        rows
    }

    /// Processes followed and distinct stacks stored.
    pub fn sizes(&self) -> (usize, usize) {
        (self.procs.len(), self.stacks.len())
    }

    pub fn counters(&self) -> FaultCounters {
        self.counters
    }
}

/// The growth rule of tier 0 (see the module documentation).
pub fn steady(points: usize, growth: &Growth, rule: &VerdictConfig) -> bool {
    points >= rule.min_points
        && growth.rate >= rule.min_growth_rate
        && growth.r2 >= rule.min_r2
        && growth.drawdown <= rule.max_leak_drawdown
        && growth.recent_rate >= rule.min_recent_ratio * growth.rate
}

#[cfg(test)]
mod tests {
    use leakprobe_common::{EventHeader, EventKind, MAX_FRAMES};

    use super::*;

    fn fault(tgid: u32, ts_ns: u64, frames: &[u64]) -> FaultEvent {
        let mut all = [0u64; MAX_FRAMES];
        all[..frames.len()].copy_from_slice(frames);
        FaultEvent {
            header: EventHeader { kind: EventKind::Fault as u32, pad: 0, ts_ns, tgid, tid: tgid },
            addr: ts_ns << 12,
            error_code: 6,
            nframes: u32::try_from(frames.len()).expect("few frames"),
            flags: 0,
            comm: *b"golike\0\0\0\0\0\0\0\0\0\0",
            frames: all,
        }
    }

    #[test]
    fn every_fault_counts_one_page_when_every_fault_is_sampled() {
        // An interval far below a page: p = 1 - e^-4096 = 1, each sample one page.
        let mut table = FaultTable::new(FaultLimits::default(), 1);
        assert!(table.apply(&fault(7, 1, &[0x10, 0x20]), FAULT_PAGE_BYTES));
        assert!(!table.apply(&fault(7, 2, &[0x10, 0x20]), FAULT_PAGE_BYTES));
        table.apply(&fault(7, 3, &[0x30]), FAULT_PAGE_BYTES);
        let stacks = table.stacks_of(7, 10);
        assert_eq!(stacks.len(), 2);
        assert_eq!(stacks[0].frames, &[0x10, 0x20]);
        assert_eq!(stacks[0].stats.bytes, 2 * FAULT_PAGE_BYTES);
        assert_eq!(stacks[0].stats.samples, 2);
        assert_eq!((stacks[0].stats.first_ns, stacks[0].stats.last_ns), (1, 2));
        let row = table.processes(Some(7)).next().expect("process 7");
        assert_eq!(row.totals.bytes, 3 * FAULT_PAGE_BYTES);
        assert_eq!(row.comm, "golike");
        table.purge(7);
        assert_eq!(table.sizes(), (0, 0));
    }

    fn map(tgid: u32, ts_ns: u64, len: u64, source: MapSource, frames: &[u64]) -> MapEvent {
        let mut all = [0u64; MAX_FRAMES];
        all[..frames.len()].copy_from_slice(frames);
        MapEvent {
            header: EventHeader { kind: EventKind::Map as u32, pad: 0, ts_ns, tgid, tid: tgid },
            len,
            source: source as u32,
            nframes: u32::try_from(frames.len()).expect("few frames"),
            flags: 0,
            pad: 0,
            comm: *b"golike\0\0\0\0\0\0\0\0\0\0",
            frames: all,
        }
    }

    #[test]
    fn mapping_growth_is_attributed_per_stack_apart_from_faults() {
        // An interval of one byte samples every call with probability 1: each weighs its length.
        let mut table = FaultTable::new(FaultLimits::default(), 1);
        assert!(table.apply_map(&map(7, 1, 8 << 20, MapSource::Mmap, &[0x10, 0x20])));
        assert!(!table.apply_map(&map(7, 2, 8 << 20, MapSource::Mmap, &[0x10, 0x20])));
        table.apply_map(&map(7, 3, 132 << 10, MapSource::Brk, &[0x30]));
        table.apply_map(&map(7, 4, 4096, MapSource::Mmap, &[0x30]));
        table.apply(&fault(7, 5, &[0x10, 0x20]), FAULT_PAGE_BYTES);
        let maps = table.map_stacks_of(7, 10);
        assert_eq!(maps.len(), 2);
        assert_eq!(maps[0].frames, &[0x10, 0x20]);
        assert_eq!((maps[0].stats.stats.bytes, maps[0].stats.stats.samples), (16 << 20, 2));
        assert_eq!(maps[0].stats.source_names(), ["mmap"]);
        assert_eq!(maps[1].stats.stats.bytes, (132 << 10) + 4096);
        assert_eq!(maps[1].stats.source_names(), ["mmap", "brk"]);
        let row = table.processes(Some(7)).next().expect("process 7");
        assert_eq!((row.map_totals.bytes, row.map_totals.samples), ((16 << 20) + (132 << 10) + 4096, 4));
        assert_eq!((row.totals.bytes, row.totals.samples), (FAULT_PAGE_BYTES, 1), "faults apart");
        assert_eq!(table.stacks_of(7, 10).len(), 1);
        assert_eq!(table.counters().map_events, 4);
        // The stack the fault and a mapping share is stored once, and released with the process.
        assert_eq!(table.sizes(), (1, 2));
        table.purge(7);
        assert_eq!(table.sizes(), (0, 0));
    }

    #[test]
    #[expect(clippy::cast_precision_loss, reason = "small byte counts")]
    fn a_sampled_mapping_weighs_its_inverse_probability() {
        let interval = 512 << 10;
        let mut table = FaultTable::new(FaultLimits::default(), interval);
        table.apply_map(&map(1, 5, 64 << 10, MapSource::Mmap, &[0x10]));
        let expected = f64::from(64 << 10) / sampling::probability(64 << 10, interval);
        let bytes = table.map_stacks_of(1, 1)[0].stats.stats.bytes;
        assert!((bytes as f64 - expected).abs() < 1.0, "{bytes} vs {expected}");
        // A mapping far above the interval is sampled with probability ~1 and weighs its own length.
        table.apply_map(&map(2, 5, 64 << 20, MapSource::Mmap, &[0x10]));
        assert_eq!(table.map_stacks_of(2, 1)[0].stats.stats.bytes, 64 << 20);
    }

    #[test]
    fn a_fault_that_mapped_a_huge_page_weighs_the_whole_page() {
        let mut table = FaultTable::new(FaultLimits::default(), 1);
        table.apply(&fault(7, 1, &[0x10]), 2 << 20);
        table.apply(&fault(7, 2, &[0x10]), FAULT_PAGE_BYTES);
        // A size below a page (never reported) still counts as the page the kernel sampled.
        table.apply(&fault(7, 3, &[0x10]), 0);
        let row = table.processes(Some(7)).next().expect("process 7");
        assert_eq!(row.totals.bytes, (2 << 20) + 2 * FAULT_PAGE_BYTES);
        assert_eq!(row.totals.samples, 3);
        assert_eq!(table.counters().large_folios, 1);
    }

    #[test]
    #[expect(clippy::cast_precision_loss, reason = "small byte counts")]
    fn sampled_faults_weigh_their_inverse_probability() {
        let mut table = FaultTable::new(FaultLimits::default(), 64 << 10);
        table.apply(&fault(1, 5, &[0x10]), FAULT_PAGE_BYTES);
        let expected = FAULT_PAGE_BYTES as f64 / sampling::probability(FAULT_PAGE_BYTES, 64 << 10);
        let bytes = table.stacks_of(1, 1)[0].stats.bytes;
        assert!((bytes as f64 - expected).abs() < 1.0, "{bytes} vs {expected}");
    }

    #[test]
    fn limits_are_counted() {
        let limits = FaultLimits { max_processes: 1, max_stacks: 10, max_stacks_per_process: 1 };
        let mut table = FaultTable::new(limits, 1);
        table.apply(&fault(1, 1, &[0x10]), FAULT_PAGE_BYTES);
        table.apply(&fault(2, 1, &[0x10]), FAULT_PAGE_BYTES);
        table.apply(&fault(1, 2, &[0x20]), FAULT_PAGE_BYTES);
        let counters = table.counters();
        assert_eq!((counters.events, counters.dropped_processes, counters.dropped_stacks), (3, 1, 1));
        assert_eq!(table.sizes(), (1, 1));
    }

    #[test]
    fn steady_anonymous_growth_is_growing_and_a_wave_is_not() {
        let rule = VerdictConfig::default();
        let mut table = FaultTable::new(FaultLimits::default(), 1);
        table.apply(&fault(1, 1, &[0x10]), FAULT_PAGE_BYTES);
        table.apply(&fault(2, 1, &[0x10]), FAULT_PAGE_BYTES);
        for i in 0..10u32 {
            let t = f64::from(i);
            table.record_anon(
                1,
                t,
                AnonSample { anon: u64::from(i) << 20, swap: 0, data: u64::from(i) << 21 },
                100,
                &rule,
            );
            let wave = if i % 2 == 0 { 10 << 20 } else { 1 << 20 };
            table.record_anon(2, t, AnonSample { anon: wave, swap: 0, data: 64 << 20 }, 100, &rule);
        }
        let growing = |pid| table.processes(Some(pid)).next().expect("process").growing;
        assert!(growing(1));
        assert!(!growing(2));
        let row = table.processes(Some(1)).next().expect("process");
        assert!((row.growth.rate - f64::from(1 << 20)).abs() < 1.0, "{}", row.growth.rate);
        assert!((row.data_growth.rate - f64::from(2 << 20)).abs() < 1.0, "{}", row.data_growth.rate);
        assert_eq!(row.latest.map(|s| s.data), Some(9 << 21));
    }
}
