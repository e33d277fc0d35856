//! Flood: more events, live allocations, stacks and processes than the ring buffer, the maps and the daemon's
//! limits hold. The daemon stays up, answers while flooded, stays under a memory ceiling, and counts every loss
//! in `status` and in the metrics. Also measures the daemon's memory per tracked allocation and per stack.
//!
//! The numbers are printed (run with `--no-capture` to see them); docs/limits.md quotes them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use leakprobe_tests::{Daemon, FLOOD, Fixture};
use serde_json::Value;

/// Limits of the flooded daemon: small, so that the flood exceeds each of them many times over.
const MAX_ALLOCATIONS: u64 = 50_000;
const MAX_STACKS: u64 = 2_000;
const MAX_SERIES: u64 = 2_000;
/// The flooded daemon's resident memory must stay under this: the binary, the symbolizer's caches and the
/// bounded tables. The limits above account for a few MiB; the rest is the daemon's floor (about 100 MiB on a
/// busy 2-vCPU host, mostly the symbolizer's parsed debug information of the host's libraries).
const RSS_CEILING_KIB: u64 = 320 * 1024;
/// Status answered while flooded: each within this.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the daemon's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in\n{status}"))
}

fn counters(status: &Value) -> BTreeMap<String, u64> {
    let mut all = BTreeMap::new();
    for group in ["kernel", "daemon"] {
        let map = status[format!("{group}_counters")].as_object().expect("counters object");
        for (name, value) in map {
            all.insert(format!("{group}_{name}"), value.as_u64().expect("counter is a number"));
        }
    }
    all
}

/// `leakprobe_NAME_total VALUE` lines of the metrics.
/// Counters (`_total`) and gauges of the metrics, by the name status gives them; gauges are marked `false`.
fn metric_counters(daemon: &Daemon) -> BTreeMap<String, (u64, bool)> {
    let metrics = leakprobe_tests::http::get_tcp(daemon.metrics_addr(), "/metrics", "text/plain");
    metrics
        .body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            let name = name.strip_prefix("leakprobe_")?;
            // Families with a `kind` label stand for status's counters one name per kind (docs/metrics.md):
            // `kernel_ringbuf_full_total{kind="alloc"}` is `kernel_ringbuf_full_alloc`,
            // `kernel_map_full_total{kind="live"}` is `kernel_live_map_full`.
            let (name, kind) = match name.split_once('{') {
                Some((family, labels)) => {
                    (family, labels.strip_prefix("kind=\"").and_then(|l| l.strip_suffix("\"}")).map(str::to_owned))
                }
                None => (name, None),
            };
            let (name, counter) = name.strip_suffix("_total").map_or((name, false), |n| (n, true));
            let name = match (name.strip_suffix("_map_full"), kind) {
                (Some(prefix), Some(kind)) => format!("{prefix}_{kind}_map_full"),
                (None, Some(kind)) => format!("{name}_{kind}"),
                (_, None) => name.to_owned(),
            };
            let name = name.as_str();
            // Counters of microseconds are exposed in seconds (Prometheus base units).
            if let Some(base) = name.strip_suffix("_seconds") {
                let micros = (value.trim().parse::<f64>().ok()? * 1e6).round();
                #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a non-negative counter")]
                return Some((format!("{base}_microseconds"), (micros as u64, counter)));
            }
            #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a non-negative value")]
            Some((name.to_owned(), (value.trim().parse::<f64>().ok()? as u64, counter)))
        })
        .collect()
}

