//! `cargo xtask bench`: the cost per malloc+free pair of leakprobe (full and sampled) and of its peers
//! (a bpftrace memleak equivalent, heaptrack) over nothing attached, the ingest rate of the daemon (end to end
//! from the eBPF object's event generator, and under a leaking workload), and the daemon's CPU and memory; and
//! tier 0 (`--malloc-probes auto`: page faults and mapping growth, no malloc probe) per malloc+free pair, per page
//! fault and per mmap+munmap pair; and the Python frame walk per allocation ([`python`]).
//!
//! Every configuration runs the same C workload ([`workload`]) `--runs` times for 1 and 2 threads; the
//! table shows medians. leakprobe and bpftrace probe every process on the machine: while one of them is
//! attached, the bench runs nothing but the workload.

#![allow(clippy::cast_precision_loss, reason = "counts of events and bytes, shown as rates and ratios")]

mod consumer;
mod cost;
pub mod daemon;
mod exec;
mod ingest;
mod peers;
mod python;
mod report;
mod workload;

use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{setup::ToolEnv, tasks};
use daemon::{Daemon, Usage};
use leakprobe_common::{COST_EMPTY, COST_EMPTY_NO_RETURN};
use workload::Workload;

/// Options of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Runs of each configuration and thread count; the table shows the median.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// malloc+free pairs per run, over all threads.
    #[arg(long, default_value_t = 200_000)]
    pairs: u64,
    /// Allocations (never freed) per run of the ingest workload, over 2 threads.
    #[arg(long, default_value_t = 1_500_000)]
    leaks: u64,
    /// Searches per event shape of the end-to-end ingest measurement (`leakprobe bench-ingest`); the median
    /// is shown.
    #[arg(long, default_value_t = 3)]
    ingest_runs: usize,
    /// Seconds the generator runs at each rate of an end-to-end ingest search.
    #[arg(long, default_value_t = 2.0)]
    ingest_seconds: f64,
    /// Measure even while another leakprobe, bpftrace or heaptrack runs (a shared machine): its probes then
    /// add to every configuration, nothing attached included, and the overheads over that baseline stay
    /// comparable while the absolute times do not. Reported in the output.
    #[arg(long)]
    no_wait: bool,
    /// One part of the bench instead of all of it.
    #[command(flatten)]
    only: Part,
}

/// The parts of the bench that run alone.
#[derive(Args, Debug)]
#[group(multiple = false)]
#[allow(clippy::struct_excessive_bools, reason = "exclusive flags, one per part of the bench")]
pub struct Part {
    /// Only what compares the unwinders: nothing attached, full mode with the kernel's table walk, with frame
    /// pointers and with stack copies, and tier 0 per page fault with the table walk and with frame pointers.
    #[arg(long)]
    only_unwinding: bool,
    /// Only the cost of `execve` under the daemon and its start-up time (with the host's allocator libraries
    /// probed before use).
    #[arg(long)]
    only_exec: bool,
    /// Only what issue 18's targets need: nothing attached, full and sampled mode and the bpftrace script per
    /// malloc+free pair (1 and 2 threads), and each eBPF program's run time per run and per pair in full and
    /// sampled mode, the workload traced alone.
    #[arg(long)]
    only_cost: bool,
    /// Only the Python frame walk: a Python churn with nothing attached, under full mode with Python frames
    /// and with `--no-python-frames`; ns per object and per walk (`--runs` runs of `--pairs` objects).
    #[arg(long)]
    only_python: bool,
    /// Only ingest (issue 18's third target: at least 1 M events/s with 0 drops): the workload-driven ingest
    /// under full mode, the consumer path in-process and `leakprobe bench-ingest` end to end.
    #[arg(long)]
    only_ingest: bool,
}

