//! `cargo xtask bench --only-python`: the per-allocation cost of the Python frame walk. A Python 3.11 churn
//! (`xtask/bench/python_churn.py`: `bytes(4096)` made and dropped from 10 Python frames deep, one `malloc` and
//! one `free` each) runs with nothing attached, then under `leakprobe run --mode full --malloc-probes all`
//! with the Python frames, and under the same daemon with `--no-python-frames`. The difference between the
//! last two, per allocation carrying Python frames (the kernel's `py_stacks` over the objects made), is the
//! walk's cost, the splicing in the daemon aside (it runs on the daemon's own CPU).

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context as _, Result, bail};

use super::{BenchArgs, daemon::Daemon, report, undisturbed, wait_quiet, workload};

/// The interpreter measured: Debian's, the one the tests use.
const PYTHON: &str = "/usr/bin/python3.11";
/// Nested calls above the churn: with `churn`, `main` and `<module>`, 10 Python frames per allocation.
const DEPTH: u32 = 8;

/// One configuration's ns per object, one per run, or why it could not run; and the records with Python
/// frames the daemon's kernel counted over its runs.
struct Row {
    label: &'static str,
    times: Result<Vec<f64>, String>,
    py_stacks: Option<u64>,
}

/// `--runs` runs of `--pairs` objects each under the three configurations, and the table.
pub fn bench(leakprobe: &Path, dir: &Path, args: &BenchArgs) -> Result<()> {
    if !Path::new(PYTHON).exists() {
        bail!("{PYTHON} is not installed (cargo xtask setup installs it)");
    }
    let script = dir.join("python_churn.py");
    std::fs::write(&script, include_str!("../../bench/python_churn.py")).context("writing the Python workload")?;
    eprintln!("bench: the Python frame walk ({} runs of {} objects, {PYTHON})", args.runs, args.pairs);
    let base = Row { label: "nothing attached", times: runs(&script, args), py_stacks: None };
    let with = under(leakprobe, dir, &script, args, "python", "leakprobe full, Python frames", &[])?;
    let without = under(
        leakprobe,
        dir,
        &script,
        args,
        "python-off",
        "leakprobe full --no-python-frames",
        &["--no-python-frames"],
    )?;
    print(&[base, with, without], args);
    Ok(())
}

fn under(
    leakprobe: &Path,
    dir: &Path,
    script: &Path,
    args: &BenchArgs,
    name: &str,
    label: &'static str,
    flags: &[&str],
) -> Result<Row> {
    wait_quiet(args.no_wait);
    let daemon = Daemon::start(leakprobe, dir, name, "full", flags)?;
    let before = py_stacks(&daemon)?;
    let times = runs(script, args);
    let after = py_stacks(&daemon)?;
    daemon.stop()?;
    Ok(Row { label, times, py_stacks: Some(after.saturating_sub(before)) })
}

fn py_stacks(daemon: &Daemon) -> Result<u64> {
    let status = daemon.status()?;
    status["kernel_counters"]["py_stacks"].as_u64().context("status has no kernel_counters.py_stacks")
}

fn runs(script: &Path, args: &BenchArgs) -> Result<Vec<f64>, String> {
    (0..args.runs)
        .map(|_| {
            let mut cmd = Command::new(PYTHON);
            cmd.arg(script).arg(args.pairs.to_string()).arg(DEPTH.to_string());
            let out = undisturbed(args.no_wait, || workload::run(&mut cmd, Duration::from_mins(5)))?;
            workload::field(&out, "ns_per_object")
        })
        .collect::<Result<Vec<_>>>()
        .map_err(|e| format!("{e:#}"))
}

fn print(rows: &[Row], args: &BenchArgs) {
    println!(
        "\nns per bytes(4096) made and dropped in Python 3.11, {} Python frames deep, median of {} runs of {}",
        DEPTH + 2,
        args.runs,
        args.pairs
    );
    let mut t = report::table(&["CONFIG", "NS/OBJECT", "OVERHEAD", "SPREAD", "PY STACKS/OBJECT"]);
    let base = rows.first().and_then(|r| r.times.as_ref().ok()).map(|t| report::median(t));
    let objects = args.pairs as f64 * args.runs as f64;
    for row in rows {
        let mut cells = vec![row.label.to_owned()];
        match &row.times {
            Err(err) => cells.push(format!("did not run: {err}")),
            Ok(times) => {
                let m = report::median(times);
                cells.push(format!("{m:.0}"));
                cells.push(base.map_or("-".into(), |b| format!("{:+.0}", m - b)));
                cells.push(format!("{:.0}%", report::spread(times)));
                cells.push(row.py_stacks.map_or("-".into(), |n| format!("{:.2}", n as f64 / objects)));
            }
        }
        t.add_row(cells);
    }
    println!("{t}");
    let median_of = |i: usize| rows.get(i).and_then(|r| r.times.as_ref().ok()).map(|t| report::median(t));
    let per_walk = rows.get(1).and_then(|r| r.py_stacks).map(|n| n as f64 / objects).filter(|&n| n > 0.0);
    match (median_of(1), median_of(2), per_walk) {
        (Some(with), Some(without), Some(walks)) => println!(
            "the Python frame walk: {:+.0} ns per allocation with Python frames ({with:.0} - {without:.0} ns per \
             object, {walks:.2} allocations with Python frames per object)",
            (with - without) / walks
        ),
        _ => println!("the Python frame walk: n/a (a configuration did not run, or no record had Python frames)"),
    }
}
