//! Replayed event streams against the table.

use leakprobe_common::{
    ALLOC_FLAG_REPLACES_OLD, ALLOC_FLAG_STACK_TRUNCATED, AllocEvent, AllocFn, Event, EventHeader, EventKind, FreeEvent,
    MAX_FRAMES, OomEvent, ProcessEvent,
};

use super::*;
use crate::core::analysis::Verdict;

fn header(kind: EventKind, tgid: u32, ts_ns: u64) -> EventHeader {
    EventHeader { kind: kind as u32, pad: 0, ts_ns, tgid, tid: tgid }
}

pub(crate) fn alloc(tgid: u32, addr: u64, size: u64, stack: &[u64], ts_ns: u64) -> Event {
    let mut frames = [0; MAX_FRAMES];
    frames[..stack.len()].copy_from_slice(stack);
    Event::Alloc(AllocEvent {
        header: header(EventKind::Alloc, tgid, ts_ns),
        addr,
        size,
        old_addr: 0,
        func: AllocFn::Malloc as u32,
        nframes: u32::try_from(stack.len()).expect("small"),
        flags: 0,
        pad: 0,
        comm: *b"proc\0\0\0\0\0\0\0\0\0\0\0\0",
        frames,
    })
}

fn realloc(tgid: u32, old: u64, addr: u64, size: u64, stack: &[u64]) -> Event {
    let Event::Alloc(mut event) = alloc(tgid, addr, size, stack, 5) else { unreachable!() };
    event.old_addr = old;
    event.flags = ALLOC_FLAG_REPLACES_OLD;
    event.func = AllocFn::Realloc as u32;
    Event::Alloc(event)
}

pub(super) fn free(tgid: u32, addr: u64) -> Event {
    Event::Free(FreeEvent { header: header(EventKind::Free, tgid, 9), addr })
}

pub(super) fn exit(tgid: u32, ts_ns: u64) -> Event {
    Event::Exit(ProcessEvent { header: header(EventKind::Exit, tgid, ts_ns), comm: [0; 16] })
}

fn limits(max_allocations: usize, max_stacks: usize) -> Limits {
    Limits { max_allocations, max_stacks, max_series: 1000 }
}

pub(crate) fn table() -> Table {
    Table::new(limits(1000, 100), AnalysisConfig::default())
}

fn row_of(table: &Table, tgid: u32, leaf: u64) -> Analysis {
    table.stacks(Some(tgid)).find(|row| row.frames.first() == Some(&leaf)).map(|row| row.analysis).expect("the stack")
}

fn stats_of(table: &Table, tgid: u32, leaf: u64) -> StackStats {
    table
        .top(Some(tgid), usize::MAX)
        .into_iter()
        .find(|row| row.frames.first() == Some(&leaf))
        .map(|row| row.stats)
        .unwrap_or_default()
}

#[test]
fn leaks_and_frees_are_counted_per_stack() {
    let mut t = table();
    assert_eq!(t.apply(&alloc(1, 0x1000, 100, &[0xa, 0xb], 10)), Applied::NewProcess(1));
    assert_eq!(t.apply(&alloc(1, 0x2000, 100, &[0xa, 0xb], 20)), Applied::Nothing);
    t.apply(&alloc(1, 0x3000, 50, &[0xc, 0xb], 30));
    t.apply(&free(1, 0x3000));
    let leak = stats_of(&t, 1, 0xa);
    assert_eq!(
        leak,
        StackStats { live_bytes: 200, live_count: 2, total_bytes: 200, total_count: 2, first_ns: 10, last_ns: 20 }
    );
    let churn = stats_of(&t, 1, 0xc);
    assert_eq!((churn.live_bytes, churn.live_count, churn.total_count), (0, 0, 1));
    assert_eq!(t.sizes().live_allocations, 2);
    assert_eq!(t.sizes().live_bytes, 200);
    assert_eq!(t.sizes().stacks, 2);
    // Ordered by live bytes.
    let top = t.top(None, 10);
    assert_eq!(top[0].frames, &[0xa, 0xb]);
    assert_eq!(top[0].comm, "proc");
}

