//! Failed allocations, threads, and a process whose blocks predate the daemon.

use leakprobe_tests::expect::{
    CONTROL_COUNT, CONTROL_SIZE, EARLY_COUNT, FENCE_SIZE, HANDOFF_COUNT, HANDOFF_SIZE, KEPT_SIZE, LATE_COUNT,
    LATE_SIZE, THREAD_LEAK_COUNT, THREAD_LEAK_SIZE,
};
use leakprobe_tests::stacks::{assert_live, assert_live_total, by_fn0, only_by_fn0};
use leakprobe_tests::{Daemon, Fixture, StackExt, dump, now_unix_ms, observe_leaker, wait_for_fence};

#[test]
fn failed_allocations_are_never_recorded() {
    let (_daemon, _fixture, stacks) = observe_leaker("failed");
    // malloc(SIZE_MAX / 2) returned NULL.
    for stack in by_fn0(&stacks, "fail_malloc") {
        assert_eq!(
            (stack.live_count(), stack.total_count()),
            (0, 0),
            "a failed malloc (NULL) was recorded; {}",
            dump(&stacks)
        );
    }
    let control = assert_live(&stacks, "leak_control", CONTROL_COUNT * CONTROL_SIZE, CONTROL_COUNT);
    assert_eq!(control.function_at(1), Some("via_control"), "{}", dump(&stacks));

    // realloc(p, SIZE_MAX / 2) returned NULL: p is still allocated, and the failed call recorded nothing.
    let kept = assert_live(&stacks, "keep_after_failed_realloc", KEPT_SIZE, 1);
    assert_eq!(kept.function_at(1), Some("fail_realloc"), "{}", dump(&stacks));
    for stack in by_fn0(&stacks, "fail_realloc") {
        assert_eq!(
            (stack.live_count(), stack.total_count()),
            (0, 0),
            "a failed realloc was recorded; {}",
            dump(&stacks)
        );
    }
    assert_live_total(&stacks, CONTROL_COUNT * CONTROL_SIZE + KEPT_SIZE + FENCE_SIZE);
}

#[test]
fn process_started_before_the_daemon_is_tracked_from_attach_on() {
    let mut fixture = Fixture::leaker("late");
    fixture.wait_line("started");
    // leak_early's blocks exist before any probe is attached.
    let daemon = Daemon::start();
    let pid = fixture.pid();
    let go_ms = now_unix_ms();
    fixture.send_line("go");
    fixture.wait_line("ready");
    let stacks = wait_for_fence(&daemon, pid);

    let late = assert_live(&stacks, "leak_late", LATE_COUNT * LATE_SIZE, LATE_COUNT);
    assert_eq!(late.function_at(1), Some("via_late"), "{}", dump(&stacks));
    assert!(
        late.num("first_alloc_unix_ms") + 2_000 >= go_ms,
        "leak_late's first_alloc predates `go` ({go_ms}): {late:#}"
    );
    assert!(
        by_fn0(&stacks, "leak_early").is_empty(),
        "leak_early ran before the daemon and must be absent; {}",
        dump(&stacks)
    );
    // The frees of the early (unknown) blocks created nothing and subtracted nothing.
    assert_live_total(&stacks, LATE_COUNT * LATE_SIZE + FENCE_SIZE);
    for stack in &stacks {
        assert!(stack.total_count() >= stack.live_count(), "live_count above total_count; {}", dump(&stacks));
        assert!(stack.total_bytes() >= stack.live_bytes(), "live_bytes above total_bytes; {}", dump(&stacks));
    }

    let frees_unknown = daemon.counter("kernel_counters", "frees_unknown");
    assert!(
        frees_unknown >= EARLY_COUNT,
        "frees_unknown is {frees_unknown}, expected at least the {EARLY_COUNT} early blocks"
    );
}

#[test]
fn thread_leaks_survive_the_thread_and_cross_thread_frees_count() {
    let (_daemon, fixture, stacks) = observe_leaker("threads");
    // The allocating thread has exited: its process lives on, and so must its leaks.
    let leak = assert_live(&stacks, "leak_in_thread", THREAD_LEAK_COUNT * THREAD_LEAK_SIZE, THREAD_LEAK_COUNT);
    assert_eq!(leak.function_at(1), Some("thread_main"), "{}", dump(&stacks));
    assert_eq!(leak["pid"].as_u64(), Some(u64::from(fixture.pid())), "reported under the process (tgid) pid: {leak:#}");
    // Allocated in the thread, freed by the main thread.
    let handoff = only_by_fn0(&stacks, "alloc_for_main");
    assert_eq!(
        (handoff.live_bytes(), handoff.live_count()),
        (0, 0),
        "blocks freed by another thread; {}",
        dump(&stacks)
    );
    assert_eq!(
        (handoff.total_count(), handoff.total_bytes()),
        (HANDOFF_COUNT, HANDOFF_COUNT * HANDOFF_SIZE),
        "{}",
        dump(&stacks)
    );
}
