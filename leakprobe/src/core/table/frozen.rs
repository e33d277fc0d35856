//! Frozen processes: their tier-1 probes were detached (the CPU budget shed them, their escalation ended, or
//! `trace --stop`), so their heap figures simply stopped. Their stacks keep their last figures with the
//! verdict [`Verdict::Frozen`], never `plateau` or `churn` judged on a series that stopped; the process's own
//! verdict comes from its anonymous memory (RSS + swap, read from `/proc` at every tick) meanwhile. Attaching
//! again thaws it: its series start again from the next tick.

use super::{Process, Table, tick::SampleClock};
use crate::core::analysis::{self, Verdict};

/// Why and since when a process's heap figures are frozen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frozen {
    /// Monotonic ns of the detach.
    pub since_ns: u64,
    /// Why the probes were detached.
    pub why: String,
}

impl Table {
    /// The probes of `tgid` were detached at `since_ns`: its heap figures freeze. False when the table holds
    /// nothing of it (nothing to freeze) or it is frozen already (the first detach is the one that counts).
    pub fn freeze(&mut self, tgid: u32, since_ns: u64, why: &str) -> bool {
        let Some(process) = self.procs.get_mut(&tgid) else { return false };
        if process.frozen.is_some() {
            return false;
        }
        process.frozen = Some(Frozen { since_ns, why: why.to_owned() });
        for agg in process.stacks.values_mut() {
            agg.analysis.verdict = Verdict::Frozen;
        }
        process.analysis.verdict = Verdict::Frozen;
        true
    }

    /// The probes of `tgid` are attached again: its figures are fresh from the next tick (its series restart
    /// there: the samples missed while frozen are not made up).
    pub fn thaw(&mut self, tgid: u32) -> bool {
        self.procs.get_mut(&tgid).and_then(|p| p.frozen.take()).is_some()
    }

    /// Whether, why and since when the heap figures of `tgid` are frozen.
    pub fn frozen(&self, tgid: u32) -> Option<&Frozen> {
        self.procs.get(&tgid)?.frozen.as_ref()
    }

    /// Processes frozen now.
    pub fn frozen_count(&self) -> usize {
        self.procs.values().filter(|p| p.frozen.is_some()).count()
    }
}