impl Part {
    /// The configurations timed per malloc+free pair.
    fn configs(&self) -> &'static [Config] {
        const UNWINDING: [Config; 4] = [Config::Baseline, Config::Full, Config::FullFp, Config::FullDwarf];
        if self.only_unwinding {
            &UNWINDING
        } else if self.only_cost {
            &cost::CONFIGS
        } else {
            &Config::ALL
        }
    }
}

/// Thread counts every configuration runs with.
pub const THREADS: [u32; 2] = [1, 2];

/// What is attached while the workload runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    Baseline,
    Full,
    FullFp,
    FullDwarf,
    Sampled,
    SampledFp,
    SampledPlain,
    /// The default `leakprobe run`: tier 0 on every process, malloc probes only on growing ones (the
    /// workload does not grow).
    Tier0,
    Bpftrace,
    Heaptrack,
    /// Full mode's sites with empty programs (the `COST_EMPTY` experiment): three traps per pair, nothing else.
    FullFloor,
    /// Sampled mode's sites with empty programs that skip the return: the two traps of an unsampled pair.
    SampledFloor,
}

impl Config {
    pub const ALL: [Self; 10] = [
        Self::Baseline,
        Self::Full,
        Self::FullFp,
        Self::FullDwarf,
        Self::Sampled,
        Self::SampledFp,
        Self::SampledPlain,
        Self::Tier0,
        Self::Bpftrace,
        Self::Heaptrack,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Baseline => "nothing attached",
            Self::Full => "leakprobe full (kernel tables)",
            Self::FullFp => "leakprobe full --unwind fp",
            Self::FullDwarf => "leakprobe full --unwind dwarf",
            Self::Sampled => "leakprobe sampled (512KiB, kernel tables)",
            Self::SampledFp => "leakprobe sampled --unwind fp",
            Self::SampledPlain => "leakprobe sampled --return-probes plain",
            Self::Tier0 => "leakprobe tier 0 (auto)",
            Self::Bpftrace => "bpftrace memleak",
            Self::Heaptrack => "heaptrack",
            Self::FullFloor => "floor: full mode's sites, empty programs",
            Self::SampledFloor => "floor: sampled mode's sites, empty programs",
        }
    }
}

/// Per-pair times of one configuration: one vector of runs per entry of [`THREADS`], or why it could not run.
pub struct Timing {
    pub config: Config,
    pub result: Result<Vec<Vec<f64>>, String>,
}

/// The daemon's resource use over one phase of the bench.
pub struct DaemonUse {
    pub label: &'static str,
    pub usage: Usage,
}

impl BenchArgs {
    fn check(&self) -> Result<()> {
        if self.runs == 0 || self.ingest_runs == 0 || self.pairs < 1000 || self.leaks < 1000 {
            bail!("--runs and --ingest-runs must be positive, --pairs and --leaks at least 1000");
        }
        if !(0.1..=60.0).contains(&self.ingest_seconds) {
            bail!("--ingest-seconds must be between 0.1 and 60");
        }
        Ok(())
    }
}

