//! Return addresses a uretprobe replaced with its trampoline (the `[uprobes]` page) are restored by the kernel
//! unwinder from the thread's return instances: a tier-0 fault taken inside a probed `malloc` names
//! `malloc`'s caller, with session return probes and with plain ones, and no stack shows the trampoline.

use std::time::Duration;

use leakprobe_tests::{Daemon, Fixture, StackExt, TIER0, poll_until};
use serde_json::Value;

const PAGE: u64 = 4096;

/// The start of the `[uprobes]` page (where the trampoline is) in process `pid`, once a return probe ran in it.
fn uprobes_page(pid: u32) -> Option<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let line = maps.lines().find(|l| l.ends_with("[uprobes]"))?;
    u64::from_str_radix(line.split('-').next()?, 16).ok()
}

/// The first frame of `stack` outside the C library: the program's own code.
fn first_own_frame(stack: &Value) -> Option<&str> {
    let own = stack.frames().iter().find(|f| !f["module"].as_str().is_some_and(|m| m.contains("/libc.so")))?;
    own["function"].as_str()
}

/// A small-object heap grown through `malloc` with return probes on `malloc` (`flags` choose their kind),
/// seen by tier 0: the faults inside `malloc` name `smallheap_grow` after glibc's frames.
fn heap_grown_through_probed_malloc(flags: &[&str]) {
    let mut fixture = Fixture::spawn(TIER0, &["smallheap", "4096"]);
    fixture.wait_line("ready");
    let pid = fixture.pid();
    let pid_text = pid.to_string();
    let mut args = vec!["--malloc-probes", "all", "--fault-sample-interval", "1", "--pid", &pid_text];
    args.extend(flags);
    let daemon = Daemon::start_with_args(&args);
    fixture.send_line("grow");
    fixture.wait_line("grown 1");
    let pages = 4096 * 4000 / PAGE;
    let sampled = |process: &Value| -> u64 {
        let stacks = process["stacks"].as_array().map(Vec::as_slice).unwrap_or_default();
        stacks.iter().map(|s| s.num("sampled_faults")).sum()
    };
    let process = poll_until(Duration::from_secs(30), &format!("the faults of pid {pid}"), || {
        daemon.faults_of(pid).filter(|p| sampled(p) >= pages * 3 / 4)
    });
    let stacks = process["stacks"].as_array().cloned().unwrap_or_default();
    let own: u64 =
        stacks.iter().filter(|s| first_own_frame(s) == Some("smallheap_grow")).map(|s| s.num("sampled_faults")).sum();
    assert!(own * 100 >= sampled(&process) * 95, "smallheap_grow holds the growth: {process:#}");
    let top = &stacks[0];
    let names: Vec<&str> = top.frames().iter().map(|f| f["function"].as_str().unwrap_or("")).collect();
    let caller = names.iter().position(|n| *n == "smallheap_grow");
    assert!(
        caller.is_some_and(|c| c >= 2 && names[c - 1].contains("malloc")),
        "a fault inside the probed malloc, then its caller: {names:?}"
    );

    let trampoline = uprobes_page(pid).expect("the [uprobes] page: return probes ran in the fixture");
    let shows_trampoline = |stack: &Value| {
        stack.frames().iter().any(|f| {
            let addr = f["addr"].as_str().and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok());
            addr.is_some_and(|a| (trampoline..trampoline + PAGE).contains(&a))
        })
    };
    let map_stacks = process["map_stacks"].as_array().cloned().unwrap_or_default();
    for stack in stacks.iter().chain(&map_stacks) {
        assert!(!shows_trampoline(stack), "the trampoline {trampoline:#x} in a stack: {stack:#}");
    }
    let restored = daemon.status()["kernel_counters"]["unwind_uretprobe_restored"].as_u64().unwrap_or(0);
    assert!(restored > 0, "return addresses restored: {restored}");
    fixture.close_stdin_and_wait();
}

#[test]
fn tier0_fault_inside_a_session_probed_malloc_names_its_caller() {
    heap_grown_through_probed_malloc(&["--mode", "full"]);
}

#[test]
fn tier0_fault_inside_a_uretprobed_malloc_names_its_caller() {
    heap_grown_through_probed_malloc(&["--return-probes", "plain"]);
}
