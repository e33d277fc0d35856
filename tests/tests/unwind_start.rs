//! The kernel unwinder in a process's first milliseconds (before the daemon's scan writes its mappings) and in
//! a library loaded with `dlopen` after that scan: frames no process entry places are placed by their vma
//! (`bpf_find_vma`) when their file's tables are loaded, so frameless chains are named whole from the first
//! instruction, with default flags.

use leakprobe_tests::expect::{LIB_COUNT, LIB_SIZE, MAIN_COUNT, MAIN_SIZE};
use leakprobe_tests::stacks::assert_live;
use leakprobe_tests::{Daemon, FRAMELESS, FRAMELESS_DL_SO, Fixture, StackExt, dump, poll_until, wait_for_fence};
use std::time::Duration;

use serde_json::Value;

/// Full mode with every other flag at its default, tracing every process (a new one is traced from its start).
const TABLES: [&str; 2] = ["--mode", "full"];

/// Waits until the daemon has loaded the tables of a file whose path ends with each of `suffixes`.
fn wait_for_tables(daemon: &Daemon, suffixes: &[&str]) {
    poll_until(Duration::from_mins(1), &format!("the tables of {suffixes:?} loaded"), || {
        let status = daemon.status();
        let tables = status["discovery"]["unwind_tables"].as_array().cloned().unwrap_or_default();
        let loaded = |suffix: &str| tables.iter().any(|t| t["path"].as_str().is_some_and(|p| p.ends_with(suffix)));
        suffixes.iter().all(|s| loaded(s)).then_some(())
    });
}

/// Asserts that `stacks` hold `bytes` in `count` blocks under `leaf` whose frames start with `chain`, the first
/// in a module whose path ends with `module`.
fn assert_chain(stacks: &[Value], chain: &[&str], module: &str, bytes: u64, count: u64) {
    let stack = assert_live(stacks, chain[0], bytes, count);
    let names: Vec<&str> = stack.frames().iter().map(|f| f["function"].as_str().unwrap_or("")).collect();
    assert!(names.len() >= chain.len() && names[..chain.len()] == *chain, "{chain:?} whole: {}", dump(stacks));
    let first = stack.frames()[0]["module"].as_str().unwrap_or("");
    assert!(first.ends_with(module), "{} in {module}: {first}; {}", chain[0], dump(stacks));
}

/// The daemon's kernel counter `name`.
fn kernel_counter(daemon: &Daemon, name: &str) -> u64 {
    daemon.status()["kernel_counters"][name].as_u64().unwrap_or(0)
}

/// A program run once before (so its tables and its library's are loaded), run again: it allocates through
/// frameless chains in its main binary and in its library within its first milliseconds after `execve`, before
/// the daemon's scan of it; both chains are named whole.
#[test]
fn frameless_chains_are_whole_from_a_new_process_first_allocation() {
    let daemon = Daemon::start_with_args(&TABLES);
    let mut before = Fixture::spawn(FRAMELESS, &["main"]);
    before.wait_line("waiting");
    wait_for_tables(&daemon, &["/frameless", "/libframeless.so"]);
    before.send_line("go");
    before.wait_line("ready");
    before.close_stdin_and_wait();
    let found_before = kernel_counter(&daemon, "unwind_vma_found");

    for (mode, chain, module, bytes, count) in [
        (
            "main-now",
            &["leak_three", "level_two", "level_one", "mode_main", "main"][..],
            "/frameless",
            MAIN_COUNT * MAIN_SIZE,
            MAIN_COUNT,
        ),
        (
            "lib-now",
            &["lib_leak", "lib_middle", "lib_outer", "mode_lib", "main"][..],
            "/libframeless.so",
            LIB_COUNT * LIB_SIZE,
            LIB_COUNT,
        ),
    ] {
        let mut fixture = Fixture::spawn(FRAMELESS, &[mode]);
        fixture.wait_line("ready");
        let stacks = wait_for_fence(&daemon, fixture.pid());
        assert_chain(&stacks, chain, module, bytes, count);
        fixture.close_stdin_and_wait();
    }
    let found = kernel_counter(&daemon, "unwind_vma_found") - found_before;
    assert!(found > 0, "frames placed by their vma: {found}; {:#}", daemon.status());
    assert_eq!(daemon.status()["daemon_counters"]["unwind_vma_lookups_off"].as_u64(), Some(0));
}

/// A library loaded with `dlopen` after the daemon's scan of the process (its tables loaded from another
/// process that mapped it): its frameless chain is named whole, placed by its vma.
#[test]
fn a_library_loaded_after_the_scan_is_unwound_from_its_tables() {
    // One process maps the library before the daemon starts: the start-up scan loads its tables.
    let mut before = Fixture::spawn(FRAMELESS, &["dlopen", FRAMELESS_DL_SO]);
    before.wait_line("waiting");
    before.send_line("go");
    before.wait_line("ready");
    let daemon = Daemon::start_with_args(&TABLES);
    wait_for_tables(&daemon, &["/libframeless_dl.so", "/frameless"]);

    let mut fixture = Fixture::spawn(FRAMELESS, &["dlopen", FRAMELESS_DL_SO]);
    fixture.wait_line("waiting");
    // The daemon writes a new process's mappings 30 ms after its exec, without the library (not mapped yet).
    std::thread::sleep(Duration::from_millis(500));
    fixture.send_line("go");
    fixture.wait_line("ready");
    let stacks = wait_for_fence(&daemon, fixture.pid());
    assert_chain(
        &stacks,
        &["lib_leak", "lib_middle", "lib_outer", "mode_dlopen", "main"],
        "/libframeless_dl.so",
        LIB_COUNT * LIB_SIZE,
        LIB_COUNT,
    );
    assert!(kernel_counter(&daemon, "unwind_vma_found") > 0, "{:#}", daemon.status());
    fixture.close_stdin_and_wait();
    before.close_stdin_and_wait();
}
