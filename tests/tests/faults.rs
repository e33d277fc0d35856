//! Faults: the daemon killed with SIGKILL, probes after SIGTERM, a traced process killed mid-loop, a probed
//! libc replaced on disk, a full state directory.

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use leakprobe_tests::bpf::{bpftool, objects_of, wait_until_bpftool_lists_none};
use leakprobe_tests::cgroup::leaker_oom_killed;
use leakprobe_tests::{Daemon, Fixture, StackExt, describe, dump, exited_zero, poll_until, wait_for_fence};
use serde_json::Value;

/// How long the kernel may take to OOM-kill the fixture, and the daemon to write the report.
const KILL_TIMEOUT: Duration = Duration::from_mins(1);
/// How long the daemon may take to notice an exit or a new file.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(30);

fn reports(daemon: &Daemon) -> Vec<Value> {
    let list = daemon.cli_json(&["oom", "--socket", daemon.socket_str(), "--json"]);
    list["reports"].as_array().cloned().unwrap_or_else(|| panic!("oom --json has no reports array: {list:#}"))
}

/// Runs the C leaker in `oom` mode in a 64 MiB memory cgroup until the kernel kills it; returns its pid once the
/// daemon has a report for it (in memory at least).
fn oom_kill(daemon: &Daemon) -> u32 {
    let (_cgroup, pid) = leaker_oom_killed(64 << 20, KILL_TIMEOUT);
    poll_until(KILL_TIMEOUT, "the OOM report of the fixture", || {
        reports(daemon).iter().any(|r| r["pid"].as_u64() == Some(u64::from(pid))).then_some(())
    });
    pid
}

fn report_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn after_sigkill_the_next_start_works_and_keeps_the_reports() {
    let state = tempfile::Builder::new().prefix("leakprobe-kill-state-").tempdir().expect("state dir");
    let dir = tempfile::Builder::new().prefix("leakprobe-test-").tempdir().expect("daemon dir");
    let mut daemon = Daemon::start_with_state(dir, state.path());
    let pid = oom_kill(&daemon);
    let before = reports(&daemon);
    let files = report_files(&state.path().join("oom"));
    assert_eq!(files.len(), 1, "one report file: {files:?}");
    let socket = daemon.socket().to_path_buf();

    let status = daemon.stop_with(libc::SIGKILL);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(socket.exists(), "a SIGKILLed daemon cannot remove its socket: the test needs the stale file");
    let dir = daemon.take_dir();

    let daemon = Daemon::start_with_state(dir, state.path());
    assert_eq!(daemon.socket(), socket, "the same socket path");
    assert_eq!(daemon.status()["pid"].as_u64(), Some(u64::from(daemon.pid())), "the new daemon serves");
    assert!(daemon.log().contains("removing stale socket"), "the stale socket is replaced: {}", daemon.log());
    let after = reports(&daemon);
    assert_eq!(after, before, "the reports survive a SIGKILL");
    assert!(after.iter().any(|r| r["pid"].as_u64() == Some(u64::from(pid))));
    assert_eq!(report_files(&state.path().join("oom")), files, "the report files are untouched");
    assert_eq!(daemon.counter("daemon_counters", "oom_reports_skipped"), 0, "no file was unreadable");
}

