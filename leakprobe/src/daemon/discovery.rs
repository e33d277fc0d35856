//! The discovery thread: owns the probes, scans processes (after `execve`, and all of them every rescan
//! interval) and tells the state owner what is attached. Scanning reads files, so it runs off the async tasks.
//! Tier 1 asks it, by command, to attach and detach pid-scoped probes and for the programs' run-time statistics;
//! the answers come back as [`Request`]s, so the state owner never waits on a scan.
//! Dropping every [`DiscoveryHandle`] ends the thread, which hands the probes back to be detached.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, Sender},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use tokio::sync::mpsc as tokio_mpsc;

use super::messages::Request;
use crate::probes::{
    Probes,
    discover::{Discovery, NewRoots},
};

/// How long after `execve` a process is scanned: the dynamic loader has mapped its libraries by then.
pub const EXEC_SCAN_DELAY: Duration = Duration::from_millis(30);
/// Exec events queued at most; further ones are dropped (counted) and the next full scan catches up.
const EXEC_QUEUE: usize = 4_096;

/// What the discovery thread is asked to do.
#[derive(Debug)]
pub enum Command {
    /// Process `pid` called `execve`: scan it soon.
    Exec(u32),
    /// Tier 1: attach pid-scoped probes to every allocator file the process maps; answered with
    /// [`Request::Tier1Attached`].
    AttachPid(u32),
    /// Tier 1: take the process's pid-scoped probes off.
    DetachPid(u32),
    /// Read the programs' run-time statistics; answered with [`Request::ProgramStats`].
    ProgramStats,
}

/// Sends commands to the discovery thread.
#[derive(Clone, Debug)]
pub struct DiscoveryHandle {
    tx: Sender<Command>,
    /// Exec events queued and not yet taken: bounds the queue (commands of tier 1 are few and never dropped).
    queued_execs: Arc<AtomicUsize>,
    /// Whether processes are scanned after `execve`.
    scans: bool,
}

impl DiscoveryHandle {
    /// Process `pid` called `execve`: scan it soon. Returns `false` when the event was dropped (queue full).
    pub fn exec(&self, pid: u32) -> bool {
        if !self.scans {
            return true;
        }
        if self.queued_execs.load(Ordering::Relaxed) >= EXEC_QUEUE {
            return false;
        }
        self.queued_execs.fetch_add(1, Ordering::Relaxed);
        // A send fails only once the thread is gone (shutting down): nothing to scan any more.
        let _ = self.tx.send(Command::Exec(pid));
        true
    }

    /// Asks for a command; `false` when the thread is gone (shutting down).
    pub fn send(&self, command: Command) -> bool {
        self.tx.send(command).is_ok()
    }
}

/// Commands waiting for the discovery thread.
pub struct CommandReceiver {
    rx: Receiver<Command>,
    queued_execs: Arc<AtomicUsize>,
}

/// The command queue: the state owner gets the handle before the thread starts (commands wait in the queue).
pub fn channel(enabled: bool) -> (DiscoveryHandle, CommandReceiver) {
    let (tx, rx) = mpsc::channel::<Command>();
    let queued_execs = Arc::new(AtomicUsize::new(0));
    (
        DiscoveryHandle { tx, queued_execs: Arc::clone(&queued_execs), scans: enabled },
        CommandReceiver { rx, queued_execs },
    )
}

/// Starts the thread. The start-up scan has been made already.
pub fn spawn(
    mut probes: Probes,
    mut discovery: Discovery,
    commands: CommandReceiver,
    requests: tokio_mpsc::Sender<Request>,
) -> std::io::Result<JoinHandle<Probes>> {
    let enabled = discovery.enabled();
    thread::Builder::new().name("discovery".into()).spawn(move || {
        crate::privileges::drop_in_this_thread();
        let interval = discovery.rescan_interval().unwrap_or(Duration::from_hours(1));
        let mut next_full = Instant::now() + interval;
        let mut pending: VecDeque<(u32, Instant)> = VecDeque::new();
        let mut new_roots = NewRoots::new();
        // The host's allocator libraries, before any process maps them (`--preprobe`): after start-up, since
        // each probe's registration waits for the kernel to change every mapping of its file.
        let started = Instant::now();
        let preprobed = discovery.preprobe(&mut probes, std::path::Path::new("/"), true);
        if preprobed > 0 {
            log::info!(
                "discovery: {preprobed} allocator libraries of the host probed before use in {} ms",
                started.elapsed().as_millis()
            );
            if requests.blocking_send(report(&discovery)).is_err() {
                return probes;
            }
        }
        loop {
            let due = pending.front().map_or(next_full, |&(_, at)| at.min(next_full));
            // Whether the attach points changed: `status` then gets them again.
            let mut changed = false;
            // Once the state owner is gone nothing is ever sent again: the end.
            let answer = match commands.rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(Command::Exec(pid)) => {
                    commands.queued_execs.fetch_sub(1, Ordering::Relaxed);
                    // A container's first process: its allocator libraries now, not at its scan.
                    changed = new_roots.on_exec(&mut discovery, &mut probes, pid);
                    pending.push_back((pid, Instant::now() + EXEC_SCAN_DELAY));
                    None
                }
                Ok(Command::AttachPid(pid)) => {
                    let result = discovery.attach_pid(&mut probes, pid);
                    changed = result.is_ok();
                    Some(Request::Tier1Attached { pid, result })
                }
                Ok(Command::DetachPid(pid)) => {
                    changed = discovery.detach_pid(&mut probes, pid);
                    None
                }
                Ok(Command::ProgramStats) => Some(Request::ProgramStats(probes.program_stats())),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if let Some(answer) = answer
                && requests.blocking_send(answer).is_err()
            {
                break;
            }
            let now = Instant::now();
            while let Some(&(pid, at)) = pending.front() {
                if at > now {
                    break;
                }
                pending.pop_front();
                discovery.scan_pid(&mut probes, pid);
                changed = true;
            }
            if enabled && now >= next_full {
                discovery.full_scan(&mut probes);
                next_full = Instant::now() + interval;
                changed = true;
            }
            if changed && requests.blocking_send(report(&discovery)).is_err() {
                break;
            }
        }
        probes
    })
}

/// What the state owner keeps of discovery.
pub fn report(discovery: &Discovery) -> Request {
    Request::Discovery {
        points: discovery.attach_points(),
        status: Box::new(discovery.status()),
        counters: discovery.counters(),
    }
}
