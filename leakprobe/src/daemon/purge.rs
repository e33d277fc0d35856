//! Removes an exited process's addresses from the kernel's live-address map, on its own thread (one
//! syscall per address; a process may exit with millions of live blocks).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
};

use aya::maps::{HashMap, MapData};
use leakprobe_common::LiveKey;

/// Addresses of a purged process, recorded before `before_ns`.
#[derive(Debug)]
pub struct PurgeJob {
    pub tgid: u32,
    pub addrs: Vec<u64>,
    pub before_ns: u64,
}

/// Starts the purger; it ends when the sender is dropped.
pub fn spawn(
    mut live: HashMap<MapData, LiveKey, u64>,
    purged: Arc<AtomicU64>,
) -> std::io::Result<(mpsc::Sender<PurgeJob>, thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<PurgeJob>();
    let handle = thread::Builder::new().name("purger".into()).spawn(move || {
        crate::privileges::drop_in_this_thread();
        for job in rx {
            for addr in job.addrs {
                let key = LiveKey { tgid: job.tgid, pad: 0, addr };
                // Only entries recorded before the exit: a new process that reuses the pid may already
                // have allocated at the same address.
                if live.get(&key, 0).is_ok_and(|ts| ts < job.before_ns) && live.remove(&key).is_ok() {
                    purged.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })?;
    Ok((tx, handle))
}