pub fn bench(root: &Path, env: &ToolEnv, args: &BenchArgs) -> Result<()> {
    args.check()?;
    crate::setup::ensure_bench_peers()?;
    tasks::build_bench(root, env)?;
    let dir = root.join("target").join("bench");
    std::fs::create_dir_all(&dir)?;
    let work = Workload::compile(root, &dir)?;
    let leakprobe = root.join("target").join("release").join("leakprobe");
    let libc = peers::host_libc()?;

    if args.only.only_exec {
        return exec::run(&leakprobe, &dir, args.runs, args.no_wait);
    }
    if args.only.only_python {
        return python::bench(&leakprobe, &dir, args);
    }
    if args.only.only_ingest {
        return only_ingest(root, env, &leakprobe, &dir, &work, args);
    }
    let (mut timings, mut usages) = (Vec::new(), Vec::new());
    let mut sites = None;
    let mut unwinding = report::Unwinding::default();
    for &config in args.only.configs() {
        eprintln!("bench: {} ({} runs x {THREADS:?} threads, {} pairs each)", config.label(), args.runs, args.pairs);
        let result = match config {
            Config::Baseline | Config::Heaptrack => time_runs(&work, config, args, &dir, &libc),
            Config::Bpftrace => peers::check_bpftrace(&libc).and_then(|()| time_runs(&work, config, args, &dir, &libc)),
            Config::Full
            | Config::FullFp
            | Config::FullDwarf
            | Config::Sampled
            | Config::SampledFp
            | Config::SampledPlain
            | Config::Tier0
            | Config::FullFloor
            | Config::SampledFloor => {
                wait_quiet(args.no_wait);
                let daemon = start_daemon(config, &leakprobe, &dir)?;
                if sites.is_none() {
                    sites = Some(daemon.status().map(|s| report::sites(&s))?);
                }
                let before = daemon.usage()?;
                let result = time_runs(&work, config, args, &dir, &libc);
                let usage = daemon.usage()?.since(&before);
                if config == Config::FullDwarf {
                    unwinding.daemon = daemon.status().ok().map(|s| report::DaemonUnwind::from_status(&s));
                }
                if config == Config::Full {
                    unwinding.tables = daemon.status().ok().map(|s| report::KernelTables::from_status(&s));
                }
                daemon.stop()?;
                usages.push(DaemonUse { label: config.label(), usage });
                result
            }
        };
        if let Err(err) = &result {
            eprintln!("bench: {}: {err:#}", config.label());
        }
        timings.push(Timing { config, result: result.map_err(|e| format!("{e:#}")) });
    }

    if args.only.only_cost {
        return cost::finish(&leakprobe, &dir, &work, args, (&timings, &usages, sites.as_deref().unwrap_or_default()));
    }
    unwinding.compile = Some(undisturbed(args.no_wait, || compile_tables(&leakprobe)).map_err(|e| format!("{e:#}")));
    if args.only.only_unwinding {
        let (pages, _) = tier0_per_op(&leakprobe, &dir, &work, args)?;
        report::print(&timings, &[], &usages, sites.as_deref().unwrap_or_default(), args.runs);
        report::print_per_op("ns per page fault (a write to a fresh anonymous page)", &pages, args.runs);
        report::print_unwinding(&timings, &unwinding);
        report::print_tier0_unwinding(&pages);
        return Ok(());
    }
    let (ingest, consumer, end_to_end) = ingest_parts(root, env, &leakprobe, &dir, &work, args, &mut usages)?;
    eprintln!("bench: the daemon's unwinder on its own stack (leakprobe bench-unwind)");
    unwinding.micro =
        undisturbed(args.no_wait, || bench_unwind(&leakprobe)).map_err(|e| eprintln!("bench: {e:#}")).ok();

    let (pages, maps) = tier0_per_op(&leakprobe, &dir, &work, args)?;
    let execs = exec::measure(&leakprobe, &dir, args.runs, args.no_wait)?;

    report::print(&timings, &ingest, &usages, sites.as_deref().unwrap_or_default(), args.runs);
    report::print_consumer(&consumer);
    report::print_end_to_end(&end_to_end);
    report::print_per_op("ns per page fault (a write to a fresh anonymous page)", &pages, args.runs);
    report::print_per_op("ns per mmap+munmap pair (64 KiB anonymous, untouched)", &maps, args.runs);
    println!("(tier 0 per malloc+free pair is the `leakprobe tier 0 (auto)` row of the first table: target within");
    println!(" the spread of `nothing attached`)");
    report::print_unwinding(&timings, &unwinding);
    report::print_tier0_unwinding(&pages);
    exec::print(&execs, args.runs);
    if let Err(err) = python::bench(&leakprobe, &dir, args) {
        println!("\nthe Python frame walk: did not run: {err:#}");
    }
    Ok(())
}

