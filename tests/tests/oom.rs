//! OOM forensics: a real OOM kill in a memory cgroup, the report it leaves, and reports surviving restarts; an
//! OOM kill in a container whose root filesystem is gone before the report is read.

use std::time::Duration;

use leakprobe_tests::cgroup::leaker_oom_killed;
use leakprobe_tests::container::{Container, program_pid};
use leakprobe_tests::{Daemon, describe, poll_until};
use serde_json::Value;

/// Memory limit of the test's cgroup.
const LIMIT: u64 = 64 << 20;
/// The fixture leaks 1 MiB blocks, each touched right after `malloc` returns.
const BLOCK: u64 = 1 << 20;
/// Tolerance on the leak's live bytes at the kill: every block `malloc` returned is counted, the last one possibly
/// not yet touched (so at most one block beyond the limit); at least 40 MiB, as the cgroup also charges the
/// binary's and libc's pages, page tables and kernel memory.
const MIN_LEAKED: u64 = 40 << 20;
const MAX_LEAKED: u64 = LIMIT + BLOCK;
/// How long the kernel may take to kill the fixture, and the daemon to write the report.
const KILL_TIMEOUT: Duration = Duration::from_mins(1);

/// `leakprobe oom --json`'s reports.
fn reports(daemon: &Daemon) -> Vec<Value> {
    let list = daemon.cli_json(&["oom", "--socket", daemon.socket_str(), "--json"]);
    list["reports"].as_array().cloned().unwrap_or_else(|| panic!("oom --json has no reports array: {list:#}"))
}

fn report_of(daemon: &Daemon, pid: u32) -> Option<Value> {
    reports(daemon).into_iter().find(|r| r["pid"].as_u64() == Some(u64::from(pid)))
}

/// A daemon with its own state directory (returned: it outlives the daemon), sampling fast, so a leak has a
/// growth rate and a verdict when the kernel kills it about 1.3 s in.
fn oom_daemon() -> (tempfile::TempDir, Daemon) {
    let state = tempfile::Builder::new().prefix("leakprobe-oom-state-").tempdir().expect("state dir");
    let daemon = Daemon::start_with_state_args(
        tempfile::Builder::new().prefix("leakprobe-test-").tempdir().expect("daemon dir"),
        state.path(),
        &["--interval", "100ms", "--window", "10s"],
    );
    (state, daemon)
}

#[test]
fn a_real_oom_kill_is_reported_with_the_leaking_stack_and_survives_a_restart() {
    let (state, daemon) = oom_daemon();
    let status = daemon.status();
    assert_eq!(status["features"]["oom"].as_bool(), Some(true), "the OOM feature is on: {status:#}");

    let (cgroup, pid) = leaker_oom_killed(LIMIT, KILL_TIMEOUT);

    let summary = poll_until(KILL_TIMEOUT, "the OOM report of the fixture", || report_of(&daemon, pid));
    let id = summary["id"].as_str().expect("report id").to_owned();
    assert_eq!(summary["comm"].as_str(), Some("leaker"), "{summary:#}");
    assert_eq!(summary["top_function"].as_str(), Some("leak_until_killed"), "{summary:#}");

    let show = daemon.cli_json(&["oom", "show", &id, "--socket", daemon.socket_str(), "--json"]);
    assert_eq!(show["pid"].as_u64(), Some(u64::from(pid)), "{show:#}");
    assert_eq!(show["comm"].as_str(), Some("leaker"), "{show:#}");
    let path = cgroup.path();
    assert!(
        show["cgroup"].as_str().is_some_and(|c| c.ends_with(&path)),
        "cgroup is not {path} ({:?}): {show:#}",
        cgroup.version()
    );
    assert!(show["anon_rss_kb"].as_u64().is_some_and(|kb| kb > 0), "anon_rss_kb: {show:#}");
    assert!(show["total_vm_kb"].as_u64().is_some_and(|kb| kb > 0), "total_vm_kb: {show:#}");
    assert!(show["uid"].is_u64() && show["oom_score_adj"].is_i64(), "{show:#}");
    assert_eq!(show["tracked"].as_bool(), Some(true), "{show:#}");
    let top = &show["stacks_by_live_bytes"][0];
    assert_eq!(top["frames"][0]["function"].as_str(), Some("leak_until_killed"), "top stack: {show:#}");
    assert_eq!(top["frames"][1]["function"].as_str(), Some("via_leak_until_killed"), "its caller: {show:#}");
    let live = top["live_bytes"].as_u64().expect("live_bytes");
    assert!(
        (MIN_LEAKED..=MAX_LEAKED).contains(&live),
        "live bytes {live} not in [{MIN_LEAKED}, {MAX_LEAKED}]: {show:#}"
    );
    assert_eq!(top["live_count"].as_u64(), Some(live / BLOCK), "1 MiB blocks: {show:#}");
    // It was growing when it died: a leak, at tens of MiB per second, and first by growth too.
    assert_eq!(top["verdict"].as_str(), Some("leaking"), "{show:#}");
    let rate = top["growth"]["rate_bytes_per_second"].as_f64().expect("growth rate");
    assert!(rate > f64::from(10u32 << 20), "growth {rate} B/s: {show:#}");
    let fastest = &show["stacks_by_growth"][0];
    assert_eq!(fastest["frames"][0]["function"].as_str(), Some("leak_until_killed"), "by growth: {show:#}");
    assert!(show["heap_live_bytes"].as_u64().is_some_and(|b| b >= live), "{show:#}");

    let human = daemon.run_cli(&["oom", "show", &id, "--socket", daemon.socket_str()]);
    assert!(human.status.success(), "{}", describe(&human));
    let text = String::from_utf8_lossy(&human.stdout);
    println!("leakprobe oom show {id}:\n{text}");
    assert!(text.contains("leak_until_killed (leaker.c:") && text.contains(&path), "{text}");
    let list = daemon.run_cli(&["oom", "--socket", daemon.socket_str()]);
    assert!(String::from_utf8_lossy(&list.stdout).contains(&id), "{}", describe(&list));

    let status = daemon.status();
    assert!(status["oom_kills_by_comm"]["leaker"].as_u64().is_some_and(|n| n >= 1), "{status:#}");
    assert!(status["daemon_counters"]["oom_reports_written"].as_u64().is_some_and(|n| n >= 1), "{status:#}");
    assert!(daemon.log().contains(&format!("OOM kill: pid {pid} (leaker)")), "log line: {}", daemon.log());
    drop(daemon);

    // A new daemon on the same state directory lists the report and shows it.
    let again = Daemon::start_with_state(
        tempfile::Builder::new().prefix("leakprobe-test-").tempdir().expect("daemon dir"),
        state.path(),
    );
    assert!(report_of(&again, pid).is_some(), "the report is gone after a restart: {:#?}", reports(&again));
    let reloaded = again.cli_json(&["oom", "show", &id, "--socket", again.socket_str(), "--json"]);
    assert_eq!(reloaded, show, "the reloaded report differs");
    assert!(again.counter("daemon_counters", "oom_reports_loaded") >= 1);
}

