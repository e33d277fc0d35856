//! Answers built from the table: filtered, ordered, and with growth over the asked window.

use std::{cmp::Ordering, collections::BTreeMap};

use crate::{
    core::{
        analysis::{self, Growth},
        table::{AGE_BUCKETS, Ages, Analysis, Frozen, ProcessRow, StackRow, Table},
    },
    procfs::Clock,
    protocol::{
        AgeBucket, AgeReport, Frame, FrozenReport, GrowthReport, HeapSample, OTHER_STACKS, ProcessIdentity,
        ProcessReport, SortBy, StackReport, TopQuery,
    },
    symbolize::StackRequest,
};

/// Anonymous memory growth below this (bytes per second) is "not growing": no heap share is computed.
const MIN_ANON_GROWTH: f64 = 1.0;

fn ages_report(ages: &Ages, now_ns: u64) -> AgeReport {
    #[expect(clippy::cast_precision_loss, reason = "an age in ns fits f64 to well below a microsecond")]
    let oldest_seconds = ages.oldest_ns.map(|oldest| now_ns.saturating_sub(oldest) as f64 / 1e9);
    let buckets = ages
        .buckets
        .iter()
        .enumerate()
        .map(|(i, &bytes)| AgeBucket { max_age_seconds: AGE_BUCKETS.get(i).copied(), bytes })
        .collect();
    AgeReport { oldest_seconds, old_bytes: ages.old_bytes, buckets }
}

fn frozen_report(frozen: Option<&Frozen>, clock: Clock) -> Option<FrozenReport> {
    frozen.map(|f| FrozenReport { since_unix_ms: clock.unix_ms(f.since_ns), why: f.why.clone() })
}

/// The analysis of a row over `window_s` seconds, or the one computed at the last tick. A frozen row is not
/// judged again: its series stopped.
fn reanalyze(
    table: &Table,
    analysis: Analysis,
    series: Option<&analysis::Series>,
    live: u64,
    window_s: Option<f64>,
    frozen: Option<&Frozen>,
) -> Analysis {
    let (Some(window_s), Some(series), None) = (window_s, series, frozen) else { return analysis };
    let config = table.config();
    let (growth, points) = table.heap_growth_within(series, window_s);
    #[expect(clippy::cast_precision_loss, reason = "a ratio")]
    let old_fraction = if live == 0 { 0.0 } else { analysis.ages.old_bytes as f64 / live as f64 };
    Analysis { growth, verdict: analysis::verdict(points, &growth, old_fraction, &config.verdict), points, ..analysis }
}

/// Growth that is both in the window and recent: the smaller of the two rates. A cache that filled early
/// in the window has a positive window rate but a flat recent part; it must not outrank what grows now.
pub fn sustained_rate(growth: &Growth) -> f64 {
    growth.rate.min(growth.recent_rate)
}

/// A key that orders rows largest first.
fn order(by: SortBy, live_bytes: u64, live_count: u64, analysis: &Analysis) -> (f64, u64) {
    match by {
        SortBy::Bytes => (0.0, live_bytes),
        SortBy::Count => (0.0, live_count),
        SortBy::Growth => (sustained_rate(&analysis.growth), live_bytes),
        // Oldest first: a smaller timestamp is older; rows with nothing live go last.
        SortBy::Age => (0.0, analysis.ages.oldest_ns.map_or(0, |oldest| u64::MAX - oldest)),
    }
}

fn descending(a: (f64, u64), b: (f64, u64)) -> Ordering {
    b.0.total_cmp(&a.0).then(b.1.cmp(&a.1))
}

