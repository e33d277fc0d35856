//! The artifacts of `cargo xtask dist`, run as operators run them (steps of `cargo xtask test`):
//!
//! - [`systemd_run`]: the .deb installed into a Debian 12 root (debootstrap, cached in `~/.cache/leakprobe/`) booted
//!   with `systemd-nspawn --boot`: `systemctl start` returns once the daemon is ready (`Type=notify`), `leakprobe
//!   status` answers at once, `systemctl stop` leaves none of its eBPF links or programs (bpftool by id). The
//!   steps run inside, in `xtask/scripts/systemd-guest.sh`, as a oneshot unit; this host has no systemd (hence `--keep-unit`: no scope to ask a bus for).
//! - [`podman_run`]: the image under podman with the `DaemonSet`'s settings (its user, capabilities, seccomp and
//!   `AppArmor`, host pid namespace and network, read-only root, the same mounts, its init container's `chown`),
//!   finding a leak in a process of the host.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{
    dist::{Dist, IMAGE},
    setup::{check, output, step},
};

const GUEST_SCRIPT: &str = include_str!("../scripts/systemd-guest.sh");
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
/// What the root needs besides `minbase`: systemd to boot, bpftool to look for what the daemon left.
const ROOT_PACKAGES: &str = "systemd,systemd-sysv,dbus,bpftool,adduser";

/// A Debian 12 root made once per machine by debootstrap and kept in `~/.cache/leakprobe/debian12` (like the
/// packages and tools setup installs: a download of about 250 MB whose time depends on the network, from a
/// minute to over six); each run boots an ephemeral copy, so the cached root is never changed.
fn debian_root() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let dir = PathBuf::from(home).join(".cache").join("leakprobe");
    let done = dir.join("debian12");
    if done.join("usr/lib/systemd/systemd").exists() {
        return Ok(done);
    }
    let tmp = dir.join("debian12.tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&dir)?;
    step(&format!(
        "debootstrap: a Debian 12 root for the systemd run (once per machine; cached in {})",
        done.display()
    ));
    let started = Instant::now();
    check(
        Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={ROOT_PACKAGES}"), "bookworm"])
            .arg(&tmp)
            .arg(DEBIAN_MIRROR)
            .stdout(Stdio::null()),
    )?;
    fs::rename(&tmp, &done)?;
    step(&format!("debootstrap took {:.0?}", started.elapsed()));
    Ok(done)
}

/// Waits for `child` up to `timeout`; when it takes longer, kills its process group (the child was spawned as its
/// leader, [`own_group`]: qemu under vng, the container under nspawn) and fails.
pub fn wait_or_kill(child: &mut Child, timeout: Duration, what: &str) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Makes `cmd`'s child the leader of a process group of its own, which [`wait_or_kill`] can kill whole.
pub fn own_group(cmd: &mut Command) -> &mut Command {
    std::os::unix::process::CommandExt::process_group(cmd, 0)
}

