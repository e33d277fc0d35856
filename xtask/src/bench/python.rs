//! `cargo xtask bench --only-python`: the per-allocation cost of the Python frame walk. A Python 3.11 churn
//! (`xtask/bench/python_churn.py`: `bytes(4096)` made and dropped from 10 Python frames deep, one `malloc` and
//! one `free` each) runs with nothing attached, under `leakprobe run --mode full --malloc-probes all --pid PID`
//! (only the workload traced) with the Python frames, and with `--no-python-frames`, runs alternating. The difference between the
//! last two, per allocation carrying Python frames (the kernel's `py_stacks` over the objects made), is the
//! walk's cost, the splicing in the daemon aside (it runs on the daemon's own CPU).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::Path,
    process::{Command, Stdio},
};

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
    let configs: [(&'static str, Option<&[&str]>); 3] = [
        ("nothing attached", None),
        ("leakprobe full --pid, Python frames", Some(&[])),
        ("leakprobe full --pid --no-python-frames", Some(&["--no-python-frames"])),
    ];
    let mut rows: Vec<Row> =
        configs.iter().map(|&(label, _)| Row { label, times: Ok(Vec::new()), py_stacks: Some(0) }).collect();
    // Runs alternate between the configurations, so that a busy spell of the machine falls on all of them.
    for _ in 0..args.runs {
        for (row, &(_, flags)) in rows.iter_mut().zip(&configs) {
            let Ok(times) = &mut row.times else { continue };
            match undisturbed(args.no_wait, || run_once(leakprobe, dir, &script, args, flags)) {
                Ok((ns, py_stacks)) => {
                    times.push(ns);
                    row.py_stacks = row.py_stacks.zip(py_stacks).map(|(a, b)| a + b);
                }
                Err(err) => row.times = Err(format!("{err:#}")),
            }
        }
    }
    print(&rows, args);
    Ok(())
}

/// One run: the workload started and waiting, a daemon tracing only it (`flags`: `None`, no daemon), the
/// objects made; ns per object and the daemon's kernel `py_stacks` over the run.
fn run_once(
    leakprobe: &Path,
    dir: &Path,
    script: &Path,
    args: &BenchArgs,
    flags: Option<&[&str]>,
) -> Result<(f64, Option<u64>)> {
    let mut child = Command::new(PYTHON)
        .arg(script)
        .arg(args.pairs.to_string())
        .arg(DEPTH.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the Python workload")?;
    let mut stdout = BufReader::new(child.stdout.take().context("workload stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    let result = (|| {
        let pid = child.id().to_string();
        let daemon = match flags {
            None => None,
            Some(flags) => {
                wait_quiet(args.no_wait);
                let mut all = vec!["--pid", pid.as_str()];
                all.extend_from_slice(flags);
                Some(Daemon::start(leakprobe, dir, "python", "full", &all)?)
            }
        };
        // Discovery registers the interpreter in its start-up scan, before the socket answers.
        let before = daemon.as_ref().map(py_stacks).transpose()?;
        child.stdin.take().context("workload stdin")?.write_all(b"go\n")?;
        let mut out = String::new();
        stdout.read_to_string(&mut out)?;
        let after = daemon.as_ref().map(py_stacks).transpose()?;
        if let Some(daemon) = daemon {
            daemon.stop()?;
        }
        let ns = workload::field(&out, "ns_per_object")?;
        Ok((ns, after.zip(before).map(|(a, b)| a.saturating_sub(b))))
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// The kernel's `py_stacks`; a daemon busy with a backlog may take more than the 10 s a status read waits:
/// asked again for up to two minutes.
fn py_stacks(daemon: &Daemon) -> Result<u64> {
    let mut tries = 0;
    let status = loop {
        match daemon.status() {
            Ok(status) => break status,
            Err(err) if tries < 12 => {
                eprintln!("bench: status: {err:#}: asking again");
                tries += 1;
            }
            Err(err) => return Err(err),
        }
    };
    status["kernel_counters"]["py_stacks"].as_u64().context("status has no kernel_counters.py_stacks")
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
    // Records with Python frames per object: `py_stacks` of the row's runs over its objects.
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
