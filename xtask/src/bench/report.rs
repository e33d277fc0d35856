//! The bench's output: the table of ns per pair, the target checks, ingest, the daemon's resources and the
//! probe sites.

use comfy_table::{CellAlignment, Table, presets};
use serde_json::Value;

use super::{Config, DaemonUse, THREADS, Timing, workload::Ingest};

/// Events per second the ingest target asks for.
const INGEST_TARGET: f64 = 1e6;

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 { sorted[mid] } else { f64::midpoint(sorted[mid - 1], sorted[mid]) }
}

/// The probe sites leakprobe chose, from `status`: `kind function site (emulated|single-stepped)`.
pub fn sites(status: &Value) -> Vec<String> {
    let Some(points) = status["attach_points"].as_array() else { return Vec::new() };
    points
        .iter()
        .filter(|p| p["site"].is_string())
        .map(|p| {
            let how = if p["emulated"].as_bool() == Some(true) { "emulated" } else { "single-stepped" };
            format!(
                "{:<10} {:<15} {:<28} {how}",
                p["kind"].as_str().unwrap_or("?"),
                p["target"].as_str().unwrap_or("?"),
                p["site"].as_str().unwrap_or("?"),
            )
        })
        .collect()
}

pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_header(header.iter().copied());
    for i in 1..header.len() {
        if let Some(column) = table.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// Medians of one configuration, per thread count, if it ran.
fn medians(timings: &[Timing], config: Config) -> Option<Vec<f64>> {
    let timing = timings.iter().find(|t| t.config == config)?;
    timing.result.as_ref().ok().map(|runs| runs.iter().map(|r| median(r)).collect())
}

pub fn spread(runs: &[f64]) -> f64 {
    let (min, max) = runs.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    100.0 * (max - min) / median(runs)
}

pub fn print(timings: &[Timing], ingest: &[Ingest], usages: &[DaemonUse], sites: &[String], runs: usize) {
    let base = medians(timings, Config::Baseline);
    let overhead = |config| -> Option<Vec<f64>> {
        let (m, b) = (medians(timings, config)?, base.as_ref()?);
        Some(m.iter().zip(b).map(|(m, b)| m - b).collect())
    };
    let sampled_over = overhead(Config::Sampled);

    println!("\nns per malloc+free pair, median of {runs} runs (2 threads: wall time x 2 / pairs, per thread)\n");
    let mut t = table(&[
        "CONFIG",
        "1 THREAD",
        "2 THREADS",
        "OVERHEAD 1T",
        "OVERHEAD 2T",
        "VS SAMPLED 1T",
        "VS SAMPLED 2T",
        "SPREAD 1T/2T",
    ]);
    for timing in timings {
        let mut row = vec![timing.config.label().to_owned()];
        match &timing.result {
            Err(err) => row.push(format!("did not run: {err}")),
            Ok(times) => {
                row.extend(times.iter().map(|r| format!("{:.0}", median(r))));
                let over = overhead(timing.config);
                for i in 0..THREADS.len() {
                    row.push(over.as_ref().map_or("-".into(), |o| format!("{:+.0}", o[i])));
                }
                for i in 0..THREADS.len() {
                    let ratio = over.as_ref().zip(sampled_over.as_ref()).map(|(o, s)| o[i] / s[i]);
                    row.push(match (timing.config, ratio) {
                        (Config::Baseline, _) | (_, None) => "-".into(),
                        (_, Some(r)) => format!("{r:.2}x"),
                    });
                }
                row.push(times.iter().map(|r| format!("{:.0}%", spread(r))).collect::<Vec<_>>().join("/"));
            }
        }
        t.add_row(row);
    }
    println!("{t}");
    println!("(overhead: ns over nothing attached; vs sampled: overhead / leakprobe sampled's overhead;");
    println!(" spread: (max - min) / median over the runs)");
    let plain_over = overhead(Config::SampledPlain);
    for (i, threads) in THREADS.iter().enumerate() {
        if let (Some(s), Some(p)) = (sampled_over.as_ref(), plain_over.as_ref()) {
            println!(
                "sampled, session vs plain return probes ({threads}T): {:+.0} vs {:+.0} ns/pair ({:.2}x)",
                s[i],
                p[i],
                s[i] / p[i]
            );
        }
    }

    println!("\ntargets (reported, not asserted)");
    let full_over = overhead(Config::Full);
    let bpf_over = overhead(Config::Bpftrace);
    for (i, threads) in THREADS.iter().enumerate() {
        let pick = |o: &Option<Vec<f64>>| o.as_ref().map(|o| o[i]);
        check(
            &format!("sampled overhead <= 1/3 of full ({threads}T)"),
            pick(&sampled_over).zip(pick(&full_over)).map(|(s, f)| (s, f, 1.0 / 3.0)),
        );
        check(
            &format!("sampled overhead <= 1/4 of bpftrace memleak ({threads}T)"),
            pick(&sampled_over).zip(pick(&bpf_over)).map(|(s, b)| (s, b, 0.25)),
        );
        let full = medians(timings, Config::Full).map(|m| m[i]);
        let bpf = medians(timings, Config::Bpftrace).map(|m| m[i]);
        match full.zip(bpf) {
            Some((f, b)) => println!(
                "  {:<6} full below bpftrace memleak ({threads}T): {f:.0} vs {b:.0} ns/pair",
                if f < b { "PASS" } else { "MISS" }
            ),
            None => println!("  n/a    full below bpftrace memleak ({threads}T): a configuration did not run"),
        }
    }
    print_ingest(ingest, usages.iter().find(|u| u.label == INGEST_PHASE));
    print_usage(usages);
    println!("\nprobe sites leakprobe chose (from status)");
    for site in sites {
        println!("  {site}");
    }
}

/// ns per operation (page fault, mapping) of one configuration: one vector of runs per thread count, or why it
/// could not run.
pub type OpTimes = Result<Vec<Vec<f64>>, String>;

/// A table of ns per operation with nothing attached and with tier 0, and the difference.
pub fn print_per_op(title: &str, pages: &[(&str, OpTimes)], runs: usize) {
    println!("\n{title}, median of {runs} runs\n");
    let mut t = table(&["CONFIG", "1 THREAD", "2 THREADS", "OVERHEAD 1T", "OVERHEAD 2T", "SPREAD 1T/2T"]);
    let base: Option<Vec<f64>> =
        pages.first().and_then(|(_, r)| r.as_ref().ok()).map(|t| t.iter().map(|r| median(r)).collect());
    for (label, result) in pages {
        let mut row = vec![(*label).to_owned()];
        match result {
            Err(err) => row.push(format!("did not run: {err}")),
            Ok(times) => {
                let medians: Vec<f64> = times.iter().map(|r| median(r)).collect();
                row.extend(medians.iter().map(|m| format!("{m:.0}")));
                for (i, m) in medians.iter().enumerate() {
                    row.push(base.as_ref().map_or("-".into(), |b| format!("{:+.0}", m - b[i])));
                }
                row.push(times.iter().map(|r| format!("{:.0}%", spread(r))).collect::<Vec<_>>().join("/"));
            }
        }
        t.add_row(row);
    }
    println!("{t}");
}

/// One `ours / theirs <= limit` target line, with the overheads compared.
fn check(what: &str, overheads: Option<(f64, f64, f64)>) {
    match overheads {
        Some((ours, theirs, limit)) => {
            let ratio = ours / theirs;
            let verdict = if ratio <= limit { "PASS" } else { "MISS" };
            println!("  {verdict:<6} {what}: {ratio:.2} (limit {limit:.2}; {ours:+.0} vs {theirs:+.0} ns/pair)");
        }
        None => println!("  n/a    {what}: a configuration did not run"),
    }
}

/// The label of the workload-driven ingest phase among the daemon's resource uses.
pub const INGEST_PHASE: &str = "leakprobe full, leaking workload";

/// The workload-driven ingest figure: bounded by how fast the workload allocates under the probes, so it is
/// shown, not checked against the ingest target (see [`print_end_to_end`]).
pub fn print_ingest(ingest: &[Ingest], usage: Option<&DaemonUse>) {
    if ingest.is_empty() {
        return;
    }
    let rates: Vec<f64> = ingest.iter().map(Ingest::rate).collect();
    let produced: Vec<f64> = ingest.iter().map(|i| i.produced).collect();
    let peaks: Vec<f64> = ingest.iter().map(|i| i.peak).collect();
    let lags: Vec<f64> = ingest.iter().map(|i| i.lag).collect();
    let drops: u64 = ingest.iter().map(|i| i.drops).sum();
    let live_full: u64 = ingest.iter().map(|i| i.live_map_full).sum();
    let events: u64 = ingest.iter().map(|i| i.events).sum();
    let rate = median(&rates);
    println!(
        "\nworkload under full-mode probes, {} runs (2 threads, malloc without free): measures how fast the workload",
        ingest.len()
    );
    println!(" allocates under uprobe traps (and the host's other processes with it), not the daemon's ingest");
    println!("  events/s processed, start to drained:  {rate:>12.0} (median; runs: {})", join(&rates));
    println!("  allocations/s the workload made:      {:>12.0} (median, under the probes)", median(&produced));
    println!("  peak events/s over {} ms:               {:>12.0} (median of the runs' peaks)", 50, median(&peaks));
    println!("  daemon lag after the workload's exit:  {:>11.2}s (median)", median(&lags));
    println!("  events {events}, ring-buffer drops {drops}, live_map_full {live_full}");
    if let Some(u) = usage.filter(|u| u.usage.cpu_seconds > 0.0) {
        println!(
            "  daemon capacity, events per CPU-second: {:>10.0} (all of the phase's events / the daemon's CPU time)",
            u.usage.events as f64 / u.usage.cpu_seconds
        );
    }
}

/// The end-to-end ingest searches per shape, and the ingest target.
pub fn print_end_to_end(shapes: &Result<Vec<super::ingest::Shape>, String>) {
    let shapes = match shapes {
        Ok(shapes) if !shapes.is_empty() => shapes,
        Ok(_) => return,
        Err(err) => {
            println!("\ningest end to end (leakprobe bench-ingest) did not run: {err}");
            println!("  n/a    ingest >= 1 M events/s end to end with zero drops");
            return;
        }
    };
    println!(
        "\ningest end to end (leakprobe bench-ingest): the eBPF generator fills the real ring buffer on one CPU, the \
         daemon's ingest and state tasks"
    );
    println!(" consume it on another; highest rate with zero drops (ringbuf_full_*), median of the searches");
    for shape in shapes {
        let rates: Vec<f64> = shape.runs.iter().map(|s| s.rate).collect();
        let limited = shape.runs.iter().filter(|s| s.generator_limited).count();
        println!(
            "  {:<6} {:>10.0} events/s (runs: {}); consumer {:.2} us CPU per event, {:.0}% of its core at that rate",
            shape.shape,
            shape.median(|s| s.rate),
            join(&rates),
            shape.median(|s| s.cpu_us_per_event),
            shape.median(|s| s.cpu_percent),
        );
        let dropping: Vec<f64> = shape.runs.iter().map(|s| s.lowest_dropping).collect();
        let steps: u64 = shape.runs.iter().map(|s| s.steps).sum();
        println!("         lowest rate that dropped: {} ({steps} steps in all)", join(&dropping));
        if limited > 0 {
            println!("         {limited} searches stopped at the generator's limit: the daemon's is higher");
        }
    }
    let slowest = shapes.iter().map(|s| s.median(|r| r.rate)).fold(f64::INFINITY, f64::min);
    let verdict = if slowest >= INGEST_TARGET { "PASS" } else { "MISS" };
    let each = shapes.iter().map(|s| format!("{:.2} M ({})", s.median(|r| r.rate) / 1e6, s.shape)).collect::<Vec<_>>();
    println!("  {verdict:<6} ingest >= 1 M events/s end to end with zero drops: {}", each.join(", "));
}

/// The in-process consumer rates, per event shape, and the ingest target on one core.
pub fn print_consumer(shapes: &[super::consumer::Consumer]) {
    println!("\nconsumer path in-process: decode + table update on one thread, no kernel (events per CPU-second)");
    for shape in shapes {
        println!(
            "  {:<6} {:>12.0} (median; runs: {}); one sample of the table afterwards {:.1} ms (median)",
            shape.shape,
            shape.median(),
            join(&shape.rates),
            median(&shape.tick_ms)
        );
    }
    let slowest = shapes.iter().map(super::consumer::Consumer::median).fold(f64::INFINITY, f64::min);
    if shapes.is_empty() {
        return;
    }
    let verdict = if slowest >= INGEST_TARGET { "PASS" } else { "MISS" };
    println!(
        "  {verdict:<6} consumer >= 1 M events per CPU-second on one core: {:.2} M (slowest shape)",
        slowest / 1e6
    );
}

fn join(values: &[f64]) -> String {
    values.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(", ")
}

pub fn print_usage(usages: &[DaemonUse]) {
    println!("\nleakprobe daemon: CPU over the phase's runs, peak RSS (VmHWM) over its life");
    let mut t = table(&["PHASE", "WALL S", "CPU S", "CPU %", "EVENTS", "US CPU/EVENT", "PEAK RSS MIB"]);
    for u in usages {
        let usage = &u.usage;
        t.add_row(vec![
            u.label.to_owned(),
            format!("{:.1}", usage.seconds),
            format!("{:.2}", usage.cpu_seconds),
            format!("{:.0}", 100.0 * usage.cpu_seconds / usage.seconds),
            usage.events.to_string(),
            if usage.events == 0 {
                "-".into()
            } else {
                format!("{:.2}", 1e6 * usage.cpu_seconds / usage.events as f64)
            },
            format!("{:.1}", usage.peak_rss_bytes as f64 / (1024.0 * 1024.0)),
        ]);
    }
    println!("{t}");
}

/// What the bench measured of `--unwind dwarf`.
#[derive(Debug, Default)]
pub struct Unwinding {
    /// From the status of the `leakprobe full --unwind dwarf` daemon after its runs.
    pub daemon: Option<DaemonUnwind>,
    /// The JSON line of `leakprobe bench-unwind`.
    pub micro: Option<Value>,
    /// The kernel unwinder's tables, from the status of the `leakprobe full` daemon after its runs.
    pub tables: Option<KernelTables>,
    /// `leakprobe bench-unwind --compile`: one JSON object per binary, or why it did not run.
    pub compile: Option<Result<Vec<Value>, String>>,
}

/// The kernel unwinder's tables and its frames, from a daemon's status.
#[derive(Debug)]
pub struct KernelTables {
    pub binaries: u64,
    pub bytes_used: u64,
    pub bytes_limit: u64,
    pub table_frames: u64,
    pub fallback_frames: u64,
    /// The largest binaries: (path, bytes).
    pub largest: Vec<(String, u64)>,
}

impl KernelTables {
    pub fn from_status(status: &Value) -> Self {
        let daemon = |name: &str| status["daemon_counters"][name].as_u64().unwrap_or(0);
        let kernel = |name: &str| status["kernel_counters"][name].as_u64().unwrap_or(0);
        let tables = status["discovery"]["unwind_tables"].as_array().cloned().unwrap_or_default();
        let mut largest: Vec<(String, u64)> = tables
            .iter()
            .map(|t| (t["path"].as_str().unwrap_or("").to_owned(), t["bytes"].as_u64().unwrap_or(0)))
            .collect();
        largest.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
        largest.truncate(3);
        Self {
            binaries: daemon("unwind_tables_binaries_loaded"),
            bytes_used: daemon("unwind_tables_bytes_used"),
            bytes_limit: daemon("unwind_tables_bytes_limit"),
            table_frames: kernel("unwind_table_frames"),
            fallback_frames: ["no_process", "no_mapping", "no_binary", "no_rule"]
                .iter()
                .map(|r| kernel(&format!("unwind_fp_{r}")))
                .sum(),
            largest,
        }
    }
}

/// Row labels of tier 0 per operation.
pub const TIER0_TABLES: &str = "leakprobe tier 0 (auto, kernel tables)";
pub const TIER0_FP: &str = "leakprobe tier 0 (auto) --unwind fp";

/// Tier 0's cost per page fault with the table walk over frame pointers (target: at most +150 ns).
pub fn print_tier0_unwinding(pages: &[(&str, OpTimes)]) {
    let median_of = |label: &str| -> Option<Vec<f64>> {
        let (_, times) = pages.iter().find(|(l, _)| *l == label)?;
        times.as_ref().ok().map(|runs| runs.iter().map(|r| median(r)).collect())
    };
    let line =
        median_of(TIER0_TABLES).zip(median_of(TIER0_FP)).map_or("a configuration did not run".into(), |(t, f)| {
            t.iter()
                .zip(&f)
                .zip(THREADS)
                .map(|((t, f), n)| format!("{:+.0} ns ({n}T)", t - f))
                .collect::<Vec<_>>()
                .join(", ")
        });
    println!("  tier 0 per page fault, kernel tables - frame pointers (target at most +150 ns): {line}");
}

/// The unwinding a daemon did, from its status.
#[derive(Debug)]
pub struct DaemonUnwind {
    pub stacks: u64,
    pub truncated: u64,
    pub incomplete: u64,
    pub seconds: f64,
    pub ringbuf_full: u64,
}

impl DaemonUnwind {
    pub fn from_status(status: &Value) -> Self {
        let daemon = |name: &str| status["daemon_counters"][name].as_u64().unwrap_or(0);
        Self {
            stacks: daemon("stacks_dwarf"),
            truncated: daemon("stacks_dwarf_truncated"),
            incomplete: daemon("stacks_dwarf_incomplete"),
            seconds: status["unwind"]["unwind_seconds"].as_f64().unwrap_or(0.0),
            ringbuf_full: status["kernel_counters"]["ringbuf_full_alloc"].as_u64().unwrap_or(0),
        }
    }
}

/// The cost of stack copies in the kernel and of unwinding in the daemon.
pub fn print_unwinding(timings: &[Timing], unwinding: &Unwinding) {
    println!("\nunwinding without frame pointers (kernel tables, the default; --unwind dwarf, 16KiB stack copies)");
    let ratio = medians(timings, Config::Full).zip(medians(timings, Config::FullFp)).map_or_else(
        || "a configuration did not run".to_owned(),
        |(t, f)| {
            t.iter()
                .zip(&f)
                .zip(THREADS)
                .map(|((t, f), n)| format!("{:.2}x ({n}T)", t / f))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    println!("  full mode per pair, kernel tables / frame pointers (target at most 1.2x): {ratio}");
    if let Some(t) = &unwinding.tables {
        println!(
            "  kernel tables: {} binaries, {} of {} bytes; frames by table {}, by frame-pointer fallback {}",
            t.binaries, t.bytes_used, t.bytes_limit, t.table_frames, t.fallback_frames
        );
        for (path, bytes) in &t.largest {
            println!("    {bytes:>10} bytes  {path}");
        }
    }
    let delta = |with: Config, without: Config| -> Option<Vec<f64>> {
        let (a, b) = (medians(timings, with)?, medians(timings, without)?);
        Some(a.iter().zip(&b).map(|(a, b)| a - b).collect())
    };
    let show = |d: Option<Vec<f64>>| {
        d.map_or("a configuration did not run".into(), |d| {
            d.iter().zip(THREADS).map(|(d, t)| format!("{d:+.0} ns ({t}T)")).collect::<Vec<_>>().join(", ")
        })
    };
    println!(
        "  stack copy per reported allocation (full dwarf - full fp, per pair):   {}",
        show(delta(Config::FullDwarf, Config::FullFp))
    );
    println!(
        "  default sampled mode, dwarf - fp at 512KiB (per pair):                 {}",
        show(delta(Config::Sampled, Config::SampledFp))
    );
    if let Some(d) = &unwinding.daemon {
        let per_stack = if d.stacks > 0 { d.seconds * 1e9 / d.stacks as f64 } else { 0.0 };
        println!(
            "  daemon unwind per stack during full dwarf (mean): {per_stack:>8.0} ns over {} stacks \
             ({} truncated, {} incomplete; ring-buffer drops {})",
            d.stacks, d.truncated, d.incomplete, d.ringbuf_full
        );
    }
    match &unwinding.compile {
        None => {}
        Some(Ok(files)) => {
            println!("  compiling a binary's tables into kernel rows (median of 5), before its first walk by them:");
            for f in files {
                println!(
                    "    {:>9.1} ms  {:>9} table bytes -> {:>9} row bytes  {}",
                    f["median_ms"].as_f64().unwrap_or(f64::NAN),
                    f["table_bytes"],
                    f["row_bytes"],
                    f["file"].as_str().unwrap_or("?"),
                );
            }
        }
        Some(Err(err)) => println!("  compiling tables: did not run: {err}"),
    }
    if let Some(m) = &unwinding.micro {
        println!(
            "  micro-benchmark, one {}-frame stack (median): warm {:.0} ns, framehop rule cache cold {:.0} ns; \
             first stack of a process (maps and tables read) {:.1} ms",
            m["frames"],
            m["warm_ns_per_stack"].as_f64().unwrap_or(f64::NAN),
            m["cold_rule_cache_ns_per_stack"].as_f64().unwrap_or(f64::NAN),
            m["first_unwind_ns"].as_f64().unwrap_or(f64::NAN) / 1e6,
        );
    }
}
