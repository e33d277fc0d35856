//! No blind start: in full mode with `--malloc-probes all`, a process's allocations are exact from the first
//! instruction of `main` when its allocator is a library of the host's library directories (probed at the
//! daemon's start-up, before any process maps it), linked or loaded with `dlopen`. A container's own libc is
//! probed when its first process calls `execve`, which races the program: whatever the probes missed is counted
//! (`allocs_before_probes`, from the frees of addresses never reported), and the test checks that seen plus
//! counted is every allocation. Nothing is ever stopped: a parent waiting with `WUNTRACED` sees only the exit.

use std::time::Duration;

use leakprobe_tests::container::{Container, program_pid};
use leakprobe_tests::stacks::by_fn0;
use leakprobe_tests::{Daemon, Fixture, StackExt, dump, file_id, poll_until, wait_for_stack};
use serde_json::Value;

/// Mirrors `fixtures/early_alloc.c`.
const EARLY_COUNT: u64 = 32;
const EARLY_SIZE: u64 = 777;
const LATE_COUNT: u64 = 8;
const LATE_SIZE: u64 = 1234;
/// Allocations the C library makes for itself before `main` and frees later, missed with the early ones.
const LIBC_STARTUP_SLACK: u64 = 16;
/// Time for the daemon to process events already in the ring buffer (read every 10 ms).
const SETTLE: Duration = Duration::from_millis(500);

/// Live bytes and count of the stacks whose innermost frame is `function`.
fn live_of(stacks: &[Value], function: &str) -> (u64, u64) {
    by_fn0(stacks, function).iter().fold((0, 0), |(b, c), s| (b + s.live_bytes(), c + s.live_count()))
}

/// `allocs_before_probes` of process `pid` in `processes --json` (`None`: not counted).
fn allocs_before_probes(daemon: &Daemon, pid: u32) -> Option<u64> {
    let socket = daemon.socket_str().to_owned();
    let answer = daemon.cli_json(&["processes", "--socket", &socket, "--pid", &pid.to_string(), "--json"]);
    let processes = answer["processes"].as_array().cloned().unwrap_or_default();
    let process = processes.iter().find(|p| p["pid"].as_u64() == Some(u64::from(pid)));
    process.and_then(|p| p["allocs_before_probes"].as_u64())
}

/// Runs the protocol of `early_alloc` with process `pid` (`probed` waits until its allocator is probed): returns
/// how many of the early allocations the daemon saw, and how many it counted as missed. The late ones must be
/// exact.
fn early_then_late(daemon: &Daemon, fixture: &mut Fixture, pid: u32, probed: impl FnOnce()) -> (u64, u64) {
    probed();
    std::thread::sleep(SETTLE);
    let (bytes, seen) = live_of(&daemon.top(pid), "early_batch");
    assert_eq!(bytes, seen * EARLY_SIZE, "early_batch's blocks are {EARLY_SIZE} bytes each");
    fixture.send_line("free");
    fixture.wait_line("done");
    let stacks = wait_for_stack(daemon, pid, "late_batch", |s| {
        s.function_at(0) == Some("late_batch") && s.live_count() == LATE_COUNT
    });
    assert_eq!(live_of(&stacks, "late_batch"), (LATE_COUNT * LATE_SIZE, LATE_COUNT), "{}", dump(&stacks));
    assert_eq!(live_of(&stacks, "early_batch"), (0, 0), "every early block was freed: {}", dump(&stacks));
    let missed = allocs_before_probes(daemon, pid).expect("a process started under the daemon is counted");
    (seen, missed)
}

/// The provider whose path ends with `suffix`, from `status`.
fn provider(daemon: &Daemon, suffix: &str) -> Value {
    let status = daemon.status();
    let providers = status["discovery"]["providers"].as_array().cloned().unwrap_or_default();
    providers.into_iter().find(|p| p["path"].as_str().is_some_and(|path| path.ends_with(suffix))).unwrap_or_default()
}

