//! A Rust program leaking through the global allocator (libc malloc underneath).

use leakprobe_tests::expect::{FENCE_SIZE, RUST_LEAK_COUNT, RUST_LEAK_SIZE};
use leakprobe_tests::{Daemon, Fixture, StackExt, dump, wait_for_stack};

#[test]
fn rust_box_leaks_are_attributed_to_the_leak_site() {
    let daemon = Daemon::start();
    let fixture = Fixture::spawn(env!("CARGO_BIN_EXE_rust-leaker"), &[]);
    leaks_are_attributed(&daemon, fixture, "rust-leaker");
}

/// The same program as rustc builds it by default: no frame pointers, linked by lld (whose code segment starts
/// in the middle of a page shared with the read-only one). The kernel unwinder walks it with its unwind tables:
/// every frame of the fixture's own binary is named, down to `main`. The fixture waits until the daemon runs:
/// allocations in the first milliseconds of a process, before the daemon has loaded its tables, are walked by
/// frame pointers (docs/stacks.md).
#[test]
fn rust_without_frame_pointers_is_unwound_from_its_tables() {
    let mut fixture = Fixture::spawn(env!("RUST_LEAKER_FRAMELESS"), &["wait"]);
    fixture.wait_line("waiting");
    let daemon = Daemon::start();
    fixture.send_line("go");
    let stacks = leaks_are_attributed(&daemon, fixture, "rustleak_nofp");
    for stack in stacks.iter().filter(|s| s.has_function_containing("rust_leak_site")) {
        let frames = stack["frames"].as_array().expect("frames");
        let unnamed: Vec<_> = frames
            .iter()
            .take_while(|f| f["function"].as_str() != Some("main"))
            .filter(|f| f["function"].as_str().is_none())
            .collect();
        assert!(unnamed.is_empty(), "every frame above main is named: {}", dump(&stacks));
        assert!(frames.iter().any(|f| f["function"].as_str() == Some("__libc_start_call_main")), "{}", dump(&stacks));
    }
}

/// Checks the two leaks of the Rust fixture under `daemon`; returns its stacks.
fn leaks_are_attributed(daemon: &Daemon, mut fixture: Fixture, comm: &str) -> Vec<serde_json::Value> {
    fixture.wait_line("ready");
    let pid = fixture.pid();
    let stacks = wait_for_stack(daemon, pid, "a live stack through rust_fence", |s| {
        s.has_function_containing("rust_fence") && s.live_count() >= 1
    });

    let fence: Vec<&serde_json::Value> = stacks.iter().filter(|s| s.has_function_containing("rust_fence")).collect();
    assert_eq!(fence.len(), 1, "one stack through rust_fence; {}", dump(&stacks));
    assert_eq!((fence[0].live_bytes(), fence[0].live_count()), (FENCE_SIZE, 1), "rust_fence; {}", dump(&stacks));

    let site: Vec<&serde_json::Value> = stacks.iter().filter(|s| s.has_function_containing("rust_leak_site")).collect();
    assert_eq!(site.len(), 1, "one stack through rust_leak_site; {}", dump(&stacks));
    assert_eq!(
        (site[0].live_bytes(), site[0].live_count()),
        (RUST_LEAK_COUNT * RUST_LEAK_SIZE, RUST_LEAK_COUNT),
        "rust_leak_site; {}",
        dump(&stacks)
    );
    assert_eq!(site[0]["comm"].as_str(), Some(comm), "{}", dump(&stacks));
    assert!(site[0].has_function_containing("main"), "the stack reaches main; {}", dump(&stacks));
    stacks
}
