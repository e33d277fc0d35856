//! Python frames in the stacks of real Python 3.11 processes: Debian's (`libpython` linked into the
//! executable) and pyenv's (`libpython3.11.so`), under the default daemon and in full mode with every process
//! probed. The leaking function is named with its file and line, its caller below it, and the verdict is
//! `leaking` while the leak goes on.

use std::time::Duration;

use leakprobe_tests::{Daemon, Fixture, StackExt, dump, poll_until};
use serde_json::Value;

/// The fixture: `leak_sessions` leaks, called from `serve`.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/python_leak.py");
/// Debian's interpreter: `libpython3.11` linked statically into the executable.
const DEBIAN_PYTHON: &str = "/usr/bin/python3.11";
/// pyenv's 3.11.7: a small executable and `libpython3.11.so.1.0`.
const PYENV_PYTHON: &str = "/root/.pyenv/versions/3.11.7/bin/python3.11";
/// The bound: the function is named within 3 minutes.
const DEADLINE: Duration = Duration::from_mins(3);

/// The line of the fixture that carries `marker` (a comment), counted from 1.
fn line_of(marker: &str) -> u64 {
    let text = std::fs::read_to_string(SCRIPT).unwrap_or_else(|err| panic!("{SCRIPT}: {err}"));
    let index = text.lines().position(|l| l.contains(marker)).unwrap_or_else(|| panic!("no `{marker}` in {SCRIPT}"));
    index as u64 + 1
}

/// Whether frame `frame` is `function (python_leak.py:line)`.
fn is_python_frame(frame: &Value, function: &str, line: u64) -> bool {
    frame["function"].as_str() == Some(function)
        && frame["file"].as_str().is_some_and(|f| f.ends_with("python_leak.py"))
        && frame["line"].as_u64() == Some(line)
}

/// Polls `top --by growth` for the fixture until a stack names `leak_sessions` at the leaking line with
/// `serve` at its call below it, judged `leaking`; returns that stack.
fn leaking_stack(daemon: &Daemon, pid: u32) -> Value {
    let (leak_line, call_line) = (line_of("# the leaking line"), line_of("# the call in serve"));
    let pid_arg = pid.to_string();
    poll_until(DEADLINE, "a leaking stack naming leak_sessions and serve", || {
        let response = daemon.cli_json(&[
            "top",
            "--socket",
            daemon.socket_str(),
            "--by",
            "growth",
            "--pid",
            &pid_arg,
            "--limit",
            "50",
            "--json",
        ]);
        let stacks = response["stacks"].as_array().cloned().unwrap_or_default();
        let found = stacks.iter().find(|stack| {
            let frames = stack.frames();
            let leak = frames.iter().position(|f| is_python_frame(f, "leak_sessions", leak_line));
            let serve = frames.iter().position(|f| is_python_frame(f, "serve", call_line));
            matches!((leak, serve), (Some(l), Some(s)) if l < s)
                && stack.num("pid") == u64::from(pid)
                && stack["verdict"].as_str() == Some("leaking")
        });
        found.cloned()
    })
}

fn leak_is_named(python: &str, daemon_args: &[&str]) {
    let daemon = Daemon::start_with_args(daemon_args);
    let mut fixture = Fixture::spawn(python, &[SCRIPT]);
    fixture.wait_line("ready");
    let stack = leaking_stack(&daemon, fixture.pid());
    // `<module>` below `serve`; the three ran in one evaluation call (3.11 calls Python from Python without
    // recursing in C), so when the native unwinding reached that call's `_PyEval_EvalFrameDefault` frame, all
    // three come before it. (A native stack cut short keeps them, last.)
    let frames = stack.frames();
    let position = |name: &str| frames.iter().position(|f| f["function"].as_str() == Some(name));
    let (serve, module) = (position("serve"), position("<module>"));
    assert!(matches!((serve, module), (Some(s), Some(m)) if s < m), "{}", dump(std::slice::from_ref(&stack)));
    let eval = frames.iter().position(|f| f["function"].as_str().is_some_and(|n| n.contains("_PyEval_EvalFrame")));
    if let (Some(eval), Some(module)) = (eval, module) {
        assert!(
            module < eval,
            "the evaluation loop's frame follows the frames it ran: {}",
            dump(std::slice::from_ref(&stack))
        );
    }
    assert!(
        daemon.counter("kernel_counters", "py_stacks") > 0,
        "kernel.py_stacks counts the records with Python frames"
    );
    splice_counters_moved(&daemon);
}

