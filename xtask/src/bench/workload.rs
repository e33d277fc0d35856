//! The C workload (`xtask/bench/workload.c`): compiling it, running it, reading its result line, and the
//! ingest measurement, which runs its leaking mode under a full-mode daemon.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::daemon::{Counters, Daemon};
use crate::setup::check;

/// Prefix of every line of the workload's that the bench reads.
const PREFIX: &str = "leakprobe-bench: ";

pub struct Workload {
    binary: PathBuf,
    dir: PathBuf,
}

impl Workload {
    /// Compiles the workload with `gcc -O2` into `dir`.
    pub fn compile(root: &Path, dir: &Path) -> Result<Self> {
        let source = root.join("xtask").join("bench").join("workload.c");
        let binary = dir.join("workload");
        check(Command::new("gcc").args(["-O2", "-pthread", "-o"]).arg(&binary).arg(&source))?;
        Ok(Self { binary, dir: dir.to_path_buf() })
    }

    /// The command line: `workload MODE COUNT THREADS SEED`.
    pub fn args(&self, mode: &str, count: u64, threads: u32, seed: u64) -> Vec<String> {
        vec![
            self.binary.display().to_string(),
            mode.to_owned(),
            count.to_string(),
            threads.to_string(),
            seed.to_string(),
        ]
    }
}

/// The workload on its own.
pub fn command(args: &[String]) -> Command {
    let mut cmd = Command::new(&args[0]);
    cmd.args(&args[1..]);
    cmd
}

/// Runs `cmd` to its end (killing it after `timeout`) and returns its standard output; fails with its
/// standard error if it fails.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let pid = out.id();
    let (done, waited) = std::sync::mpsc::channel();
    let watchdog = thread::spawn(move || {
        if waited.recv_timeout(timeout).is_err() {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    });
    let output = out.wait_with_output();
    let _ = done.send(());
    let _ = watchdog.join();
    let output = output.with_context(|| format!("running {cmd:?}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() || !stdout.contains(PREFIX) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        bail!("{cmd:?} failed ({}): {}", output.status, tail.into_iter().rev().collect::<Vec<_>>().join(" | "));
    }
    Ok(stdout)
}

/// The value of `key=` on the workload's result line.
pub fn field(output: &str, key: &str) -> Result<f64> {
    let line = output.lines().find_map(|l| l.strip_prefix(PREFIX)).context("no result line")?;
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {key}= in {line:?}"))
}

/// One run of the ingest measurement.
pub struct Ingest {
    /// Events the daemon processed during the run (the workload's and any other process's).
    pub events: u64,
    /// From the workload's start to the poll at which the daemon had processed them all.
    pub seconds: f64,
    /// The highest rate seen between two polls.
    pub peak: f64,
    /// The workload's own allocation rate, under the probes.
    pub produced: f64,
    /// Seconds between the workload's exit and the daemon's having processed everything.
    pub lag: f64,
    /// Events the kernel dropped because the ring buffer was full.
    pub drops: u64,
    /// Allocations not tracked because the live map was full.
    pub live_map_full: u64,
}

impl Ingest {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }
}

/// Time between two reads of the daemon's counters.
const POLL: Duration = Duration::from_millis(50);

/// Runs the leaking workload (2 threads) under `daemon` and follows its counters until it has processed
/// every event.
pub fn ingest(work: &Workload, daemon: &Daemon, leaks: u64, seed: u64) -> Result<Ingest> {
    let first = Counters::read(daemon)?;
    let start = Instant::now();
    let out_path = work.dir.join("ingest.out");
    let mut child = command(&work.args("leak", leaks, 2, seed))
        .stdout(fs::File::create(&out_path)?)
        .stdin(Stdio::null())
        .spawn()
        .context("starting the ingest workload")?;
    let (mut last, mut last_at) = (first.clone(), start);
    let (mut peak, mut exited, mut target) = (0.0_f64, None, None);
    let drained = loop {
        thread::sleep(POLL);
        // The workload's exit first, then the counters: read after its exit, they include all its events.
        if exited.is_none() && child.try_wait()?.is_some() {
            exited = Some(Instant::now());
        }
        let now = Counters::read(daemon)?;
        let at = Instant::now();
        peak = peak.max((now.events - last.events) as f64 / (at - last_at).as_secs_f64());
        if exited.is_some() && target.is_none() {
            target = Some(now.emitted - first.emitted);
        }
        // Drained: the daemon has processed as many events as the kernel emitted until the workload's exit.
        if target.is_some_and(|t| now.events - first.events >= t) {
            last = now;
            break at;
        }
        if at - start > Duration::from_mins(5) {
            let _ = child.kill();
            bail!("the ingest workload did not finish, or the daemon did not catch up, in 5 minutes");
        }
        (last, last_at) = (now, at);
    };
    let status = child.wait()?;
    if !status.success() {
        bail!("the ingest workload failed: {status}");
    }
    let produced = field(&fs::read_to_string(&out_path)?, "allocs_per_s")?;
    settle(daemon)?;
    let exited = exited.context("not exited")?;
    Ok(Ingest {
        events: last.events - first.events,
        seconds: (drained - start).as_secs_f64(),
        peak,
        produced,
        lag: drained.saturating_duration_since(exited).as_secs_f64(),
        drops: last.drops - first.drops,
        live_map_full: last.live_map_full - first.live_map_full,
    })
}

/// Waits until the daemon has removed the exited workload's live entries from the kernel's map (one
/// syscall each, on its purger thread), so that the next run starts with the map as empty as before.
fn settle(daemon: &Daemon) -> Result<()> {
    let purged = || -> Result<u64> {
        daemon.status()?["daemon_counters"]["kernel_entries_purged"].as_u64().context("no kernel_entries_purged")
    };
    let mut last = purged()?;
    for _ in 0..600 {
        thread::sleep(Duration::from_millis(250));
        let now = purged()?;
        if now == last {
            return Ok(());
        }
        last = now;
    }
    Ok(())
}