#[test]
fn same_address_in_two_processes_does_not_collide() {
    let mut t = table();
    t.apply(&alloc(1, 0x1000, 10, &[0xa], 1));
    t.apply(&alloc(2, 0x1000, 20, &[0xa], 1));
    t.apply(&free(1, 0x1000));
    assert_eq!(stats_of(&t, 1, 0xa).live_bytes, 0);
    assert_eq!(stats_of(&t, 2, 0xa).live_bytes, 20);
    assert_eq!(t.counters().unknown_frees, 0);
}

#[test]
fn realloc_moves_bytes_to_the_new_block() {
    let mut t = table();
    t.apply(&alloc(1, 0x1000, 100, &[0xa], 1));
    t.apply(&realloc(1, 0x1000, 0x2000, 400, &[0xb]));
    t.apply(&realloc(1, 0x2000, 0x2000, 800, &[0xb]));
    assert_eq!(stats_of(&t, 1, 0xa).live_bytes, 0);
    let grown = stats_of(&t, 1, 0xb);
    assert_eq!((grown.live_bytes, grown.live_count, grown.total_count), (800, 1, 2));
    assert_eq!(t.sizes().live_allocations, 1);
    assert_eq!(t.counters().replaced_live, 0);
}

#[test]
fn unknown_frees_and_reused_addresses_are_counted() {
    let mut t = table();
    t.apply(&free(7, 0x1000));
    t.apply(&alloc(7, 0x1000, 10, &[0xa], 1));
    t.apply(&free(7, 0x9999));
    t.apply(&alloc(7, 0x1000, 30, &[0xa], 2));
    assert_eq!(t.counters().unknown_frees, 2);
    assert_eq!(t.counters().replaced_live, 1);
    assert_eq!(stats_of(&t, 7, 0xa).live_bytes, 30);
}

#[test]
fn exit_purges_the_process_and_its_stacks() {
    let mut t = table();
    t.apply(&alloc(1, 0x1000, 10, &[0xa], 1));
    t.apply(&alloc(1, 0x2000, 10, &[0xb], 1));
    t.apply(&alloc(2, 0x1000, 10, &[0xa], 1));
    t.tick(0, at(50));
    assert_eq!(t.sizes().series, 4 + 2 + 4 + 1);
    let Applied::Purged { tgid, mut addrs, before_ns } = t.apply(&exit(1, 99)) else {
        panic!("exit of a known process purges it");
    };
    addrs.sort_unstable();
    assert_eq!((tgid, addrs, before_ns), (1, vec![0x1000, 0x2000], 99));
    assert!(t.top(Some(1), 10).is_empty());
    assert_eq!(t.sizes().live_allocations, 1);
    // Stack [0xa] is still used by process 2, [0xb] is gone.
    assert_eq!(t.sizes().stacks, 1);
    assert_eq!(t.apply(&exit(1, 100)), Applied::Nothing);
    // The series of process 1 and of its stacks went back to the budget.
    assert_eq!(t.sizes().series, 4 + 1);
    assert_eq!(t.counters().processes_purged, 1);
}

#[test]
fn a_process_whose_exit_was_lost_is_purged_as_gone() {
    let mut t = table();
    t.apply(&alloc(7, 0x1000, 10, &[0xa], 1));
    let Applied::Purged { tgid, addrs, before_ns } = t.purge_gone(7, 500) else {
        panic!("a tracked process found gone is purged");
    };
    assert_eq!((tgid, addrs, before_ns), (7, vec![0x1000], 500));
    assert_eq!(t.sizes().live_allocations, 0);
    assert_eq!(t.purge_gone(7, 600), Applied::Nothing, "purged once");
    assert_eq!((t.counters().processes_purged, t.counters().processes_gone), (1, 1));
}

