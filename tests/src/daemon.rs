//! A `leakprobe run` daemon owned by one test.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::{CLI_TIMEOUT, POLL_INTERVAL, daemon_bin, describe, run_with_timeout};

/// How long discovery may take to list a new allocator file (exec scans are immediate; dlopen waits for a
/// rescan).
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the daemon may take to load its programs and answer `status`.
pub const START_TIMEOUT: Duration = Duration::from_mins(1);
/// How long the daemon may take to exit after SIGTERM/SIGINT. Removing a uprobe waits for an RCU grace period
/// under a lock the kernel shares between all uprobes (measured: about 0.1 s per probe on a loaded 2-vCPU VM),
/// and a daemon that discovered jemalloc or tcmalloc holds about 100 probes.
pub const STOP_TIMEOUT: Duration = Duration::from_mins(1);
/// Environment variable choosing `--return-probes` for every daemon a test starts without choosing itself.
pub const RETURN_PROBES_ENV: &str = "LEAKPROBE_TEST_RETURN_PROBES";

/// A running daemon with its own socket and log in its own temporary directory. Dropping it sends SIGTERM and
/// (unless the test is already failing) asserts that it exited 0 and removed its socket.
pub struct Daemon {
    child: Child,
    dir: TempDir,
    socket: PathBuf,
    log: PathBuf,
    stopped: bool,
}

/// Makes `cmd`'s child die with SIGKILL when the test that spawned it dies.
pub fn kill_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure only calls prctl, which is async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

impl Daemon {
    /// Spawns `leakprobe run --socket <tempdir>/leakprobe.sock` and waits until `status --json` answers.
    pub fn start() -> Self {
        Self::start_in(
            tempfile::Builder::new().prefix("leakprobe-test-").tempdir().expect("create the daemon's temp dir"),
        )
    }

    /// Like [`Daemon::start`], with more arguments to `leakprobe run`.
    pub fn start_with_args(args: &[&str]) -> Self {
        Self::start_in_with_args(
            tempfile::Builder::new().prefix("leakprobe-test-").tempdir().expect("create the daemon's temp dir"),
            args,
        )
    }

    /// Like [`Daemon::start`], in a given directory (the socket is `DIR/leakprobe.sock`, which may already exist;
    /// the state directory is `DIR/state`).
    pub fn start_in(dir: TempDir) -> Self {
        Self::start_in_with_args(dir, &[])
    }

    /// Like [`Daemon::start_in`], with more arguments to `leakprobe run`.
    pub fn start_in_with_args(dir: TempDir, args: &[&str]) -> Self {
        let state = dir.path().join("state");
        Self::start_with_state_args(dir, &state, args)
    }

    /// Like [`Daemon::start_in`], with the given `--state-dir` (which may outlive the daemon).
    pub fn start_with_state(dir: TempDir, state_dir: &Path) -> Self {
        Self::start_with_state_args(dir, state_dir, &[])
    }

    /// Like [`Daemon::start_with_state`], with more arguments to `leakprobe run`.
    pub fn start_with_state_args(dir: TempDir, state_dir: &Path, args: &[&str]) -> Self {
        Self::start_wrapped(dir, state_dir, &[], args)
    }