/// Stack reports (frames not yet symbolized) and the stacks to symbolize, for `/v1/top` and `/v1/stacks`.
pub fn stacks(table: &Table, query: &TopQuery, clock: Clock, now_ns: u64) -> (Vec<StackReport>, Vec<StackRequest>) {
    let window_s = query.window_seconds().ok().flatten();
    let by = query.by.unwrap_or_default();
    let mut rows: Vec<(StackRow<'_>, Analysis)> = table
        .stacks(query.pid)
        .map(|row| {
            let analysis = reanalyze(table, row.analysis, row.series, row.stats.live_bytes, window_s, row.frozen);
            (row, analysis)
        })
        .filter(|(row, analysis)| {
            query.verdict.is_none_or(|v| v == analysis.verdict) && query.comm.as_ref().is_none_or(|c| c == row.comm)
        })
        .collect();
    rows.sort_by(|(a, aa), (b, ba)| {
        descending(
            order(by, a.stats.live_bytes, a.stats.live_count, aa),
            order(by, b.stats.live_bytes, b.stats.live_count, ba),
        )
        .then(a.tgid.cmp(&b.tgid))
        .then(a.stack_hash.cmp(&b.stack_hash))
    });
    rows.truncate(query.limit());
    let requests = rows.iter().map(|(row, _)| StackRequest { pid: row.tgid, addrs: row.frames.to_vec() }).collect();
    let reports = rows.iter().map(|(row, analysis)| stack_report(row, analysis, clock, now_ns)).collect();
    (reports, requests)
}

/// The stacks of a heap profile, frames not yet symbolized.
pub struct HeapStacks {
    /// The (process, stack) pairs with the most of the sample type, at most the limit, largest first.
    pub reports: Vec<StackReport>,
    /// Their frames, to symbolize.
    pub requests: Vec<StackRequest>,
    /// Per process, the pairs beyond the limit summed: counts and identity only, one [`OTHER_STACKS`] frame.
    pub rest: Vec<StackReport>,
    /// How many pairs `rest` sums.
    pub omitted: u64,
}

/// The `max` (process, stack) pairs of `pid` (every process when `None`) that `keep(pid, comm)` accepts with the
/// most `sample`, and the others summed per process (so a profile's totals stay whole).
pub fn heap_stacks(
    table: &Table,
    pid: Option<u32>,
    sample: HeapSample,
    max: usize,
    keep: impl Fn(u32, &str) -> bool,
    clock: Clock,
    now_ns: u64,
) -> HeapStacks {
    let value = |row: &StackRow<'_>| {
        let s = &row.stats;
        sample.value(s.live_bytes, s.live_count, s.total_bytes, s.total_count)
    };
    let mut rows: Vec<StackRow<'_>> = table.stacks(pid).filter(|row| keep(row.tgid, row.comm)).collect();
    rows.sort_by(|a, b| value(b).cmp(&value(a)).then(a.tgid.cmp(&b.tgid)).then(a.stack_hash.cmp(&b.stack_hash)));
    let beyond = rows.split_off(max.min(rows.len()));
    let mut rest: BTreeMap<u32, StackReport> = BTreeMap::new();
    for row in &beyond {
        let sum = rest.entry(row.tgid).or_insert_with(|| StackReport {
            stack_id: "other".to_owned(),
            live_bytes: 0,
            live_count: 0,
            total_bytes: 0,
            total_count: 0,
            truncated: false,
            growth: GrowthReport::default(),
            ages: AgeReport::default(),
            frames: vec![Frame { addr: "0x0".to_owned(), function: Some(OTHER_STACKS.to_owned()), ..Frame::default() }],
            ..stack_report(row, &row.analysis, clock, now_ns)
        });
        sum.live_bytes += row.stats.live_bytes;
        sum.live_count += row.stats.live_count;
        sum.total_bytes += row.stats.total_bytes;
        sum.total_count += row.stats.total_count;
        sum.first_alloc_unix_ms = sum.first_alloc_unix_ms.min(clock.unix_ms(row.stats.first_ns));
        sum.last_alloc_unix_ms = sum.last_alloc_unix_ms.max(clock.unix_ms(row.stats.last_ns));
    }
    HeapStacks {
        requests: rows.iter().map(|row| StackRequest { pid: row.tgid, addrs: row.frames.to_vec() }).collect(),
        reports: rows.iter().map(|row| stack_report(row, &row.analysis, clock, now_ns)).collect(),
        rest: rest.into_values().collect(),
        omitted: beyond.len() as u64,
    }
}