#[test]
fn an_oom_event_leaves_the_victim_for_the_snapshot() {
    let mut t = table();
    t.apply(&alloc(1, 0x1000, 10, &[0xa], 1));
    t.apply(&alloc(1, 0x2000, 30, &[0xb], 2));
    let oom = OomEvent::bare(header(EventKind::Oom, 1, 3));
    assert_eq!(t.apply(&Event::Oom(oom)), Applied::Nothing);
    let summary =
        |t: &Table, pid| t.processes(Some(pid), None).next().map(|p| (p.comm.to_owned(), p.live_bytes, p.live_count));
    assert_eq!(summary(&t, 1), Some(("proc".to_owned(), 40, 2)));
    assert_eq!(t.top(Some(1), 1)[0].frames, [0xb]);
    assert_eq!(summary(&t, 2), None);
    assert!(matches!(t.apply(&exit(1, 4)), Applied::Purged { .. }));
    assert_eq!(summary(&t, 1), None);
}

#[test]
fn limits_are_enforced_and_counted() {
    let mut t = Table::new(limits(2, 1), AnalysisConfig::default());
    t.apply(&alloc(1, 0x1, 10, &[0xa], 1));
    t.apply(&alloc(1, 0x2, 10, &[0xb], 1));
    t.apply(&alloc(1, 0x3, 10, &[0xc], 1));
    assert_eq!(t.sizes().live_allocations, 2);
    assert_eq!(t.counters().dropped_table_full, 1);
    // The second stack did not fit: its bytes are under the overflow stack (no frames).
    assert_eq!(t.sizes().stacks_overflowed, 1);
    let overflow = t.top(Some(1), 10).into_iter().find(|r| r.frames.is_empty()).expect("overflow row");
    assert_eq!(overflow.stats.live_bytes, 10);
    // Freeing makes room again.
    t.apply(&free(1, 0x1));
    t.apply(&alloc(1, 0x3, 10, &[0xa], 1));
    assert_eq!(t.sizes().live_allocations, 2);
}

#[test]
fn truncated_stacks_are_flagged() {
    let mut t = table();
    let Event::Alloc(mut event) = alloc(1, 0x1, 10, &[0xa], 1) else { unreachable!() };
    event.flags = ALLOC_FLAG_STACK_TRUNCATED;
    t.apply(&Event::Alloc(event));
    assert!(t.top(Some(1), 1)[0].truncated);
}

const SEC: u64 = 1_000_000_000;

fn at(ns: u64) -> TickTimes {
    TickTimes { heap_ns: ns, rss_ns: ns }
}

#[test]
fn ticks_give_growth_ages_and_verdicts() {
    // Interval 5 s. Stack 0xa leaks 1000 bytes per tick; stack 0xb fills 5 blocks then reuses them
    // (free the oldest, allocate anew); stack 0xc rises and falls in waves.
    let mut t = table();
    let mut cache = std::collections::VecDeque::new();
    let mut wave = Vec::new();
    let mut next_addr = 0x10_0000;
    for tick in 0..40u64 {
        let now = tick * 5 * SEC;
        t.apply(&alloc(1, next_addr, 1000, &[0xa], now));
        next_addr += 0x100;
        if cache.len() == 5 {
            let old = cache.pop_front().expect("full");
            t.apply(&free(1, old));
        }
        t.apply(&alloc(1, next_addr, 700, &[0xb], now));
        cache.push_back(next_addr);
        next_addr += 0x100;
        if tick % 8 < 4 {
            t.apply(&alloc(1, next_addr, 3000, &[0xc], now));
            wave.push(next_addr);
            next_addr += 0x100;
        } else if let Some(addr) = wave.pop() {
            t.apply(&free(1, addr));
        }
        t.tick(tick, at(now + SEC));
    }
    let leak = row_of(&t, 1, 0xa);
    assert_eq!(leak.verdict, Verdict::Leaking, "{leak:?}");
    assert!((leak.growth.rate - 200.0).abs() < 1.0, "1000 bytes per 5 s: {leak:?}");
    assert!(leak.ages.old_bytes > 20_000, "{leak:?}");
    assert_eq!(leak.ages.oldest_ns, Some(0), "the first allocation was at t=0");
    let cache = row_of(&t, 1, 0xb);
    assert_eq!(cache.verdict, Verdict::Plateau, "{cache:?}");
    let waves = row_of(&t, 1, 0xc);
    assert_eq!(waves.verdict, Verdict::Churn, "{waves:?}");
    // Age buckets hold every live byte: 40 leaked blocks, 5 cached, the current wave.
    let process = t.processes(Some(1), None).next().expect("process 1");
    let total: u64 = process.analysis.ages.buckets.iter().sum();
    assert_eq!(total, process.live_bytes);
    assert_eq!(t.counters().ticks, 40);
}