/// The daemon of a leakprobe configuration of the per-pair table.
fn start_daemon(config: Config, leakprobe: &Path, dir: &Path) -> Result<Daemon> {
    let (name, mode, flags): (&str, &str, &[&str]) = match config {
        Config::Full => ("full", "full", &[]),
        Config::FullFp => ("full-fp", "full", &["--unwind", "fp"]),
        Config::FullDwarf => ("full-dwarf", "full", &["--unwind", "dwarf"]),
        Config::SampledFp => ("sampled-fp", "sampled", &["--unwind", "fp"]),
        Config::SampledPlain => ("sampled-plain", "sampled", &["--return-probes", "plain"]),
        Config::FullFloor => ("full-floor", "full", &[]),
        Config::SampledFloor => ("sampled-floor", "sampled", &[]),
        _ => ("sampled", "sampled", &[]),
    };
    match config {
        Config::Tier0 => Daemon::start_with(leakprobe, dir, "tier0", &["--malloc-probes", "auto"]),
        Config::FullFloor => Daemon::start_empty(leakprobe, dir, name, mode, COST_EMPTY),
        Config::SampledFloor => Daemon::start_empty(leakprobe, dir, name, mode, COST_EMPTY | COST_EMPTY_NO_RETURN),
        _ => Daemon::start(leakprobe, dir, name, mode, flags),
    }
}

/// What [`ingest_parts`] measures.
type IngestParts = (Vec<workload::Ingest>, Vec<consumer::Consumer>, Result<Vec<ingest::Shape>, String>);

/// The three ingest measurements: the workload-driven ingest under full mode, the consumer path in-process and
/// `bench-ingest` end to end (whose failure, no second CPU say, is reported with the results rather than
/// losing them).
fn ingest_parts(
    root: &Path,
    env: &ToolEnv,
    leakprobe: &Path,
    dir: &Path,
    work: &Workload,
    args: &BenchArgs,
    usages: &mut Vec<DaemonUse>,
) -> Result<IngestParts> {
    let ingest = ingest_phase(leakprobe, dir, work, args, usages)?;
    eprintln!("bench: consumer path in-process ({} runs of leakprobe/examples/ingest_bench)", args.runs);
    let consumer = consumer::measure(root, env, args.runs).context("consumer path")?;
    let end_to_end = end_to_end(leakprobe, args).map_err(|e| format!("{e:#}"));
    Ok((ingest, consumer, end_to_end))
}

/// `--only-ingest`: the three ingest measurements alone.
fn only_ingest(
    root: &Path,
    env: &ToolEnv,
    leakprobe: &Path,
    dir: &Path,
    work: &Workload,
    args: &BenchArgs,
) -> Result<()> {
    let mut usages = Vec::new();
    let (ingest, consumer, end_to_end) = ingest_parts(root, env, leakprobe, dir, work, args, &mut usages)?;
    report::print_ingest(&ingest, usages.iter().find(|u| u.label == report::INGEST_PHASE));
    report::print_usage(&usages);
    report::print_consumer(&consumer);
    report::print_end_to_end(&end_to_end);
    Ok(())
}

/// The workload-driven ingest: `--runs` runs of leaked allocations under `leakprobe full`.
fn ingest_phase(
    leakprobe: &Path,
    dir: &Path,
    work: &Workload,
    args: &BenchArgs,
    usages: &mut Vec<DaemonUse>,
) -> Result<Vec<workload::Ingest>> {
    eprintln!(
        "bench: workload-driven ingest ({} runs of {} leaked allocations over 2 threads under leakprobe full)",
        args.runs, args.leaks
    );
    wait_quiet(args.no_wait);
    let daemon = Daemon::start(leakprobe, dir, "full", "full", &[])?;
    let before = daemon.usage()?;
    let ingest = (0..args.runs)
        .map(|run| undisturbed(args.no_wait, || workload::ingest(work, &daemon, args.leaks, run as u64 + 1)))
        .collect::<Result<Vec<_>>>()
        .context("ingest")?;
    let usage = daemon.usage()?.since(&before);
    daemon.stop()?;
    usages.push(DaemonUse { label: report::INGEST_PHASE, usage });
    Ok(ingest)
}

