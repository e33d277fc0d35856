//! `cargo xtask kernels`: the static release binary on Debian 12's own kernels, booted under qemu by virtme-ng.
//!
//! Kernels: the newest `linux-image-6.1.0-N-amd64` (bookworm's stock 6.1) and the newest
//! `linux-image-6.12.N+deb12-amd64`, fetched with `apt-get download` and unpacked with `dpkg-deb -x` (never
//! installed) into `target/kernels/PACKAGE/`, where later runs find them. The generic flavour: `-cloud` lacks 9p.
//! Each boots with `vng --run VMLINUZ --disable-kvm --force-9p` (software emulation unless `/dev/kvm` is usable);
//! the guest's root is the host's, read-only, and `xtask/scripts/kernel-guest.sh` writes what it sees into a
//! shared directory. virtme-ng exits 255 even on success, so the verdict is the host's, from those files: the
//! daemon started with defaults and with `--mode full --malloc-probes all`; the leaker's leaks exactly; tier 0
//! escalated a steady leaker by itself; the OOM kill in a memory cgroup reported with its stack; after SIGTERM,
//! exit 0 and none of the daemon's eBPF programs or links left.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use serde_json::Value;

use crate::{
    setup::{check, output, step},
    ship::{own_group, wait_or_kill},
};

const GUEST_SCRIPT: &str = include_str!("../scripts/kernel-guest.sh");
/// Package name patterns (for `apt-cache search --names-only`), newest first after a version sort.
const KERNELS: [(&str, &str); 2] =
    [("6.1", r"^linux-image-6\.1\.0-[0-9]+-amd64$"), ("6.12", r"^linux-image-6\.12\.[0-9]+\+deb12-amd64$")];
/// The leaker's exact leaks (tests/fixtures/leaker.c, mode `basic`): function, bytes, count.
const EXACT: [(&str, u64, u64); 3] = [("leak_alpha", 10_000, 10), ("leak_beta", 20_480, 5), ("fence", 4321, 1)];

/// One kernel's outcome.
pub struct Outcome {
    /// The kernel's release as the guest's `uname -r` printed it, or the package's when the guest never ran.
    pub name: String,
    pub release: String,
    pub took: Duration,
    pub failures: Vec<String>,
    /// Passed on a second boot: the first one's failures.
    pub flaky: Option<String>,
}

/// Runs the matrix with the static binary `binary`; prints one line per kernel; fails if any check failed.
pub fn kernels(root: &Path, binary: &Path) -> Result<()> {
    let cache = root.join("target").join("kernels");
    let fixtures = build_fixtures(root, &cache)?;
    let vmlinuzes = KERNELS
        .iter()
        .map(|(series, pattern)| kernel(&cache, pattern).with_context(|| format!("the {series} kernel")))
        .collect::<Result<Vec<_>>>()?;
    // The guests boot side by side: each spends much of its time waiting (boot, polls, detaching), so two
    // emulated guests on two cores take little more than the slower one.
    let outcomes = std::thread::scope(|scope| {
        let guests: Vec<_> =
            vmlinuzes.iter().map(|vmlinuz| scope.spawn(|| boot(&cache, vmlinuz, binary, &fixtures))).collect();
        guests
            .into_iter()
            .map(|guest| guest.join().unwrap_or_else(|_| Err(anyhow!("a guest's thread panicked"))))
            .collect::<Result<Vec<_>>>()
    })?;
    // As nextest retries a test once: a guest that failed boots once more, alone, and a pass then is flaky,
    // printed with the first run's failures.
    let mut outcomes = outcomes;
    for (outcome, vmlinuz) in outcomes.iter_mut().zip(&vmlinuzes) {
        if outcome.failures.is_empty() {
            continue;
        }
        step(&format!("kernel {}: failed ({}); booting it once more", outcome.name, outcome.failures.join("; ")));
        let again = boot(&cache, vmlinuz, binary, &fixtures)?;
        let first = outcome.failures.join("; ");
        *outcome = again;
        if outcome.failures.is_empty() {
            outcome.flaky = Some(first);
        }
    }
    summarize(&outcomes)
}

/// Judges again what the last run's guests wrote (`target/kernels/out-*`), without booting anything.
pub fn judge_again(root: &Path) -> Result<()> {
    let cache = root.join("target").join("kernels");
    let mut outcomes = Vec::new();
    for entry in fs::read_dir(&cache)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("out-")) else {
            continue;
        };
        let release = fs::read_to_string(path.join("release")).map(|r| r.trim().to_owned()).unwrap_or_default();
        let name = name.to_owned();
        outcomes.push(Outcome { name, release, took: Duration::ZERO, failures: judge(&path), flaky: None });
    }
    summarize(&outcomes)
}

fn summarize(outcomes: &[Outcome]) -> Result<()> {
    let mut summary = String::from("kernel matrix:\n");
    for outcome in outcomes {
        let verdict = match (&outcome.failures[..], &outcome.flaky) {
            ([], None) => "ok".to_owned(),
            ([], Some(first)) => format!("ok, FLAKY (the first boot: {first})"),
            (failures, _) => failures.join("; "),
        };
        let _ = writeln!(summary, "  {:<26} {:>6.0?}  {verdict}", outcome.name, outcome.took);
    }
    println!("{summary}");
    ensure!(outcomes.iter().all(|o| o.failures.is_empty()), "the kernel matrix failed");
    Ok(())
}

