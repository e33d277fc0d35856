//! The Prometheus endpoint over real HTTP: the fixture's process and leaking stack with exact bytes, the top-K
//! bound on stack series, promtool's checks of a real scrape and of the shipped alerting rules, and a port in use.

use std::process::Command;
use std::time::Duration;

use leakprobe_tests::expect::{ALPHA_COUNT, ALPHA_SIZE, BETA_COUNT, BETA_SIZE, FENCE_SIZE};
use leakprobe_tests::metrics::{PROMETHEUS_ACCEPT, Sample, promtool_check_metrics, scrape, scrape_raw};
use leakprobe_tests::{
    Daemon, Fixture, StackExt, daemon_bin, describe, dump, poll_until, run_with_timeout, wait_for_fence,
};

fn of_pid<'a>(samples: &'a [Sample], name: &str, pid: u32) -> Vec<&'a Sample> {
    let pid = pid.to_string();
    samples.iter().filter(|s| s.name == name && s.label("pid") == Some(pid.as_str())).collect()
}

#[test]
fn scrape_shows_the_leaking_process_and_stack_with_exact_bytes() {
    let daemon = Daemon::start_with_args(&[
        "--interval",
        "500ms",
        "--metrics-top-stacks",
        "10000",
        "--metrics-top-processes",
        "10000",
    ]);
    let mut fixture = Fixture::leaker("basic");
    fixture.wait_line("ready");
    let pid = fixture.pid();
    let stacks = wait_for_fence(&daemon, pid);
    let heap: u64 = stacks.iter().map(StackExt::live_bytes).sum();
    assert_eq!(heap, ALPHA_COUNT * ALPHA_SIZE + BETA_COUNT * BETA_SIZE + FENCE_SIZE, "{}", dump(&stacks));

    // RSS is sampled every interval: wait for the fixture's first sample.
    let (text, samples) = poll_until(Duration::from_secs(30), "an RSS sample of the fixture in /metrics", || {
        let (text, samples) = scrape(&daemon);
        (!of_pid(&samples, "leakprobe_process_rss_bytes", pid).is_empty()).then_some((text, samples))
    });

    let process = of_pid(&samples, "leakprobe_process_heap_live_bytes", pid);
    assert_eq!(process.len(), 1, "{text}");
    assert_eq!(process[0].label("comm"), Some("leaker"));
    assert_eq!(process[0].whole(), heap, "heap of the fixture: {:?}", process[0]);
    assert!(of_pid(&samples, "leakprobe_process_rss_bytes", pid)[0].whole() > heap, "{text}");
    assert_eq!(of_pid(&samples, "leakprobe_process_heap_growth_bytes_per_second", pid).len(), 1, "{text}");
    assert_eq!(of_pid(&samples, "leakprobe_process_rss_growth_bytes_per_second", pid).len(), 1, "{text}");

    for (function, bytes, count) in
        [("leak_alpha", ALPHA_COUNT * ALPHA_SIZE, ALPHA_COUNT), ("leak_beta", BETA_COUNT * BETA_SIZE, BETA_COUNT)]
    {
        let live: Vec<&Sample> = of_pid(&samples, "leakprobe_stack_live_bytes", pid)
            .into_iter()
            .filter(|s| s.label("function") == Some(function))
            .collect();
        assert_eq!(live.len(), 1, "one series for {function}:\n{text}");
        assert_eq!(live[0].whole(), bytes, "{:?}", live[0]);
        let id = live[0].label("stack_id").expect("stack_id label");
        assert_eq!(id.len(), 16, "a short stable id: {id}");
        let from_top = stacks.iter().find(|s| s.function_at(0) == Some(function)).expect("in top");
        assert_eq!(from_top["stack_id"].as_str(), Some(id), "the id of `leakprobe top`");
        let allocations = of_pid(&samples, "leakprobe_stack_live_allocations", pid)
            .into_iter()
            .find(|s| s.label("stack_id") == Some(id))
            .unwrap_or_else(|| panic!("no live allocations series for {function}:\n{text}"));
        assert_eq!(allocations.whole(), count, "{allocations:?}");
    }

    // Counters and limits.
    // Counters one name per kind in status are families with a `kind` label (docs/metrics.md).
    for (family, kind) in
        [("leakprobe_kernel_ringbuf_full_total", "alloc"), ("leakprobe_kernel_map_full_total", "live")]
    {
        assert!(
            samples.iter().any(|s| s.name == family && s.label("kind") == Some(kind)),
            "no {family}{{kind=\"{kind}\"}}:\n{text}"
        );
    }
    for name in [
        "leakprobe_kernel_allocs_total",
        "leakprobe_daemon_events_total",
        "leakprobe_daemon_stacks_overflowed_total",
        "leakprobe_live_allocations_limit",
        "leakprobe_stacks_limit",
    ] {
        assert!(samples.iter().any(|s| s.name == name), "no {name}:\n{text}");
    }
    let allocs = samples.iter().find(|s| s.name == "leakprobe_kernel_allocs_total").expect("allocs");
    assert!(allocs.value >= 16.0, "{allocs:?}");

    promtool_check_metrics(&text);
    // Prometheus asks for OpenMetrics and gets it.
    let open = scrape_raw(&daemon, PROMETHEUS_ACCEPT);
    let content_type = open.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"), "{content_type}");
    assert!(open.body.ends_with("# EOF\n"), "{}", open.body);
    assert!(open.body.contains("# UNIT leakprobe_stack_live_bytes bytes"), "{}", open.body);
    let classic = scrape_raw(&daemon, "*/*");
    assert!(classic.header("content-type").is_some_and(|t| t.starts_with("text/plain; version=0.0.4")), "{classic}");
    fixture.close_stdin_and_wait();
}

