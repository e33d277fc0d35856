//! The aligned allocators: `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc`.

use leakprobe_tests::expect::{
    ALIGNED_ALLOC_COUNT, ALIGNED_ALLOC_SIZE, FENCE_SIZE, MEMALIGN_COUNT, MEMALIGN_SIZE, POSIX_MEMALIGN_COUNT,
    POSIX_MEMALIGN_SIZE, PVALLOC_COUNT, PVALLOC_SIZE, VALLOC_COUNT, VALLOC_SIZE,
};
use leakprobe_tests::stacks::{assert_live, assert_live_total};
use leakprobe_tests::{StackExt, dump, observe_leaker};

/// Observes the `memalign` leaker and checks the leak of `function` (called from `via_<name>`) exactly.
fn check(function: &str, count: u64, size: u64) {
    let (_daemon, _fixture, stacks) = observe_leaker("memalign");
    let stack = assert_live(&stacks, function, count * size, count);
    let caller = function.replacen("leak_", "via_", 1);
    assert_eq!(stack.function_at(1), Some(caller.as_str()), "caller of {function}; {}", dump(&stacks));
    assert_eq!(
        (stack.total_count(), stack.total_bytes()),
        (count, count * size),
        "{function} history; {}",
        dump(&stacks)
    );
}

#[test]
fn posix_memalign_leak_is_exact() {
    check("leak_posix_memalign", POSIX_MEMALIGN_COUNT, POSIX_MEMALIGN_SIZE);
}

#[test]
fn aligned_alloc_leak_is_exact() {
    check("leak_aligned_alloc", ALIGNED_ALLOC_COUNT, ALIGNED_ALLOC_SIZE);
}

#[test]
fn memalign_leak_is_exact() {
    check("leak_memalign", MEMALIGN_COUNT, MEMALIGN_SIZE);
}

#[test]
fn valloc_leak_is_exact() {
    check("leak_valloc", VALLOC_COUNT, VALLOC_SIZE);
}

#[test]
fn pvalloc_leak_reports_the_requested_size() {
    check("leak_pvalloc", PVALLOC_COUNT, PVALLOC_SIZE);
}

#[test]
fn aligned_allocators_leave_nothing_else_live() {
    let (_daemon, _fixture, stacks) = observe_leaker("memalign");
    assert_live_total(
        &stacks,
        POSIX_MEMALIGN_COUNT * POSIX_MEMALIGN_SIZE
            + ALIGNED_ALLOC_COUNT * ALIGNED_ALLOC_SIZE
            + MEMALIGN_COUNT * MEMALIGN_SIZE
            + VALLOC_COUNT * VALLOC_SIZE
            + PVALLOC_COUNT * PVALLOC_SIZE
            + FENCE_SIZE,
    );
}
