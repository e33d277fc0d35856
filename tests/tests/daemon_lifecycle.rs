//! The daemon itself: what it attaches, that it never traces itself, and clean shutdown on SIGTERM/SIGINT.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use leakprobe_tests::bpf::{BpfObjects, objects_of, still_existing};
use leakprobe_tests::{Daemon, Fixture, StackExt, describe, dump, exited_zero, poll_until, wait_for_fence};
use serde_json::Value;

const ALLOCATORS: [&str; 9] =
    ["malloc", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc", "memalign", "valloc", "pvalloc"];

/// Dynamic symbol addresses of `lib` (from `nm -D --defined-only`), to recognise aliases (same address).
fn symbol_addresses(lib: &Path) -> HashMap<String, String> {
    let out = Command::new("nm").arg("-D").arg("--defined-only").arg(lib).output().expect("run nm -D");
    assert!(out.status.success(), "nm -D {} failed: {}", lib.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let addr = fields.next()?;
            let name = fields.nth(1)?.split('@').next()?;
            Some((name.to_owned(), addr.to_owned()))
        })
        .collect()
}

/// The libc the fixture process actually mapped (from /proc/PID/maps), canonicalized.
fn mapped_libc(pid: u32) -> std::path::PathBuf {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read the fixture's maps");
    let path = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| Path::new(p).file_name().is_some_and(|n| n.to_string_lossy().starts_with("libc.so")))
        .unwrap_or_else(|| panic!("the fixture maps no libc:\n{maps}"));
    std::fs::canonicalize(path).expect("canonicalize the mapped libc")
}

#[test]
fn status_lists_every_attach_point_on_the_host_libc() {
    let daemon = Daemon::start();
    let mut fixture = Fixture::leaker("calloc");
    fixture.wait_line("ready");
    let libc = mapped_libc(fixture.pid());

    let status = daemon.status();
    assert_eq!(status["pid"].as_u64(), Some(u64::from(daemon.pid())), "status pid: {status:#}");
    for group in ["kernel_counters", "daemon_counters", "tables"] {
        assert!(status[group].is_object(), "status has no {group} object: {status:#}");
    }
    let points = status["attach_points"].as_array().unwrap_or_else(|| panic!("no attach_points: {status:#}"));
    // Only the points on the fixture's libc: discovery also probes whatever other allocator runs on the host (a
    // sanitizer's `malloc` in a fuzz target, jemalloc in a compiler).
    let on_libc = |p: &&Value| {
        p["path"].as_str().and_then(|path| std::fs::canonicalize(path).ok()).is_none_or(|path| path == libc)
    };
    let points: Vec<&Value> = points.iter().filter(on_libc).collect();
    let find_exact = |kind: &str, target: &str| -> Option<&Value> {
        points.iter().copied().find(|p| p["kind"].as_str() == Some(kind) && p["target"].as_str() == Some(target))
    };
    // A function that is an alias of another (same address, e.g. memalign and aligned_alloc in glibc 2.36) may be
    // probed once, under the other name.
    let addresses = symbol_addresses(&libc);
    let find = |kind: &str, target: &str| -> Option<&Value> {
        find_exact(kind, target).or_else(|| {
            let addr = addresses.get(target)?;
            points.iter().copied().find(|p| {
                p["kind"].as_str() == Some(kind) && p["target"].as_str().and_then(|t| addresses.get(t)) == Some(addr)
            })
        })
    };
    // Session uprobes: one program per function at entry and return; plain: an entry uprobe and a uretprobe.
    let session = match status["return_probes"].as_str() {
        Some("session") => true,
        Some("plain") => false,
        other => panic!("return_probes is {other:?}: {status:#}"),
    };
    let kinds: &[&str] = if session { &["uprobe_session"] } else { &["uprobe", "uretprobe"] };
    let mut wanted: Vec<(&str, &str)> =
        ALLOCATORS.iter().flat_map(|a| kinds.iter().map(move |kind| (*kind, *a))).collect();
    wanted.push(("uprobe", "free"));
    for (kind, target) in wanted {
        let point = find(kind, target).unwrap_or_else(|| panic!("no {kind} on {target} in attach_points: {points:#?}"));
        let path = point["path"].as_str().unwrap_or_else(|| panic!("{kind} {target} has no path: {point:#}"));
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|e| panic!("{kind} {target} path {path}: {e}"));
        assert_eq!(canonical, libc, "{kind} {target} is not on the libc processes use: {point:#}");
        assert!(point["offset"].as_u64().is_some_and(|o| o > 0), "{kind} {target} has no offset: {point:#}");
        assert!(point["program"].as_str().is_some_and(|p| !p.is_empty()), "{kind} {target} has no program: {point:#}");
    }
    let exit = find("tracepoint", "sched/sched_process_exit")
        .unwrap_or_else(|| panic!("no sched_process_exit tracepoint: {points:#?}"));
    assert!(exit["program"].as_str().is_some_and(|p| !p.is_empty()), "{exit:#}");
    // The entry probe and the return probe of one allocator are on the same function.
    let offset = |kind: &str| find(kind, "malloc").and_then(|p| p["offset"].as_u64());
    if !session {
        assert_eq!(offset("uprobe"), offset("uretprobe"), "malloc's uprobe and uretprobe offsets differ");
    }
}

