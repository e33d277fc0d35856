//! OOM reports: the store on disk ([`store`]) and the thread that owns it.
//!
//! The state owner snapshots a victim when its OOM event arrives and a spawned task symbolizes the snapshot;
//! the finished report comes here to be named, logged and written. The server asks this thread for the list
//! and for single reports. Disk writes (with their fsyncs) happen on this thread, never on the state owner.

pub mod store;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
};

use humansize::{BINARY, format_size};
use tokio::sync::{mpsc, oneshot};

use self::store::ReportStore;
use crate::protocol::{OomListResponse, OomReport};

/// A message to the report thread.
#[derive(Debug)]
pub enum OomRequest {
    /// A finished report to name (its `id` is set here), log and write.
    Save(Box<OomReport>),
    List(oneshot::Sender<OomListResponse>),
    Get(String, oneshot::Sender<Option<OomReport>>),
}

/// The store's counters, readable by the state owner for `status`.
#[derive(Debug, Default)]
pub struct OomStats {
    pub loaded: AtomicU64,
    pub skipped: AtomicU64,
    pub written: AtomicU64,
    pub write_errors: AtomicU64,
    pub rotated: AtomicU64,
}

impl OomStats {
    fn update(&self, store: &ReportStore) {
        let c = store.counters();
        for (atomic, value) in [
            (&self.loaded, c.loaded),
            (&self.skipped, c.skipped),
            (&self.written, c.written),
            (&self.write_errors, c.write_errors),
            (&self.rotated, c.rotated),
        ] {
            atomic.store(value, Ordering::Relaxed);
        }
    }

    /// `(name, value)` pairs for the daemon counters of `status`.
    pub fn counters(&self) -> [(&'static str, u64); 5] {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("oom_reports_loaded", get(&self.loaded)),
            ("oom_reports_skipped", get(&self.skipped)),
            ("oom_reports_written", get(&self.written)),
            ("oom_reports_write_errors", get(&self.write_errors)),
            ("oom_reports_rotated", get(&self.rotated)),
        ]
    }
}

/// Starts the report thread. It ends when every sender is gone.
pub fn spawn(
    mut store: ReportStore,
    log_oom: bool,
    stats: Arc<OomStats>,
) -> std::io::Result<(mpsc::Sender<OomRequest>, thread::JoinHandle<()>)> {
    let (tx, mut rx) = mpsc::channel::<OomRequest>(64);
    stats.update(&store);
    let handle = thread::Builder::new().name("oom-reports".into()).spawn(move || {
        crate::privileges::drop_in_this_thread();
        while let Some(request) = rx.blocking_recv() {
            match request {
                OomRequest::Save(mut report) => {
                    report.id = store.new_id(report.time_unix_ms, report.pid);
                    if log_oom {
                        log::warn!("{}", log_line(&report));
                    }
                    let id = report.id.clone();
                    if let Err(err) = store.save(*report) {
                        log::warn!(
                            "OOM report {id} could not be written to {} ({err}); kept in memory only",
                            store.dir().display()
                        );
                    }
                    stats.update(&store);
                }
                OomRequest::List(reply) => {
                    let _ = reply.send(OomListResponse { reports: store.list() });
                }
                OomRequest::Get(id, reply) => {
                    let _ = reply.send(store.get(&id).cloned());
                }
            }
        }
    })?;
    Ok((tx, handle))
}

/// One line per OOM kill, for the daemon's log.
pub fn log_line(report: &OomReport) -> String {
    let kb = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |kb| format_size(kb.saturating_mul(1024), BINARY));
    let top = report.stacks_by_live_bytes.first().map_or_else(
        || "no tracked heap".to_owned(),
        |s| {
            let name = report.top_function().unwrap_or("(unknown)");
            format!("top stack {name} holds {}", format_size(s.live_bytes, BINARY))
        },
    );
    format!(
        "OOM kill: pid {} ({}) in cgroup {}, anon-rss {}, heap {} live; {top}; report {} (`leakprobe oom show {}`)",
        report.pid,
        report.comm,
        report.cgroup.as_deref().unwrap_or("?"),
        kb(report.anon_rss_kb),
        format_size(report.heap_live_bytes, BINARY),
        report.id,
        report.id
    )
}
