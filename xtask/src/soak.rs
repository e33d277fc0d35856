//! `cargo xtask soak --minutes N`: a release daemon against leakers, churners and thousands of short-lived
//! processes for N minutes. Samples the daemon's RSS and open file descriptors and fails if either trends
//! upward, or if processes that exited stay listed.
//!
//! The trend test: samples of the first third are warm-up (caches, the table and the time series fill up to
//! their steady size); the median of the last third must not exceed the median of the middle third by more than
//! the tolerance (`--rss-tolerance`, a fraction, with a floor of 4 MiB for RSS; 4 descriptors for fds). Medians
//! ignore the sawtooth of the leakers and one-off spikes; a leak of the daemon shows as a steady climb, which
//! moves the median of the last third above the middle one.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use clap::Args;

use crate::{
    bench::daemon::Daemon,
    setup::{ToolEnv, check},
    tasks,
};

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// How long the workload runs.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Seconds between two samples of the daemon's RSS and descriptors.
    #[arg(long, default_value_t = 5)]
    sample_seconds: u64,
    /// Short-lived processes started per second.
    #[arg(long, default_value_t = 20)]
    processes_per_second: u32,
    /// Allowed rise of the median RSS from the middle third to the last third, as a fraction.
    #[arg(long, default_value_t = 0.05)]
    rss_tolerance: f64,
    /// Tracking mode of the daemon (`full` stresses it more).
    #[arg(long, default_value = "full")]
    mode: String,
    /// The daemon's `--max-allocations`. The soak's limits are below the daemon's defaults so that its tables
    /// reach them during the warm-up third even when other processes on the host allocate (the daemon tracks
    /// every process): from then on a rise of RSS is the daemon's own, not its tables filling up. Pass the
    /// daemon's defaults (2097152, 65536, 20000) to soak at production limits on an otherwise quiet host.
    #[arg(long, default_value_t = 262_144)]
    max_allocations: u64,
    /// The daemon's `--max-stacks` (see `--max-allocations`).
    #[arg(long, default_value_t = 8192)]
    max_stacks: u64,
    /// The daemon's `--max-series` (see `--max-allocations`).
    #[arg(long, default_value_t = 4096)]
    max_series: u64,
}

/// Leakers and churners running at once.
const LEAKERS: usize = 4;
const CHURNERS: usize = 2;
/// Floor of the RSS tolerance, KiB.
const RSS_FLOOR_KIB: u64 = 4 * 1024;
/// Allowed rise of the median number of open descriptors.
const FD_TOLERANCE: u64 = 4;

struct Sample {
    seconds: f64,
    rss_kib: u64,
    fds: u64,
    processes: u64,
    /// Live allocations, stacks and series in the daemon's tables.
    tables: [u64; 3],
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

fn fds(pid: u32) -> Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// The median of the middle and of the last third of `values`.
fn thirds(values: &[u64]) -> (u64, u64) {
    let third = values.len() / 3;
    let mut middle = values[third..2 * third].to_vec();
    let mut last = values[2 * third..].to_vec();
    (median(&mut middle), median(&mut last))
}

/// Pids listed by `/v1/processes` that no longer exist.
fn dead_listed(daemon: &Daemon) -> Result<Vec<u64>> {
    let processes = daemon.get("/v1/processes?limit=10000")?;
    let pids = processes["processes"].as_array().context("/v1/processes: no processes array")?;
    Ok(pids
        .iter()
        .filter_map(|p| p["pid"].as_u64())
        .filter(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        .collect())
}

/// The release daemon in `args.mode`, at the soak's limits, leaving toolchains alone.
fn start_daemon(root: &Path, dir: &Path, args: &SoakArgs) -> Result<Daemon> {
    let leakprobe = root.join("target").join("release").join("leakprobe");
    // Toolchains link their own allocator (rustc: jemalloc): leave them alone so that a soak does not slow builds.
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned());
    let (rustup, cargo) = (format!("--discovery-exclude={home}/.rustup"), format!("--discovery-exclude={home}/.cargo"));
    let limits = [
        format!("--max-allocations={}", args.max_allocations),
        format!("--max-stacks={}", args.max_stacks),
        format!("--max-series={}", args.max_series),
    ];
    let mut flags = vec![rustup.as_str(), cargo.as_str(), "--no-metrics"];
    flags.extend(limits.iter().map(String::as_str));
    Daemon::start(&leakprobe, dir, "soak", &args.mode, &flags)
}

pub fn soak(root: &Path, env: &ToolEnv, args: &SoakArgs) -> Result<()> {
    ensure!(args.minutes > 0.0 && args.sample_seconds > 0, "--minutes and --sample-seconds must be positive");
    tasks::build(root, env)?;
    let dir = root.join("target").join("soak");
    std::fs::create_dir_all(&dir)?;
    let workload = dir.join("soak");
    check(
        Command::new("gcc")
            .args(["-O2", "-g", "-fno-omit-frame-pointer", "-o"])
            .arg(&workload)
            .arg(root.join("xtask").join("soak").join("soak.c")),
    )?;
    let daemon = start_daemon(root, &dir, args)?;
    let pid = daemon.pid();
    eprintln!("soak: daemon pid {pid} ({} mode), {} minutes", args.mode, args.minutes);

    let spawn = |mode: &str| -> Result<Child> {
        Command::new(&workload)
            .arg(mode)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} {mode}", workload.display()))
    };
    let mut churners = (0..CHURNERS).map(|_| spawn("churner")).collect::<Result<Vec<_>>>()?;
    let mut leakers = (0..LEAKERS).map(|_| spawn("leaker")).collect::<Result<Vec<_>>>()?;
    let mut children: Vec<Child> = Vec::new();
    let mut started_children = 0u64;
    let mut started_leakers = LEAKERS as u64;
    let mut samples = Vec::new();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.minutes * 60.0);
    let child_every = Duration::from_secs(1) / args.processes_per_second.max(1);
    let mut next_child = start;
    let mut next_sample = start;
    let result = (|| -> Result<()> {
        while Instant::now() < end {
            let now = Instant::now();
            if now >= next_child {
                children.push(spawn("child")?);
                started_children += 1;
                next_child += child_every;
            }
            children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
            for leaker in &mut leakers {
                if matches!(leaker.try_wait(), Ok(Some(_))) {
                    *leaker = spawn("leaker")?;
                    started_leakers += 1;
                }
            }
            if now >= next_sample {
                let status = daemon.status().context("the daemon stopped answering")?;
                let table = |key: &str| status["tables"][key].as_u64().unwrap_or(0);
                let sample = Sample {
                    seconds: start.elapsed().as_secs_f64(),
                    rss_kib: rss_kib(pid)?,
                    fds: fds(pid)?,
                    processes: table("processes"),
                    tables: [table("live_allocations"), table("stacks"), table("series")],
                };
                eprintln!(
                    "soak: {:6.0} s  RSS {:7} KiB  fds {:3}  processes {:4}  allocations {:7}  stacks {:5}  series \
                     {:5}  started: {started_children} short-lived, {started_leakers} leakers",
                    sample.seconds,
                    sample.rss_kib,
                    sample.fds,
                    sample.processes,
                    sample.tables[0],
                    sample.tables[1],
                    sample.tables[2]
                );
                samples.push(sample);
                next_sample += Duration::from_secs(args.sample_seconds);
            }
            thread::sleep(Duration::from_millis(5).min(child_every));
        }
        Ok(())
    })();
    for child in churners.iter_mut().chain(leakers.iter_mut()).chain(children.iter_mut()) {
        let _ = child.kill();
        let _ = child.wait();
    }
    result?;

    // Exited processes must be purged: two ticks (5 s each) and the sweep after them.
    let mut dead = Vec::new();
    for _ in 0..30 {
        thread::sleep(Duration::from_secs(1));
        dead = dead_listed(&daemon)?;
        if dead.is_empty() {
            break;
        }
    }
    let final_status = daemon.status()?;
    daemon.stop()?;

    judge(&samples, args, (started_children, started_leakers), &final_status, &dead)
}