/// The splicer's counters (`daemon_counters.python_*`) counted the fixture's stacks: spliced ones, and every
/// stack in one outcome.
fn splice_counters_moved(daemon: &Daemon) {
    let status = daemon.status();
    let counter =
        |name: &str| status["daemon_counters"][name].as_u64().unwrap_or_else(|| panic!("no {name}: {status:#}"));
    assert!(counter("python_stacks_spliced") > 0, "stacks spliced: {status:#}");
    assert!(counter("python_frames_resolved") > 0, "frames resolved: {status:#}");
    let outcomes: u64 = ["empty", "no_interpreter", "spliced", "no_eval_frame", "frames_left"]
        .iter()
        .map(|outcome| counter(&format!("python_stacks_{outcome}")))
        .sum();
    // Read in one status response while records keep coming: the counters are loaded one after the other, so
    // a few records may be in one and not yet (or already) in the others.
    assert!(outcomes.abs_diff(counter("python_stacks")) <= 64, "every stack has one outcome: {status:#}");
    let text = daemon.run_cli(&["status", "--socket", daemon.socket_str()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("python frames: ") && text.contains(" spliced"), "{text}");
}

#[test]
fn debian_python_leak_is_named_under_the_default_daemon() {
    leak_is_named(DEBIAN_PYTHON, &[]);
}

#[test]
fn pyenv_python_leak_is_named_under_the_default_daemon() {
    leak_is_named(PYENV_PYTHON, &[]);
}

#[test]
fn debian_python_leak_is_named_in_full_mode_with_every_process_probed() {
    leak_is_named(DEBIAN_PYTHON, &["--mode", "full", "--malloc-probes", "all"]);
}

/// Tier 0 alone (no allocator probes): the page faults of the growing heap carry the faulting thread's Python
/// frames, spliced like an allocation's, so `faults --growing` names `leak_sessions` at the leaking line.
#[test]
fn debian_python_fault_stacks_name_the_function_at_tier_0() {
    let daemon = Daemon::start_with_args(&["--malloc-probes", "off", "--interval", "1s", "--window", "30s"]);
    let mut fixture = Fixture::spawn(DEBIAN_PYTHON, &[SCRIPT]);
    fixture.wait_line("ready");
    let (pid, leak_line, call_line) = (fixture.pid(), line_of("# the leaking line"), line_of("# the call in serve"));
    let pid_text = pid.to_string();
    let socket = daemon.socket_str().to_owned();
    let named = |stack: &Value| {
        let frames = stack.frames();
        let leak = frames.iter().position(|f| is_python_frame(f, "leak_sessions", leak_line));
        let serve = frames.iter().position(|f| is_python_frame(f, "serve", call_line));
        matches!((leak, serve), (Some(l), Some(s)) if l < s)
    };
    let process = poll_until(DEADLINE, "the fixture growing, a fault stack naming leak_sessions and serve", || {
        let response = daemon.cli_json(&["faults", "--socket", &socket, "--growing", "--pid", &pid_text, "--json"]);
        let process = response["processes"].as_array()?.iter().find(|p| p["pid"] == pid).cloned()?;
        let found = process["stacks"].as_array()?.iter().any(named);
        (found && process["growing"] == true).then_some(process)
    });
    let stacks = process["stacks"].as_array().expect("stacks");
    let stack = stacks.iter().find(|s| named(s)).expect("found above");
    assert!(stack.has_function_containing("_PyEval_EvalFrame"), "the native frames are kept: {stack:#}");
    let table = daemon.run_cli(&["faults", "--socket", &socket, "--growing", "--pid", &pid_text]);
    let text = String::from_utf8_lossy(&table.stdout);
    eprintln!("{text}");
    assert!(text.contains(&format!("leak_sessions (python_leak.py:{leak_line})")), "{text}");
    assert!(
        daemon.counter("kernel_counters", "py_stacks") > 0,
        "kernel.py_stacks counts the records with Python frames"
    );
    splice_counters_moved(&daemon);
}