    /// Like [`Daemon::start_with_state_args`], through `wrapper` (a program and its arguments, e.g. `setpriv ...
    /// --`), which must end by executing the daemon in its own process: the daemon's pid is the wrapper's.
    pub fn start_wrapped(dir: TempDir, state_dir: &Path, wrapper: &[String], args: &[&str]) -> Self {
        let socket = dir.path().join("leakprobe.sock");
        let log = dir.path().join("daemon.log");
        let log_file = File::create(&log).expect("create the daemon log file");
        let mut cmd = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut cmd = Command::new(program);
                cmd.args(wrapper_args).arg(daemon_bin());
                cmd
            }
            None => Command::new(daemon_bin()),
        };
        cmd.arg("run").arg("--socket").arg(&socket).arg("--state-dir").arg(state_dir);
        // Exact counts unless the test asks for sampling: `leakprobe run` samples by default.
        if !args.contains(&"--mode") {
            cmd.args(["--mode", "full"]);
        }
        // `LEAKPROBE_TEST_RETURN_PROBES=plain|session` runs every test on one return path (the default, `auto`,
        // is session uprobes on this kernel): the exactness tests must pass on both.
        if !args.contains(&"--return-probes")
            && let Ok(kind) = std::env::var(RETURN_PROBES_ENV)
        {
            cmd.args(["--return-probes", &kind]);
        }
        // System-wide malloc probes unless the test asks otherwise: most tests check exact heap figures of
        // fixtures that do not grow their anonymous memory steadily (`leakprobe run` defaults to `auto`).
        // Probing the host's allocator libraries before use costs every daemon a few hundred uprobe
        // registrations, each a system-wide pause of forks: only the tests of it ask for it.
        if !args.contains(&"--preprobe") {
            cmd.args(["--preprobe", "false"]);
        }
        if !args.contains(&"--malloc-probes") {
            cmd.args(["--malloc-probes", "all"]);
        }
        // Tests run in parallel: each daemon serves metrics on a port of its own unless the test chooses.
        if !args.iter().any(|a| a.starts_with("--metrics-addr") || *a == "--no-metrics") {
            cmd.args(["--metrics-addr", "127.0.0.1:0"]);
        }
        // Other work on the machine compiles in parallel: the toolchains' own allocators (rustc links jemalloc) are
        // left alone, so test daemons do not slow every build down.
        if !args.contains(&"--no-discovery") {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned());
            for (var, dir) in [("RUSTUP_HOME", ".rustup"), ("CARGO_HOME", ".cargo")] {
                let path = std::env::var(var).unwrap_or_else(|_| format!("{home}/{dir}"));
                cmd.arg(format!("--discovery-exclude={path}"));
            }
        }
        cmd.args(args)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone the log file"))
            .stderr(log_file);
        kill_with_parent(&mut cmd);
        let child = cmd.spawn().expect("spawn `leakprobe run`");
        let mut daemon = Daemon { child, dir, socket, log, stopped: false };
        daemon.wait_until_answering();
        daemon
    }

    fn wait_until_answering(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on the daemon") {
                self.stopped = true;
                panic!("the daemon exited ({status}) before answering status; log:\n{}", self.log());
            }
            if self.socket.exists() {
                let out = self.run_cli(&["status", "--socket", self.socket_str(), "--json"]);
                if out.status.success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not answer `status` within {START_TIMEOUT:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's socket as a `&str` (temp dirs are UTF-8).
    pub fn socket_str(&self) -> &str {
        self.socket.to_str().expect("socket path is UTF-8")
    }

    /// Where the daemon serves metrics, from its log line `serving metrics on http://ADDR/metrics`.
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        let log = self.log();
        log.lines()
            .find_map(|line| line.split("serving metrics on http://").nth(1))
            .and_then(|rest| rest.strip_suffix("/metrics"))
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("the daemon logged no metrics address; log:\n{log}"))
    }

    /// The daemon's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the daemon wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log.display()))
    }

    /// Runs the `leakprobe` binary with `args` verbatim (a CLI client; pass `--socket` yourself).
    pub fn run_cli(&self, args: &[&str]) -> Output {
        run_with_timeout(Command::new(daemon_bin()).args(args).env_remove("RUST_LOG"), CLI_TIMEOUT)
    }

    /// Runs a CLI command that must succeed and print JSON, and parses it.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.run_cli(args);
        assert!(
            out.status.success(),
            "`leakprobe {}` failed\n{}\ndaemon log:\n{}",
            args.join(" "),
            describe(&out),
            self.log()
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("`leakprobe {}` printed invalid JSON ({e})\n{}", args.join(" "), describe(&out)))
    }

    /// `leakprobe status --json`.
    pub fn status(&self) -> Value {
        self.cli_json(&["status", "--socket", self.socket_str(), "--json"])
    }

    /// Waits ([`DISCOVERY_TIMEOUT`] at most) until `status` lists an allocator file (`discovery.providers`) for
    /// which `matches` holds, and returns its entry.
    pub fn wait_for_provider(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        crate::poll_until(DISCOVERY_TIMEOUT, what, || {
            let status = self.status();
            status["discovery"]["providers"].as_array()?.iter().find(|p| matches(p)).cloned()
        })
    }

    /// [`Self::wait_for_provider`] for the file `file` (`MAJOR:MINOR:INODE`, see [`crate::file_id`]), supported or
    /// not.
    pub fn wait_for_file(&self, what: &str, file: &str) -> Value {
        self.wait_for_provider(what, |p| p["file"].as_str() == Some(file))
    }

    /// [`Self::wait_for_file`], until the file's probes are attached.
    pub fn wait_for_probes(&self, what: &str, file: &str) -> Value {
        self.wait_for_provider(what, |p| p["file"].as_str() == Some(file) && p["probes"].as_u64() > Some(0))
    }

    /// `leakprobe top --pid PID --limit 10000 --json`: every stack of `pid`.
    pub fn top(&self, pid: u32) -> Vec<Value> {
        let pid = pid.to_string();
        let report =
            self.cli_json(&["top", "--socket", self.socket_str(), "--pid", &pid, "--limit", "10000", "--json"]);
        stacks_of(report)
    }

    /// `leakprobe faults --pid PID --json`: the process's tier-0 report (up to 100 stacks), if tier 0 has seen it.
    pub fn faults_of(&self, pid: u32) -> Option<Value> {
        let pid_text = pid.to_string();
        let response =
            self.cli_json(&["faults", "--socket", self.socket_str(), "--pid", &pid_text, "--stacks", "100", "--json"]);
        let processes = response["processes"].as_array().unwrap_or_else(|| panic!("no processes array: {response:#}"));
        processes.iter().find(|p| p["pid"].as_u64() == Some(u64::from(pid))).cloned()
    }

    /// `leakprobe top --limit LIMIT --json`: stacks of every process.
    pub fn top_all(&self, limit: usize) -> Vec<Value> {
        let limit = limit.to_string();
        stacks_of(self.cli_json(&["top", "--socket", self.socket_str(), "--limit", &limit, "--json"]))
    }

    /// A kernel or daemon counter from `status`.
    pub fn counter(&self, group: &str, name: &str) -> u64 {
        let status = self.status();
        status[group][name].as_u64().unwrap_or_else(|| panic!("status has no counter {group}.{name}: {status:#}"))
    }

    /// The daemon's directory (socket, log, default state), kept after the daemon: for a restart on the same
    /// socket. Call it once the daemon is stopped ([`Daemon::stop_with`]).
    pub fn take_dir(mut self) -> TempDir {
        assert!(self.stopped, "take_dir on a running daemon");
        let spare = tempfile::Builder::new().prefix("leakprobe-spare-").tempdir().expect("spare temp dir");
        std::mem::replace(&mut self.dir, spare)
    }

    /// Sends `signal` and waits for the exit (SIGKILL and failure after [`STOP_TIMEOUT`]). Drop then checks nothing.
    pub fn stop_with(&mut self, signal: libc::c_int) -> ExitStatus {
        self.stopped = true;
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: plain kill(2) on our own child, which has not been reaped yet.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed: {}", std::io::Error::last_os_error());
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on the daemon") {
                return status;
            }
            if Instant::now() >= deadline {
                self.child.kill().expect("SIGKILL the daemon");
                let status = self.child.wait().expect("reap the daemon");
                panic!(
                    "the daemon ignored signal {signal} for {STOP_TIMEOUT:?} (SIGKILLed: {status}); log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        if std::thread::panicking() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            eprintln!("---- leakprobe daemon log ({}) ----\n{}", self.log.display(), self.log());
            return;
        }
        let status = self.stop_with(libc::SIGTERM);
        assert!(crate::exited_zero(status), "the daemon exited with {status} after SIGTERM; log:\n{}", self.log());
        assert!(!self.socket.exists(), "the daemon left its socket {} behind after SIGTERM", self.socket.display());
    }
}

fn stacks_of(mut report: Value) -> Vec<Value> {
    match report.get_mut("stacks").map(Value::take) {
        Some(Value::Array(stacks)) => stacks,
        _ => panic!("top JSON has no \"stacks\" array: {report:#}"),
    }
}