#[test]
fn a_flood_beyond_every_limit_is_survived_answered_bounded_and_counted() {
    let daemon = Daemon::start_with_args(&[
        "--max-allocations",
        &MAX_ALLOCATIONS.to_string(),
        "--max-stacks",
        &MAX_STACKS.to_string(),
        "--max-series",
        &MAX_SERIES.to_string(),
        "--interval",
        "1s",
        "--window",
        "10s",
    ]);
    let pid = daemon.pid();
    let rss_start = rss_kib(pid);
    let before = counters(&daemon.status());
    let started = Instant::now();
    // All at once: 8 threads of 250,000 malloc+free pairs, 200,000 live blocks (4x the live map), 8,192 distinct
    // stacks (4x the stack store), 2,000 processes that start, allocate and exit.
    let live_fixture = Fixture::spawn(FLOOD, &["live", "200000"]);
    let live_pid = live_fixture.pid();
    let mut floods = vec![
        Fixture::spawn(FLOOD, &["threads", "8", "250000"]),
        live_fixture,
        Fixture::spawn(FLOOD, &["stacks", "13"]),
        Fixture::spawn(FLOOD, &["churn", "2000"]),
    ];
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        for fixture in &mut floods {
            fixture.wait_line("ready");
        }
        let _ = done_tx.send(());
        floods
    });
    let mut answers = 0u32;
    let mut slowest = Duration::ZERO;
    let mut rss_max = rss_start;
    loop {
        let asked = Instant::now();
        let status = daemon.status();
        let took = asked.elapsed();
        assert!(took < ANSWER_WITHIN, "status took {took:?} while flooded");
        assert_eq!(status["pid"].as_u64(), Some(u64::from(pid)));
        slowest = slowest.max(took);
        answers += 1;
        rss_max = rss_max.max(rss_kib(pid));
        if done_rx.recv_timeout(Duration::from_millis(200)).is_ok() {
            break;
        }
    }
    let floods = waiter.join().expect("the flood waiter");
    let flood_seconds = started.elapsed().as_secs_f64();
    // Let the daemon drain its ring buffer and run a tick or two under the held live set.
    for _ in 0..15 {
        std::thread::sleep(Duration::from_millis(200));
        rss_max = rss_max.max(rss_kib(pid));
    }
    let status = daemon.status();
    let after = counters(&status);
    let delta = |name: &str| after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
    let tables = &status["tables"];
    eprintln!(
        "flood: {flood_seconds:.1} s; {answers} status answers while flooded, slowest {slowest:?}; \
         RSS start {} MiB, max {} MiB (ceiling {} MiB)",
        rss_start / 1024,
        rss_max / 1024,
        RSS_CEILING_KIB / 1024
    );
    print_deltas(&before, &after);
    eprintln!("flood: tables {tables}");

    // The limits held.
    assert!(tables["live_allocations"].as_u64().is_some_and(|n| n <= MAX_ALLOCATIONS), "{tables}");
    assert!(tables["stacks"].as_u64().is_some_and(|n| n <= MAX_STACKS), "{tables}");
    assert!(tables["series"].as_u64().is_some_and(|n| n <= MAX_SERIES), "{tables}");
    assert!(rss_max < RSS_CEILING_KIB, "RSS reached {rss_max} KiB, over the ceiling of {RSS_CEILING_KIB} KiB");
    // Every allocation of the live fixture (200,000 blocks for 50,000 entries) is tracked or counted as lost:
    // dropped by the full ring buffer, the full live map or the full table (host-wide counters, so at least).
    let tracked: u64 = daemon.top(live_pid).iter().map(leakprobe_tests::StackExt::live_count).sum();
    let lost = delta("kernel_ringbuf_full_alloc") + delta("kernel_live_map_full") + delta("daemon_dropped_table_full");
    eprintln!("flood: live fixture: {tracked} of 200000 blocks tracked, {lost} allocations lost host-wide");
    assert!(tracked + lost >= 200_000, "{tracked} tracked + {lost} counted lost < 200,000 allocated: a silent loss");
    assert!(tracked < 200_000, "the live fixture's blocks all fit: the test does not overflow anything");
    // The stack store overflowed (8,192 stacks into 2,000) and says so.
    assert!(delta("daemon_stacks_overflowed") > 0, "the stack store overflow is not counted: {after:?}");
    // Every churned process is purged: by its exit event, or (when the ring buffer dropped that) as gone from
    // /proc two ticks later. None of the processes still listed is dead.
    let listed = wait_until_no_dead_process_is_listed(&daemon);
    let after = counters(&daemon.status());
    let delta = |name: &str| after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
    eprintln!(
        "flood: after settling: {listed} processes listed, processes_purged +{}, of which gone (exit lost) +{}",
        delta("daemon_processes_purged"),
        delta("daemon_processes_gone")
    );
    // And every counter of status is in the metrics, a counter at least as high (the scrape comes later); a
    // gauge (files known to discovery) may have fallen since.
    let metrics = metric_counters(&daemon);
    for (name, value) in &after {
        let (scraped, counter) = metrics.get(name).unwrap_or_else(|| panic!("metrics have no leakprobe_{name}"));
        assert!(!counter || *scraped >= *value, "metrics leakprobe_{name}_total = {scraped} < status {value}");
    }
    // Still answering after the flood, with its own answer.
    assert_eq!(daemon.status()["pid"].as_u64(), Some(u64::from(pid)));
    drop(floods);
}