/// A configuration's label and its ns per operation.
type OpRows = [(&'static str, report::OpTimes); 3];

/// Tier 0's cost per page fault (`--pairs` pages) and per mmap+munmap pair (a tenth as many): nothing attached,
/// then under `--malloc-probes auto` with the kernel's table walk (the default) and with frame pointers.
fn tier0_per_op(leakprobe: &Path, dir: &Path, work: &Workload, args: &BenchArgs) -> Result<(OpRows, OpRows)> {
    let maps_count = args.pairs / 10;
    eprintln!(
        "bench: page faults and mappings ({} runs x {THREADS:?} threads, {} pages, {maps_count} mmap+munmap each)",
        args.runs, args.pairs
    );
    let pages_base = time_per_op(work, args, "pages", args.pairs, "ns_per_page");
    let maps_base = time_per_op(work, args, "maps", maps_count, "ns_per_map");
    wait_quiet(args.no_wait);
    let daemon = Daemon::start_with(leakprobe, dir, "tier0", &["--malloc-probes", "auto"])?;
    let pages_tier0 = time_per_op(work, args, "pages", args.pairs, "ns_per_page");
    let maps_tier0 = time_per_op(work, args, "maps", maps_count, "ns_per_map");
    daemon.stop()?;
    wait_quiet(args.no_wait);
    let daemon = Daemon::start_with(leakprobe, dir, "tier0-fp", &["--malloc-probes", "auto", "--unwind", "fp"])?;
    let pages_fp = time_per_op(work, args, "pages", args.pairs, "ns_per_page");
    let maps_fp = time_per_op(work, args, "maps", maps_count, "ns_per_map");
    daemon.stop()?;
    Ok((
        [("nothing attached", pages_base), (report::TIER0_TABLES, pages_tier0), (report::TIER0_FP, pages_fp)],
        [("nothing attached", maps_base), (report::TIER0_TABLES, maps_tier0), (report::TIER0_FP, maps_fp)],
    ))
}

/// `--ingest-runs` searches per event shape of `leakprobe bench-ingest`.
fn end_to_end(leakprobe: &Path, args: &BenchArgs) -> Result<Vec<ingest::Shape>> {
    eprintln!(
        "bench: ingest end to end ({} searches per shape of leakprobe bench-ingest, {} s per step)",
        args.ingest_runs, args.ingest_seconds
    );
    ingest::SHAPES
        .iter()
        .map(|&shape| {
            let runs = (0..args.ingest_runs)
                .map(|_| undisturbed(args.no_wait, || ingest::search(leakprobe, shape, args.ingest_seconds)))
                .collect::<Result<Vec<_>>>()?;
            Ok(ingest::Shape { shape, runs })
        })
        .collect()
}

/// `--runs` runs of workload `mode` (`count` operations: pages touched, mappings made), for each thread count:
/// `field`, the ns per operation.
fn time_per_op(work: &Workload, args: &BenchArgs, mode: &str, count: u64, field: &str) -> report::OpTimes {
    let mut times = vec![Vec::new(); THREADS.len()];
    for run in 0..args.runs {
        for (slot, &threads) in THREADS.iter().enumerate() {
            let workload = work.args(mode, count, threads, run as u64 + 1);
            let out =
                undisturbed(args.no_wait, || workload::run(&mut workload::command(&workload), Duration::from_mins(5)))
                    .map_err(|e| format!("{e:#}"))?;
            times[slot].push(workload::field(&out, field).map_err(|e| format!("{e:#}"))?);
        }
    }
    Ok(times)
}

/// `leakprobe bench-unwind`: its one JSON line.
/// Binaries whose unwind tables the compile measurement compiles, those present on this host: the large ones
/// a host runs (node, the JVM), the interpreter and libraries of the tests, and the daemon itself.
const COMPILE_CANDIDATES: [&str; 5] = [
    "/usr/bin/node",
    "/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so",
    "/usr/bin/python3.11",
    "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
];

/// `leakprobe bench-unwind --compile`: what compiling each binary's tables costs the daemon before its rows are
/// in the kernel (one JSON object per binary).
fn compile_tables(leakprobe: &Path) -> Result<Vec<serde_json::Value>> {
    let mut files: Vec<PathBuf> =
        COMPILE_CANDIDATES.iter().map(Path::new).filter(|p| p.exists()).filter_map(|p| p.canonicalize().ok()).collect();
    files.push(leakprobe.to_path_buf());
    let out = Command::new(leakprobe)
        .args(["bench-unwind", "--samples", "5", "--compile"])
        .args(&files)
        .output()
        .context("running leakprobe bench-unwind --compile")?;
    if !out.status.success() {
        bail!(
            "leakprobe bench-unwind --compile failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).context("bench-unwind --compile printed a line that is not JSON"))
        .collect()
}

fn bench_unwind(leakprobe: &Path) -> Result<serde_json::Value> {
    let out = Command::new(leakprobe).arg("bench-unwind").output().context("running leakprobe bench-unwind")?;
    if !out.status.success() {
        bail!("leakprobe bench-unwind failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_slice(&out.stdout).context("bench-unwind printed no JSON")
}

/// `--runs` runs of the pairs workload under `config`, for each thread count: ns per pair.
fn time_runs(work: &Workload, config: Config, args: &BenchArgs, dir: &Path, libc: &Path) -> Result<Vec<Vec<f64>>> {
    let mut times = vec![Vec::new(); THREADS.len()];
    for run in 0..args.runs {
        for (slot, &threads) in THREADS.iter().enumerate() {
            let workload = work.args("pairs", args.pairs, threads, run as u64 + 1);
            let mut cmd = match config {
                Config::Bpftrace => peers::bpftrace(dir, libc, &workload)?,
                Config::Heaptrack => peers::heaptrack(dir, &workload),
                _ => workload::command(&workload),
            };
            let out = undisturbed(args.no_wait, || workload::run(&mut cmd, Duration::from_mins(5)))?;
            times[slot].push(workload::field(&out, "ns_per_pair")?);
        }
    }
    Ok(times)
}

/// Waits (up to 10 minutes) until no other tracer runs: another engineer's leakprobe tests probe every
/// process too, the workload included.
fn wait_quiet(no_wait: bool) {
    if no_wait {
        let others = peers::other_tracers();
        if !others.is_empty() {
            eprintln!("bench: --no-wait: measuring while {} run(s)", others.join(", "));
        }
        return;
    }
    let start = Instant::now();
    loop {
        let others = peers::other_tracers();
        if others.is_empty() {
            return;
        }
        if start.elapsed() > Duration::from_mins(10) {
            eprintln!("bench: warning: going on while {} run(s); the numbers will be off", others.join(", "));
            return;
        }
        if start.elapsed() < Duration::from_secs(1) {
            eprintln!("bench: waiting for {} to end (it would probe the workload too)", others.join(", "));
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// Runs `measure` when no other tracer runs, and again (up to 10 times) if one ran when it ended.
fn undisturbed<T>(no_wait: bool, mut measure: impl FnMut() -> Result<T>) -> Result<T> {
    for attempt in 1.. {
        wait_quiet(no_wait);
        let result = measure()?;
        let others = peers::other_tracers();
        if no_wait || others.is_empty() || attempt == 10 {
            return Ok(result);
        }
        eprintln!("bench: {} started during a run: running it again", others.join(", "));
    }
    unreachable!()
}
