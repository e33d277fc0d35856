//! Least privilege: who may use the socket, what the API may read, and the capabilities the daemon keeps.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use leakprobe_tests::bpf::{objects_of, wait_until_bpftool_lists_none};
use leakprobe_tests::creds::{NOBODY as NOBODY_UID, dir_owned_by, setpriv};
use leakprobe_tests::expect::{ALPHA_COUNT, ALPHA_SIZE, BETA_COUNT, BETA_SIZE};
use leakprobe_tests::http::get;
use leakprobe_tests::stacks::assert_live;
use leakprobe_tests::{
    CLI_TIMEOUT, Daemon, Fixture, StackExt as _, daemon_bin, describe, exited_zero, poll_until, run_with_timeout,
    wait_for_fence,
};

/// `adm` (gid 4) exists on every Debian system and `nobody` (65534) is not in it.
const GROUP: &str = "adm";
const GROUP_GID: u32 = 4;
const NOBODY: &str = "65534";

/// `CAP_DAC_READ_SEARCH` (2), `CAP_SYS_PTRACE` (19), `CAP_SYS_ADMIN` (21): the set docs/deployment.md documents.
const KEPT_MASK: u64 = (1 << 2) | (1 << 19) | (1 << 21);
/// What the daemon logs once it dropped the others.
const KEPT_LOG: &str = "capabilities kept: CAP_DAC_READ_SEARCH CAP_SYS_ADMIN CAP_SYS_PTRACE";
/// What an unprivileged daemon is granted (setpriv's names): the kept capabilities, and `CAP_CHOWN` to give the
/// socket to `--socket-group adm`, a group `nobody` is not in.
const GRANTED: [(&str, &str); 4] = [
    ("sys_admin", "CAP_SYS_ADMIN"),
    ("sys_ptrace", "CAP_SYS_PTRACE"),
    ("dac_read_search", "CAP_DAC_READ_SEARCH"),
    ("chown", "CAP_CHOWN"),
];
/// [`GRANTED`] as a mask: `CAP_CHOWN` is 0.
const GRANTED_MASK: u64 = KEPT_MASK | 1;
/// A uid with no name and no file, for a client that is neither the daemon's user nor root.
const STRANGER: &str = "65533";

/// A temporary directory others may traverse (the socket's directory must be, for its group to reach it).
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("leakprobe-priv-").tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod 755 the temp dir");
    dir
}

/// `leakprobe status --socket SOCKET` as uid/gid `nobody`, with `groups` as supplementary groups (none if empty).
fn status_as_nobody(socket: &Path, groups: &str) -> std::process::Output {
    status_as(NOBODY, socket, groups)
}

/// `leakprobe status --socket SOCKET` as uid and gid `uid`, with `groups` as supplementary groups (none if empty).
fn status_as(uid: &str, socket: &Path, groups: &str) -> std::process::Output {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", uid, "--regid", uid]);
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        cmd.args(["--groups", groups]);
    }
    cmd.arg("--").arg(daemon_bin()).arg("status").arg("--socket").arg(socket).arg("--json");
    run_with_timeout(&mut cmd, CLI_TIMEOUT)
}

