//! The `basic` leaker: plain malloc leaks, freed memory, ordering, the human CLI output, and purge on exit.

use leakprobe_tests::expect::{
    ALPHA_COUNT, ALPHA_SIZE, BETA_COUNT, BETA_SIZE, CACHE_ROUNDS, CACHE_SIZE, CHURN_COUNT, CHURN_SIZE, FENCE_SIZE,
};
use leakprobe_tests::stacks::{assert_live, assert_live_total, assert_nothing_live, by_fn0, only_by_fn0};
use leakprobe_tests::{LEAKER_SRC, StackExt, describe, dump, now_unix_ms, observe_leaker, poll_until};

/// The 1-based number of the only line of leaker.c containing `needle`.
fn line_of(needle: &str) -> u64 {
    let src = std::fs::read_to_string(LEAKER_SRC).expect("read leaker.c");
    let found: Vec<usize> = src.lines().enumerate().filter(|(_, l)| l.contains(needle)).map(|(i, _)| i + 1).collect();
    assert_eq!(found.len(), 1, "leaker.c should have exactly one line containing {needle:?}: {found:?}");
    u64::try_from(found[0]).expect("line fits u64")
}

#[test]
fn basic_leaks_are_exact_with_callers_and_source_lines() {
    let started_ms = now_unix_ms();
    let (_daemon, fixture, stacks) = observe_leaker("basic");
    let pid = fixture.pid();

    let alpha = assert_live(&stacks, "leak_alpha", ALPHA_COUNT * ALPHA_SIZE, ALPHA_COUNT);
    let beta = assert_live(&stacks, "leak_beta", BETA_COUNT * BETA_SIZE, BETA_COUNT);
    assert_eq!(alpha.function_at(1), Some("via_alpha"), "caller of leak_alpha; {}", dump(&stacks));
    assert_eq!(beta.function_at(1), Some("via_beta"), "caller of leak_beta; {}", dump(&stacks));
    assert!(
        alpha.has_function_containing("mode_basic") && alpha.has_function_containing("main"),
        "leak_alpha's stack reaches main; {}",
        dump(&stacks)
    );
    // Nothing ever freed: totals equal live values.
    assert_eq!(
        (alpha.total_bytes(), alpha.total_count()),
        (ALPHA_COUNT * ALPHA_SIZE, ALPHA_COUNT),
        "{}",
        dump(&stacks)
    );

    for stack in [alpha, beta] {
        assert_eq!(stack["pid"].as_u64(), Some(u64::from(pid)), "{stack:#}");
        assert_eq!(stack["comm"].as_str(), Some("leaker"), "{stack:#}");
        assert_eq!(stack["truncated"].as_bool(), Some(false), "{stack:#}");
        assert!(stack["stack_id"].as_str().is_some_and(|id| !id.is_empty()), "stack_id: {stack:#}");
        let (first, last) = (stack.num("first_alloc_unix_ms"), stack.num("last_alloc_unix_ms"));
        assert!(first <= last, "first_alloc after last_alloc: {stack:#}");
        assert!(
            first + 2_000 >= started_ms && last <= now_unix_ms() + 2_000,
            "alloc times outside the test ({started_ms}..now): {stack:#}"
        );
    }
    assert_ne!(alpha["stack_id"], beta["stack_id"], "distinct stacks share a stack_id");

    let frame = &alpha.frames()[0];
    assert!(frame["addr"].as_str().is_some_and(|a| a.starts_with("0x")), "frame addr: {frame:#}");
    assert!(frame["module"].as_str().is_some_and(|m| m.ends_with("leaker")), "frame module: {frame:#}");
    assert!(frame["file"].as_str().is_some_and(|f| f.ends_with("leaker.c")), "frame file: {frame:#}");
    // The line of the malloc call itself (the return address belongs to the call).
    let want = line_of("malloc(ALPHA_SIZE)");
    assert_eq!(
        frame["line"].as_u64(),
        Some(want),
        "leak_alpha's frame is not at the malloc call (leaker.c:{want}): {frame:#}"
    );

    // Everything else was freed: only the leaks and the fence are live in this process.
    assert_live_total(&stacks, ALPHA_COUNT * ALPHA_SIZE + BETA_COUNT * BETA_SIZE + FENCE_SIZE);
}

#[test]
fn freed_memory_is_not_reported_as_leaked() {
    let (_daemon, _fixture, stacks) = observe_leaker("basic");

    let churn = only_by_fn0(&stacks, "churn");
    assert_eq!((churn.live_bytes(), churn.live_count()), (0, 0), "churn freed everything; {}", dump(&stacks));
    assert_eq!(
        (churn.total_count(), churn.total_bytes()),
        (CHURN_COUNT, CHURN_COUNT * CHURN_SIZE),
        "churn history; {}",
        dump(&stacks)
    );
    assert_eq!(churn.function_at(1), Some("via_churn"), "{}", dump(&stacks));

    let cache = only_by_fn0(&stacks, "bounded_cache");
    assert_eq!((cache.live_bytes(), cache.live_count()), (0, 0), "bounded_cache freed everything; {}", dump(&stacks));
    assert_eq!(
        (cache.total_count(), cache.total_bytes()),
        (CACHE_ROUNDS, CACHE_ROUNDS * CACHE_SIZE),
        "cache history; {}",
        dump(&stacks)
    );
}

#[test]
fn top_orders_by_live_bytes_and_honours_limit() {
    let (daemon, fixture, stacks) = observe_leaker("basic");
    let live: Vec<u64> = stacks.iter().map(StackExt::live_bytes).collect();
    assert!(
        live.windows(2).all(|w| w[0] >= w[1]),
        "top is not ordered by live_bytes desc: {live:?}; {}",
        dump(&stacks)
    );

    let pid = fixture.pid().to_string();
    let report = daemon.cli_json(&["top", "--socket", daemon.socket_str(), "--pid", &pid, "--limit", "2", "--json"]);
    let top2 = report["stacks"].as_array().expect("stacks array");
    let names: Vec<Option<&str>> = top2.iter().map(|s| s.function_at(0)).collect();
    assert_eq!(names, [Some("leak_beta"), Some("leak_alpha")], "top --limit 2; {}", dump(top2));
}

#[test]
fn cli_human_top_names_the_leak_and_its_size() {
    let (daemon, fixture, _stacks) = observe_leaker("basic");
    let pid = fixture.pid().to_string();
    let out = daemon.run_cli(&["top", "--socket", daemon.socket_str(), "--pid", &pid]);
    assert!(out.status.success(), "human top failed\n{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("leak_alpha"), "human top does not name leak_alpha:\n{text}");
    assert!(text.contains("KiB"), "human top does not show sizes in KiB (leak_alpha has 10000 B):\n{text}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).is_err(),
        "without --json the output should not be JSON:\n{text}"
    );
}

#[test]
fn process_exit_purges_its_stacks() {
    let (daemon, mut fixture, stacks) = observe_leaker("basic");
    let pid = fixture.pid();
    assert!(!by_fn0(&stacks, "leak_alpha").is_empty(), "leak_alpha seen before exit; {}", dump(&stacks));
    assert_nothing_live(&stacks, "churn");
    fixture.close_stdin_and_wait();
    poll_until(std::time::Duration::from_secs(30), &format!("the stacks of exited pid {pid} to be purged"), || {
        daemon.top(pid).is_empty().then_some(())
    });
}
