//! Leaks named in the program's own language, with the real runtimes: Node.js (JIT frames named by its perf
//! map), Java (the perf map the daemon asks the JVM for), Go (tier 0). Each fixture leaks from a named function
//! and the daemon runs with its defaults (automatic escalation, sampled mode) except for a shorter interval and
//! window, so that verdicts come in seconds, and `--escalate-only` (only the fixture gets probes: tier 0 sees
//! every process on the host). Every assertion is on the fixture's own pid.

use std::time::Duration;

use leakprobe_tests::{Daemon, Fixture, GOLANG_LEAK, JAVA_LEAK, NODE_LEAK_JS, StackExt, dump, poll_until};
use serde_json::Value;

/// How long a leak may take to be named: escalation needs tier 0's verdict (6 samples), and the stack's verdict
/// 6 more; well within the 3 minutes the runtimes are given.
const NAMED_WITHIN: Duration = Duration::from_mins(2);

/// The default daemon, with the stated flags for speed and isolation; only processes named `comm` escalate.
fn daemon(comm: &str, extra: &[&str]) -> Daemon {
    let mut args = vec![
        "--mode",
        "sampled",
        "--malloc-probes",
        "auto",
        "--interval",
        "1s",
        "--window",
        "30s",
        "--escalate-only",
        comm,
    ];
    args.extend_from_slice(extra);
    Daemon::start_with_args(&args)
}

/// `leakprobe top --by growth --pid PID --json`.
fn top_by_growth(daemon: &Daemon, pid: u32) -> Vec<Value> {
    let pid = pid.to_string();
    let socket = daemon.socket_str().to_owned();
    let report =
        daemon.cli_json(&["top", "--socket", &socket, "--pid", &pid, "--by", "growth", "--limit", "50", "--json"]);
    report["stacks"].as_array().cloned().unwrap_or_default()
}

/// The frame of `stack` whose function contains `name`.
fn frame_named<'a>(stack: &'a Value, name: &str) -> Option<&'a Value> {
    stack.frames().iter().find(|f| f["function"].as_str().is_some_and(|f| f.contains(name)))
}

/// Polls `top --by growth` until a stack of `pid` names `function` with a leak's verdict (`leaking`, or
/// `frozen` if the budget shed the process), and returns it.
fn wait_for_named_leak(daemon: &Daemon, pid: u32, function: &str) -> Value {
    let mut last = Vec::new();
    let found = poll_until(NAMED_WITHIN, &format!("a leaking stack naming {function} in pid {pid}"), || {
        last = top_by_growth(daemon, pid);
        last.iter()
            .find(|s| frame_named(s, function).is_some() && (s["verdict"] == "leaking" || s["verdict"] == "frozen"))
            .cloned()
    });
    eprintln!("{}", dump(std::slice::from_ref(&found)));
    found
}

