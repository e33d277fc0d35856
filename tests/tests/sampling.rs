//! Sampled mode: unbiased size-weighted estimates per stack, from real processes under the real probes.

use leakprobe_tests::{Daemon, Fixture, SAMPLING, StackExt, dump, wait_for_stack};

/// Mean bytes between samples for this test: small enough that each leak of a few MiB gets hundreds of
/// samples, so the estimates' standard error is a few percent and 15% is several standard errors.
const INTERVAL: &str = "4KiB";
const INTERVAL_BYTES: u64 = 4 * 1024;
/// The leaks of `tests/fixtures/sampling.c`.
const LEAKS: [(&str, u64); 3] = [("leak_big", 8 << 20), ("leak_mid", 4 << 20), ("leak_small", 4 << 20)];
const TOLERANCE: f64 = 0.15;

#[test]
fn sampled_estimates_are_within_tolerance_per_stack() {
    let daemon = Daemon::start_with_args(&["--mode", "sampled", "--sample-interval", INTERVAL]);
    let status = daemon.status();
    assert_eq!(status["mode"], "sampled", "{status:#}");
    assert_eq!(status["sample_interval_bytes"].as_u64(), Some(INTERVAL_BYTES), "{status:#}");

    let mut fixture = Fixture::spawn(SAMPLING, &[]);
    fixture.wait_line("ready");
    let pid = fixture.pid();
    // The fence is 1 MiB: sampled with probability 1 - exp(-128), and the ring buffer is ordered.
    wait_for_stack(&daemon, pid, "the fence", |s| s.function_at(0) == Some("fence"));

    let response = daemon.cli_json(&[
        "top",
        "--socket",
        daemon.socket_str(),
        "--pid",
        &pid.to_string(),
        "--limit",
        "1000",
        "--json",
    ]);
    assert_eq!(response["estimated"].as_bool(), Some(true), "sampled figures say so: {response:#}");
    let stacks = response["stacks"].as_array().expect("stacks").clone();
    for (function, truth) in LEAKS {
        let estimate: u64 =
            stacks.iter().filter(|s| s.function_at(0) == Some(function)).map(StackExt::live_bytes).sum();
        #[expect(clippy::cast_precision_loss, reason = "a ratio of byte counts")]
        let error = (estimate as f64 - truth as f64).abs() / truth as f64;
        assert!(
            error <= TOLERANCE,
            "{function}: estimated {estimate} B, true {truth} B ({:.1}% off); {}",
            error * 100.0,
            dump(&stacks)
        );
        println!("{function}: true {truth} B, estimated {estimate} B ({:+.1}%)", error * 100.0);
    }
    // Freed churn leaves nothing live, sampled or not.
    let churn: u64 = stacks.iter().filter(|s| s.function_at(0) == Some("churn")).map(StackExt::live_bytes).sum();
    assert_eq!(churn, 0, "{}", dump(&stacks));
    assert_eq!(stacks[0].function_at(0), Some("leak_big"), "the largest leak is first; {}", dump(&stacks));
    assert!(daemon.counter("kernel_counters", "unsampled") > 0, "most calls are not sampled");
    fixture.close_stdin_and_wait();
}