#[test]
fn the_socket_admits_root_and_its_group_only() {
    let daemon = Daemon::start_in_with_args(open_dir(), &["--socket-group", GROUP]);
    let meta = std::fs::metadata(daemon.socket()).expect("stat the socket");
    assert_eq!(meta.mode() & 0o7777, 0o660, "socket mode {:o}", meta.mode());
    assert_eq!((meta.uid(), meta.gid()), (0, GROUP_GID), "the socket is root's and group {GROUP}'s");

    let refused = status_as_nobody(daemon.socket(), "");
    assert!(!refused.status.success(), "nobody outside the group was served\n{}", describe(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("permission denied") && stderr.contains(daemon.socket_str()) && stderr.contains("group"),
        "the refusal does not say why\n{}",
        describe(&refused)
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line on stderr\n{}", describe(&refused));

    let served = status_as_nobody(daemon.socket(), &GROUP_GID.to_string());
    assert!(served.status.success(), "a member of the group was refused\n{}", describe(&served));
    let status: serde_json::Value = serde_json::from_slice(&served.stdout).expect("status JSON");
    assert_eq!(status["pid"].as_u64(), Some(u64::from(daemon.pid())), "{status:#}");
}

#[test]
fn an_unknown_socket_group_is_a_clear_error() {
    let out = run_with_timeout(
        Command::new(daemon_bin()).args([
            "run",
            "--socket",
            "/nonexistent-leakprobe/s.sock",
            "--socket-group",
            "no-such-group-leakprobe",
        ]),
        CLI_TIMEOUT,
    );
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-group-leakprobe") && stderr.contains("no such group"), "{}", describe(&out));
}

/// Every line `Cap*:` of `/proc/PID/task/TID/status`, for every thread.
fn thread_caps(pid: u32) -> Vec<(String, [(String, u64); 5])> {
    let mut threads = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).expect("read the daemon's tasks") {
        let tid = entry.expect("task entry").file_name().to_string_lossy().into_owned();
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")) else { continue };
        let field = |name: &str| -> (String, u64) {
            let value = status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or_else(|| panic!("no {name} in task {tid}'s status:\n{status}"));
            (name.to_owned(), value)
        };
        let name = status.lines().find_map(|l| l.strip_prefix("Name:")).unwrap_or("?").trim().to_owned();
        threads.push((
            format!("{tid} ({name})"),
            [field("CapEff"), field("CapPrm"), field("CapBnd"), field("CapInh"), field("CapAmb")],
        ));
    }
    threads
}

#[test]
fn the_daemon_keeps_only_the_documented_capabilities_and_still_attaches() {
    let daemon = Daemon::start();
    let caps = thread_caps(daemon.pid());
    assert!(caps.len() >= 4, "the daemon has threads: {caps:?}");
    for (thread, fields) in &caps {
        for (name, value) in fields {
            let want = if matches!(name.as_str(), "CapInh" | "CapAmb") { 0 } else { KEPT_MASK };
            assert_eq!(*value, want, "thread {thread}: {name} is {value:#x}, want {want:#x}; all: {caps:?}");
        }
    }
    assert!(daemon.log().contains(KEPT_LOG), "{}", daemon.log());

    // A copy of the libc is a file no process mapped when the daemon dropped its capabilities: probing it
    // needs a new uprobe attachment, and symbolizing it reading a new file.
    let dir = tempfile::Builder::new().prefix("leakprobe-libc-").tempdir().expect("temp dir");
    std::fs::copy("/lib/x86_64-linux-gnu/libc.so.6", dir.path().join("libc.so.6")).expect("copy the libc");
    let lib_path = dir.path().to_str().expect("UTF-8 temp dir");
    let mut fixture = Fixture::spawn_with_env(leakprobe_tests::LEAKER, &["late"], &[("LD_LIBRARY_PATH", lib_path)]);
    fixture.wait_line("started");
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", fixture.pid())).expect("fixture maps");
    assert!(maps.contains(&format!("{lib_path}/libc.so.6")), "the fixture does not use the copied libc:\n{maps}");
    poll_until(Duration::from_secs(30), "discovery to probe the copied libc", || {
        let status = daemon.status();
        let providers = status["discovery"]["providers"].as_array()?.clone();
        providers
            .iter()
            .any(|p| {
                p["path"].as_str().is_some_and(|path| path.starts_with(lib_path))
                    && p["probes"].as_u64().is_some_and(|n| n > 0)
            })
            .then_some(())
    });
    fixture.send_line("go");
    fixture.wait_line("ready");
    let stacks = wait_for_fence(&daemon, fixture.pid());
    assert!(
        stacks.iter().any(|s| s.function_at(0) == Some("leak_late")),
        "the allocations made through the copied libc after the drop are missing: {}",
        leakprobe_tests::dump(&stacks)
    );
}

/// The `Uid:` line of `/proc/PID/status`: real, effective, saved and filesystem uids.
fn uids(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the daemon's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("a Uid line")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn an_unprivileged_user_with_the_needed_capabilities_runs_the_daemon() {
    let dir = dir_owned_by(NOBODY_UID, "leakprobe-nobody-");
    let state = dir.path().join("state");
    let caps: Vec<&str> = GRANTED.iter().map(|&(cap, _)| cap).collect();
    let mut daemon = Daemon::start_wrapped(dir, &state, &setpriv(NOBODY_UID, &caps), &["--socket-group", GROUP]);
    let pid = daemon.pid();
    assert_eq!(uids(pid), format!("{NOBODY} {NOBODY} {NOBODY} {NOBODY}"), "the daemon runs as nobody");

    // The socket and the state directory are nobody's; the socket's group is --socket-group's.
    let meta = std::fs::metadata(daemon.socket()).expect("stat the socket");
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (NOBODY_UID, GROUP_GID, 0o660), "the socket");
    let oom_dir = std::fs::metadata(state.join("oom")).expect("the daemon creates state/oom");
    assert_eq!(oom_dir.uid(), NOBODY_UID, "the OOM report directory is the daemon user's");
    let refused = status_as(STRANGER, daemon.socket(), "");
    assert!(!refused.status.success(), "a uid outside the group was served\n{}", describe(&refused));
    let served = status_as(STRANGER, daemon.socket(), &GROUP_GID.to_string());
    assert!(served.status.success(), "a member of the group was refused\n{}", describe(&served));
    assert_eq!(daemon.status()["pid"].as_u64(), Some(u64::from(pid)), "root is served");

    // Every thread holds the kept capabilities only; the bounding set is what setpriv left (without CAP_SETPCAP
    // the daemon cannot shrink it, as under systemd's CapabilityBoundingSet=).
    let threads = thread_caps(pid);
    assert!(threads.len() >= 4, "the daemon has threads: {threads:?}");
    for (thread, fields) in &threads {
        for (name, value) in fields {
            let want = match name.as_str() {
                "CapInh" | "CapAmb" => 0,
                "CapBnd" => GRANTED_MASK,
                _ => KEPT_MASK,
            };
            assert_eq!(*value, want, "thread {thread}: {name} is {value:#x}, want {want:#x}; all: {threads:?}");
        }
    }
    assert!(daemon.log().contains(KEPT_LOG), "{}", daemon.log());

    // Full mode (the harness's default): the leaks are exact.
    let mut fixture = Fixture::leaker("basic");
    fixture.wait_line("ready");
    let stacks = wait_for_fence(&daemon, fixture.pid());
    assert_live(&stacks, "leak_alpha", ALPHA_COUNT * ALPHA_SIZE, ALPHA_COUNT);
    assert_live(&stacks, "leak_beta", BETA_COUNT * BETA_SIZE, BETA_COUNT);

    // SIGTERM: every probe goes, and the socket.
    let held = objects_of(pid);
    assert!(!held.link_ids.is_empty() && !held.prog_ids.is_empty(), "the daemon holds no probe: {held:?}");
    let status = daemon.stop_with(libc::SIGTERM);
    assert!(exited_zero(status), "exit after SIGTERM: {status}; log:\n{}", daemon.log());
    assert!(!daemon.socket().exists(), "the socket is left behind");
    wait_until_bpftool_lists_none(&held, pid);
    drop(fixture);
}

