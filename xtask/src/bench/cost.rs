//! `cargo xtask bench --only-cost`: what full and sampled mode cost per malloc+free pair against the issue 18
//! targets, and where it goes: each eBPF program's own run time per run (the kernel's BPF run-time statistics,
//! `budget.programs` in `status`).
//!
//! The wall-clock rows (nothing attached, full, sampled, the bpftrace memleak script) are the main bench's. The
//! per-program figures come from a second phase that does not depend on how loaded the machine is: the
//! workload starts and waits (`LEAKPROBE_BENCH_WAIT`), a daemon with no malloc probes of its own traces only it
//! (`leakprobe trace --pid`, pid-scoped probes: no other process runs the programs), and the statistics are
//! read before and after the workload's loop.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::Path,
    process::Stdio,
    thread,
    time::Duration,
};

use super::{BenchArgs, Config, DaemonUse, THREADS, Timing, daemon::Daemon, report, workload, workload::Workload};
use anyhow::{Context as _, Result};

/// Targets of issue 18, per malloc+free pair, at 1 and 2 threads: full mode at most 2,500 ns and 0.35x the
/// bpftrace script's overhead, sampled (the default) at most 1,300 ns and 0.15x. Each with its floor: the same
/// sites with empty programs, what the traps alone cost on this machine in the same run.
const TARGETS: [(Config, Config, f64, f64); 2] =
    [(Config::Full, Config::FullFloor, 2500.0, 0.35), (Config::Sampled, Config::SampledFloor, 1300.0, 0.15)];

/// One program's runs and run time over one workload run.
#[derive(Clone, Debug, Default)]
struct Delta {
    runs: u64,
    ns: u64,
}

/// The per-program figures of one mode and thread count: per program, its deltas over each run.
struct Programs {
    mode: &'static str,
    threads: u32,
    runs: Vec<(String, Vec<Delta>)>,
    pairs: u64,
}

/// The statistics of every program that has run, from `status`.
fn stats(daemon: &Daemon) -> Result<Vec<(String, Delta)>> {
    // The budget reads them at each check (every `--interval`, 200 ms here): two checks from now they are fresh.
    thread::sleep(Duration::from_millis(500));
    let status = daemon.status()?;
    let programs = status["budget"]["programs"].as_array().context("status has no budget.programs")?;
    Ok(programs
        .iter()
        .filter_map(|p| {
            let delta = Delta { runs: p["run_count"].as_u64()?, ns: p["run_time_ns"].as_u64()? };
            Some((p["program"].as_str()?.to_owned(), delta))
        })
        .collect())
}

/// One run of the pairs workload traced alone in `mode` by `daemon`: each program's runs and time over it. A
/// `trace` that fails (it sometimes answers that the new process is not traced any more) is tried again with a
/// new workload process, up to five times.
fn traced_run(
    daemon: &Daemon,
    work: &Workload,
    args: &BenchArgs,
    mode: &str,
    threads: u32,
    seed: u64,
) -> Result<Vec<(String, Delta)>> {
    let workload = work.args("pairs", args.pairs, threads, seed);
    for _ in 0..5 {
        if let Some(deltas) = traced_once(daemon, &workload, mode)? {
            return Ok(deltas);
        }
    }
    anyhow::bail!("leakprobe trace failed five times in a row")
}