/// A daemon that probes allocator libraries before use (not the test harness's default).
fn daemon() -> Daemon {
    Daemon::start_with_args(&["--preprobe", "true"])
}

fn exact_from_the_start(binary: &str, library: &str) {
    let daemon = daemon();
    let library = poll_until(Duration::from_mins(1), "the host's libraries probed before use", || {
        Some(provider(&daemon, library)).filter(|p| p["preprobed"].as_bool() == Some(true))
    });
    assert_eq!((library["preprobed"].as_bool(), library["pinned"].as_bool()), (Some(true), Some(true)), "{library:#}");
    assert!(library["probes"].as_u64() > Some(0), "{library:#}");
    let mut fixture = Fixture::spawn(binary, &[]);
    let pid = fixture.pid();
    fixture.wait_line("allocated");
    let (seen, missed) = early_then_late(&daemon, &mut fixture, pid, || {});
    assert_eq!((seen, missed), (EARLY_COUNT, 0), "every early allocation seen, none missed");
    fixture.close_stdin_and_wait();
}

#[test]
fn a_jemalloc_program_is_exact_from_its_first_allocation() {
    exact_from_the_start(env!("EARLY_ALLOC_JEMALLOC"), "libjemalloc.so.2");
}

#[test]
fn a_library_loaded_with_dlopen_and_used_at_once_is_exact() {
    exact_from_the_start(env!("EARLY_ALLOC_DLOPEN"), "libmimalloc.so.2.0");
}

/// A container's copy of the libc (another file than the host's) is probed when the container's program calls
/// `execve`: the allocations made before are counted, and with those seen they make every allocation.
#[test]
fn a_containers_first_allocations_are_seen_or_counted() {
    let container = Container::new(env!("EARLY_ALLOC_LIBC"), "early_alloc", 1 << 30);
    let daemon = daemon();
    let mut fixture = container.spawn("early_alloc", &[]);
    fixture.wait_line("allocated");
    let pid = program_pid(&fixture);
    let libc = file_id(&container.root().join("lib/x86_64-linux-gnu/libc.so.6"));
    let (seen, missed) = early_then_late(&daemon, &mut fixture, pid, || {
        daemon.wait_for_probes("the container's libc probed", &libc);
    });
    println!("container: {seen} early allocations seen, {missed} counted as missed");
    // Every early allocation missed is counted, and so are the C library's own start-up allocations freed
    // since (a few), which were missed too.
    let early_missed = EARLY_COUNT - seen;
    assert!(
        (early_missed..=early_missed + LIBC_STARTUP_SLACK).contains(&missed),
        "seen ({seen}) and counted ({missed}) make every early allocation, and at most {LIBC_STARTUP_SLACK} more"
    );
    fixture.close_stdin_and_wait();
}

/// The daemon never stops a process: a parent waiting with `WUNTRACED` sees each child's exit and nothing else.
#[test]
fn a_parent_waiting_with_wuntraced_sees_no_stop() {
    let daemon = daemon();
    for _ in 0..20 {
        // Stdin closed: the fixture allocates, then exits 3 when it reads the end of its input.
        #[allow(clippy::zombie_processes, reason = "reaped below by waitpid with WUNTRACED, which is the test")]
        let child = std::process::Command::new(env!("EARLY_ALLOC_LIBC"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn early_alloc");
        let pid = libc::pid_t::try_from(child.id()).expect("a pid");
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out-pointer.
        let waited = unsafe { libc::waitpid(pid, &raw mut status, libc::WUNTRACED) };
        assert_eq!(waited, pid, "waitpid: {}", std::io::Error::last_os_error());
        assert!(!libc::WIFSTOPPED(status), "the child was stopped (signal {})", libc::WSTOPSIG(status));
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 3, "wait status {status:#x}");
    }
    assert!(daemon.status()["pid"].as_u64().is_some(), "the daemon still answers");
}
