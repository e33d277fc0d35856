//! `leakprobe bench-unwind` (hidden; run by `cargo xtask bench`): the daemon's unwinding cost per stack,
//! measured on this process's own stack (real frames of a real binary and of libc, no probe); with
//! `--compile FILE...`, what compiling each file's unwind tables for the kernel unwinder costs instead.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use clap::Args;
use leakprobe_common::MAX_FRAMES;

use crate::unwind::{Outcome, UnwindLimits, Unwinder, own, rows};

#[derive(Debug, Args)]
pub struct BenchUnwindArgs {
    /// Calls between the thread's entry and the captured frame.
    #[arg(long, default_value_t = 20)]
    depth: u32,
    /// Bytes of stack copied, as `run --stack-copy`.
    #[arg(long, default_value_t = 16 << 10)]
    copy: usize,
    /// Timed samples; the median is reported.
    #[arg(long, default_value_t = 31)]
    samples: usize,
    /// Unwinds per sample.
    #[arg(long, default_value_t = 2_000)]
    batch: u32,
    /// Instead of unwinding: compile each file's unwind tables (`.eh_frame`, `.debug_frame`) into the kernel
    /// unwinder's rows `--samples` times, and print one JSON object per file (table bytes, rows, median ms).
    #[arg(long, num_args = 1..)]
    compile: Vec<PathBuf>,
}

/// Prints one JSON object: frames, the first unwind of the process (maps and tables read), and medians of a
/// warm unwind (every cache hot) and of an unwind with framehop's rule cache cold (modules and tables kept).
pub fn run(args: &BenchUnwindArgs) -> Result<()> {
    ensure!(args.samples > 0 && args.batch > 0, "--samples and --batch must be positive");
    if !args.compile.is_empty() {
        return compile(&args.compile, args.samples);
    }
    let (depth, copy) = (args.depth, args.copy);
    // A thread of its own with a large stack: the copy is well inside it.
    let (regs, stack) = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || own::capture_at_depth(depth, copy))
        .context("starting the capture thread")?
        .join()
        .map_err(|_| anyhow::anyhow!("the capture thread panicked"))?;
    let pid = std::process::id();
    let mut frames = [0u64; MAX_FRAMES];
    let mut unwinder = Unwinder::new(UnwindLimits::default(), Arc::default());
    let started = Instant::now();
    let (n, outcome) = unwinder.unwind(pid, &regs, &stack, &mut frames);
    let first = started.elapsed();
    ensure!(outcome != Outcome::Incomplete, "the own stack did not unwind ({n} frames)");
    let warm = median_ns(args, || {
        unwinder.unwind(pid, &regs, &stack, &mut frames);
    });
    let cold_rules = median_ns(args, || {
        unwinder.clear_rule_cache();
        unwinder.unwind(pid, &regs, &stack, &mut frames);
    });
    let report = serde_json::json!({
        "frames": n,
        "outcome": format!("{outcome:?}"),
        "stack_copy_bytes": stack.len(),
        "first_unwind_ns": u64::try_from(first.as_nanos()).unwrap_or(u64::MAX),
        "warm_ns_per_stack": warm,
        "cold_rule_cache_ns_per_stack": cold_rules,
    });
    println!("{report}");
    Ok(())
}

/// Prints, for each file, its table bytes, the rows compiled and the median time of `samples` compilations
/// (what the discovery thread spends on the file when a process maps it first, before its rows are loaded).
fn compile(files: &[PathBuf], samples: usize) -> Result<()> {
    for path in files {
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: a read-only private mapping of a file nobody rewrites during the benchmark.
        let data = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
        let table_bytes = rows::table_bytes(&data).with_context(|| format!("reading {}", path.display()))?;
        let mut nrows = 0;
        let mut times: Vec<f64> = (0..samples)
            .map(|_| {
                let started = Instant::now();
                let compiled = rows::compile(&data).with_context(|| format!("compiling {}", path.display()))?;
                nrows = compiled.rows.len();
                Ok(duration_ns(started.elapsed()) / 1e6)
            })
            .collect::<Result<_>>()?;
        times.sort_by(f64::total_cmp);
        let report = serde_json::json!({
            "file": path.display().to_string(),
            "file_bytes": data.len(),
            "table_bytes": table_bytes,
            "rows": nrows,
            "row_bytes": nrows * size_of::<leakprobe_common::UnwindRow>(),
            "median_ms": times[times.len() / 2],
        });
        println!("{report}");
    }
    Ok(())
}

/// Median over `args.samples` of the time per call of `f`, in ns.
fn median_ns(args: &BenchUnwindArgs, mut f: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..args.samples)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..args.batch {
                f();
            }
            duration_ns(started.elapsed()) / f64::from(args.batch)
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

#[expect(clippy::cast_precision_loss, reason = "a duration of a benchmark sample, in ns")]
fn duration_ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}
