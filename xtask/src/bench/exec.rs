//! What probing allocator libraries before use costs (issue "no blind start"): the latency each `execve` gains
//! under the daemon (the exec tracepoint, the kernel's count of missed allocations, the discovery thread's
//! checks), and the daemon's start-up time with the host's libraries probed first.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use super::{daemon::Daemon, report::median};

/// Executions of `/bin/true` per run.
pub const EXECS: usize = 1000;

/// One configuration's results: µs per fork+exec+wait of `/bin/true`, per run; and start-up times in ms.
pub struct ExecRow {
    pub label: &'static str,
    pub exec_us: Vec<f64>,
    pub startup_ms: Vec<f64>,
    /// Microseconds the daemon spent probing the host's libraries before use, per start.
    pub preprobe_us: Vec<f64>,
}

/// µs per fork+exec+wait of `/bin/true`, over [`EXECS`] runs.
fn exec_latency() -> Result<f64> {
    let start = Instant::now();
    for _ in 0..EXECS {
        let status = Command::new("/bin/true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .context("running /bin/true")?;
        if !status.success() {
            bail!("/bin/true exited with {status}");
        }
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / EXECS as f64)
}

/// Measures nothing attached, the default daemon and full mode with every allocator probed, with and without
/// the host's allocator libraries probed before use, `runs` times each.
pub fn measure(leakprobe: &Path, dir: &Path, runs: usize, no_wait: bool) -> Result<Vec<ExecRow>> {
    let configs: [(&'static str, Option<&[&str]>); 4] = [
        ("nothing attached", None),
        ("leakprobe default (auto)", Some(&["--malloc-probes", "auto"])),
        ("leakprobe full --malloc-probes all", Some(&["--mode", "full", "--malloc-probes", "all"])),
        (
            "leakprobe full --malloc-probes all --preprobe false",
            Some(&["--mode", "full", "--malloc-probes", "all", "--preprobe", "false"]),
        ),
    ];
    let mut rows = Vec::new();
    for (label, args) in configs {
        eprintln!("bench: {EXECS} x /bin/true, {label} ({runs} runs)");
        let mut row = ExecRow { label, exec_us: Vec::new(), startup_ms: Vec::new(), preprobe_us: Vec::new() };
        for _ in 0..runs {
            let Some(args) = args else {
                row.exec_us.push(super::undisturbed(no_wait, exec_latency)?);
                continue;
            };
            super::wait_quiet(no_wait);
            let started = Instant::now();
            let daemon = Daemon::start_with(leakprobe, dir, "exec", args)?;
            row.startup_ms.push(started.elapsed().as_secs_f64() * 1e3);
            let status = daemon.status()?;
            let preprobe = status["daemon_counters"]["discovery_preprobe_microseconds"].as_f64().unwrap_or(0.0);
            row.preprobe_us.push(preprobe);
            let latency = exec_latency();
            daemon.stop()?;
            row.exec_us.push(latency?);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Measures and prints (`cargo xtask bench --only-exec`).
pub fn run(leakprobe: &Path, dir: &Path, runs: usize, no_wait: bool) -> Result<()> {
    let rows = measure(leakprobe, dir, runs, no_wait)?;
    print(&rows, runs);
    Ok(())
}

/// Prints the table, with each configuration's added latency over nothing attached.
pub fn print(rows: &[ExecRow], runs: usize) {
    println!();
    println!("## execve latency and start-up (medians of {runs} runs; {EXECS} x fork+exec+wait of /bin/true)");
    println!();
    println!("| configuration | µs per exec | added | daemon start-up | of which probing the host's libraries |");
    println!("|---|---:|---:|---:|---:|");
    let base = rows.first().map_or(0.0, |r| median(&r.exec_us));
    for row in rows {
        let exec = median(&row.exec_us);
        let startup =
            if row.startup_ms.is_empty() { "-".to_owned() } else { format!("{:.0} ms", median(&row.startup_ms)) };
        let preprobe = if row.preprobe_us.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.0} ms", median(&row.preprobe_us) / 1e3)
        };
        println!("| {} | {exec:.0} | {:+.0} µs | {startup} | {preprobe} |", row.label, exec - base);
    }
}