/// Prints the curve and fails on an upward trend or on dead processes still listed.
fn judge(
    samples: &[Sample],
    args: &SoakArgs,
    (started_children, started_leakers): (u64, u64),
    final_status: &serde_json::Value,
    dead: &[u64],
) -> Result<()> {
    ensure!(samples.len() >= 6, "only {} samples: soak longer or sample more often", samples.len());
    let rss: Vec<u64> = samples.iter().map(|s| s.rss_kib).collect();
    let fd: Vec<u64> = samples.iter().map(|s| s.fds).collect();
    let (rss_mid, rss_last) = thirds(&rss);
    let (fd_mid, fd_last) = thirds(&fd);
    let at = |i: usize| &samples[i.min(samples.len() - 1)];
    let (first, middle, last) = (at(0), at(samples.len() / 2), at(samples.len() - 1));
    println!("soak: {} minutes, {started_children} short-lived processes, {started_leakers} leakers", args.minutes);
    println!(
        "soak: RSS curve (KiB): start {} ({:.0} s), middle {} ({:.0} s), end {} ({:.0} s)",
        first.rss_kib, first.seconds, middle.rss_kib, middle.seconds, last.rss_kib, last.seconds
    );
    println!("soak: fds: start {}, middle {}, end {}", first.fds, middle.fds, last.fds);
    println!(
        "soak: tables (allocations / stacks / series): start {:?}, middle {:?}, end {:?}; limits {} / {} / {}",
        first.tables, middle.tables, last.tables, args.max_allocations, args.max_stacks, args.max_series
    );
    println!(
        "soak: median RSS middle third {rss_mid} KiB, last third {rss_last} KiB; median fds {fd_mid} -> {fd_last}"
    );
    println!(
        "soak: processes tracked: start {}, end of workload {}, after it {}; counters {}",
        first.processes, last.processes, final_status["tables"]["processes"], final_status["daemon_counters"]
    );
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss, reason = "KiB")]
    let rss_allowed = rss_mid + ((rss_mid as f64 * args.rss_tolerance) as u64).max(RSS_FLOOR_KIB);
    if rss_last > rss_allowed {
        bail!("the daemon's RSS trends upward: median {rss_mid} KiB -> {rss_last} KiB (allowed {rss_allowed})");
    }
    if fd_last > fd_mid + FD_TOLERANCE {
        bail!("the daemon's open descriptors trend upward: median {fd_mid} -> {fd_last}");
    }
    if !dead.is_empty() {
        bail!("{} exited processes are still listed: {dead:?}", dead.len());
    }
    println!("soak: passed (RSS and descriptors flat, exited processes purged)");
    Ok(())
}