#[test]
fn after_sigterm_bpftool_shows_no_link_program_or_perf_event_of_the_daemon() {
    let mut daemon = Daemon::start();
    let links_before = objects_of(daemon.pid()).link_ids.len();
    // A second allocator file (a copy of the libc), so the daemon holds the probes of two files.
    let libdir = tempfile::Builder::new().prefix("leakprobe-libc-").tempdir().expect("temp dir");
    std::fs::copy("/lib/x86_64-linux-gnu/libc.so.6", libdir.path().join("libc.so.6")).expect("copy the libc");
    let lib = libdir.path().to_str().expect("UTF-8").to_owned();
    let mut fixture = Fixture::spawn_with_env(leakprobe_tests::LEAKER, &["late"], &[("LD_LIBRARY_PATH", &lib)]);
    fixture.wait_line("started");
    poll_until(NOTICE_TIMEOUT, "the copied libc to be probed", || {
        // At least two more links: with session uprobes, one uprobe_multi link for the allocating functions and
        // one for `free`; with plain return probes, 17 on a glibc.
        (objects_of(daemon.pid()).link_ids.len() >= links_before + 2).then_some(())
    });
    let held = objects_of(daemon.pid());
    let links: Vec<u64> = bpftool(&["link", "show"]).iter().filter_map(|l| l["id"].as_u64()).collect();
    for id in &held.link_ids {
        assert!(links.contains(&u64::from(*id)), "bpftool does not list the daemon's link {id}");
    }
    let pid = daemon.pid();

    let status = daemon.stop_with(libc::SIGTERM);
    assert!(exited_zero(status), "exit after SIGTERM: {status}; log:\n{}", daemon.log());
    wait_until_bpftool_lists_none(&held, pid);
    // The uprobe events of the removed probes are gone from tracefs as well.
    let events = std::fs::read_to_string("/sys/kernel/tracing/uprobe_events").unwrap_or_default();
    assert!(!events.contains(&lib), "a uprobe on the copied libc is left in uprobe_events:\n{events}");
    drop(fixture);
}

#[test]
fn a_traced_process_killed_mid_loop_leaves_nothing_live() {
    let daemon = Daemon::start();
    let mut fixture = Fixture::spawn(leakprobe_tests::GROWTH, &["steady"]);
    fixture.wait_line("ready");
    let pid = fixture.pid();
    // Leaking 2 KiB every 100 ms: wait for a few live allocations, then kill it in the middle of its loop.
    let stacks =
        leakprobe_tests::wait_for_stack(&daemon, pid, "at least 10 live allocations", |s| s.live_count() >= 10);
    let live: u64 = stacks.iter().map(StackExt::live_count).sum();
    let purged_before = daemon.counter("daemon_counters", "kernel_entries_purged");
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(libc::pid_t::try_from(pid).expect("pid"), libc::SIGKILL) }, 0);
    let exit = fixture.wait_exit(NOTICE_TIMEOUT);
    assert_eq!(exit.signal(), Some(libc::SIGKILL), "{exit}");

    poll_until(NOTICE_TIMEOUT, "the killed process to be purged", || {
        let stacks = daemon.top(pid);
        let processes =
            daemon.cli_json(&["processes", "--socket", daemon.socket_str(), "--pid", &pid.to_string(), "--json"]);
        let listed = processes["processes"].as_array().is_some_and(|p| !p.is_empty());
        (stacks.is_empty() && !listed).then_some(())
    });
    let purged = poll_until(NOTICE_TIMEOUT, "the kernel's live entries of the process to be removed", || {
        let purged = daemon.counter("daemon_counters", "kernel_entries_purged") - purged_before;
        (purged >= live).then_some(purged)
    });
    assert!(purged >= live, "{purged} kernel entries purged for {live} live allocations");
}