/// The report of one (process, stack) with `analysis`, ages as of `now_ns`, frames not yet symbolized.
pub fn stack_report(row: &StackRow<'_>, analysis: &Analysis, clock: Clock, now_ns: u64) -> StackReport {
    StackReport {
        pid: row.tgid,
        comm: row.comm.to_owned(),
        stack_id: format!("{:016x}", row.stack_hash),
        live_bytes: row.stats.live_bytes,
        live_count: row.stats.live_count,
        total_bytes: row.stats.total_bytes,
        total_count: row.stats.total_count,
        first_alloc_unix_ms: clock.unix_ms(row.stats.first_ns),
        last_alloc_unix_ms: clock.unix_ms(row.stats.last_ns),
        truncated: row.truncated,
        growth: analysis.growth.into(),
        verdict: analysis.verdict,
        ages: ages_report(&analysis.ages, now_ns),
        frozen: frozen_report(row.frozen, clock),
        frames: Vec::new(),
        identity: ProcessIdentity::default(),
    }
}

fn process_report(row: &ProcessRow<'_>, clock: Clock, now_ns: u64) -> ProcessReport {
    let [rss_growth, anon_growth, swap_growth]: [Growth; 3] = row.rss_growth;
    // Anonymous memory is resident or swapped: both count.
    let anon_rate = anon_growth.rate + swap_growth.rate;
    ProcessReport {
        pid: row.tgid,
        comm: row.comm.to_owned(),
        live_bytes: row.live_bytes,
        live_count: row.live_count,
        stacks: row.stacks as u64,
        heap_growth: row.analysis.growth.into(),
        verdict: row.analysis.verdict,
        verdict_source: if row.frozen.is_some() { "anon" } else { "heap" }.to_owned(),
        frozen: frozen_report(row.frozen, clock),
        ages: ages_report(&row.analysis.ages, now_ns),
        rss_bytes: row.rss.map(|r| r.rss),
        rss_anon_bytes: row.rss.map(|r| r.anon),
        rss_file_bytes: row.rss.map(|r| r.file),
        rss_shmem_bytes: row.rss.map(|r| r.shmem),
        swap_bytes: row.rss.map(|r| r.swap),
        rss_growth: GrowthReport::from(rss_growth),
        rss_anon_growth: GrowthReport::from(anon_growth),
        swap_growth: GrowthReport::from(swap_growth),
        heap_share_of_anon_growth: (anon_rate >= MIN_ANON_GROWTH).then(|| row.analysis.growth.rate / anon_rate),
        allocs_before_probes: None,
        identity: ProcessIdentity::default(),
    }
}

/// Process reports for `/v1/processes`.
pub fn processes(table: &Table, query: &TopQuery, clock: Clock, now_ns: u64) -> Vec<ProcessReport> {
    let by = query.by.unwrap_or_default();
    let window_s = query.window_seconds().ok().flatten();
    let mut rows: Vec<ProcessRow<'_>> = table
        .processes(query.pid, window_s)
        .map(|row| {
            let analysis = reanalyze(table, row.analysis, row.heap_series, row.live_bytes, window_s, row.frozen);
            ProcessRow { analysis, ..row }
        })
        .filter(|row| {
            query.verdict.is_none_or(|v| v == row.analysis.verdict) && query.comm.as_ref().is_none_or(|c| c == row.comm)
        })
        .collect();
    rows.sort_by(|a, b| {
        descending(
            order(by, a.live_bytes, a.live_count, &a.analysis),
            order(by, b.live_bytes, b.live_count, &b.analysis),
        )
        .then(a.tgid.cmp(&b.tgid))
    });
    rows.truncate(query.limit());
    rows.iter().map(|row| process_report(row, clock, now_ns)).collect()
}

