//! A Rust program leaking through the global allocator (libc malloc underneath).

use leakprobe_tests::expect::{FENCE_SIZE, RUST_LEAK_COUNT, RUST_LEAK_SIZE};
use leakprobe_tests::{Daemon, Fixture, StackExt, dump, wait_for_stack};

#[test]
fn rust_box_leaks_are_attributed_to_the_leak_site() {
    let daemon = Daemon::start();
    let mut fixture = Fixture::spawn(env!("CARGO_BIN_EXE_rust-leaker"), &[]);
    fixture.wait_line("ready");
    let pid = fixture.pid();
    let stacks = wait_for_stack(&daemon, pid, "a live stack through rust_fence", |s| {
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
    assert_eq!(site[0]["comm"].as_str(), Some("rust-leaker"), "{}", dump(&stacks));
    assert!(site[0].has_function_containing("main"), "the stack reaches main; {}", dump(&stacks));
}
