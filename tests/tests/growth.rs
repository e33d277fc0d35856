//! Growth rates and verdicts on real processes: a steady leak, a bounded cache, and waves, side by side.

use std::time::Duration;

use leakprobe_tests::{Daemon, Fixture, GROWTH, StackExt, dump, poll_until};
use serde_json::Value;

/// `growth steady` leaks 2048 bytes every 100 ms.
const STEADY_RATE: f64 = 2048.0 * 10.0;
/// The daemon samples every half second and keeps 20 s.
const DAEMON_ARGS: [&str; 4] = ["--interval", "500ms", "--window", "20s"];
/// History wanted before judging: enough samples for a stable slope.
const MIN_SPAN_SECONDS: f64 = 10.0;
/// The measured rate must be within this fraction of the true rate.
const RATE_TOLERANCE: f64 = 0.10;

fn f64_of(value: &Value, path: &[&str]) -> f64 {
    path.iter().fold(value, |v, key| &v[*key]).as_f64().unwrap_or_else(|| panic!("no number at {path:?}: {value:#}"))
}

fn verdict(stack: &Value) -> &str {
    stack["verdict"].as_str().unwrap_or_else(|| panic!("no verdict: {stack:#}"))
}

fn spawn(mode: &str) -> Fixture {
    let mut fixture = Fixture::spawn(GROWTH, &[mode]);
    fixture.wait_line("ready");
    fixture
}

/// The stacks of `pids` from `top --by growth --comm growth` (every process named like the fixture, then
/// only this test's), in the daemon's order.
fn top_by_growth(daemon: &Daemon, pids: &[u32], extra: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "top",
        "--socket",
        daemon.socket_str(),
        "--by",
        "growth",
        "--comm",
        "growth",
        "--limit",
        "10000",
        "--json",
    ];
    args.extend_from_slice(extra);
    let response = daemon.cli_json(&args);
    let stacks = response["stacks"].as_array().unwrap_or_else(|| panic!("no stacks: {response:#}"));
    stacks.iter().filter(|s| pids.contains(&u32::try_from(s.num("pid")).unwrap_or(0))).cloned().collect()
}

fn find<'a>(stacks: &'a [Value], function: &str) -> Option<&'a Value> {
    stacks.iter().find(|s| s.function_at(0) == Some(function))
}

