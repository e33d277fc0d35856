//! A leakprobe daemon for the bench: its own socket and state directory, its status over the socket, its
//! CPU time and peak RSS from `/proc`.

use std::{
    fs,
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

pub struct Daemon {
    child: Child,
    binary: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts `leakprobe run --mode MODE --malloc-probes all ARGS...` (every process probed, as the heap
    /// benchmarks need) and waits until its socket answers (which means its probes are attached). `name` names
    /// its socket, state directory and log.
    pub fn start(binary: &Path, dir: &Path, name: &str, mode: &str, args: &[&str]) -> Result<Self> {
        Self::start_in_mode(binary, dir, name, mode, args, None)
    }

    /// Starts `leakprobe run --mode MODE --malloc-probes all` with the cost experiment `bits`
    /// (`LEAKPROBE_COST_EXPERIMENT`, read by the bench build only), for the floor rows.
    pub fn start_empty(binary: &Path, dir: &Path, name: &str, mode: &str, bits: u32) -> Result<Self> {
        Self::start_in_mode(binary, dir, name, mode, &[], Some(bits))
    }

    fn start_in_mode(
        binary: &Path,
        dir: &Path,
        name: &str,
        mode: &str,
        args: &[&str],
        cost_experiment: Option<u32>,
    ) -> Result<Self> {
        let mut all = vec!["--mode", mode, "--malloc-probes", "all"];
        all.extend_from_slice(args);
        Self::spawn(binary, dir, name, &all, cost_experiment)
    }

    /// Starts `leakprobe run ARGS` (files named after `name`) and waits until its socket answers.
    pub fn start_with(binary: &Path, dir: &Path, name: &str, args: &[&str]) -> Result<Self> {
        Self::spawn(binary, dir, name, args, None)
    }

    fn spawn(binary: &Path, dir: &Path, name: &str, args: &[&str], cost_experiment: Option<u32>) -> Result<Self> {
        let socket = dir.join(format!("leakprobe-{name}.sock"));
        let state = dir.join(format!("state-{name}"));
        let log = dir.join(format!("leakprobe-{name}.log"));
        let mut cmd = Command::new(binary);
        // No metrics listener: its port would clash with any other daemon on the host.
        cmd.arg("run").args(args).arg("--no-metrics").arg("--socket").arg(&socket).arg("--state-dir").arg(&state);
        if let Some(bits) = cost_experiment {
            cmd.env("LEAKPROBE_COST_EXPERIMENT", bits.to_string());
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut daemon = Self { child, binary: binary.to_path_buf(), socket, log };
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            if let Some(status) = daemon.child.try_wait()? {
                bail!("leakprobe run ({name}) exited ({status}): {}", daemon.log_tail());
            }
            if daemon.status().is_ok() {
                return Ok(daemon);
            }
            if Instant::now() > deadline {
                bail!("leakprobe run ({name}) did not answer in a minute: {}", daemon.log_tail());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// `leakprobe ARGS --socket SOCKET` (a client command with `--json`): its output, parsed.
    pub fn cli(&self, args: &[&str]) -> Result<Value> {
        let out = Command::new(&self.binary).args(args).arg("--socket").arg(&self.socket).output()?;
        ensure!(out.status.success(), "leakprobe {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
        serde_json::from_slice(&out.stdout).with_context(|| format!("leakprobe {args:?}: JSON"))
    }

    /// `GET /v1/status`, parsed.
    pub fn status(&self) -> Result<Value> {
        self.get("/v1/status")
    }

    /// `GET path`, parsed as JSON.
    pub fn get(&self, path: &str) -> Result<Value> {
        let mut stream = UnixStream::connect(&self.socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        // HTTP/1.0: the daemon closes the connection after the response, which has a Content-Length.
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let (head, body) = response.split_once("\r\n\r\n").context("no end of HTTP headers")?;
        ensure!(head.split_whitespace().nth(1) == Some("200"), "{path}: {}", head.lines().next().unwrap_or(""));
        serde_json::from_str(body).with_context(|| format!("{path}: JSON"))
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time and peak RSS so far.
    pub fn usage(&self) -> Result<Usage> {
        let pid = self.child.id();
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name, which may hold spaces: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat.rsplit_once(')').context("/proc/PID/stat")?.1.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let hwm_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .context("no VmHWM in /proc/PID/status")?;
        let counters = Counters::read(self)?;
        Ok(Usage {
            cpu_seconds: ticks as f64 / clock_ticks()?,
            wall: Instant::now(),
            seconds: 0.0,
            peak_rss_bytes: hwm_kib * 1024,
            events: counters.events,
        })
    }

    /// SIGTERM, and wait for the daemon to exit (SIGKILL after 30 s).
    pub fn stop(mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(status.success(), "leakprobe run exited with {status}: {}", self.log_tail());
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("leakprobe run did not stop in 30 s after SIGTERM");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    /// A daemon left running would go on probing every process: stop it when the bench fails half-way.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
            let _ = self.child.wait();
        }
    }
}

/// `getconf CLK_TCK`: the unit of the times in `/proc/PID/stat`.
fn clock_ticks() -> Result<f64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().context("getconf CLK_TCK")
}

/// A daemon's resource use.
#[derive(Clone, Debug)]
pub struct Usage {
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
    /// When it was read.
    pub wall: Instant,
    /// Wall seconds covered (for a difference of two readings).
    pub seconds: f64,
    /// Peak resident set size (`VmHWM`) since the daemon started.
    pub peak_rss_bytes: u64,
    /// Events processed.
    pub events: u64,
}

impl Usage {
    /// The use between `earlier` and `self` (the peak RSS stays the whole life's).
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            cpu_seconds: self.cpu_seconds - earlier.cpu_seconds,
            wall: self.wall,
            seconds: (self.wall - earlier.wall).as_secs_f64(),
            peak_rss_bytes: self.peak_rss_bytes,
            events: self.events - earlier.events,
        }
    }
}

/// The counters the ingest measurement follows.
#[derive(Clone, Debug)]
pub struct Counters {
    /// Events the daemon processed.
    pub events: u64,
    /// Allocation and free events the kernel put in the ring buffer.
    pub emitted: u64,
    /// Events the kernel dropped: ring buffer full.
    pub drops: u64,
    /// Allocations not tracked: live map full.
    pub live_map_full: u64,
}

impl Counters {
    pub fn read(daemon: &Daemon) -> Result<Self> {
        let status = daemon.status()?;
        let get = |group: &str, name: &str| {
            status[group][name].as_u64().with_context(|| format!("status has no {group}.{name}"))
        };
        Ok(Self {
            events: get("daemon_counters", "events")?,
            emitted: get("kernel_counters", "allocs")? + get("kernel_counters", "frees")?,
            drops: get("kernel_counters", "ringbuf_full_alloc")?
                + get("kernel_counters", "ringbuf_full_free")?
                + get("kernel_counters", "ringbuf_full_process")?,
            live_map_full: get("kernel_counters", "live_map_full")?,
        })
    }
}
