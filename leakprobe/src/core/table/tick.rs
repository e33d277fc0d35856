//! Ticks: a sample of every series, then growth, ages and verdicts.

use std::collections::VecDeque;

use super::{Ages, Analysis, Table};
use crate::core::{
    analysis::{self, Growth, Point, Sample, Series, VerdictConfig},
    stacks::StackId,
};

/// When a tick's samples were true, in monotonic ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TickTimes {
    /// The table had applied every event up to this time (under load the consumer lags the tick).
    pub heap_ns: u64,
    /// `/proc` was read at this time.
    pub rss_ns: u64,
}

/// Which of a tick's times a series' samples were taken at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleClock {
    Heap,
    Rss,
}

/// The times of the ticks still in the window, oldest first.
#[derive(Clone, Debug, Default)]
pub struct TickLog {
    first_tick: u64,
    times: VecDeque<TickTimes>,
}

impl TickLog {
    fn push(&mut self, tick: u64, times: TickTimes, capacity: usize) {
        if self.times.is_empty() || tick != self.first_tick + self.times.len() as u64 {
            self.times.clear();
            self.first_tick = tick;
        }
        self.times.push_back(times);
        while self.times.len() > capacity.max(1) {
            self.times.pop_front();
            self.first_tick += 1;
        }
    }

    fn get(&self, tick: u64) -> Option<TickTimes> {
        let index = usize::try_from(tick.checked_sub(self.first_tick)?).ok()?;
        self.times.get(index).copied()
    }

    /// The last `points` samples of `series` with the times they were true at, in seconds.
    pub fn samples(&self, series: &Series, points: usize, clock: SampleClock) -> Vec<Sample> {
        series
            .last(points)
            .filter_map(|(tick, point)| {
                let times = self.get(tick)?;
                let ns = match clock {
                    SampleClock::Heap => times.heap_ns,
                    SampleClock::Rss => times.rss_ns,
                };
                #[expect(clippy::cast_precision_loss, reason = "ns since boot and byte counts fit f64 closely enough")]
                Some((ns as f64 / 1e9, point.bytes as f64))
            })
            .collect()
    }
}

/// Upper bounds, in seconds, of the age buckets of live bytes (the last bucket is everything older).
pub const AGE_BUCKETS: [u64; 4] = [60, 600, 3_600, 21_600];

/// How series are sampled and judged.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalysisConfig {
    /// Seconds between ticks.
    pub interval_s: f64,
    /// Seconds of history kept and used for growth.
    pub window_s: f64,
    /// Thresholds of the verdict.
    pub verdict: VerdictConfig,
    /// 0: every allocation is tracked and counted exactly. Otherwise the mean interval, in bytes, of the
    /// kernel's sampling: each allocation counts for its weight (see [`crate::core::sampling`]).
    pub sample_interval: u64,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self { interval_s: 5.0, window_s: 600.0, verdict: VerdictConfig::default(), sample_interval: 0 }
    }
}

impl AnalysisConfig {
    /// Points covering `window_s` seconds (at least 2).
    pub fn points_for(&self, window_s: f64) -> usize {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a positive ratio of two configured durations"
        )]
        let points = (window_s / self.interval_s).round().max(0.0) as usize + 1;
        points.max(2)
    }

    /// Points kept per series.
    pub fn window_points(&self) -> usize {
        self.points_for(self.window_s)
    }

    /// Growth over the last `points` samples of a series.
    pub fn growth(&self, log: &TickLog, series: &Series, points: usize, clock: SampleClock) -> Growth {
        analysis::growth(&log.samples(series, points, clock), &self.verdict)
    }

    /// Growth over the samples of the last `window_s` seconds of a series, and how many there were.
    ///
    /// By time, not by count: ticks come late when the host is busy (the RSS reads run on a blocking thread),
    /// and the last `window_s / interval_s` samples then span more than the window asked for. Half an interval
    /// of slack keeps the sample at the window's start that came a little late.
    pub fn growth_within(&self, log: &TickLog, series: &Series, window_s: f64, clock: SampleClock) -> (Growth, usize) {
        let mut samples = log.samples(series, self.points_for(window_s), clock);
        if let Some(&(last, _)) = samples.last() {
            let from = last - window_s - self.interval_s / 2.0;
            let before = samples.iter().take_while(|(t, _)| *t < from).count();
            samples.drain(..before);
        }
        (analysis::growth(&samples, &self.verdict), samples.len())
    }

    /// The full analysis of a heap series whose live bytes are `live_bytes`, `old_bytes` of them old.
    fn analyze(&self, log: &TickLog, series: &Series, live_bytes: u64, ages: Ages) -> Analysis {
        let points = series.len().min(self.window_points());
        let growth = self.growth(log, series, points, SampleClock::Heap);
        #[expect(clippy::cast_precision_loss, reason = "a ratio")]
        let old_fraction = if live_bytes == 0 { 0.0 } else { ages.old_bytes as f64 / live_bytes as f64 };
        Analysis { growth, verdict: analysis::verdict(points, &growth, old_fraction, &self.verdict), ages, points }
    }

    /// Age, in ns, from which an allocation counts as old for a series of `points` samples.
    fn old_age_ns(&self, points: usize) -> u64 {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a positive duration in ns"
        )]
        let ns = (points.saturating_sub(1) as f64 * self.interval_s * self.verdict.old_age_fraction * 1e9) as u64;
        ns
    }
}