/// Boots the root with the .deb and the guest script; prints the guest's transcript.
pub fn systemd_run(root: &Path, dist: &Dist) -> Result<()> {
    let rootfs = debian_root()?;
    let share = tempfile_dir(root, "systemd")?;
    let out = share.join("out");
    fs::create_dir_all(&out)?;
    fs::copy(&dist.deb, share.join("leakprobe.deb"))?;
    let script = share.join("systemd-guest.sh");
    fs::write(&script, GUEST_SCRIPT)?;
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let unit = share.join("ship-test.service");
    fs::write(
        &unit,
        "[Unit]\nDescription=leakprobe .deb under systemd (cargo xtask test)\nAfter=multi-user.target\n\n\
         [Service]\nType=oneshot\nExecStart=/ship/systemd-guest.sh\n",
    )?;
    let console = fs::File::create(share.join("console.log"))?;
    let started = Instant::now();
    let mut nspawn = Command::new("systemd-nspawn");
    let mut child = own_group(&mut nspawn)
        .args(["--quiet", "--boot", "--ephemeral", "--register=no", "--keep-unit", "--console=pipe"])
        .arg(format!("--machine=leakprobe-ship-{}", std::process::id()))
        .arg("--directory")
        .arg(&rootfs)
        // The daemon's system calls, which nspawn's default filter leaves out.
        .arg("--system-call-filter=bpf perf_event_open")
        .arg(format!("--bind-ro={}:/ship", share.display()))
        .arg(format!("--bind={}:/ship/out", out.display()))
        .arg(format!("--bind-ro={}:/etc/systemd/system/ship-test.service", unit.display()))
        .arg("--bind=/sys/kernel/tracing")
        .arg("systemd.wants=ship-test.service")
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console)
        .spawn()
        .context("systemd-nspawn")?;
    let status = wait_or_kill(&mut child, Duration::from_mins(5), "the systemd-nspawn container");
    let transcript = fs::read_to_string(out.join("transcript")).unwrap_or_default();
    let result = fs::read_to_string(out.join("result")).unwrap_or_default();
    println!("---- systemd run (systemd-nspawn --boot, Debian 12), {:.1?} ----\n{transcript}", started.elapsed());
    if result.trim() != "ok" {
        let console = fs::read_to_string(share.join("console.log")).unwrap_or_default();
        let tail: Vec<&str> = console.lines().rev().take(40).collect();
        bail!(
            "the systemd run failed ({status:?}); console:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let _ = fs::remove_dir_all(&share);
    Ok(())
}

/// A fresh scratch directory under `target/ship/` (removed by the caller on success).
fn tempfile_dir(root: &Path, name: &str) -> Result<PathBuf> {
    let dir = root.join("target").join("ship").join(format!("{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `podman` without systemd on the host: cgroupfs, events in a file, and runc: crun refuses a host whose
/// cgroups are hybrid (v1 controllers and a v2 hierarchy with controllers: `cgroups in hybrid mode not supported`).
fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--cgroup-manager=cgroupfs", "--events-backend=file", "--runtime=runc"]);
    cmd
}

/// `podman run` with resource limits no higher than this process's: podman's defaults (and even the host's own
/// process limit) need `CAP_SYS_RESOURCE` to set, which a container host may withhold (runc: `error setting
/// rlimit type 6: operation not permitted`).
fn podman_run_cmd() -> Command {
    let nofile = fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(4).map(str::to_owned)
        })
        .unwrap_or_else(|| "1024".to_owned());
    let mut cmd = podman();
    cmd.args(["run", &format!("--ulimit=nofile={nofile}:{nofile}"), "--ulimit=nproc=4096:4096"]);
    cmd
}

/// A program of the host that leaks 4 KiB every 10 ms from `handle_request` (the README's example).
const LEAK_C: &str = "#include <stdlib.h>\n#include <string.h>\n#include <unistd.h>\n\
static void *handle_request(void) { void *buf = malloc(4096); memset(buf, 1, 4096); return buf; }\n\
int main(void) { for (;;) { handle_request(); usleep(10000); } }\n";

/// Loads the image into podman and runs it as the `DaemonSet` does; a leaking process of the host must be found.
pub fn podman_run(root: &Path, dist: &Dist) -> Result<()> {
    let share = tempfile_dir(root, "podman")?;
    let result = podman_run_in(&share, dist);
    if result.is_ok() {
        let _ = fs::remove_dir_all(&share);
    }
    result
}

fn podman_run_in(share: &Path, dist: &Dist) -> Result<()> {
    let started = Instant::now();
    check(podman().args(["load", "--quiet", "--input"]).arg(&dist.image))?;
    let image = format!("localhost/{IMAGE}");
    let (state, run) = (share.join("state"), share.join("run"));
    fs::create_dir_all(&state)?;
    fs::create_dir_all(&run)?;
    let volumes = [
        "--volume=/sys/kernel/tracing:/sys/kernel/tracing:ro".to_owned(),
        "--volume=/sys/kernel/btf:/sys/kernel/btf:ro".to_owned(),
        "--volume=/sys/fs/cgroup:/sys/fs/cgroup:ro".to_owned(),
        format!("--volume={}:/var/lib/leakprobe", state.display()),
        format!("--volume={}:/run/leakprobe", run.display()),
    ];
    // The init container: root holding CAP_CHOWN only, the image's own chown.
    check(
        podman_run_cmd()
            .args(["--rm", "--user=0", "--cap-drop=ALL", "--cap-add=CHOWN", "--read-only"])
            .args(["--security-opt=no-new-privileges", "--entrypoint=chown"])
            .args(&volumes)
            .args([&image, "-R", "65532:65532", "/var/lib/leakprobe", "/run/leakprobe"]),
    )?;
    let name = format!("leakprobe-ship-{}", std::process::id());
    let podman_args = [
        "--detach",
        "--user=65532:65532",
        "--cap-drop=ALL",
        "--cap-add=SYS_ADMIN,SYS_PTRACE,DAC_READ_SEARCH",
        "--security-opt=no-new-privileges",
        "--security-opt=seccomp=unconfined",
        "--security-opt=apparmor=unconfined",
        "--read-only",
        "--pid=host",
        "--network=host",
    ];
    // The DaemonSet's arguments; metrics on a port of the kernel's choosing (other daemons may hold 9877), and
    // exact counts (`--mode full`) so that the leak is counted, not estimated.
    let daemon_args = [
        "run",
        "--socket=/run/leakprobe/leakprobe.sock",
        "--state-dir=/var/lib/leakprobe",
        "--metrics-addr=127.0.0.1:0",
    ];
    let command = format!(
        "podman run {} {} {image} {} --mode full",
        podman_args.join(" "),
        volumes.join(" "),
        daemon_args.join(" ")
    );
    check(
        podman_run_cmd()
            .arg(format!("--name={name}"))
            .args(podman_args)
            .args(&volumes)
            .arg(&image)
            .args(daemon_args)
            .args(["--mode", "full"])
            .stdout(Stdio::null()),
    )?;
    let found = find_leak(share, dist, &run.join("leakprobe.sock"));
    let stopped = output(podman().args(["stop", "--time=60", &name]));
    // The daemon logs to standard error, which `podman logs` replays on its own.
    let logs = podman().args(["logs", &name]).output().map_or_else(
        |err| err.to_string(),
        |o| String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    );
    let exit = output(podman().args(["inspect", "--format={{.State.ExitCode}}", &name])).unwrap_or_default();
    let _ = podman().args(["rm", "--force", &name]).output();
    println!("---- podman run, {:.1?} ----\n$ {command}", started.elapsed());
    let report = found.with_context(|| format!("the leak was not found; daemon log:\n{logs}"))?;
    println!("{report}");
    stopped?;
    ensure!(exit.trim() == "0", "the container exited with {exit} after podman stop; log:\n{logs}");
    let kept: Vec<&str> =
        logs.lines().filter(|l| l.contains("capabilities kept") || l.contains("probes detached")).collect();
    println!("{}", kept.join("\n"));
    Ok(())
}

/// Starts the leaker on the host, asks the daemon in the container to trace it, and returns `top --pid` once it
/// shows `handle_request` holding memory.
fn find_leak(share: &Path, dist: &Dist, socket: &Path) -> Result<String> {
    let cli = |args: &[&str]| Command::new(&dist.binary).args(args).arg("--socket").arg(socket).output();
    let deadline = Instant::now() + Duration::from_mins(2);
    while !cli(&["status"]).is_ok_and(|o| o.status.success()) {
        ensure!(Instant::now() < deadline, "the daemon in the container did not answer `status` within 2 minutes");
        std::thread::sleep(Duration::from_millis(500));
    }
    let source = share.join("leak.c");
    fs::write(&source, LEAK_C)?;
    let leak = share.join("leak");
    check(
        Command::new("gcc").args(["-O1", "-g", "-fno-omit-frame-pointer", "-fno-inline", "-o"]).arg(&leak).arg(&source),
    )?;
    let mut leaker = Command::new(&leak).spawn()?;
    let pid = leaker.id().to_string();
    let result = (|| {
        let traced = cli(&["trace", "--pid", &pid])?;
        ensure!(traced.status.success(), "trace: {}", String::from_utf8_lossy(&traced.stderr));
        let mut report = format!("$ leakprobe trace --pid {pid}\n{}", String::from_utf8_lossy(&traced.stdout));
        loop {
            std::thread::sleep(Duration::from_secs(2));
            let top = cli(&["top", "--pid", &pid, "--limit", "1"])?;
            let text = String::from_utf8_lossy(&top.stdout).into_owned();
            if top.status.success() && text.contains("handle_request") {
                let _ = write!(report, "$ leakprobe top --pid {pid} --limit 1\n{text}");
                return Ok(report);
            }
            ensure!(Instant::now() < deadline, "top --pid {pid} never showed handle_request: {text}");
        }
    })();
    let _ = leaker.kill();
    let _ = leaker.wait();
    result
}