/// The table `leakprobe top --by growth` prints for `pid`.
fn top_table(daemon: &Daemon, pid: u32) -> String {
    let pid = pid.to_string();
    let socket = daemon.socket_str().to_owned();
    let out = daemon.run_cli(&["top", "--socket", &socket, "--pid", &pid, "--by", "growth", "--depth", "12"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes the perf map a fixture's runtime wrote (`/tmp/perf-PID.map`): no test leaves files behind.
struct PerfMapFile(u32);

impl Drop for PerfMapFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/tmp/perf-{}.map", self.0));
    }
}

#[test]
fn node_jit_frames_are_named_from_the_perf_map() {
    let daemon = daemon("node", &[]);
    // V8 also writes a log of its own with `--perf-basic-prof`: into the daemon's temporary directory.
    let logfile = format!("--logfile={}", daemon.dir().join("node-v8.log").display());
    let mut fixture =
        Fixture::spawn("node", &["--perf-basic-prof", &logfile, "--no-logfile-per-isolate", NODE_LEAK_JS]);
    let _map = PerfMapFile(fixture.pid());
    fixture.wait_line("ready");
    let pid = fixture.pid();
    let stack = wait_for_named_leak(&daemon, pid, "leakSessions");
    let frame = frame_named(&stack, "leakSessions").expect("found above");
    // `JS:~leakSessions` (interpreted), `JS:^` (baseline) or `JS:*` (optimized): the map's own name.
    assert!(frame["function"].as_str().is_some_and(|f| f.starts_with("JS:")), "{frame:#}");
    assert!(frame["file"].as_str().is_some_and(|f| f.ends_with("leak_sessions.js")), "{frame:#}");
    assert_eq!(frame["line"], 11, "the function's line: {frame:#}");
    assert_eq!(frame["module"].as_str(), Some(format!("/tmp/perf-{pid}.map").as_str()), "{frame:#}");
    assert!(stack.has_function_containing("calloc") || stack.has_function_containing("Allocate"), "{stack:#}");
    let table = top_table(&daemon, pid);
    eprintln!("{table}");
    assert!(table.contains("JS:") && table.contains("leakSessions (leak_sessions.js:11)"), "{table}");
    fixture.close_stdin_and_wait();
}

#[test]
fn go_leaks_are_named_at_tier_0() {
    let daemon = daemon("golang_leak", &[]);
    let mut fixture = Fixture::spawn(GOLANG_LEAK, &[]);
    fixture.wait_line("ready");
    let pid = fixture.pid();
    let pid_text = pid.to_string();
    let socket = daemon.socket_str().to_owned();
    // The Go heap is the runtime's own mappings, touched by the leaking function: tier 0 names it.
    let process = poll_until(NAMED_WITHIN, "pid's faults naming main.cacheUserProfile, growing", || {
        let response = daemon.cli_json(&["faults", "--socket", &socket, "--pid", &pid_text, "--json"]);
        let process = response["processes"].as_array()?.iter().find(|p| p["pid"] == pid).cloned()?;
        let named = process["stacks"].as_array()?.iter().any(|s| frame_named(s, "main.cacheUserProfile").is_some());
        (named && process["growing"] == true).then_some(process)
    });
    let stacks = process["stacks"].as_array().expect("stacks");
    let stack = stacks.iter().find(|s| frame_named(s, "main.cacheUserProfile").is_some()).expect("found above");
    let frame = frame_named(stack, "main.cacheUserProfile").expect("found above");
    assert!(frame["file"].as_str().is_some_and(|f| f.ends_with("main.go")), "{frame:#}");
    assert!(stack.has_function_containing("main.main.func1"), "the caller too: {stack:#}");
    assert_eq!(stacks[0]["stack_id"], stack["stack_id"], "the leak touched most of the memory: {process:#}");
    let table = daemon.run_cli(&["faults", "--socket", &socket, "--pid", &pid_text]);
    let text = String::from_utf8_lossy(&table.stdout);
    eprintln!("{text}");
    assert!(text.contains("main.cacheUserProfile (main.go:"), "{text}");
    fixture.close_stdin_and_wait();
}

#[test]
fn java_frames_are_named_with_the_perf_map_the_daemon_asks_for() {
    // `--java-perfmap`: the daemon runs `jcmd PID Compiler.perfmap` when it escalates the JVM.
    let daemon = daemon("java", &["--java-perfmap"]);
    let mut fixture = Fixture::spawn(
        "java",
        &[
            "-XX:+PreserveFramePointer",
            "-XX:CompileCommand=quiet",
            "-XX:CompileCommand=dontinline,Leak::holdDirectBuffer",
            JAVA_LEAK,
        ],
    );
    let pid = fixture.pid();
    let _map = PerfMapFile(pid);
    fixture.wait_line("ready");
    let stack = wait_for_named_leak(&daemon, pid, "Leak.holdDirectBuffer");
    let frame = frame_named(&stack, "Leak.holdDirectBuffer").expect("found above");
    assert_eq!(frame["function"], "void Leak.holdDirectBuffer()", "HotSpot's name for it: {frame:#}");
    assert_eq!(frame["module"].as_str(), Some(format!("/tmp/perf-{pid}.map").as_str()), "{frame:#}");
    assert!(stack.has_function_containing("Unsafe_AllocateMemory0"), "the JVM's own frames: {stack:#}");
    assert!(
        daemon.log().contains(&format!("--java-perfmap: pid {pid}: perf map written")),
        "the daemon asked for the map: {}",
        daemon.log()
    );
    let table = top_table(&daemon, pid);
    eprintln!("{table}");
    assert!(table.contains("void Leak.holdDirectBuffer()"), "{table}");
    fixture.close_stdin_and_wait();
}