/// Prints how much each loss and activity counter rose.
fn print_deltas(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) {
    let delta = |name: &str| after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
    for name in [
        "kernel_allocs",
        "kernel_frees",
        "kernel_ringbuf_full_alloc",
        "kernel_ringbuf_full_free",
        "kernel_ringbuf_full_process",
        "kernel_live_map_full",
        "kernel_inflight_map_full",
        "kernel_stack_errors",
        "daemon_events",
        "daemon_dropped_table_full",
        "daemon_stacks_overflowed",
        "daemon_series_dropped",
        "daemon_processes_purged",
        "daemon_processes_gone",
        "daemon_kernel_entries_purged",
    ] {
        eprintln!("flood: {name} +{}", delta(name));
    }
}

/// Waits until no process listed by the daemon is dead; returns how many are listed.
fn wait_until_no_dead_process_is_listed(daemon: &Daemon) -> usize {
    leakprobe_tests::poll_until(Duration::from_secs(30), "no dead process to be listed", || {
        let processes = daemon.cli_json(&["processes", "--socket", daemon.socket_str(), "--limit", "10000", "--json"]);
        let pids: Vec<u64> = processes["processes"]
            .as_array()
            .map(|p| p.iter().filter_map(|p| p["pid"].as_u64()).collect())
            .unwrap_or_default();
        let dead = pids.iter().filter(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()).count();
        (dead == 0).then_some(pids.len())
    })
}

/// `(RSS KiB, live allocations, stacks)` of the daemon.
fn footprint(daemon: &Daemon) -> (u64, u64, u64) {
    let status = daemon.status();
    let tables = &status["tables"];
    (
        rss_kib(daemon.pid()),
        tables["live_allocations"].as_u64().expect("live_allocations"),
        tables["stacks"].as_u64().expect("stacks"),
    )
}

/// Waits until the daemon's table holds at least `live` more allocations than `base` (or stops growing).
fn settle(daemon: &Daemon) -> (u64, u64, u64) {
    let mut last = footprint(daemon);
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(500));
        let now = footprint(daemon);
        if now.1.abs_diff(last.1) < 1_000 && now.2.abs_diff(last.2) < 50 {
            return now;
        }
        last = now;
    }
    last
}

#[test]
#[expect(clippy::cast_precision_loss, reason = "figures for a report")]
fn memory_per_tracked_allocation_and_per_stack() {
    // Large enough limits that nothing overflows: 1 Mi live allocations, 64 Ki stacks.
    let daemon = Daemon::start_with_args(&["--max-allocations", "1048576", "--max-stacks", "65536"]);
    let base = settle(&daemon);
    // 300,000 live blocks from one stack, paced so that the ring buffer keeps up (what it drops anyway under a
    // busy host is not in the table and not in the figure: the figure divides by what the table holds).
    let mut live = Fixture::spawn(FLOOD, &["live", "300000", "paced"]);
    live.wait_line("ready");
    let with_live = settle(&daemon);
    let allocations = with_live.1.saturating_sub(base.1);
    let per_allocation = (with_live.0.saturating_sub(base.0) * 1024) as f64 / allocations.max(1) as f64;
    let mut stacks = Fixture::spawn(FLOOD, &["stacks", "14", "paced"]);
    stacks.wait_line("ready");
    let with_stacks = settle(&daemon);
    let new_stacks = with_stacks.2.saturating_sub(with_live.2);
    let rss_for_stacks = with_stacks.0.saturating_sub(with_live.0) * 1024;
    // The stacks phase also adds 16,384 live allocations: take their share out.
    let stack_allocations = with_stacks.1.saturating_sub(with_live.1);
    let per_stack = (rss_for_stacks as f64 - per_allocation * stack_allocations as f64) / new_stacks.max(1) as f64;
    eprintln!(
        "memory: base RSS {} MiB; +{allocations} live allocations: +{} MiB = {per_allocation:.0} B each; \
         +{new_stacks} stacks: +{} MiB = {per_stack:.0} B each (beyond their allocations)",
        base.0 / 1024,
        with_live.0.saturating_sub(base.0) / 1024,
        rss_for_stacks / (1024 * 1024)
    );
    assert!(allocations >= 50_000, "too few allocations reached the table to measure: {allocations}");
    assert!(new_stacks >= 2_000, "too few stacks reached the store to measure: {new_stacks}");
    // Generous bounds: docs/limits.md gives the measured figures; these catch a regression by an order of magnitude.
    assert!(per_allocation < 1_024.0, "{per_allocation:.0} B per tracked allocation");
    assert!(per_stack < 32_768.0, "{per_stack:.0} B per stack");
}