/// `leakprobe run` as nobody with capabilities `caps`, on `socket` and `state` (metrics on a free loopback
/// port), to its end: for start-ups that must fail.
fn run_as_nobody(caps: &[&str], socket: &Path, state: &Path, extra: &[&str]) -> std::process::Output {
    let wrapper = setpriv(NOBODY_UID, caps);
    let mut cmd = Command::new(&wrapper[0]);
    cmd.args(&wrapper[1..])
        .arg(daemon_bin())
        .arg("run")
        .arg("--socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env_remove("RUST_LOG");
    run_with_timeout(&mut cmd, CLI_TIMEOUT)
}

#[test]
fn without_a_needed_capability_the_start_fails_naming_it() {
    for (removed, name) in GRANTED {
        let caps: Vec<&str> = GRANTED.iter().map(|&(cap, _)| cap).filter(|&cap| cap != removed).collect();
        let dir = dir_owned_by(NOBODY_UID, "leakprobe-nocap-");
        // In a directory that does not exist yet: the daemon must not even create it.
        let socket = dir.path().join("run").join("leakprobe.sock");
        let state = dir.path().join("state");
        let out = run_as_nobody(&caps, &socket, &state, &["--socket-group", GROUP]);
        let what = format!("run without {name}");
        assert_eq!(out.status.code(), Some(1), "{what}\n{}", describe(&out));
        assert!(out.stdout.is_empty(), "{what}: stdout\n{}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{what}: one line on stderr\n{}", describe(&out));
        let (missing, how) = lines[0].split_once(": run as root").unwrap_or_else(|| panic!("{what}: {stderr}"));
        assert!(missing.starts_with(&format!("leakprobe: missing {name} (")), "{what}: {stderr}");
        for (_, other) in GRANTED.iter().filter(|&&(_, other)| other != name) {
            assert!(!missing.contains(other), "{what}: {other} is named missing: {stderr}");
        }
        assert!(
            how.contains("AmbientCapabilities=CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_DAC_READ_SEARCH CAP_CHOWN"),
            "{what}: how to grant them: {stderr}"
        );
        assert!(!socket.parent().expect("a directory").exists(), "{what}: the socket's directory was created");
        assert!(!state.exists(), "{what}: the state directory was created");
    }
}

#[test]
fn a_socket_directory_the_user_cannot_create_is_refused_before_loading() {
    // Root's directory (0755): nobody may not create the socket's directory in it.
    let dir = open_dir();
    let socket = dir.path().join("run").join("leakprobe.sock");
    let state = dir_owned_by(NOBODY_UID, "leakprobe-state-");
    let out = run_as_nobody(&["sys_admin", "sys_ptrace", "dac_read_search"], &socket, state.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "leakprobe: cannot create the socket {}: {} is not writable by uid {NOBODY}",
        socket.display(),
        dir.path().display()
    );
    assert!(stderr.starts_with(&want) && stderr.trim().lines().count() == 1, "want {want:?}\n{}", describe(&out));
    assert!(!socket.parent().expect("a directory").exists(), "the socket's directory was created");
    assert!(!state.path().join("oom").exists(), "the daemon went on after the check");
}

#[test]
fn an_unprivileged_daemon_mounts_tracefs_where_it_is_missing() {
    let dir = dir_owned_by(NOBODY_UID, "leakprobe-tracefs-");
    let state = dir.path().join("state");
    // A mount namespace of its own without tracefs (the host's stays mounted): the daemon mounts it with
    // mount(2) and CAP_SYS_ADMIN, where mount(8) refuses any user but root.
    let mut wrapper: Vec<String> = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        "umount /sys/kernel/tracing && exec \"$@\"",
        "sh",
    ]
    .map(str::to_owned)
    .to_vec();
    wrapper.extend(setpriv(NOBODY_UID, &["sys_admin", "sys_ptrace", "dac_read_search"]));
    let daemon = Daemon::start_wrapped(dir, &state, &wrapper, &["--no-discovery"]);
    assert_eq!(uids(daemon.pid()), format!("{NOBODY} {NOBODY} {NOBODY} {NOBODY}"), "the daemon runs as nobody");
    assert!(daemon.log().contains("mounting tracefs on /sys/kernel/tracing"), "{}", daemon.log());
    let status = daemon.status();
    let tracepoints: Vec<&str> = status["attach_points"]
        .as_array()
        .expect("attach_points")
        .iter()
        .filter(|p| p["kind"].as_str() == Some("tracepoint"))
        .filter_map(|p| p["target"].as_str())
        .collect();
    assert!(tracepoints.contains(&"sched/sched_process_exit"), "tracepoints: {tracepoints:?}");
    assert!(Path::new("/sys/kernel/tracing/events").is_dir(), "the host's tracefs is still mounted");
}

