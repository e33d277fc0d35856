//! The ingest benchmark's event generator through the daemon's real pipeline (`leakprobe bench-ingest`): the
//! records it writes into the ring buffer reach the table exactly, with nothing dropped at a low rate.

use std::{process::Command, time::Duration};

use leakprobe_tests::{daemon_bin, describe, run_with_timeout};
use serde_json::Value;

/// One step of `leakprobe bench-ingest` at `rate` records per second for half a second: its JSON line.
fn step(shape: &str, rate: u64) -> Value {
    let out = run_with_timeout(
        Command::new(daemon_bin()).args([
            "bench-ingest",
            "--shape",
            shape,
            "--rate",
            &rate.to_string(),
            "--seconds",
            "0.5",
        ]),
        Duration::from_mins(2),
    );
    assert!(out.status.success(), "bench-ingest failed: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| serde_json::from_str::<Value>(line).ok()?.get("step").cloned())
        .unwrap_or_else(|| panic!("no step line: {}", describe(&out)))
}

fn field(step: &Value, name: &str) -> u64 {
    step[name].as_u64().unwrap_or_else(|| panic!("no `{name}` in {step}"))
}

/// Every record offered was submitted, counted by the kernel, decoded and applied, with no drop anywhere.
fn assert_no_loss(step: &Value, records: u64) {
    for (name, expected) in [
        ("offered", records),
        ("submitted", records),
        ("applied", records),
        ("drops", 0),
        ("decode_errors", 0),
        ("dropped_table_full", 0),
    ] {
        assert_eq!(field(step, name), expected, "{name} in {step}");
    }
    assert_eq!(step["zero_drops"], true, "{step}");
}

#[test]
fn generated_leaks_are_live_in_the_table_exactly() {
    // 20,000 records a second for half a second: 10,000 allocations, never freed.
    let step = step("leaks", 20_000);
    let n = 10_000;
    assert_no_loss(&step, n);
    assert_eq!((field(&step, "allocs"), field(&step, "frees")), (n, 0), "{step}");
    // The generator's sizes: 16 + (seq * 97) % 4080 bytes for allocation seq.
    let bytes: u64 = (0..n).map(|seq| 16 + (seq * 97) % 4080).sum();
    // The records name the benchmark's own process, which the table names from /proc.
    let table = &step["table"];
    assert_eq!(table["pid"], step["pid"], "{step}");
    assert_eq!(table["comm"], "leakprobe", "{step}");
    assert_eq!(field(table, "live_allocations"), n, "{step}");
    assert_eq!(field(table, "live_bytes"), bytes, "{step}");
    // Allocation seq has stack seq % 64.
    assert_eq!(field(table, "stacks"), 64, "{step}");
}

#[test]
fn generated_pairs_leave_nothing_live() {
    // 10,000 records: 5,000 allocations, each followed by its free.
    let step = step("pairs", 20_000);
    assert_no_loss(&step, 10_000);
    assert_eq!((field(&step, "allocs"), field(&step, "frees")), (5_000, 5_000), "{step}");
    let table = &step["table"];
    assert_eq!((field(table, "live_allocations"), field(table, "live_bytes")), (0, 0), "{step}");
}
