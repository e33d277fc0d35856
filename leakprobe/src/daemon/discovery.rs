//! The discovery thread: owns the probes, scans processes (after `execve`, and all of them every rescan
//! interval) and tells the state owner what is attached. Scanning reads files, so it runs off the async tasks.
//! Dropping every [`DiscoveryHandle`] ends the thread, which hands the probes back to be detached.

use std::{
    collections::VecDeque,
    sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use tokio::sync::mpsc as tokio_mpsc;

use super::state::Request;
use crate::probes::{Probes, discover::Discovery};

/// How long after `execve` a process is scanned: the dynamic loader has mapped its libraries by then.
pub const EXEC_SCAN_DELAY: Duration = Duration::from_millis(30);
/// Exec events queued at most; further ones are dropped (counted) and the next full scan catches up.
const EXEC_QUEUE: usize = 4_096;

/// Sends exec events to the discovery thread.
#[derive(Clone, Debug)]
pub struct DiscoveryHandle {
    tx: Option<SyncSender<u32>>,
}

impl DiscoveryHandle {
    /// Process `pid` called `execve`: scan it soon. Returns `false` when the event was dropped (queue full).
    pub fn exec(&self, pid: u32) -> bool {
        match &self.tx {
            Some(tx) => !matches!(tx.try_send(pid), Err(TrySendError::Full(_))),
            None => true,
        }
    }
}

/// Exec events waiting for the discovery thread.
pub struct ExecReceiver(Receiver<u32>);

/// The exec queue: the state owner gets the handle before the thread starts (events wait in the queue).
pub fn channel(enabled: bool) -> (DiscoveryHandle, ExecReceiver) {
    let (tx, rx) = mpsc::sync_channel::<u32>(EXEC_QUEUE);
    (DiscoveryHandle { tx: enabled.then_some(tx) }, ExecReceiver(rx))
}

/// Starts the thread. The start-up scan has been made already.
pub fn spawn(
    mut probes: Probes,
    mut discovery: Discovery,
    ExecReceiver(rx): ExecReceiver,
    requests: tokio_mpsc::Sender<Request>,
) -> std::io::Result<JoinHandle<Probes>> {
    let enabled = discovery.enabled();
    thread::Builder::new().name("discovery".into()).spawn(move || {
        crate::privileges::drop_in_this_thread();
        let interval = discovery.rescan_interval().unwrap_or(Duration::from_hours(1));
        let mut next_full = Instant::now() + interval;
        let mut pending: VecDeque<(u32, Instant)> = VecDeque::new();
        loop {
            let due = pending.front().map_or(next_full, |&(_, at)| at.min(next_full));
            // Without discovery (or once the state owner is gone) nothing is ever sent: wait for the end.
            match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(pid) => pending.push_back((pid, Instant::now() + EXEC_SCAN_DELAY)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            let mut scanned = false;
            while let Some(&(pid, at)) = pending.front() {
                if at > now {
                    break;
                }
                pending.pop_front();
                discovery.scan_pid(&mut probes, pid);
                scanned = true;
            }
            if enabled && now >= next_full {
                discovery.full_scan(&mut probes);
                next_full = Instant::now() + interval;
                scanned = true;
            }
            if scanned && requests.blocking_send(report(&discovery)).is_err() {
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