#[test]
fn the_daemon_never_traces_itself() {
    let daemon = Daemon::start();
    let mut fixture = Fixture::leaker("basic");
    fixture.wait_line("ready");
    wait_for_fence(&daemon, fixture.pid());
    // The daemon allocated plenty while answering all those requests.
    let all = daemon.top_all(10_000);
    let own = u64::from(daemon.pid());
    let mine: Vec<Value> = all.iter().filter(|s| s["pid"].as_u64() == Some(own)).cloned().collect();
    assert!(mine.is_empty(), "the daemon reports its own allocations; {}", dump(&mine));
    let fixture_pid = u64::from(fixture.pid());
    assert!(
        all.iter().any(|s| s["pid"].as_u64() == Some(fixture_pid) && s.function_at(0) == Some("leak_beta")),
        "top without --pid is not system-wide: the fixture's leak_beta is missing from {} stacks",
        all.len()
    );
    let live: Vec<u64> = all.iter().map(StackExt::live_bytes).collect();
    assert!(live.windows(2).all(|w| w[0] >= w[1]), "system-wide top is not ordered by live_bytes desc");
}

/// Stops the daemon with `signal` and checks: exit 0, socket removed, every eBPF program and link it held gone.
fn check_clean_stop(signal: libc::c_int) {
    let mut daemon = Daemon::start();
    let socket = daemon.socket().to_path_buf();
    let held = objects_of(daemon.pid());
    assert!(!held.prog_ids.is_empty(), "the running daemon holds no eBPF program fd: {held:?}");
    assert!(!held.link_ids.is_empty(), "the running daemon holds no eBPF link fd (its probes): {held:?}");
    let status = daemon.stop_with(signal);
    assert!(exited_zero(status), "the daemon exited with {status} after signal {signal}; log:\n{}", daemon.log());
    assert!(!socket.exists(), "the daemon left its socket {} behind after signal {signal}", socket.display());
    poll_until(Duration::from_secs(10), "the daemon's eBPF programs and links to be released", || {
        (still_existing(&held) == BpfObjects::default()).then_some(())
    });
}

#[test]
fn sigterm_detaches_and_removes_the_socket() {
    check_clean_stop(libc::SIGTERM);
}

#[test]
fn sigint_detaches_and_removes_the_socket() {
    check_clean_stop(libc::SIGINT);
}

#[test]
fn a_second_daemon_on_the_same_socket_is_refused_and_harmless() {
    let daemon = Daemon::start();
    let out = daemon.run_cli(&["run", "--socket", daemon.socket_str()]);
    assert!(!out.status.success(), "a second daemon on a live socket should fail\n{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line on stderr\n{}", describe(&out));
    assert!(stderr.contains(daemon.socket_str()), "the error does not name the socket\n{}", describe(&out));
    // The first daemon keeps its socket and still answers.
    assert!(daemon.socket().exists(), "the failed second daemon removed the first one's socket");
    assert_eq!(daemon.status()["pid"].as_u64(), Some(u64::from(daemon.pid())), "the first daemon still answers");
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::Builder::new().prefix("leakprobe-stale-").tempdir().expect("temp dir");
    let path = dir.path().join("leakprobe.sock");
    // A socket file nobody listens on any more, as a SIGKILLed daemon leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind a soon-stale socket"));
    assert!(path.exists(), "the stale socket file exists");
    let daemon = Daemon::start_in(dir);
    assert_eq!(daemon.status()["pid"].as_u64(), Some(u64::from(daemon.pid())), "the daemon serves on the old path");
}

/// `Type=notify`: with `NOTIFY_SOCKET` set (as systemd sets it), the daemon sends `READY=1` once its probes are
/// attached and its socket answers, and `STOPPING=1` when SIGTERM starts the shutdown. The test plays systemd:
/// a datagram socket of its own, and `status` asked the moment `READY=1` arrives.
#[test]
fn sd_notify_ready_once_attached_and_serving_then_stopping() {
    use std::os::unix::net::UnixDatagram;

    let dir = tempfile::Builder::new().prefix("leakprobe-test-").tempdir().expect("temp dir");
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    notify.set_read_timeout(Some(Duration::from_mins(1))).expect("read timeout");
    let socket = dir.path().join("leakprobe.sock");
    let state = dir.path().join("state");
    let receiver = std::thread::spawn(move || {
        let mut buf = [0_u8; 4096];
        let len = notify.recv(&mut buf).expect("READY=1 within a minute");
        let message = String::from_utf8_lossy(&buf[..len]).into_owned();
        // At once, before anything else can catch up: the socket must answer with the probes attached.
        let status = Command::new(leakprobe_tests::daemon_bin())
            .args(["status", "--json", "--socket"])
            .arg(&socket)
            .output()
            .expect("run `leakprobe status`");
        (message, status, notify)
    });
    let wrapper = vec!["env".to_owned(), format!("NOTIFY_SOCKET={}", notify_path.display())];
    let mut daemon = Daemon::start_wrapped(dir, &state, &wrapper, &[]);
    let (message, status, notify) = receiver.join().expect("the notify receiver");
    assert_eq!(message.trim(), "READY=1", "first notification");
    assert!(status.status.success(), "`status` failed right after READY=1: {}", describe(&status));
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let points = status["attach_points"].as_array().map_or(0, Vec::len);
    assert!(points > 0, "no attach point listed right after READY=1: {status:#}");

    let exit = daemon.stop_with(libc::SIGTERM);
    assert!(exited_zero(exit), "the daemon exited with {exit} after SIGTERM; log:\n{}", daemon.log());
    let mut buf = [0_u8; 4096];
    let len = notify.recv(&mut buf).expect("STOPPING=1 after SIGTERM");
    assert_eq!(String::from_utf8_lossy(&buf[..len]).trim(), "STOPPING=1", "second notification");
    assert!(daemon.log().contains("sd_notify: READY=1"), "log:\n{}", daemon.log());
}
