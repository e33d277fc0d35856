//! `--java-perfmap`: asks an escalated or traced JVM for its perf map (`jcmd PID Compiler.perfmap`, JDK 17+),
//! so that compiled Java frames are named (see docs/languages.md). Opt-in: it runs a program (the JVM's own
//! `jcmd`) as the target's user, which attaches to the JVM.
//!
//! The command runs on a thread of its own, bounded in time ([`TIMEOUT`]); the target's user and group, in the
//! target's mount and pid namespaces when they are not the daemon's (through `nsenter`), with the target's own
//! `jcmd` (next to its `java`). `HotSpot` writes the map of what is compiled at that moment: it is asked again
//! every [`REASK`] while the process stays escalated, to name what was compiled since.

use std::{
    fs,
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// How long `jcmd` may run before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(20);
/// How often an escalated JVM is asked again.
pub const REASK: Duration = Duration::from_secs(30);

/// Whether `pid` runs a `HotSpot` JVM (it maps `libjvm.so`).
pub fn is_jvm(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|maps| maps.contains("/libjvm.so"))
}

/// How to run the target's `jcmd`, as the target sees its files.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    program: PathBuf,
    args: Vec<String>,
    uid: u32,
    gid: u32,
}

/// The command that asks JVM `pid` for its perf map, or why there is none.
fn plan(pid: u32) -> Result<Plan, String> {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let meta = fs::metadata(&proc_dir).map_err(|e| format!("{}: {e}", proc_dir.display()))?;
    let exe = fs::read_link(proc_dir.join("exe")).map_err(|e| format!("the JVM's executable: {e}"))?;
    let jcmd = exe.with_file_name("jcmd");
    let status = fs::read_to_string(proc_dir.join("status")).map_err(|e| format!("its status: {e}"))?;
    let ns_pid = crate::procfs::parse_ns_pid(&status).unwrap_or(pid);
    let same_ns = |ns: &str| {
        fs::read_link(format!("/proc/self/ns/{ns}")).ok() == fs::read_link(proc_dir.join("ns").join(ns)).ok()
    };
    let (uid, gid) = (meta.uid(), meta.gid());
    if same_ns("mnt") && same_ns("pid") {
        if !jcmd.exists() {
            return Err(format!("no jcmd next to {}", exe.display()));
        }
        return Ok(Plan { program: jcmd, args: vec![ns_pid.to_string(), "Compiler.perfmap".into()], uid, gid });
    }
    // In a container: its jcmd, in its namespaces, as its user.
    if !proc_dir.join("root").join(jcmd.strip_prefix("/").unwrap_or(&jcmd)).exists() {
        return Err(format!("no jcmd next to {} in the process's root", exe.display()));
    }
    let target = pid.to_string();
    let mut args: Vec<String> = ["--target", &target, "--mount", "--pid", "--"].map(str::to_owned).to_vec();
    args.extend([jcmd.display().to_string(), ns_pid.to_string(), "Compiler.perfmap".into()]);
    Ok(Plan { program: PathBuf::from("nsenter"), args, uid, gid })
}

/// Asks JVM `pid` for its perf map, on a thread of its own; the outcome is logged.
pub fn request_perf_map(pid: u32) {
    let spawned = thread::Builder::new().name(format!("jcmd-{pid}")).spawn(move || match run(pid) {
        Ok(took) => log::info!("--java-perfmap: pid {pid}: perf map written in {took:?}"),
        Err(err) => log::warn!("--java-perfmap: pid {pid}: {err}"),
    });
    if let Err(err) = spawned {
        log::warn!("--java-perfmap: pid {pid}: no thread for jcmd: {err}");
    }
}

fn run(pid: u32) -> Result<Duration, String> {
    let plan = plan(pid)?;
    let started = Instant::now();
    let mut child = Command::new(&plan.program)
        .args(&plan.args)
        .uid(plan.uid)
        .gid(plan.gid)
        .current_dir(Path::new("/"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", plan.program.display()))?;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(started.elapsed()),
            Ok(Some(status)) => return Err(format!("{} {}: {status}", plan.program.display(), plan.args.join(" "))),
            Ok(None) if started.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("jcmd did not finish within {TIMEOUT:?}: killed"));
            }
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(err) => return Err(format!("waiting for jcmd: {err}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_that_is_no_jvm_has_no_plan() {
        let own = std::process::id();
        assert!(!is_jvm(own));
        let why = plan(own).expect_err("no jcmd next to the test binary");
        assert!(why.contains("no jcmd next to"), "{why}");
        assert!(plan(u32::MAX).is_err());
    }
}