/// Whether the inotify descriptor has an event waiting.
fn inotify_fired(fd: libc::c_int) -> bool {
    let mut buf = [0u8; 4096];
    // SAFETY: read(2) into a buffer we own, with its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        assert_eq!(err.raw_os_error(), Some(libc::EAGAIN), "read inotify: {err}");
    }
    n > 0
}

#[test]
fn no_request_reads_a_path_the_client_names() {
    let daemon = Daemon::start();
    let dir = tempfile::Builder::new().prefix("leakprobe-canary-").tempdir().expect("temp dir");
    let canary = dir.path().join("secret");
    std::fs::write(&canary, "CANARY-7f3a9d").expect("write the canary");
    let canary_str = canary.to_str().expect("UTF-8");
    // SAFETY: plain inotify calls on a path we own; the fd is closed below.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    assert!(fd >= 0, "inotify_init1: {}", std::io::Error::last_os_error());
    for path in [&canary, dir.path()] {
        let c_path = std::ffi::CString::new(path.to_str().expect("UTF-8")).expect("no NUL");
        // SAFETY: a valid fd and NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd, c_path.as_ptr(), libc::IN_OPEN | libc::IN_ACCESS) };
        assert!(wd >= 0, "inotify_add_watch: {}", std::io::Error::last_os_error());
    }
    let encoded = canary_str.replace('/', "%2F");
    let dotted = format!("..{}", "/..".repeat(8));
    let requests = [
        format!("/v1/oom/{encoded}"),
        format!("/v1/oom/{dotted}{canary_str}"),
        format!("/v1/oom/..%2F..%2F..%2F..%2F..%2F..%2F..%2F..{encoded}"),
        format!("/v1/status/{dotted}{canary_str}"),
        canary_str.to_owned(),
        format!("/v1/export?format={encoded}"),
        format!("/v1/export?format=pprof&pid=1&path={encoded}"),
        format!("/v1/top?comm={encoded}"),
        format!("/v1/top?pid={encoded}"),
        format!("/v1/stacks?pid=1&file={encoded}"),
        format!("/v1/processes?comm={encoded}&window={encoded}"),
        format!("/v1/oom?dir={encoded}"),
        format!("/v1/oom/1-1?path={encoded}"),
    ];
    for path in &requests {
        let response = get(daemon.socket(), path);
        assert!(!response.body.contains("CANARY"), "GET {path} returned the file: {response}");
        assert_ne!(response.status, None, "GET {path}: no HTTP answer: {response}");
    }
    let fired = inotify_fired(fd);
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
    assert!(!fired, "a request made the daemon open or read {canary_str}");
    // The daemon still answers after all that.
    assert_eq!(daemon.status()["pid"].as_u64(), Some(u64::from(daemon.pid())));
}

#[test]
fn metrics_bind_to_loopback_by_default() {
    let out = run_with_timeout(Command::new(daemon_bin()).args(["run", "--help"]), CLI_TIMEOUT);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("[default: 127.0.0.1:9877]"), "the metrics default is not loopback:\n{help}");
}
