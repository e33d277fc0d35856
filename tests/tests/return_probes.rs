//! Session uprobes against plain return probes: which one runs, and that the session path really skips the
//! return trap of the calls it does not track.
//!
//! The counters are system-wide (every process's calls), so the assertions are relations that hold whatever
//! else runs: a session return runs only for a tracked call (`return_runs` ≈ `tracked`), a uretprobe runs on
//! every call's return (`return_runs` ≥ `tracked` + `unsampled`). The fixture alone makes about 132,000 calls, of
//! which a few hundred are sampled at the default 512 KiB interval. Each path's entry program is listed in the
//! programs' run-time statistics (`budget.programs`), the session program (loaded outside aya) included,
//! with at least one run per call counted.

use std::time::Duration;

use leakprobe_tests::{Daemon, Fixture, SAMPLING, poll_until};
use serde_json::Value;

/// Calls whose entry was counted but whose return had not run yet when the counters were read, and the
/// non-atomic read of per-CPU counters: a bound far below the fixture's 132,000 calls.
const SLACK: u64 = 1000;

/// Runs the sampling fixture under a sampled daemon with `--return-probes kind` and returns its status after.
/// The default unwinder (`--unwind auto`, the kernel's table walk with its `bpf_loop` callbacks) with both kinds.
fn run_fixture(kind: &str) -> Value {
    let daemon = Daemon::start_with_args(&["--mode", "sampled", "--return-probes", kind, "--interval", "200ms"]);
    let status = daemon.status();
    assert_eq!(status["return_probes"], kind, "{status:#}");
    let mut fixture = Fixture::spawn(SAMPLING, &[]);
    fixture.wait_line("ready");
    // Every call of the fixture has returned once it exits.
    fixture.close_stdin_and_wait();
    let status = daemon.status();
    // The budget reads the programs' run-time statistics at each check (every `--interval`).
    // The session program runs at every entry (and at tracked returns); `malloc_enter` at every `malloc`.
    let (entry, floor) =
        if kind == "session" { ("alloc_session", counter(&status, "unsampled")) } else { ("malloc_enter", 1) };
    poll_until(Duration::from_secs(10), "the entry program's runs in budget.programs", || {
        let status = daemon.status();
        (program_runs(&status, entry)? >= floor).then_some(())
    });
    status
}

/// Runs of `program` in `status`'s `budget.programs`, if listed.
fn program_runs(status: &Value, program: &str) -> Option<u64> {
    status["budget"]["programs"].as_array()?.iter().find(|p| p["program"] == program)?["run_count"].as_u64()
}

fn counter(status: &Value, name: &str) -> u64 {
    status["kernel_counters"][name].as_u64().unwrap_or_else(|| panic!("no kernel counter {name}: {status:#}"))
}

#[test]
fn session_returns_run_only_for_tracked_calls() {
    let status = run_fixture("session");
    let points = status["attach_points"].as_array().expect("attach points");
    assert!(points.iter().any(|p| p["kind"] == "uprobe_session" && p["target"] == "malloc"), "{status:#}");
    assert!(!points.iter().any(|p| p["kind"] == "uretprobe"), "no uretprobe on the session path: {status:#}");
    let (tracked, runs, unsampled) =
        (counter(&status, "tracked"), counter(&status, "return_runs"), counter(&status, "unsampled"));
    println!("session: tracked {tracked}, return runs {runs}, unsampled {unsampled}");
    assert!(unsampled >= 100_000, "the fixture's calls are mostly unsampled: {unsampled}");
    assert!(runs <= tracked + SLACK, "a session return runs only for a tracked call: {runs} runs, {tracked} tracked");
    assert!(runs * 20 < unsampled, "unsampled calls skip the return: {runs} runs, {unsampled} unsampled");
}

#[test]
fn plain_returns_run_on_every_call() {
    let status = run_fixture("plain");
    let points = status["attach_points"].as_array().expect("attach points");
    assert!(points.iter().any(|p| p["kind"] == "uretprobe" && p["target"] == "malloc"), "{status:#}");
    let (tracked, runs, unsampled) =
        (counter(&status, "tracked"), counter(&status, "return_runs"), counter(&status, "unsampled"));
    println!("plain: tracked {tracked}, return runs {runs}, unsampled {unsampled}");
    assert!(unsampled >= 100_000, "the fixture's calls are mostly unsampled: {unsampled}");
    assert!(runs + SLACK >= tracked + unsampled, "a uretprobe runs on every return: {runs} runs");
}
