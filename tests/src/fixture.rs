//! A fixture process with piped stdin/stdout, killed on drop.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::POLL_INTERVAL;
use crate::daemon::kill_with_parent;

/// How long a fixture may take to print an expected line or to exit.
pub const FIXTURE_TIMEOUT: Duration = Duration::from_secs(30);

/// A running fixture (the C leaker or the Rust leaker).
pub struct Fixture {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    exited: bool,
}

impl Fixture {
    /// Spawns `path args...` with piped stdin and stdout (stderr is inherited so the test output shows it).
    pub fn spawn(path: impl AsRef<Path>, args: &[&str]) -> Self {
        Self::spawn_with_env(path, args, &[])
    }

    /// Like [`Fixture::spawn`], with more environment variables (e.g. `LD_LIBRARY_PATH`).
    pub fn spawn_with_env(path: impl AsRef<Path>, args: &[&str], env: &[(&str, &str)]) -> Self {
        let path = path.as_ref();
        let name = format!("{} {}", path.display(), args.join(" "));
        let mut cmd = Command::new(path);
        cmd.envs(env.iter().copied());
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        kill_with_parent(&mut cmd);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn fixture `{name}`: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("fixture stdout is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Fixture { name, child, stdin, lines, exited: false }
    }

    /// Spawns the C leaker in `mode`.
    pub fn leaker(mode: &str) -> Self {
        Self::spawn(crate::LEAKER, &[mode])
    }

    /// The fixture's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the fixture prints the line `want` (other lines are skipped).
    pub fn wait_line(&mut self, want: &str) {
        let deadline = Instant::now() + FIXTURE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == want => return,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!("fixture `{}` did not print {want:?} within {FIXTURE_TIMEOUT:?}", self.name)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().expect("reap fixture");
                    self.exited = true;
                    panic!("fixture `{}` closed stdout ({status}) before printing {want:?}", self.name);
                }
            }
        }
    }

    /// Writes `line` and a newline to the fixture's stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("fixture stdin already closed");
        writeln!(stdin, "{line}").unwrap_or_else(|e| panic!("write {line:?} to fixture `{}`: {e}", self.name));
        stdin.flush().expect("flush fixture stdin");
    }

    /// Waits for the fixture to exit by itself (or be killed) within `timeout`, and returns how it ended.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on fixture") {
                self.exited = true;
                return status;
            }
            assert!(Instant::now() < deadline, "fixture `{}` did not exit within {timeout:?}", self.name);
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Closes stdin (the fixtures then exit) and waits for the exit; fails unless it exits 0.
    pub fn close_stdin_and_wait(&mut self) -> ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + FIXTURE_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on fixture") {
                self.exited = true;
                assert!(crate::exited_zero(status), "fixture `{}` exited with {status}", self.name);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "fixture `{}` did not exit within {FIXTURE_TIMEOUT:?} after stdin EOF",
                self.name
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