/// Processes for the metrics: the `k` with the most live heap bytes and the `k` whose RSS grows fastest
/// (at most `2k`), ordered by pid.
pub fn metrics_processes(table: &Table, k: usize, clock: Clock, now_ns: u64) -> Vec<ProcessReport> {
    let mut rows: Vec<ProcessRow<'_>> = table.processes(None, None).collect();
    rows.sort_by(|a, b| b.live_bytes.cmp(&a.live_bytes).then(a.tgid.cmp(&b.tgid)));
    let mut chosen: Vec<u32> = rows.iter().take(k).map(|r| r.tgid).collect();
    rows.sort_by(|a, b| b.rss_growth[0].rate.total_cmp(&a.rss_growth[0].rate).then(a.tgid.cmp(&b.tgid)));
    chosen.extend(rows.iter().filter(|r| r.rss.is_some()).take(k).map(|r| r.tgid));
    chosen.sort_unstable();
    chosen.dedup();
    rows.retain(|r| chosen.binary_search(&r.tgid).is_ok());
    rows.sort_by_key(|r| r.tgid);
    rows.iter().map(|row| process_report(row, clock, now_ns)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::table::tests::{alloc, table};

    #[test]
    fn a_heap_profile_keeps_the_largest_stacks_and_sums_the_rest_per_process() {
        let mut t = table();
        // Process 1: stacks of 300, 100 and 50 live bytes; process 2: 200 bytes in one, 7 allocations in another.
        for (pid, addr, size, leaf) in [(1, 0x1000, 300, 0xa), (1, 0x2000, 100, 0xb), (1, 0x3000, 50, 0xc)] {
            t.apply(&alloc(pid, addr, size, &[leaf, 0xf], 10));
        }
        t.apply(&alloc(2, 0x1000, 200, &[0xd, 0xf], 10));
        for i in 0..7 {
            t.apply(&alloc(2, 0x5000 + i * 16, 10, &[0xe, 0xf], 20));
        }
        let all = |_, _: &str| true;
        let clock = Clock::default();
        let heap = heap_stacks(&t, None, HeapSample::InuseSpace, 2, all, clock, 0);
        let leaves: Vec<u64> = heap.requests.iter().map(|r| r.addrs[0]).collect();
        assert_eq!(leaves, [0xa, 0xd], "the two with the most live bytes, largest first");
        assert_eq!(heap.reports.iter().map(|r| r.live_bytes).collect::<Vec<_>>(), [300, 200]);
        assert_eq!(heap.omitted, 3, "0xb, 0xc and 0xe");
        let rest: Vec<(u32, u64, u64, u64)> =
            heap.rest.iter().map(|r| (r.pid, r.live_bytes, r.live_count, r.total_count)).collect();
        assert_eq!(rest, [(1, 150, 2, 2), (2, 70, 7, 7)], "summed per process: no byte lost");
        assert!(heap.rest.iter().all(|r| r.frames.len() == 1 && r.frames[0].function.as_deref() == Some(OTHER_STACKS)));
        assert_eq!(heap.rest[1].first_alloc_unix_ms, clock.unix_ms(20));

        // By live objects, the 7 small allocations come first; one process only; everything fits.
        let by_objects = heap_stacks(&t, None, HeapSample::InuseObjects, 1, all, clock, 0);
        assert_eq!(by_objects.requests[0].addrs[0], 0xe);
        let one = heap_stacks(&t, Some(2), HeapSample::InuseSpace, 10, all, clock, 0);
        assert_eq!((one.reports.len(), one.omitted, one.rest.len()), (2, 0, 0));
        let none = heap_stacks(&t, None, HeapSample::InuseSpace, 10, |pid, _: &str| pid == 3, clock, 0);
        assert!(none.reports.is_empty() && none.rest.is_empty());
    }
}