/// The fixtures the guest runs, built from `tests/fixtures/` as `tests/build.rs` builds them.
fn build_fixtures(root: &Path, cache: &Path) -> Result<PathBuf> {
    let dir = cache.join("fixtures");
    fs::create_dir_all(&dir)?;
    for name in ["leaker", "tier0"] {
        let source = root.join("tests/fixtures").join(format!("{name}.c"));
        check(
            Command::new("gcc")
                .args([
                    "-O2",
                    "-g",
                    "-fno-omit-frame-pointer",
                    "-fno-optimize-sibling-calls",
                    "-fno-builtin",
                    "-pthread",
                ])
                .arg("-o")
                .arg(dir.join(name))
                .arg(source),
        )?;
    }
    Ok(dir)
}

/// The newest package matching `pattern`, unpacked under `cache` (once); returns its vmlinuz.
fn kernel(cache: &Path, pattern: &str) -> Result<PathBuf> {
    let mut names: Vec<String> = output(Command::new("apt-cache").args(["search", "--names-only", pattern]))?
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    if names.is_empty() {
        check(Command::new("apt-get").arg("update").stdout(Stdio::null()))?;
        names = output(Command::new("apt-cache").args(["search", "--names-only", pattern]))?
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
    }
    names.sort_by_key(|name| version_key(name));
    let package = names.pop().with_context(|| format!("no package matches {pattern}"))?;
    let release = package.trim_start_matches("linux-image-").to_owned();
    let dir = cache.join(&package);
    let vmlinuz = dir.join("boot").join(format!("vmlinuz-{release}"));
    if vmlinuz.exists() {
        return Ok(vmlinuz);
    }
    step(&format!("downloading {package} (kernel matrix; cached in {})", dir.display()));
    let download = cache.join("download");
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download)?;
    check(Command::new("apt-get").args(["download", &package]).current_dir(&download).stdout(Stdio::null()))?;
    let deb = fs::read_dir(&download)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let tmp = cache.join(format!("{package}.tmp"));
    let _ = fs::remove_dir_all(&tmp);
    check(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
    fs::rename(&tmp, &dir)?;
    let _ = fs::remove_dir_all(&download);
    Ok(vmlinuz)
}

/// The numbers in a package name, for a version sort (`6.12.9` before `6.12.118`).
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect()
}

/// Boots `vmlinuz` with the guest script, with KVM when `/dev/kvm` opens and works, else under software
/// emulation; judges what the guest wrote.
fn boot(cache: &Path, vmlinuz: &Path, binary: &Path, fixtures: &Path) -> Result<Outcome> {
    let kvm = fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    if kvm {
        let outcome = boot_with(cache, vmlinuz, binary, fixtures, true)?;
        // A /dev/kvm that opens may still fail at once (nested virtualization refusing an MSR): qemu exits before
        // the guest wrote anything.
        if !outcome.failures.is_empty() && outcome.release.is_empty() {
            step("KVM did not boot the guest: again under software emulation");
        } else {
            return Ok(outcome);
        }
    }
    boot_with(cache, vmlinuz, binary, fixtures, false)
}