/// [`traced_run`] once, with the workload's command line: `None` when `trace` failed.
fn traced_once(daemon: &Daemon, workload: &[String], mode: &str) -> Result<Option<Vec<(String, Delta)>>> {
    let mut child = workload::command(workload)
        .env("LEAKPROBE_BENCH_WAIT", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the workload")?;
    let result = (|| {
        let mut stdout = BufReader::new(child.stdout.take().context("workload stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let pid = child.id().to_string();
        match daemon.cli(&["trace", "--pid", &pid, "--mode", mode, "--json"]) {
            Ok(traced) if traced["result"] == "attached" => {}
            Ok(traced) => {
                eprintln!("bench: leakprobe trace --pid {pid}: {traced}: again with a new process");
                return Ok(None);
            }
            Err(err) => {
                eprintln!("bench: {err:#}: again with a new process");
                return Ok(None);
            }
        }
        let before = stats(daemon)?;
        child.stdin.take().context("workload stdin")?.write_all(b"go\n")?;
        let mut out = String::new();
        stdout.read_to_string(&mut out)?;
        workload::field(&out, "ns_per_pair")?;
        let after = stats(daemon)?;
        Ok(Some(
            after
                .into_iter()
                .filter_map(|(name, a)| {
                    let b = before.iter().find(|(n, _)| *n == name).map(|(_, d)| d.clone()).unwrap_or_default();
                    let delta = Delta { runs: a.runs.saturating_sub(b.runs), ns: a.ns.saturating_sub(b.ns) };
                    // The malloc-family programs: the tracepoints run for every process.
                    (delta.runs > 0 && is_malloc_program(&name)).then_some((name, delta))
                })
                .collect(),
        ))
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Whether `program` is one of the malloc-family programs (entries, return, session, free).
fn is_malloc_program(program: &str) -> bool {
    program.ends_with("_enter") && !program.starts_with("sys_") || program == "alloc_exit" || program == "alloc_session"
}

/// The per-program phase: full and sampled mode, each thread count, `--runs` runs.
fn programs(leakprobe: &Path, dir: &Path, work: &Workload, args: &BenchArgs) -> Result<Vec<Programs>> {
    let mut all = Vec::new();
    for mode in ["full", "sampled"] {
        eprintln!("bench: {mode} mode's programs, traced alone ({} runs x {THREADS:?} threads)", args.runs);
        // The daemon's own mode too: the free path depends on it (one map operation in full mode).
        let flags = [
            "--mode",
            mode,
            "--malloc-probes",
            "off",
            "--interval",
            "200ms",
            "--cpu-budget-process",
            "400",
            "--cpu-budget-host",
            "400",
        ];
        let daemon = Daemon::start_with(leakprobe, dir, &format!("cost-{mode}"), &flags)?;
        for &threads in &THREADS {
            let mut runs: Vec<(String, Vec<Delta>)> = Vec::new();
            for run in 0..args.runs {
                for (name, delta) in traced_run(&daemon, work, args, mode, threads, run as u64 + 1)? {
                    match runs.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, deltas)) => deltas.push(delta),
                        None => runs.push((name, vec![delta])),
                    }
                }
            }
            // The workload's warm-up (a tenth more pairs) runs under the probes too.
            all.push(Programs { mode, threads, runs, pairs: args.pairs + args.pairs / 10 });
        }
        daemon.stop()?;
    }
    Ok(all)
}

/// The configurations of the wall-clock rows.
pub const CONFIGS: [Config; 6] =
    [Config::Baseline, Config::FullFloor, Config::Full, Config::SampledFloor, Config::Sampled, Config::Bpftrace];

/// The per-program phase and the report of both phases, after the wall-clock rows (`timings`), with the
/// daemons' use of resources and the probe sites.
pub fn finish(
    leakprobe: &Path,
    dir: &Path,
    work: &Workload,
    args: &BenchArgs,
    (timings, usages, sites): (&[Timing], &[DaemonUse], &[String]),
) -> Result<()> {
    report::print(timings, &[], usages, sites, args.runs);
    let programs = programs(leakprobe, dir, work, args)?;
    println!(
        "\nBPF run time per program (the kernel's run-time statistics), the workload traced alone, median of {} runs",
        args.runs
    );
    let mut t = report::table(&["MODE", "THREADS", "PROGRAM", "RUNS/PAIR", "NS/RUN", "NS/PAIR"]);
    for p in &programs {
        let mut total = Vec::new();
        for (name, deltas) in &p.runs {
            let per_run: Vec<f64> = deltas.iter().map(|d| d.ns as f64 / d.runs as f64).collect();
            let runs_per_pair: Vec<f64> = deltas.iter().map(|d| d.runs as f64 / p.pairs as f64).collect();
            let per_pair: Vec<f64> = deltas.iter().map(|d| d.ns as f64 / p.pairs as f64).collect();
            total.push(report::median(&per_pair));
            t.add_row(vec![
                p.mode.to_owned(),
                p.threads.to_string(),
                name.clone(),
                format!("{:.2}", report::median(&runs_per_pair)),
                format!("{:.0}", report::median(&per_run)),
                format!("{:.0}", report::median(&per_pair)),
            ]);
        }
        t.add_row(vec![
            p.mode.to_owned(),
            p.threads.to_string(),
            "all".into(),
            String::new(),
            String::new(),
            format!("{:.0}", total.iter().sum::<f64>()),
        ]);
    }
    println!("{t}");
    print_targets(timings);
    Ok(())
}

/// The issue 18 targets against the wall-clock medians, each next to its floor (the traps alone).
fn print_targets(timings: &[Timing]) {
    let medians = |config: Config| -> Option<Vec<f64>> {
        let runs = timings.iter().find(|t| t.config == config)?.result.as_ref().ok()?;
        Some(runs.iter().map(|r| report::median(r)).collect())
    };
    let (Some(base), Some(bpftrace)) = (medians(Config::Baseline), medians(Config::Bpftrace)) else {
        println!("\nissue 18 targets: n/a (nothing attached or bpftrace did not run)");
        return;
    };
    let over = |times: &[f64]| -> Vec<f64> { times.iter().zip(&base).map(|(m, b)| m - b).collect() };
    let bpftrace_over = over(&bpftrace);
    println!();
    let mut t = report::table(&["TARGET", "1 THREAD", "2 THREADS", "FLOOR 1T", "FLOOR 2T", ""]);
    for (config, floor_config, most, ratio) in TARGETS {
        let Some(times) = medians(config) else { continue };
        let over_target = over(&times);
        let floor = medians(floor_config).map(|f| over(&f));
        let ratios: Vec<f64> = over_target.iter().zip(&bpftrace_over).map(|(o, p)| o / p).collect();
        let floor_ratios: Option<Vec<f64>> =
            floor.as_ref().map(|f| f.iter().zip(&bpftrace_over).map(|(o, p)| o / p).collect());
        let judge = |values: &[f64], floor: Option<&Vec<f64>>, limit: f64| {
            if values.iter().all(|&v| v <= limit) {
                "PASS"
            } else if floor.is_some_and(|f| f.iter().any(|&v| v > limit)) {
                "MISS: the floor alone is above it"
            } else {
                "MISS"
            }
        };
        let cells = |values: Option<&Vec<f64>>, decimals: usize| -> [String; 2] {
            match values {
                Some(v) => [format!("{:.*}", decimals, v[0]), format!("{:.*}", decimals, v[1])],
                None => ["n/a".into(), "n/a".into()],
            }
        };
        let [f1, f2] = cells(floor.as_ref(), 0);
        t.add_row(vec![
            format!("{} overhead <= {most:.0} ns per pair", config.label()),
            format!("{:.0}", over_target[0]),
            format!("{:.0}", over_target[1]),
            f1,
            f2,
            judge(&over_target, floor.as_ref(), most).to_owned(),
        ]);
        let [r1, r2] = cells(floor_ratios.as_ref(), 2);
        t.add_row(vec![
            format!("{} overhead <= {ratio}x bpftrace's", config.label()),
            format!("{:.2}", ratios[0]),
            format!("{:.2}", ratios[1]),
            r1,
            r2,
            judge(&ratios, floor_ratios.as_ref(), ratio).to_owned(),
        ]);
    }
    println!("{t}");
    println!("(floor: the same sites with empty programs, measured in this run: what the traps alone cost here)");
}
