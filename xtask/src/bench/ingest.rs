//! The daemon's ingest end to end: `leakprobe bench-ingest` runs the eBPF object's event generator (never
//! attached; `BPF_PROG_TEST_RUN`) into the real ring buffer on one CPU, and the daemon's own ingest and state
//! tasks on another, and searches for the highest rate (records per second) at which the kernel drops nothing.
//! Unlike the workload-driven ingest phase, no uprobe trap limits the rate offered.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::report::median;

/// The event shapes searched.
pub const SHAPES: [&str; 2] = ["leaks", "pairs"];

/// One search's outcome (the `search` line of `leakprobe bench-ingest`).
#[derive(Clone, Debug)]
pub struct Search {
    /// Highest rate with zero drops, records per second (0: none).
    pub rate: f64,
    /// The consumer's CPU per event at that rate, in µs, and its share of one core.
    pub cpu_us_per_event: f64,
    pub cpu_percent: f64,
    /// Lowest rate that dropped (0: none found).
    pub lowest_dropping: f64,
    /// The generator could not reach a rate the consumer would have taken: the limit is above `rate`.
    pub generator_limited: bool,
    pub steps: u64,
}

/// The searches of one shape.
pub struct Shape {
    pub shape: &'static str,
    pub runs: Vec<Search>,
}

impl Shape {
    pub fn median(&self, value: impl Fn(&Search) -> f64) -> f64 {
        median(&self.runs.iter().map(value).collect::<Vec<_>>())
    }
}

/// One search of `shape` with steps of `seconds`.
pub fn search(leakprobe: &Path, shape: &str, seconds: f64) -> Result<Search> {
    let out = Command::new(leakprobe)
        .args(["bench-ingest", "--shape", shape, "--seconds", &seconds.to_string()])
        .output()
        .context("running leakprobe bench-ingest")?;
    if !out.status.success() {
        bail!("leakprobe bench-ingest failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find_map(|value| value.get("search").cloned())
        .context("leakprobe bench-ingest printed no search line")?;
    let number = |name: &str| line[name].as_f64().with_context(|| format!("no {name} in {line}"));
    Ok(Search {
        rate: number("max_zero_drop_rate")?,
        cpu_us_per_event: number("cpu_us_per_event")?,
        cpu_percent: number("consumer_cpu_percent")?,
        lowest_dropping: number("lowest_dropping_rate")?,
        generator_limited: line["generator_limited"].as_bool().unwrap_or(false),
        steps: line["steps"].as_u64().unwrap_or(0),
    })
}