fn boot_with(cache: &Path, vmlinuz: &Path, binary: &Path, fixtures: &Path, kvm: bool) -> Result<Outcome> {
    let name = vmlinuz.file_name().and_then(|n| n.to_str()).unwrap_or("vmlinuz").trim_start_matches("vmlinuz-");
    let out = cache.join(format!("out-{name}"));
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out)?;
    let script = cache.join("kernel-guest.sh");
    fs::write(&script, GUEST_SCRIPT)?;
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let exec = format!("{} {} {} {}", script.display(), out.display(), binary.display(), fixtures.display());
    let console = fs::File::create(out.join("console.log"))?;
    let mut vng = Command::new("vng");
    vng.arg("--run").arg(vmlinuz);
    if !kvm {
        vng.arg("--disable-kvm");
    }
    vng.args(["--force-9p", "--memory", "2G", "--cpus", "2", "--verbose", "--rwdir"])
        .arg(&out)
        .args(["--exec", &exec])
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console);
    step(&format!("booting {name} ({})", if kvm { "KVM" } else { "software emulation" }));
    let started = Instant::now();
    let mut child = own_group(&mut vng).spawn().context("vng (virtme-ng; setup installs it)")?;
    // virtme-ng's exit status is 255 even on success: only the files count.
    let waited = wait_or_kill(&mut child, Duration::from_mins(15), "the guest");
    let took = started.elapsed();
    let mut failures = judge(&out);
    if let Err(err) = waited {
        failures.push(err.to_string());
    }
    // Empty when the guest never ran its script.
    let release = fs::read_to_string(out.join("release")).map(|r| r.trim().to_owned()).unwrap_or_default();
    if !failures.is_empty() {
        // CI keeps no files: the console's end goes into the task's output.
        let console = fs::read_to_string(out.join("console.log")).unwrap_or_default();
        let tail: Vec<&str> = console.lines().rev().take(30).collect();
        eprintln!(
            "kernel {name}: files in {}: the console in console.log (and the kernel's messages as the guest saw \
             them in kmsg.log), the guest's trace in guest.log; the console's last lines:\n{}",
            out.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let name = if release.is_empty() { name.to_owned() } else { release.clone() };
    Ok(Outcome { name, release, took, failures, flaky: None })
}

/// What the guest wrote must show every check passing; returns the failures.
fn judge(out: &Path) -> Vec<String> {
    let mut failures = Vec::new();
    let read = |name: &str| fs::read_to_string(out.join(name)).unwrap_or_default();
    let json = |name: &str| serde_json::from_str::<Value>(&read(name)).unwrap_or(Value::Null);
    if read("done").trim() != "done" {
        failures.push("the guest did not finish its script".to_owned());
    }
    for daemon in ["defaults", "full"] {
        let status = json(&format!("{daemon}-status.json"));
        if status["pid"].as_u64().is_none() {
            failures.push(format!("{daemon}: no status"));
        }
        if read(&format!("{daemon}-exit")).trim() != "0" {
            failures.push(format!("{daemon}: exit {:?} after SIGTERM", read(&format!("{daemon}-exit")).trim()));
        }
        if read(&format!("{daemon}-held")).lines().count() == 0 {
            failures.push(format!("{daemon}: held no eBPF object"));
        }
        let left = read(&format!("{daemon}-left"));
        if !left.trim().is_empty() {
            failures.push(format!("{daemon}: left {} after SIGTERM", left.lines().collect::<Vec<_>>().join(", ")));
        }
    }
    if let Err(err) = judge_escalation(&read("tier0-pid"), &read("defaults.log"), &read("escalated-top.txt")) {
        failures.push(err.to_string());
    }
    if let Err(err) = judge_exact(&read("leaker-pid"), &json("leaker-top.json")) {
        failures.push(err.to_string());
    }
    if let Err(err) = judge_oom(&read("oom-pid"), &json("oom-report.json")) {
        failures.push(err.to_string());
    }
    failures
}

fn pid_of(text: &str) -> Result<u64> {
    text.trim().parse().with_context(|| format!("no pid written ({text:?})"))
}

/// Tier 0 alone escalated the fixture: the daemon logged it, and tier 1 then saw `loop_leak` (nothing else
/// traces the fixture: no `trace`). Not `tier1.escalated` at the end: under emulation the CPU budget may
/// detach the probes again (logged), which is the budget at work.
fn judge_escalation(pid: &str, log: &str, top: &str) -> Result<()> {
    let pid = pid_of(pid)?;
    let line = format!("tier 1: pid {pid}: malloc probes attaching");
    ensure!(
        log.lines().any(|l| l.contains(&line) && l.ends_with("(tier 0)")),
        "tier-0 escalation: no \"{line} ... (tier 0)\" in the log"
    );
    ensure!(top.contains("loop_leak"), "tier-0 escalation: tier 1 never showed loop_leak");
    Ok(())
}

fn judge_exact(pid: &str, top: &Value) -> Result<()> {
    let pid = pid_of(pid)?;
    let stacks = top["stacks"].as_array().context("leaker: no stacks")?;
    for (function, bytes, count) in EXACT {
        let found = stacks
            .iter()
            .find(|s| s["pid"].as_u64() == Some(pid) && s["frames"][0]["function"].as_str() == Some(function));
        let Some(stack) = found else { bail!("leaker: no {function} stack") };
        let (live, n) = (stack["live_bytes"].as_u64(), stack["live_count"].as_u64());
        ensure!(
            live == Some(bytes) && n == Some(count),
            "leaker: {function} {live:?} B in {n:?}, not {bytes} in {count}"
        );
    }
    Ok(())
}

fn judge_oom(pid: &str, report: &Value) -> Result<()> {
    let pid = pid_of(pid)?;
    ensure!(report["pid"].as_u64() == Some(pid), "OOM: no report for the leaker");
    let top = &report["stacks_by_live_bytes"][0];
    ensure!(
        top["frames"][0]["function"].as_str() == Some("leak_until_killed"),
        "OOM: top stack {}",
        top["frames"][0]["function"]
    );
    let live = top["live_bytes"].as_u64().unwrap_or(0);
    ensure!((30 << 20..=64 << 20).contains(&live), "OOM: {live} bytes live at the kill, not 30-64 MiB");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_packages_sort_by_version() {
        let mut names = ["linux-image-6.12.118+deb12-amd64", "linux-image-6.12.9+deb12-amd64"];
        names.sort_by_key(|n| version_key(n));
        assert_eq!(names.last(), Some(&"linux-image-6.12.118+deb12-amd64"));
    }

    #[test]
    fn an_empty_output_directory_fails_every_check() {
        let dir = std::env::temp_dir().join(format!("xtask-judge-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let failures = judge(&dir);
        let _ = fs::remove_dir_all(&dir);
        assert!(failures.len() >= 8, "{failures:?}");
    }
}
