//! calloc and the realloc family: requested sizes, moved bytes, frees through realloc.

use leakprobe_tests::expect::{
    CALLOC_COUNT, CALLOC_NMEMB, CALLOC_SIZE, CHAIN_SIZES, CHAINS, FENCE_SIZE, REALLOC_ZERO_COUNT, REALLOC_ZERO_SIZE,
    REALLOCARRAY_COUNT, REALLOCARRAY_NMEMB, REALLOCARRAY_SIZE,
};
use leakprobe_tests::stacks::{assert_live, assert_live_total, assert_nothing_live, only_by_fn0};
use leakprobe_tests::{StackExt, dump, observe_leaker};

const CHAIN_FINAL: u64 = CHAIN_SIZES[CHAIN_SIZES.len() - 1];

#[test]
fn calloc_reports_nmemb_times_size() {
    let (_daemon, _fixture, stacks) = observe_leaker("calloc");
    let stack = assert_live(&stacks, "leak_calloc", CALLOC_COUNT * CALLOC_NMEMB * CALLOC_SIZE, CALLOC_COUNT);
    assert_eq!(stack.function_at(1), Some("via_calloc"), "{}", dump(&stacks));
    assert_live_total(&stacks, CALLOC_COUNT * CALLOC_NMEMB * CALLOC_SIZE + FENCE_SIZE);
}

#[test]
fn realloc_chain_moves_bytes_to_the_final_size() {
    let (_daemon, _fixture, stacks) = observe_leaker("realloc");
    let chain = assert_live(&stacks, "leak_realloc_chain", CHAINS * CHAIN_FINAL, CHAINS);
    assert_eq!(chain.function_at(1), Some("via_realloc_chain"), "{}", dump(&stacks));
    // Every realloc call is an allocation of the realloc call site.
    let steps = u64::try_from(CHAIN_SIZES.len()).expect("fits u64");
    assert_eq!(
        (chain.total_count(), chain.total_bytes()),
        (CHAINS * steps, CHAINS * CHAIN_SIZES.iter().sum::<u64>()),
        "realloc chain history; {}",
        dump(&stacks)
    );
    // No intermediate size stays live anywhere (glibc's realloc(NULL, n) calls malloc internally, and reallocarray
    // calls realloc: nested probes must not count twice): only the final blocks, reallocarray and the fence.
    assert_live_total(
        &stacks,
        CHAINS * CHAIN_FINAL + REALLOCARRAY_COUNT * REALLOCARRAY_NMEMB * REALLOCARRAY_SIZE + FENCE_SIZE,
    );
    for stack in &stacks {
        if let Some(per_block) = stack.live_bytes().checked_div(stack.live_count()) {
            assert!(
                !CHAIN_SIZES[..CHAIN_SIZES.len() - 1].contains(&per_block),
                "an intermediate realloc size ({per_block} B) is still live; {}",
                dump(&stacks)
            );
        }
    }
}

#[test]
fn realloc_to_zero_frees_the_block() {
    let (_daemon, _fixture, stacks) = observe_leaker("realloc");
    let alloc = only_by_fn0(&stacks, "alloc_for_zero");
    assert_eq!((alloc.live_bytes(), alloc.live_count()), (0, 0), "realloc(p, 0) freed every block; {}", dump(&stacks));
    assert_eq!(
        (alloc.total_count(), alloc.total_bytes()),
        (REALLOC_ZERO_COUNT, REALLOC_ZERO_COUNT * REALLOC_ZERO_SIZE),
        "the blocks were seen; {}",
        dump(&stacks)
    );
    assert_eq!(alloc.function_at(1), Some("realloc_zero"), "{}", dump(&stacks));
    // realloc(p, 0) returns NULL: nothing is recorded at that call site.
    assert_nothing_live(&stacks, "realloc_zero");
}

#[test]
fn reallocarray_reports_nmemb_times_size() {
    let (_daemon, _fixture, stacks) = observe_leaker("realloc");
    let bytes = REALLOCARRAY_COUNT * REALLOCARRAY_NMEMB * REALLOCARRAY_SIZE;
    let stack = assert_live(&stacks, "leak_reallocarray", bytes, REALLOCARRAY_COUNT);
    assert_eq!(stack.function_at(1), Some("via_reallocarray"), "{}", dump(&stacks));
    assert_eq!((stack.total_count(), stack.total_bytes()), (REALLOCARRAY_COUNT, bytes), "{}", dump(&stacks));
}