/// RSS figures of a process from `/proc/PID/status`, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RssSample {
    pub rss: u64,
    pub anon: u64,
    /// `RssFile` and `RssShmem`: resident file-backed and shared memory.
    pub file: u64,
    pub shmem: u64,
    pub swap: u64,
    /// `VmData`: private writable mappings and the heap, touched or not (tier 0's mapping growth).
    pub data: u64,
}

/// Counts a live allocation of `size` bytes made at `ts_ns`, in age bucket `bucket`, in `ages`.
fn add_age(ages: &mut Ages, size: u64, ts_ns: u64, bucket: usize, old: bool) {
    ages.buckets[bucket] += size;
    if old {
        ages.old_bytes += size;
    }
    ages.oldest_ns = Some(ages.oldest_ns.map_or(ts_ns, |oldest| oldest.min(ts_ns)));
}

fn bucket(age_ns: u64) -> usize {
    AGE_BUCKETS.iter().position(|&limit| age_ns < limit * 1_000_000_000).unwrap_or(AGE_BUCKETS.len())
}

impl Table {
    /// Records a process's RSS figures for `tick` (call before [`Table::tick`] of the same tick).
    pub fn record_rss(&mut self, tick: u64, tgid: u32, sample: RssSample) {
        let cap = self.config.window_points();
        if let Some(process) = self.procs.get_mut(&tgid) {
            process.rss = Some(sample);
            if let Some(series) = &mut process.series {
                series.rss.push(tick, Point { bytes: sample.rss, count: 0 }, cap);
                series.anon.push(tick, Point { bytes: sample.anon, count: 0 }, cap);
                series.swap.push(tick, Point { bytes: sample.swap, count: 0 }, cap);
            }
        }
    }

    /// Samples every series at `tick`, then recomputes growth, ages (as of `times.heap_ns`) and verdicts.
    pub fn tick(&mut self, tick: u64, times: TickTimes) {
        self.counters.ticks += 1;
        let cap = self.config.window_points();
        self.ticks.push(tick, times, cap);
        let Self { procs, config, ticks: log, .. } = self;
        let now_ns = times.heap_ns;
        for process in procs.values_mut() {
            if process.frozen.is_some() {
                // Nothing is sampled: the probes that fed these series are gone, and a series that merely
                // stopped must not be judged (see `frozen`). The figures stay as the last tick left them.
                continue;
            }
            // One slot per stack of the process: its "old" age and its ages. Every live allocation is looked up
            // once, in this small map (foldhash): a tick visits every live allocation of the table, millions of
            // them, while the state owner applies nothing.
            let mut slot_of: super::HashMap<StackId, usize> =
                super::HashMap::with_capacity_and_hasher(process.stacks.len(), foldhash::fast::RandomState::default());
            let mut slots: Vec<(u64, Ages)> = Vec::with_capacity(process.stacks.len());
            for (stack, agg) in &mut process.stacks {
                let points = agg.series.as_mut().map_or(0, |series| {
                    series.push(tick, Point { bytes: agg.stats.live_bytes, count: agg.stats.live_count }, cap);
                    series.len()
                });
                slot_of.insert(*stack, slots.len());
                slots.push((config.old_age_ns(points), Ages::default()));
            }
            let process_points = process.series.as_mut().map_or(0, |series| {
                series.heap.push(tick, Point { bytes: process.live_bytes, count: process.live_count }, cap);
                series.heap.len()
            });
            let process_old = config.old_age_ns(process_points);
            let mut process_ages = Ages::default();
            for alloc in process.allocs.values() {
                let age = now_ns.saturating_sub(alloc.ts_ns);
                let bucket = bucket(age);
                if let Some(&slot) = slot_of.get(&process.agg_key(alloc.stack)) {
                    let (old, ages) = &mut slots[slot];
                    add_age(ages, alloc.size, alloc.ts_ns, bucket, age >= *old);
                }
                add_age(&mut process_ages, alloc.size, alloc.ts_ns, bucket, age >= process_old);
            }
            for (stack, agg) in &mut process.stacks {
                let stack_ages = slot_of.get(stack).map(|&slot| slots[slot].1).unwrap_or_default();
                agg.analysis = match &agg.series {
                    Some(series) => config.analyze(log, series, agg.stats.live_bytes, stack_ages),
                    None => Analysis { ages: stack_ages, ..Analysis::default() },
                };
            }
            process.analysis = match &process.series {
                Some(series) => config.analyze(log, &series.heap, process.live_bytes, process_ages),
                None => Analysis { ages: process_ages, ..Analysis::default() },
            };
        }
    }
}
