//! Harness of the leakprobe integration tests: runs the real daemon (real eBPF, real uprobes) against fixture
//! processes and reads its answers.
//!
//! The daemon traces every process on the machine, including the fixtures and daemons of other tests running in
//! parallel: every assertion is made on the stacks of one fixture pid.

pub mod bpf;
pub mod cgroup;
pub mod container;
pub mod creds;
pub mod daemon;
pub mod expect;
pub mod fixture;
pub mod http;
pub mod metrics;
pub mod pprof;
pub mod prometheus;
pub mod stacks;
pub mod unit;

use std::fs::File;
use std::io::{Read, Seek};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub use daemon::Daemon;
pub use fixture::Fixture;
pub use stacks::{StackExt, dump, wait_for_fence, wait_for_stack};

/// How long a CLI invocation may take before it is killed and the test fails.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// Interval of every poll loop.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The compiled C leaker (`tests/fixtures/leaker.c`).
pub const LEAKER: &str = env!("LEAKER_C");
/// The growth-pattern fixture (`tests/fixtures/growth.c`).
pub const GROWTH: &str = env!("GROWTH_C");
/// The flood fixture (`tests/fixtures/flood.c`): threads, live allocations, distinct stacks, short-lived processes.
pub const FLOOD: &str = env!("FLOOD_C");
/// The sampled-mode accuracy fixture (`tests/fixtures/sampling.c`).
pub const SAMPLING: &str = env!("SAMPLING_C");
/// The tier-0/tier-1 workloads (`tests/fixtures/tier0.c`).
pub const TIER0: &str = env!("TIER0_C");
/// The Go fixture (tests/fixtures/golang/main.go), built with Debian's golang-go.
pub const GOLANG_LEAK: &str = env!("GOLANG_LEAK");
/// The Node.js fixture (run with `node --perf-basic-prof`).
pub const NODE_LEAK_JS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/leak_sessions.js");
/// The Java fixture (run by `java` as a single source file).
pub const JAVA_LEAK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/Leak.java");
/// The fixture built without frame pointers (`tests/fixtures/frameless.c`, with `libframeless.so`).
pub const FRAMELESS: &str = env!("FRAMELESS_C");
/// A copy of `libframeless.so` (linked `-Bsymbolic`), for `frameless dlopen`.
pub const FRAMELESS_DL_SO: &str = env!("FRAMELESS_DL_SO");
/// `frameless.c` built with frame pointers.
pub const FRAMED: &str = env!("FRAMED_C");
/// The C++ fixture without frame pointers (`tests/fixtures/frameless_cxx.cc`).
pub const FRAMELESS_CXX: &str = env!("FRAMELESS_CXX");
/// `frameless_cxx.cc` built with frame pointers.
pub const FRAMED_CXX: &str = env!("FRAMED_CXX");
/// Source of the C leaker, to check the line numbers the daemon reports.
pub const LEAKER_SRC: &str = env!("LEAKER_C_SRC");
/// A shared object that defines no `malloc`.
pub const NOMALLOC_SO: &str = env!("NOMALLOC_SO");

/// The `leakprobe` binary built next to the test executable (`target/<profile>/leakprobe`).
pub fn daemon_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe of the test binary");
    // The test binary is target/<profile>/deps/NAME-HASH.
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap_or_else(|| panic!("test executable {} has no grandparent directory", exe.display()));
    let bin = profile_dir.join("leakprobe");
    assert!(
        bin.is_file(),
        "daemon binary {} not found: run the tests through `cargo xtask test`, or `cargo nextest run --workspace --features leakprobe/bench`",
        bin.display()
    );
    bin
}

/// Runs `cmd` to completion with its output captured, killing it and failing the test after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut out = tempfile::tempfile().expect("temp file for stdout");
    let mut err = tempfile::tempfile().expect("temp file for stderr");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone stdout file"))
        .stderr(err.try_clone().expect("clone stderr file"));
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait on a CLI child") {
            break status;
        }
        if Instant::now() >= deadline {
            child.kill().expect("kill a hung CLI child");
            child.wait().expect("reap a killed CLI child");
            panic!(
                "{cmd:?} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                read_all(&mut out),
                read_all(&mut err)
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    Output { status, stdout: read_all(&mut out).into_bytes(), stderr: read_all(&mut err).into_bytes() }
}

fn read_all(file: &mut File) -> String {
    file.rewind().expect("rewind captured output");
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).expect("read captured output");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A one-paragraph description of a finished command, for panic messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Calls `poll` every [`POLL_INTERVAL`] until it returns `Some`, failing with `what` after `timeout`.
pub fn poll_until<T>(timeout: Duration, what: &str, mut poll: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = poll() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Milliseconds since the Unix epoch now.
pub fn now_unix_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    u64::try_from(since.as_millis()).expect("milliseconds fit in u64")
}

/// Whether `status` is a clean exit with code 0.
pub fn exited_zero(status: ExitStatus) -> bool {
    status.code() == Some(0)
}

/// Starts a daemon, then the C leaker in `mode`, and waits for its fence. Returns the daemon, the fixture (still
/// running, blocked on stdin) and the `top --pid` snapshot that had the fence.
pub fn observe_leaker(mode: &str) -> (Daemon, Fixture, Vec<serde_json::Value>) {
    let daemon = Daemon::start();
    let mut fixture = Fixture::leaker(mode);
    fixture.wait_line("ready");
    let stacks = wait_for_fence(&daemon, fixture.pid());
    (daemon, fixture, stacks)
}

/// `MAJOR:MINOR:INODE` of the file at `path`, as `status` names allocator files (hexadecimal device numbers, as in
/// `/proc/PID/maps`).
pub fn file_id(path: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (dev, ino) = (meta.dev(), meta.ino());
    format!("{:02x}:{:02x}:{ino}", ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff), (dev & 0xff) | ((dev >> 12) & !0xff))
}
