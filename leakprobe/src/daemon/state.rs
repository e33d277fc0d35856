//! The one owner of the daemon's mutable state: the table. Ingest sends it batches; queries arrive as
//! messages with a reply channel.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use aya::maps::{MapData, PerCpuArray};
use leakprobe_common::{Counter, Event, OOM_PROGRAM};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{oom::OomTracker, purge::PurgeJob};
use crate::{
    core::table::{Applied, Table},
    ingest::Batch,
    procfs::{self, Clock},
    protocol::{AttachPoint, StackReport, StatusResponse, TableSizes, TopQuery, TopResponse},
    symbolize::{StackRequest, SymbolizerHandle},
};

/// A message to the state owner.
#[derive(Debug)]
pub enum Request {
    Top(TopQuery, oneshot::Sender<TopResponse>),
    Status(oneshot::Sender<StatusResponse>),
    /// The probes are attached (sent once, after attach).
    Attached(Vec<AttachPoint>),
}

/// The state and what it needs to answer.
pub struct State {
    pub table: Table,
    pub counters: PerCpuArray<MapData, u64>,
    pub purger: std::sync::mpsc::Sender<PurgeJob>,
    pub purged_entries: Arc<AtomicU64>,
    pub symbolizer: SymbolizerHandle,
    pub clock: Clock,
    pub started: Instant,
    pub attach_points: Vec<AttachPoint>,
    pub decode_errors: u64,
    pub batches: u64,
    pub oom: OomTracker,
}

impl State {
    /// Serves batches and requests until cancelled or until both channels close.
    pub async fn run(
        mut self,
        mut batches: mpsc::Receiver<Batch>,
        mut requests: mpsc::Receiver<Request>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                batch = batches.recv() => match batch {
                    Some(batch) => self.apply(&batch),
                    None => return,
                },
                request = requests.recv() => match request {
                    Some(request) => self.answer(request),
                    None => return,
                },
            }
        }
    }

    fn apply(&mut self, batch: &Batch) {
        self.batches += 1;
        self.decode_errors += batch.decode_errors;
        for event in &batch.events {
            if let Event::Oom(oom) = event {
                // Before the victim's exit event (later in the ring buffer) purges it.
                self.oom.on_oom(oom, &self.table, self.clock, &self.symbolizer);
            }
            match self.table.apply(event) {
                Applied::Nothing => {}
                Applied::NewProcess(tgid) => {
                    // The event carries the thread's name; the process's is in /proc while it lives.
                    if let Some(comm) = procfs::comm(tgid) {
                        self.table.set_comm(tgid, comm);
                    }
                    self.oom.new_process(tgid);
                }
                Applied::Purged { tgid, addrs, before_ns } => {
                    self.oom.purged(tgid);
                    if !addrs.is_empty() {
                        // The purger thread outlives this task; a send only fails during shutdown.
                        let _ = self.purger.send(PurgeJob { tgid, addrs, before_ns });
                    }
                }
            }
        }
    }

    fn answer(&mut self, request: Request) {
        match request {
            Request::Attached(points) => {
                self.oom.enabled = points.iter().any(|p| p.program == OOM_PROGRAM);
                self.attach_points = points;
            }
            Request::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Request::Top(query, reply) => {
                let (reports, stacks) = self.top(&query);
                let symbolizer = self.symbolizer.clone();
                // Symbolizing reads files: answer from another task so batches keep flowing meanwhile.
                tokio::spawn(async move {
                    let frames = symbolizer.symbolize(stacks).await;
                    let stacks = reports
                        .into_iter()
                        .zip(frames)
                        .map(|(report, frames)| StackReport { frames, ..report })
                        .collect();
                    let _ = reply.send(TopResponse { stacks });
                });
            }
        }
    }

    fn top(&self, query: &TopQuery) -> (Vec<StackReport>, Vec<StackRequest>) {
        let rows = self.table.top(query.pid, query.limit());
        let requests =
            rows.iter().map(|row| StackRequest { pid: row.tgid, addrs: row.frames.to_vec(), mappings: None }).collect();
        let reports = rows
            .into_iter()
            .map(|row| StackReport {
                pid: row.tgid,
                comm: row.comm.to_owned(),
                stack_id: format!("{:016x}", row.stack_hash),
                live_bytes: row.stats.live_bytes,
                live_count: row.stats.live_count,
                total_bytes: row.stats.total_bytes,
                total_count: row.stats.total_count,
                first_alloc_unix_ms: self.clock.unix_ms(row.stats.first_ns),
                last_alloc_unix_ms: self.clock.unix_ms(row.stats.last_ns),
                truncated: row.truncated,
                frames: Vec::new(),
            })
            .collect();
        (reports, requests)
    }

    fn kernel_counters(&self) -> BTreeMap<String, u64> {
        Counter::ALL
            .iter()
            .map(|&counter| {
                let sum = self.counters.get(&(counter as u32), 0).map_or_else(
                    |err| {
                        log::warn!("reading counter {}: {err}", counter.name());
                        0
                    },
                    |values| values.iter().sum::<u64>(),
                );
                (counter.name().to_owned(), sum)
            })
            .collect()
    }

    fn status(&self) -> StatusResponse {
        let sizes = self.table.sizes();
        let table = self.table.counters();
        let limits = self.table.limits();
        let daemon_counters = [
            ("events", table.events),
            ("batches", self.batches),
            ("decode_errors", self.decode_errors),
            ("unknown_frees", table.unknown_frees),
            ("replaced_live", table.replaced_live),
            ("dropped_table_full", table.dropped_table_full),
            ("stacks_overflowed", sizes.stacks_overflowed),
            ("processes_purged", table.processes_purged),
            ("kernel_entries_purged", self.purged_entries.load(Ordering::Relaxed)),
        ]
        .into_iter()
        .chain(self.oom.counters())
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_seconds: self.started.elapsed().as_secs(),
            mode: "full".to_owned(),
            attach_points: self.attach_points.clone(),
            kernel_counters: self.kernel_counters(),
            daemon_counters,
            tables: TableSizes {
                processes: sizes.processes as u64,
                live_allocations: sizes.live_allocations as u64,
                live_bytes: sizes.live_bytes,
                stacks: sizes.stacks as u64,
                max_live_allocations: limits.max_allocations as u64,
                max_stacks: limits.max_stacks as u64,
            },
            features: BTreeMap::from([("oom".to_owned(), self.oom.enabled)]),
            oom_kills_by_comm: self.oom.kills_by_comm().clone(),
            oom_report_dir: Some(self.oom.dir.display().to_string()),
        }
    }
}