#[test]
fn a_query_window_is_time_not_a_count_of_late_ticks() {
    // Interval 5 s, but the ticks come 7 s apart (a busy host): a 20 s window holds the samples of the last
    // 20 s (+ half an interval), 4 of them, not the last 20 / 5 + 1 = 5, which would span 28 s.
    let mut t = table();
    for tick in 0..10u64 {
        t.apply(&alloc(1, 0x100 * (tick + 1), 1000, &[0xa], tick * 7 * SEC));
        t.tick(tick, at(tick * 7 * SEC + 1));
    }
    let process = t.processes(Some(1), None).next().expect("process 1");
    let series = process.heap_series.expect("a heap series");
    let (growth, points) = t.heap_growth_within(series, 20.0);
    assert_eq!(points, 4, "{growth:?}");
    assert!((growth.span_seconds - 21.0).abs() < 1e-6, "{growth:?}");
    assert!((growth.rate - 1000.0 / 7.0).abs() < 1e-6, "{growth:?}");
}

#[test]
fn rss_samples_make_process_series() {
    let mut t = table();
    t.apply(&alloc(1, 0x1, 10, &[0xa], 0));
    for tick in 0..10u64 {
        t.record_rss(tick, 1, RssSample { rss: 1 << 20, anon: (1 << 20) + tick * 5_000, ..RssSample::default() });
        t.tick(tick, at(tick * 5 * SEC));
    }
    let process = t.processes(Some(1), None).next().expect("process 1");
    assert_eq!(process.rss.map(|r| r.rss), Some(1 << 20));
    assert!((process.rss_growth[1].rate - 1000.0).abs() < 1e-6, "{:?}", process.rss_growth);
    assert!(process.rss_growth[0].rate.abs() < 1e-9);
    // New processes have no verdict before enough samples.
    t.apply(&alloc(2, 0x1, 10, &[0xa], 0));
    t.tick(10, at(50 * SEC));
    assert_eq!(t.processes(Some(2), None).next().map(|p| p.analysis.verdict), Some(Verdict::New));
}

#[test]
fn the_series_budget_is_enforced_and_counted() {
    let mut t = Table::new(Limits { max_allocations: 100, max_stacks: 100, max_series: 5 }, AnalysisConfig::default());
    t.apply(&alloc(1, 0x1, 10, &[0xa], 0));
    t.apply(&alloc(1, 0x2, 10, &[0xb], 0));
    t.apply(&alloc(1, 0x3, 10, &[0xc], 0));
    assert_eq!(t.sizes().series, 5);
    // The process took 4, stack 0xa the last one: 0xb and 0xc have none.
    assert_eq!(t.counters().series_dropped, 2);
    t.tick(0, at(0));
    assert_eq!(t.stacks(Some(1)).filter(|r| r.series.is_none()).count(), 2);
    assert_eq!(t.stacks(Some(1)).find(|r| r.frames == [0xb]).map(|r| r.analysis.verdict), Some(Verdict::New));
}

#[test]
fn a_corrupt_size_is_counted_not_tracked() {
    // Found by fuzzing: two records of sizes near u64::MAX overflowed the live sums.
    let mut t = table();
    t.apply(&alloc(1, 0x1, u64::MAX - 23, &[0xa], 1));
    t.apply(&alloc(1, 0x2, MAX_PLAUSIBLE_SIZE, &[0xa], 2));
    t.apply(&alloc(1, 0x3, MAX_PLAUSIBLE_SIZE, &[0xa], 3));
    assert_eq!(t.counters().implausible_sizes, 1);
    assert_eq!(stats_of(&t, 1, 0xa).live_bytes, 2 * MAX_PLAUSIBLE_SIZE);
    t.apply(&free(1, 0x2));
    assert_eq!(stats_of(&t, 1, 0xa).live_bytes, MAX_PLAUSIBLE_SIZE);
    assert_eq!(t.sizes().live_allocations, 1);
}
