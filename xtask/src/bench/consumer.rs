//! The daemon's consumer path measured in-process: `leakprobe/examples/ingest_bench.rs` decodes ring-buffer
//! records and applies them to the table on one thread, with no kernel and no other process in the way, and
//! prints events per CPU-second for each event shape. This is the daemon's capacity on one core; the ingest
//! phase measures the same path end to end, where the workload under the probes is usually the limit.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result};

use super::report::median;
use crate::setup::{ToolEnv, check};

/// Records per shape and run.
const EVENTS: u64 = 2_000_000;

/// Events per CPU-second of one shape, over the runs.
pub struct Consumer {
    pub shape: String,
    pub rates: Vec<f64>,
    /// One sample of the table afterwards, in ms (the state task takes one every interval, applying nothing
    /// meanwhile).
    pub tick_ms: Vec<f64>,
}

impl Consumer {
    pub fn median(&self) -> f64 {
        median(&self.rates)
    }
}

/// Builds the example (release) and runs it `runs` times.
pub fn measure(root: &Path, env: &ToolEnv, runs: usize) -> Result<Vec<Consumer>> {
    check(Command::new("cargo").current_dir(root).env("PATH", &env.path).args([
        "build",
        "--release",
        "--package",
        "leakprobe",
        "--example",
        "ingest_bench",
    ]))?;
    let binary = root.join("target").join("release").join("examples").join("ingest_bench");
    let mut shapes: Vec<Consumer> = Vec::new();
    for _ in 0..runs {
        let out = Command::new(&binary).arg(EVENTS.to_string()).output().context("running ingest_bench")?;
        anyhow::ensure!(out.status.success(), "ingest_bench failed: {}", String::from_utf8_lossy(&out.stderr));
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let value = |key: &str| line.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='));
            let (Some(shape), Some(rate)) = (value("shape"), value("events_per_cpu_second")) else { continue };
            let rate: f64 = rate.parse().with_context(|| format!("bad rate in {line:?}"))?;
            let tick: f64 = value("tick_ms").unwrap_or("0").parse().with_context(|| format!("bad tick in {line:?}"))?;
            match shapes.iter_mut().find(|s| s.shape == shape) {
                Some(s) => {
                    s.rates.push(rate);
                    s.tick_ms.push(tick);
                }
                None => shapes.push(Consumer { shape: shape.to_owned(), rates: vec![rate], tick_ms: vec![tick] }),
            }
        }
    }
    Ok(shapes)
}