#[test]
fn at_most_k_stack_series_however_many_stacks_exist() {
    let daemon = Daemon::start_with_args(&["--metrics-top-stacks", "2", "--metrics-top-processes", "1"]);
    let mut fixture = Fixture::leaker("basic");
    fixture.wait_line("ready");
    let stacks = wait_for_fence(&daemon, fixture.pid());
    // The fixture alone has more stacks than K (alpha, beta, churn, the cache, the fence).
    assert!(stacks.len() > 2, "{}", dump(&stacks));
    let (text, samples) = scrape(&daemon);
    for name in ["leakprobe_stack_live_bytes", "leakprobe_stack_growth_bytes_per_second", "leakprobe_stack_leaking"] {
        let n = samples.iter().filter(|s| s.name == name).count();
        assert_eq!(n, 2, "{name}: exactly K=2 series:\n{text}");
    }
    // Processes: the top one by heap and the top one by RSS growth.
    let processes = samples.iter().filter(|s| s.name == "leakprobe_process_heap_live_bytes").count();
    assert!((1..=2).contains(&processes), "{processes} process series:\n{text}");
    promtool_check_metrics(&text);
    fixture.close_stdin_and_wait();
}

#[test]
fn shipped_alerting_rules_pass_promtool() {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus/leakprobe-rules.yml");
    let out = run_with_timeout(Command::new("promtool").args(["check", "rules", rules]), Duration::from_secs(30));
    assert!(out.status.success(), "promtool check rules {rules}\n{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("SUCCESS"), "{stdout}");
    let text = std::fs::read_to_string(rules).expect("read the rules");
    for needle in ["alert: LeakprobeStackLeaking", "alert: LeakprobeRssGrowingFast", "for: "] {
        assert!(text.contains(needle), "the rules lack {needle:?}");
    }
}

#[test]
fn metrics_port_in_use_is_a_one_line_error_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("local addr").to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("s.sock");
    let out = run_with_timeout(
        Command::new(daemon_bin())
            .args(["run", "--socket", socket.to_str().expect("utf-8"), "--metrics-addr", &addr])
            .env_remove("RUST_LOG"),
        Duration::from_mins(1),
    );
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{}", describe(&out));
    assert!(lines[0].contains(&addr) && lines[0].contains("--metrics-addr"), "{}", lines[0]);
    assert!(!socket.exists());
}

#[test]
fn no_metrics_serves_nothing() {
    let daemon = Daemon::start_with_args(&["--no-metrics"]);
    assert!(!daemon.log().contains("serving metrics"), "{}", daemon.log());
}