#[test]
fn a_probed_libc_replaced_on_disk_keeps_the_old_process_tracked() {
    let daemon = Daemon::start();
    let libdir = tempfile::Builder::new().prefix("leakprobe-libc-").tempdir().expect("temp dir");
    let lib = libdir.path().to_str().expect("UTF-8").to_owned();
    let libc_path = libdir.path().join("libc.so.6");
    std::fs::copy("/lib/x86_64-linux-gnu/libc.so.6", &libc_path).expect("copy the libc");
    let mut old = Fixture::spawn_with_env(leakprobe_tests::LEAKER, &["late"], &[("LD_LIBRARY_PATH", &lib)]);
    old.wait_line("started");
    let probed = |daemon: &Daemon| -> Vec<String> {
        let status = daemon.status();
        status["discovery"]["providers"]
            .as_array()
            .map(|p| {
                p.iter()
                    .filter(|p| {
                        p["path"].as_str().is_some_and(|path| path.starts_with(&lib))
                            && p["probes"].as_u64().is_some_and(|n| n > 0)
                    })
                    .filter_map(|p| p["file"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    poll_until(NOTICE_TIMEOUT, "the copied libc to be probed", || (probed(&daemon).len() == 1).then_some(()));

    // What a package upgrade does: write the new version beside it, then rename it over the old path.
    let new_path = libdir.path().join("libc.so.6.dpkg-new");
    std::fs::copy("/lib/x86_64-linux-gnu/libc.so.6", &new_path).expect("copy the new libc");
    let mv = Command::new("mv").arg(&new_path).arg(&libc_path).output().expect("run mv");
    assert!(mv.status.success(), "{}", describe(&mv));

    // The old process keeps running on the old (now deleted) file: still tracked.
    old.send_line("go");
    old.wait_line("ready");
    let stacks = wait_for_fence(&daemon, old.pid());
    assert!(stacks.iter().any(|s| s.function_at(0) == Some("leak_late")), "old process: {}", dump(&stacks));

    // A process started after the upgrade maps the new file: probed as a file of its own.
    let mut new = Fixture::spawn_with_env(leakprobe_tests::LEAKER, &["late"], &[("LD_LIBRARY_PATH", &lib)]);
    new.wait_line("started");
    poll_until(NOTICE_TIMEOUT, "the replaced libc to be probed as well", || (probed(&daemon).len() == 2).then_some(()));
    new.send_line("go");
    new.wait_line("ready");
    let stacks = wait_for_fence(&daemon, new.pid());
    assert!(stacks.iter().any(|s| s.function_at(0) == Some("leak_late")), "new process: {}", dump(&stacks));
    assert!(
        daemon.log().contains("was replaced on disk"),
        "the daemon does not say that the libc was replaced; log:\n{}",
        daemon.log()
    );
    assert_eq!(daemon.status()["pid"].as_u64(), Some(u64::from(daemon.pid())), "the daemon still answers");
}

/// A small tmpfs mounted on a temporary directory, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("leakprobe-smallfs-").tempdir().expect("temp dir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "leakprobe-test"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(out.status.success(), "mount a tmpfs\n{}", describe(&out));
        SmallFs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the file system is full.
    fn fill(&self) {
        use std::io::Write as _;
        let mut file = std::fs::File::create(self.path().join("filler")).expect("create the filler");
        let block = [0u8; 512];
        while file.write_all(&block).is_ok() {}
        // Whatever the page cache still held must reach the (memory) disk too.
        let _ = file.sync_all();
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_state_directory_fails_writes_clearly_and_keeps_what_was_written() {
    let fs = SmallFs::mount("256k");
    let dir = tempfile::Builder::new().prefix("leakprobe-test-").tempdir().expect("daemon dir");
    let daemon = Daemon::start_with_state(dir, fs.path());
    let first = oom_kill(&daemon);
    let oom_dir = fs.path().join("oom");
    let files = report_files(&oom_dir);
    assert_eq!(files.len(), 1, "the first report is on disk: {files:?}");
    let first_bytes = std::fs::read(&files[0]).expect("read the first report");
    fs.fill();

    let second = oom_kill(&daemon);
    assert_eq!(daemon.counter("daemon_counters", "oom_reports_write_errors"), 1, "one failed write is counted");
    assert_eq!(daemon.counter("daemon_counters", "oom_reports_written"), 1);
    let log = daemon.log();
    assert!(
        log.lines().any(|l| l.contains("could not be written") && l.contains("No space left on device")),
        "no clear message about the full disk; log:\n{log}"
    );
    // Both reports are listed (the second from memory); the first file is intact and no partial file is left.
    let listed = reports(&daemon);
    for pid in [first, second] {
        assert!(listed.iter().any(|r| r["pid"].as_u64() == Some(u64::from(pid))), "report of {pid}: {listed:#?}");
    }
    assert_eq!(report_files(&oom_dir), files, "the report files did not change");
    assert_eq!(std::fs::read(&files[0]).expect("read the first report again"), first_bytes, "first report intact");
    let leftovers: Vec<String> = std::fs::read_dir(&oom_dir)
        .expect("read the oom dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .map(|p| p.display().to_string())
        .collect();
    assert!(leftovers.is_empty(), "partial files left behind: {leftovers:?}");
    let metrics = leakprobe_tests::http::get_tcp(daemon.metrics_addr(), "/metrics", "text/plain");
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l.starts_with("leakprobe_daemon_oom_reports_write_errors_total") && l.ends_with(" 1")),
        "the metrics do not show the failed write:\n{}",
        metrics.body
    );
}
