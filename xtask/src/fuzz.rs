//! `cargo xtask fuzz`: runs every fuzz target of `fuzz/` (cargo-fuzz, libFuzzer) for a bounded time and prints
//! executions per second and total runs per target. A crash fails the task and names the input to keep under
//! `fuzz/regressions/TARGET/`, where `cargo test` replays it from then on.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::setup::{EBPF_TOOLCHAIN, ToolEnv, check, step};

/// The targets, as named in `fuzz/Cargo.toml` (and `leakprobe::fuzz::TARGETS`).
pub const TARGETS: [&str; 4] = ["ring_records", "config_file", "oom_report_file", "api_request"];

#[derive(clap::Args, Clone, Debug)]
pub struct FuzzArgs {
    /// Seconds to fuzz each target.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Fuzz only this target (default: every target).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub target: Option<String>,
}

/// One target's run, from libFuzzer's final statistics.
struct Outcome {
    target: &'static str,
    runs: u64,
    execs_per_sec: u64,
    corpus: usize,
}

/// `cargo +nightly fuzz` in the workspace root (cargo-fuzz needs nightly for the sanitizer flags).
fn cargo_fuzz(root: &Path, env: &ToolEnv) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root).env("PATH", &env.path).arg(format!("+{EBPF_TOOLCHAIN}")).arg("fuzz");
    cmd
}

pub fn fuzz(root: &Path, env: &ToolEnv, args: &FuzzArgs) -> Result<()> {
    crate::setup::ensure_cargo_fuzz()?;
    let targets: Vec<&'static str> = match &args.target {
        Some(name) => TARGETS.iter().copied().filter(|t| t == name).collect(),
        None => TARGETS.to_vec(),
    };
    step("building the fuzz targets (nightly, AddressSanitizer, debug assertions)");
    check(cargo_fuzz(root, env).args(["build", "--release", "--debug-assertions"]))?;
    let mut outcomes = Vec::new();
    for target in targets {
        outcomes.push(run_target(root, env, target, args.seconds)?);
    }
    println!("\n{:<18} {:>12} {:>12} {:>8}", "target", "runs", "execs/s", "corpus");
    for o in &outcomes {
        println!("{:<18} {:>12} {:>12} {:>8}", o.target, o.runs, o.execs_per_sec, o.corpus);
    }
    Ok(())
}

fn run_target(root: &Path, env: &ToolEnv, target: &'static str, seconds: u64) -> Result<Outcome> {
    let fuzz = root.join("fuzz");
    // The growing corpus is scratch (ignored by git); the seeds are kept and only read.
    let corpus = fuzz.join("corpus").join(target);
    fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let seeds = fuzz.join("seeds").join(target);
    let artifacts = fuzz.join("artifacts").join(target);
    step(&format!("fuzzing {target} for {seconds} s"));
    let started = Instant::now();
    let output = cargo_fuzz(root, env)
        .args(["run", "--release", "--debug-assertions", target])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running cargo fuzz run {target}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        // From the panic or sanitizer report on: libFuzzer's statistics and cargo-fuzz's advice follow it.
        let lines: Vec<&str> = log.lines().collect();
        let start = lines
            .iter()
            .position(|l| l.contains("panicked at") || l.contains("ERROR: "))
            .unwrap_or(lines.len().saturating_sub(40));
        let tail: Vec<&str> = lines[start..].iter().take(60).copied().collect();
        bail!(
            "fuzz target {target} failed after {:.0?}:\n{}\nthe failing input is under {}; once fixed, copy it to \
             fuzz/regressions/{target}/ so that `cargo test` replays it",
            started.elapsed(),
            tail.join("\n"),
            artifacts.display()
        );
    }
    let stat = |name: &str| -> u64 {
        log.lines()
            .find_map(|line| line.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(Outcome {
        target,
        runs: stat("number_of_executed_units"),
        execs_per_sec: stat("average_exec_per_sec"),
        corpus: fs::read_dir(&corpus).map_or(0, Iterator::count),
    })
}