/// The verdict of a frozen process's anonymous memory (resident + swapped, from `/proc`) over the
/// window: what tier 0 sees while the heap figures stand still. The age criterion of the rule cannot be
/// checked on resident memory and is taken as met; every other one applies.
pub(super) fn anon_verdict(table: &Table, process: &Process) -> Verdict {
    let Some(series) = &process.series else { return Verdict::New };
    let config = &table.config;
    let points = config.window_points();
    let anon = table.ticks.samples(&series.anon, points, SampleClock::Rss);
    let swap = table.ticks.samples(&series.swap, points, SampleClock::Rss);
    let samples: Vec<analysis::Sample> =
        if swap.len() == anon.len() { anon.iter().zip(&swap).map(|(a, s)| (a.0, a.1 + s.1)).collect() } else { anon };
    let growth = analysis::growth(&samples, &config.verdict);
    analysis::verdict(samples.len(), &growth, 1.0, &config.verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::table::{
        RssSample, TickTimes,
        tests::{alloc, free, table},
    };

    const SEC: u64 = 1_000_000_000;

    fn at(ns: u64) -> TickTimes {
        TickTimes { heap_ns: ns, rss_ns: ns }
    }

    fn stack_verdict(t: &Table, frames: &[u64]) -> Verdict {
        t.stacks(Some(1)).find(|r| r.frames == frames).map(|r| r.analysis.verdict).expect("the stack")
    }

    /// Ticks 5 s apart (the fake clock): pid 1 leaks 1000 bytes per tick from stack 0xa while `probes`, and its
    /// anonymous memory grows by 1000 bytes per tick throughout.
    fn run(t: &mut Table, ticks: std::ops::Range<u64>, probes: bool) {
        for tick in ticks {
            let now = tick * 5 * SEC;
            if probes {
                t.apply(&alloc(1, 0x1000 + tick * 0x100, 1000, &[0xa], now));
            }
            t.record_rss(tick, 1, RssSample { rss: 1 << 20, anon: (1 << 20) + tick * 1000, ..RssSample::default() });
            t.tick(tick, at(now + SEC));
        }
    }

    #[test]
    fn a_detached_process_keeps_its_figures_frozen_and_is_judged_by_its_anonymous_memory() {
        let mut t = table();
        // A cache next to the leak: it would read `plateau` either way; frozen it must not be judged at all.
        t.apply(&alloc(1, 0x10, 500, &[0xb], 0));
        run(&mut t, 0..20, true);
        assert_eq!(stack_verdict(&t, &[0xa]), Verdict::Leaking);
        let before = t.stacks(Some(1)).find(|r| r.frames == [0xa]).map(|r| (r.stats, r.analysis)).expect("0xa");

        assert!(t.freeze(1, 100 * SEC, "CPU budget"));
        assert!(!t.freeze(1, 101 * SEC, "again"), "the first detach counts");
        // The leak goes on unseen for 30 ticks (2.5 minutes): a stopped series would read `plateau` by now.
        run(&mut t, 20..50, false);
        let row = t.stacks(Some(1)).find(|r| r.frames == [0xa]).expect("0xa");
        assert_eq!(row.analysis.verdict, Verdict::Frozen);
        assert_eq!(row.frozen.map(|f| (f.since_ns, f.why.as_str())), Some((100 * SEC, "CPU budget")));
        assert_eq!((row.stats, row.analysis.growth), (before.0, before.1.growth), "the last figures, as they were");
        assert_eq!(stack_verdict(&t, &[0xb]), Verdict::Frozen);
        let process = t.processes(Some(1), None).next().expect("process 1");
        assert!(process.frozen.is_some());
        assert_eq!(process.analysis.verdict, Verdict::Leaking, "anonymous memory still grows: {process:?}");
        assert!((process.analysis.growth.rate - 200.0).abs() < 1.0, "heap growth as it was: {process:?}");
        assert_eq!(t.frozen_count(), 1);

        // Attached again: fresh figures, a new series, `new` until it has enough samples, then judged again.
        assert!(t.thaw(1));
        assert!(t.frozen(1).is_none());
        run(&mut t, 50..52, true);
        assert_eq!(stack_verdict(&t, &[0xa]), Verdict::New, "the series restarted");
        run(&mut t, 52..70, true);
        assert_eq!(stack_verdict(&t, &[0xa]), Verdict::Leaking);
        assert_eq!(stack_verdict(&t, &[0xb]), Verdict::Plateau, "judged again once thawed");
    }

    #[test]
    fn a_frozen_process_whose_memory_stopped_growing_is_not_leaking() {
        let mut t = table();
        run(&mut t, 0..20, true);
        t.freeze(1, 100 * SEC, "its time is up");
        for tick in 20..50 {
            let anon = (1 << 20) + 19 * 1000;
            t.record_rss(tick, 1, RssSample { rss: 1 << 20, anon, ..RssSample::default() });
            t.tick(tick, at(tick * 5 * SEC + SEC));
        }
        let process = t.processes(Some(1), None).next().expect("process 1");
        assert_eq!(process.analysis.verdict, Verdict::Plateau, "its anonymous memory stopped growing: {process:?}");
        assert_eq!(stack_verdict(&t, &[0xa]), Verdict::Frozen);
        // Events seen after the detach (still in the ring buffer) change the figures, not the verdict, even of a
        // stack they show for the first time.
        t.apply(&free(1, 0x1000));
        t.apply(&alloc(1, 0x10_0000, 64, &[0xd], 250 * SEC));
        t.tick(50, at(251 * SEC));
        assert_eq!(stack_verdict(&t, &[0xa]), Verdict::Frozen);
        assert_eq!(stack_verdict(&t, &[0xd]), Verdict::Frozen);
        assert!(!t.freeze(2, 0, "unknown"), "nothing to freeze");
    }
}