#[test]
fn steady_leak_is_leaking_at_its_rate_while_cache_and_waves_are_not() {
    let daemon = Daemon::start_with_args(&DAEMON_ARGS);
    let mut steady = spawn("steady");
    let mut cache = spawn("cache");
    let mut waves = spawn("waves");
    let pids = [steady.pid(), cache.pid(), waves.pid()];

    let stacks = poll_until(Duration::from_secs(90), "enough history on all three fixtures", || {
        let stacks = top_by_growth(&daemon, &pids, &[]);
        let ready = ["leak_steady", "cache_alloc", "wave_alloc"]
            .iter()
            .all(|f| find(&stacks, f).is_some_and(|s| f64_of(s, &["growth", "span_seconds"]) >= MIN_SPAN_SECONDS));
        ready.then_some(stacks)
    });

    let leak = find(&stacks, "leak_steady").expect("leak_steady");
    assert_eq!(stacks[0].function_at(0), Some("leak_steady"), "the leak is first by growth; {}", dump(&stacks));
    assert_eq!(verdict(leak), "leaking", "{leak:#}");
    let rate = f64_of(leak, &["growth", "rate_bytes_per_second"]);
    assert!(
        (rate - STEADY_RATE).abs() <= RATE_TOLERANCE * STEADY_RATE,
        "measured {rate:.0} B/s, true {STEADY_RATE} B/s; {leak:#}"
    );
    assert!(leak.num("live_bytes") > 0 && leak["ages"]["old_bytes"].as_u64() > Some(0), "{leak:#}");

    let cached = find(&stacks, "cache_alloc").expect("cache_alloc");
    assert_eq!(verdict(cached), "plateau", "a full cache that replaces its entries; {cached:#}");
    let wave = find(&stacks, "wave_alloc").expect("wave_alloc");
    assert_eq!(verdict(wave), "churn", "waves rise and fall; {wave:#}");

    // Filtering by verdict keeps only the leak of these three.
    let leaking = top_by_growth(&daemon, &pids, &["--verdict", "leaking"]);
    assert!(leaking.iter().all(|s| s.function_at(0) == Some("leak_steady")), "{}", dump(&leaking));
    assert_eq!(leaking.len(), 1, "{}", dump(&leaking));

    // A shorter window still measures the same rate.
    let recent = top_by_growth(&daemon, &[steady.pid()], &["--window", "5s"]);
    let recent_leak = find(&recent, "leak_steady").expect("leak_steady over 5s");
    let recent_rate = f64_of(recent_leak, &["growth", "rate_bytes_per_second"]);
    assert!((recent_rate - STEADY_RATE).abs() <= 0.25 * STEADY_RATE, "{recent_leak:#}");
    assert!(f64_of(recent_leak, &["growth", "span_seconds"]) <= 5.5, "{recent_leak:#}");

    // The human view, for the record.
    let out =
        daemon.run_cli(&["top", "--socket", daemon.socket_str(), "--by", "growth", "--pid", &pids[0].to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("leak_steady") && text.contains("leaking") && text.contains("iB/"), "{text}");
    println!("{text}");

    for fixture in [&mut steady, &mut cache, &mut waves] {
        fixture.close_stdin_and_wait();
    }
}

#[test]
fn processes_put_the_heap_next_to_rss() {
    let daemon = Daemon::start_with_args(&DAEMON_ARGS);
    let mut steady = spawn("steady");
    let pid = steady.pid().to_string();
    let process = poll_until(Duration::from_secs(90), "enough history on the leaking process", || {
        let response = daemon.cli_json(&["processes", "--socket", daemon.socket_str(), "--pid", &pid, "--json"]);
        let process = response["processes"].as_array()?.first()?.clone();
        (f64_of(&process, &["heap_growth", "span_seconds"]) >= MIN_SPAN_SECONDS).then_some(process)
    });
    assert_eq!(process["verdict"], "leaking", "{process:#}");
    let heap_rate = f64_of(&process, &["heap_growth", "rate_bytes_per_second"]);
    assert!((heap_rate - STEADY_RATE).abs() <= RATE_TOLERANCE * STEADY_RATE, "{process:#}");
    assert!(process["rss_bytes"].as_u64() > Some(0), "{process:#}");
    // VmRSS is the sum of its parts, read in one snapshot of /proc/PID/status; the binary's pages are resident.
    let part = |name: &str| process[name].as_u64().unwrap_or_else(|| panic!("no {name}: {process:#}"));
    assert_eq!(part("rss_anon_bytes") + part("rss_file_bytes") + part("rss_shmem_bytes"), part("rss_bytes"));
    assert!(part("rss_file_bytes") > 0, "{process:#}");
    // The fixture touches what it leaks: anonymous memory grows with the heap, which explains it.
    let anon_rate = f64_of(&process, &["rss_anon_growth", "rate_bytes_per_second"]);
    assert!(anon_rate > 0.3 * STEADY_RATE, "anonymous RSS grows: {process:#}");
    let share = f64_of(&process, &["heap_share_of_anon_growth"]);
    assert!((0.5..=2.0).contains(&share), "the heap explains the growth: {share}; {process:#}");

    // A shorter window: the heap and RSS rates over the last 5 s only.
    let response =
        daemon.cli_json(&["processes", "--socket", daemon.socket_str(), "--pid", &pid, "--window", "5s", "--json"]);
    let recent = &response["processes"][0];
    assert!(f64_of(recent, &["heap_growth", "span_seconds"]) <= 5.5, "{recent:#}");
    assert!(f64_of(recent, &["rss_anon_growth", "span_seconds"]) <= 5.5, "{recent:#}");
    let recent_rate = f64_of(recent, &["heap_growth", "rate_bytes_per_second"]);
    assert!((recent_rate - STEADY_RATE).abs() <= 0.25 * STEADY_RATE, "{recent:#}");

    // `stacks --pid` lists every stack of the process.
    let response = daemon.cli_json(&["stacks", "--socket", daemon.socket_str(), "--pid", &pid, "--json"]);
    let stacks = response["stacks"].as_array().expect("stacks");
    assert!(find(stacks, "leak_steady").is_some(), "{}", dump(stacks));
    assert!(stacks.iter().all(|s| s.num("pid").to_string() == pid), "{}", dump(stacks));
    steady.close_stdin_and_wait();
}