/// The C leaker in a container (own root filesystem, mount and pid namespaces, a docker-style memory cgroup) leaks
/// until the kernel kills it. Once it is dead its root filesystem is deleted, as removing the container does: the
/// report still names the leaking function in the container's binary, the container and the pid the container
/// saw (1), in JSON and in the text of `oom show` and `oom`.
#[test]
fn an_oom_kill_in_a_container_is_reported_after_the_container_is_gone() {
    let (_state, daemon) = oom_daemon();
    let mut container = Container::new(leakprobe_tests::LEAKER, "leaker", LIMIT);
    let mut fixture = container.spawn("leaker", &["oom"]);
    fixture.wait_line("started");
    let pid = program_pid(&fixture);
    // The container's libc is probed at its first execve, which races the program (docs/semantics.md): on a
    // busy host the leaker could otherwise leak its first tens of MiB before the probes are in.
    let libc = leakprobe_tests::file_id(&container.root().join("lib/x86_64-linux-gnu/libc.so.6"));
    daemon.wait_for_probes("the container's libc probed", &libc);
    fixture.send_line("go");
    // `unshare` ends once its child is dead and reaped.
    fixture.wait_exit(KILL_TIMEOUT);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} is gone");
    container.remove_root();

    let summary = poll_until(KILL_TIMEOUT, "the OOM report of the container's leaker", || report_of(&daemon, pid));
    let id = summary["id"].as_str().expect("report id").to_owned();
    assert_eq!(summary["container_id"].as_str(), Some(container.id()), "{summary:#}");
    assert_eq!(summary["ns_pid"].as_u64(), Some(1), "{summary:#}");
    assert_eq!(summary["top_function"].as_str(), Some("leak_until_killed"), "{summary:#}");

    let show = daemon.cli_json(&["oom", "show", &id, "--socket", daemon.socket_str(), "--json"]);
    assert_eq!((show["pid"].as_u64(), show["ns_pid"].as_u64()), (Some(u64::from(pid)), Some(1)), "{show:#}");
    assert_eq!(show["container_id"].as_str(), Some(container.id()), "{show:#}");
    assert_eq!(show["cgroup"].as_str(), Some(container.cgroup().path().as_str()), "{show:#}");
    let top = &show["stacks_by_live_bytes"][0];
    let frame = &top["frames"][0];
    assert_eq!(frame["function"].as_str(), Some("leak_until_killed"), "top stack: {show:#}");
    // The container's copy, at its path in the container: the host has no file there.
    assert_eq!(frame["module"].as_str(), Some("/leaker"), "top stack: {show:#}");
    assert_eq!(top["frames"][1]["function"].as_str(), Some("via_leak_until_killed"), "its caller: {show:#}");
    let live = top["live_bytes"].as_u64().expect("live_bytes");
    assert!((MIN_LEAKED..=MAX_LEAKED).contains(&live), "live bytes {live} not in [{MIN_LEAKED}, {MAX_LEAKED}]");
    assert_eq!((top["container_id"].as_str(), top["ns_pid"].as_u64()), (Some(container.id()), Some(1)), "{show:#}");

    let short = &container.id()[..12];
    let human = daemon.run_cli(&["oom", "show", &id, "--socket", daemon.socket_str()]);
    assert!(human.status.success(), "{}", describe(&human));
    let text = String::from_utf8_lossy(&human.stdout);
    println!("leakprobe oom show {id}:\n{text}");
    assert!(text.contains("leak_until_killed (leaker.c:"), "{text}");
    let field = |name: &str| text.lines().find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()));
    assert_eq!(field("container "), Some(short.to_owned()), "{text}");
    assert_eq!(field("ns pid "), Some("1".to_owned()), "{text}");
    let list = daemon.run_cli(&["oom", "--socket", daemon.socket_str()]);
    let text = String::from_utf8_lossy(&list.stdout);
    println!("leakprobe oom:\n{text}");
    let row = text.lines().find(|l| l.contains(&id)).unwrap_or_else(|| panic!("no row for {id}: {text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells.get(2..5), Some(&[pid.to_string().as_str(), short, "1"][..]), "{text}");
    drop(fixture);
}

/// A minimal valid report file, as the daemon writes them.
fn report_file(id: &str, pid: u32) -> String {
    serde_json::json!({
        "format": "leakprobe-oom-report",
        "version": 1,
        "report": {
            "id": id, "time_unix_ms": 1_700_000_000_000_u64, "pid": pid, "comm": "old", "uid": 0,
            "cgroup": "/old", "total_vm_kb": 1, "anon_rss_kb": 2, "file_rss_kb": 3, "shmem_rss_kb": 4,
            "oom_score_adj": 0, "tracked": false, "heap_live_bytes": 0, "heap_live_allocations": 0,
            "stacks_by_live_bytes": [], "stacks_by_growth": []
        }
    })
    .to_string()
}

#[test]
fn truncated_and_junk_report_files_are_skipped() {
    let state = tempfile::Builder::new().prefix("leakprobe-oom-state-").tempdir().expect("state dir");
    let oom = state.path().join("oom");
    std::fs::create_dir(&oom).expect("oom dir");
    let good = report_file("1700000000000-11", 11);
    std::fs::write(oom.join("oom-1700000000000-11.json"), &good).expect("good");
    std::fs::write(oom.join("oom-1700000000001-12.json"), &report_file("1700000000001-12", 12)[..good.len() / 2])
        .expect("truncated");
    std::fs::write(oom.join("junk.bin"), [0xff, 0, 1, 2]).expect("junk");

    let daemon = Daemon::start_with_state(
        tempfile::Builder::new().prefix("leakprobe-test-").tempdir().expect("daemon dir"),
        state.path(),
    );
    // Only the files written here (an OOM kill elsewhere on the host, another test's, may add a report of its own).
    let ids: Vec<String> = reports(&daemon)
        .iter()
        .filter_map(|r| r["id"].as_str().filter(|id| id.starts_with("170000000000")).map(str::to_owned))
        .collect();
    assert_eq!(ids, ["1700000000000-11"], "only the valid report is listed");
    assert_eq!(daemon.counter("daemon_counters", "oom_reports_skipped"), 2);
    assert_eq!(daemon.counter("daemon_counters", "oom_reports_loaded"), 1);
    let shown = daemon.cli_json(&["oom", "show", "1700000000000-11", "--socket", daemon.socket_str(), "--json"]);
    assert_eq!(shown["cgroup"].as_str(), Some("/old"), "{shown:#}");
    let log = daemon.log();
    assert!(log.contains("oom-1700000000001-12.json") && log.contains("junk.bin"), "warnings name the files: {log}");

    // The API: an unknown id is 404, a malformed one 400, both with a JSON error.
    for (path, code) in [("/v1/oom/1700000000009-1", 404), ("/v1/oom/..%2Fx", 400), ("/v1/oom/abc", 400)] {
        let response = leakprobe_tests::http::get(daemon.socket(), path);
        assert_eq!(response.status, Some(code), "{path}: {response}");
        assert!(response.json()["error"].as_str().is_some_and(|e| !e.is_empty()), "{path}: {response}");
    }
    let out = daemon.run_cli(&["oom", "show", "nope", "--socket", daemon.socket_str()]);
    assert!(!out.status.success(), "{}", describe(&out));
}
