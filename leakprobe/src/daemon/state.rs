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
use leakprobe_common::{Counter, Event, FAULT_PROGRAM, MMAP_PROGRAM, OOM_PROGRAM};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use super::messages::Request;
use super::{discovery::DiscoveryHandle, folios, oom::OomTracker, purge::PurgeJob, query, tiers::Tiers};
use crate::{
    core::table::{Applied, Table},
    core::{
        analysis::POINT_BYTES,
        stacks::StackId,
        table::{RssSample, TickTimes},
    },
    ingest::Batch,
    metrics::{MetricsLimits, MetricsSnapshot, PROFILE_SYMBOLIZE_BUDGET},
    probes::MallocProbes,
    procfs::{self, Clock},
    protocol::{
        AnalysisSettings, AttachPoint, DiscoveryStatus, FaultsQuery, FaultsResponse, HeapFilter, HeapProfile,
        ProcessIdentity, ProcessesResponse, SortBy, StackReport, StatusResponse, TableSizes, TopQuery, TopResponse,
        UnwindSettings,
    },
    queries::Query,
    symbolize::{StackRequest, SymbolizerHandle},
    unwind::UnwindStats,
};

/// The state and what it needs to answer.
pub struct State {
    pub table: Table,
    pub counters: PerCpuArray<MapData, u64>,
    pub purger: std::sync::mpsc::Sender<PurgeJob>,
    pub purged_entries: Arc<AtomicU64>,
    /// What the push to Pyroscope did (all zero without `--pyroscope-url`).
    pub push_stats: Arc<crate::push::PushStats>,
    pub symbolizer: SymbolizerHandle,
    pub clock: Clock,
    pub started: Instant,
    /// The tracepoints attached.
    pub attach_points: Vec<AttachPoint>,
    /// The allocator probes attached by discovery.
    pub allocator_points: Vec<AttachPoint>,
    /// How allocating functions' returns are probed: `session` or `plain` (see [`crate::probes::session`]).
    pub return_probes: &'static str,
    pub discovery: DiscoveryStatus,
    pub discovery_counters: BTreeMap<String, u64>,
    /// Exec events go to the discovery thread.
    pub discovery_handle: DiscoveryHandle,
    /// Pid namespace, cgroup and container of each tracked process (read when first seen).
    pub identities: std::collections::HashMap<u32, ProcessIdentity>,
    /// Exec events dropped because the discovery queue was full.
    pub exec_scans_dropped: u64,
    /// Tracked processes found gone at the last tick, and when that tick read `/proc` (see `sweep`).
    pub gone_last_tick: (std::collections::HashSet<u32>, u64),
    pub decode_errors: u64,
    pub batches: u64,
    /// This task's own request channel, for the ticks it schedules.
    pub requests: mpsc::Sender<Request>,
    pub next_tick: u64,
    /// Ticks skipped because the previous one's reads were still running.
    pub ticks_skipped: u64,
    /// A tick's `/proc` reads are running: the next tick waits for them. Two reads in flight could come back in
    /// the other order, and a tick older than the last one restarts every series' tick log (its history gone
    /// from the window until it refills).
    pub tick_in_flight: bool,
    /// The table holds every event up to this monotonic time (see [`Batch::as_of_ns`]).
    pub as_of_ns: u64,
    /// How far ingest has read the ring buffer.
    pub ingest: Arc<crate::ingest::Progress>,
    pub oom: OomTracker,
    /// Allocations the probes missed at processes' starts.
    pub unseen: super::unseen::UnseenFrees,
    pub tiers: Tiers,
    /// Counters of the stacks produced (by the kernel's walk or the daemon's unwinder), kept by ingest.
    pub unwind_stats: Arc<UnwindStats>,
    /// Counters of the Python frames spliced into stacks, kept by ingest.
    pub python_stats: Arc<crate::python::SpliceStats>,
    /// Bytes of stack copied per allocation; 0: walked in the kernel.
    pub stack_copy_bytes: u32,
    /// Stacks are walked in the kernel with the unwind tables (else by frame pointers, or copied).
    pub unwind_tables: bool,
    /// The only process traced, if one was chosen.
    pub traced_pid: Option<u32>,
}

impl State {
    /// Serves batches and requests until cancelled or until both channels close.
    pub async fn run(
        mut self,
        mut batches: mpsc::Receiver<Batch>,
        mut requests: mpsc::Receiver<Request>,
        shutdown: CancellationToken,
    ) {
        let period = std::time::Duration::from_secs_f64(self.table.config().interval_s);
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => self.schedule_tick(),
                batch = batches.recv() => match batch {
                    Some(batch) => self.apply(&batch),
                    None => break,
                },
                () = tokio::time::sleep(folios::RETRY), if self.tiers.folios.waiting() => self.resolve_folios(),
                request = requests.recv() => match request {
                    Some(Request::Tick { tick, samples, read_ns, gone }) => {
                        self.tick_in_flight = false;
                        // Read before looking at the channel (see `Progress::drained_ns`).
                        let drained_ns = self.ingest.drained_ns();
                        let applied_all = batches.is_empty();
                        let as_of_ns = if applied_all { self.as_of_ns.max(drained_ns) } else { self.as_of_ns };
                        self.sweep(gone, read_ns, as_of_ns);
                        // Caught up and nothing waiting: the table is current now. Otherwise it is as of the last
                        // batch applied (the consumer lags under load; samples must say when they were true).
                        let current = self.ingest.caught_up() && applied_all;
                        let heap_ns = if current { procfs::monotonic_ns() } else { self.as_of_ns };
                        self.tick(tick, &samples, TickTimes { heap_ns, rss_ns: read_ns });
                    }
                    Some(request) => self.answer(request),
                    None => break,
                },
            }
        }
    }

    fn apply(&mut self, batch: &Batch) {
        self.batches += 1;
        self.decode_errors += batch.decode_errors;
        self.as_of_ns = self.as_of_ns.max(batch.as_of_ns);
        for event in &batch.events {
            // An escalation asked for after this event's exec, whose sampling interval outlives the purge.
            let mut kept_interval = None;
            match event {
                // Before the victim's exit event (later in the ring buffer) purges it.
                Event::Oom(oom) => {
                    let identity = self.identities.get(&oom.header.tgid);
                    self.oom.on_oom(oom, &self.table, self.clock, &self.symbolizer, identity);
                }
                Event::Fault(fault) => {
                    if self.tiers.on_fault(fault) {
                        self.new_faulting(fault.header.tgid);
                    }
                    continue;
                }
                Event::Map(map) => {
                    if self.tiers.faults.apply_map(map) {
                        self.new_faulting(map.header.tgid);
                    }
                    continue;
                }
                Event::Exit(process) => {
                    self.unseen.gone(process.header.tgid);
                    self.tiers.gone(process.header.tgid, &mut self.table);
                    self.identities.remove(&process.header.tgid);
                }
                Event::Exec(process) => {
                    kept_interval = self.tiers.exec(process.header.tgid, process.header.ts_ns, &mut self.table);
                    self.identities.remove(&process.header.tgid);
                    // With probes in every process, each one that allocates is kept: its new image's maps are
                    // read now, the earliest moment, for a process killed before its first event arrives.
                    let everywhere = self.tiers.malloc_probes() == MallocProbes::All;
                    self.symbolizer.exec(process.header.tgid, everywhere);
                    if !self.discovery_handle.exec(process.header.tgid) {
                        self.exec_scans_dropped += 1;
                    }
                }
                Event::Alloc(_) | Event::Free(_) => {}
            }
            match self.table.apply(event) {
                Applied::Nothing => {}
                Applied::NewProcess(tgid) => {
                    // The event carries the thread's name; the process's is in /proc while it lives.
                    if let Some(comm) = procfs::comm(tgid) {
                        self.table.set_comm(tgid, comm);
                    }
                    // Its maps at once, here: an OOM victim may live only a moment longer.
                    self.symbolizer.seen(tgid, true);
                    self.oom.new_process(tgid);
                    self.identities.entry(tgid).or_insert_with(|| procfs::identity(tgid));
                }
                Applied::Purged { tgid, addrs, before_ns } => self.purged(tgid, addrs, before_ns),
            }
            if let Some(interval) = kept_interval {
                self.table.set_interval(event.header().tgid, Some(interval));
            }
        }
        // The batch took a while: faults that waited may have their page now.
        if self.tiers.folios.waiting() {
            self.resolve_folios();
        }
    }

    /// Faults that waited for their page (see `folios`), applied once it is mapped.
    fn resolve_folios(&mut self) {
        for tgid in self.tiers.resolve_folios() {
            self.new_faulting(tgid);
        }
    }

    /// Tier 0 saw a process for the first time.
    fn new_faulting(&mut self, tgid: u32) {
        if let Some(comm) = procfs::comm(tgid) {
            self.tiers.faults.set_comm(tgid, comm);
        }
        self.identities.entry(tgid).or_insert_with(|| procfs::identity(tgid));
        self.symbolizer.seen(tgid, false);
    }

    fn purged(&mut self, tgid: u32, addrs: Vec<u64>, before_ns: u64) {
        self.oom.purged(tgid);
        self.identities.remove(&tgid);
        if !addrs.is_empty() {
            // The purger thread outlives this task; a send only fails during shutdown.
            let _ = self.purger.send(PurgeJob { tgid, addrs, before_ns });
        }
    }

    /// Purges the processes gone at this tick and the previous one: their exit event was lost (ring buffer
    /// full), or they would be purged already. Only when ingest has caught up: an exit or OOM event still in
    /// the ring buffer must be applied first (an OOM report needs the victim's table).
    fn sweep(&mut self, gone: Vec<u32>, read_ns: u64, as_of_ns: u64) {
        let (previous, previous_ns) =
            std::mem::replace(&mut self.gone_last_tick, (gone.into_iter().collect(), read_ns));
        // A process gone at the earlier read had emitted its last events (an OOM kill, its exit) before it. Until
        // the table holds every event up to then, a purge here could come before its OOM event, which would then
        // find the victim's allocations gone. (Ingest caught up is not enough: batches may wait in the channel.)
        if as_of_ns < previous_ns {
            return;
        }
        let both: Vec<u32> = self.gone_last_tick.0.intersection(&previous).copied().collect();
        for tgid in both {
            // Its exit event was lost (a full ring buffer): the kernel's entry goes now.
            self.unseen.gone(tgid);
            if let Applied::Purged { tgid, addrs, before_ns } = self.table.purge_gone(tgid, read_ns) {
                self.purged(tgid, addrs, before_ns);
            }
        }
    }

    /// Reads the RSS of every tracked process on a blocking thread, then comes back as a `Tick` request.
    fn schedule_tick(&mut self) {
        if self.tick_in_flight {
            // The host is busy: this tick is skipped, the window is measured by time (see `growth_within`).
            self.ticks_skipped += 1;
            return;
        }
        self.tick_in_flight = true;
        let tick = self.next_tick;
        self.next_tick += 1;
        let mut pids = self.table.pids();
        pids.extend(self.tiers.faults.pids());
        pids.sort_unstable();
        pids.dedup();
        let requests = self.requests.clone();
        tokio::task::spawn_blocking(move || {
            let read_ns = procfs::monotonic_ns();
            // The cgroup too: a process may have moved since it was first seen, and an OOM victim may be
            // gone before its report is made.
            let mut gone = Vec::new();
            let samples = pids
                .into_iter()
                .filter_map(|pid| {
                    let sample = procfs::rss(pid).map(|s| (pid, s, procfs::memory_cgroup(pid)));
                    if sample.is_none() && procfs::exiting(pid) {
                        gone.push(pid);
                    }
                    sample
                })
                .collect();
            // Fails only at shutdown.
            let _ = requests.blocking_send(Request::Tick { tick, samples, read_ns, gone });
        });
    }

    fn tick(&mut self, tick: u64, samples: &[(u32, RssSample, Option<String>)], times: TickTimes) {
        for (pid, sample, cgroup) in samples {
            self.table.record_rss(tick, *pid, *sample);
            if let Some(cgroup) = cgroup {
                self.oom.cgroup_seen(*pid, cgroup);
            }
        }
        self.table.tick(tick, times);
        self.identify_new_stacks();
        let capacity = self.table.config().window_points();
        let rule = self.table.config().verdict;
        self.tiers.tick(samples, times.rss_ns, capacity, &rule, &mut self.table);
    }

    /// Has the stacks made since the last tick resolved, off this task; their identities come back as
    /// [`Request::Identities`].
    fn identify_new_stacks(&mut self) {
        let pending = self.table.take_unidentified();
        if pending.is_empty() {
            return;
        }
        let (keys, stacks): (Vec<(u32, StackId)>, Vec<StackRequest>) =
            pending.into_iter().map(|(pid, stack, addrs)| ((pid, stack), StackRequest { pid, addrs })).unzip();
        let symbolizer = self.symbolizer.clone();
        let requests = self.requests.clone();
        tokio::spawn(async move {
            let identities = symbolizer.identify(stacks).await;
            let found: Vec<(u32, StackId, u64)> = keys
                .into_iter()
                .zip(identities)
                .filter_map(|((pid, stack), identity)| identity.map(|identity| (pid, stack, identity)))
                .collect();
            if !found.is_empty() {
                // Fails only at shutdown.
                let _ = requests.send(Request::Identities(found)).await;
            }
        });
    }

    fn answer(&mut self, request: Request) {
        match request {
            Request::Identities(found) => {
                for (pid, stack, identity) in found {
                    self.table.identify(pid, stack, identity);
                }
            }
            Request::Attached(points) => {
                self.oom.enabled = points.iter().any(|p| p.program == OOM_PROGRAM);
                self.tiers.fault_enabled = points.iter().any(|p| p.program == FAULT_PROGRAM);
                self.tiers.map_enabled = points.iter().any(|p| p.program == MMAP_PROGRAM);
                self.attach_points = points;
            }
            Request::Discovery { points, status, counters } => {
                self.allocator_points = points;
                self.discovery = *status;
                self.discovery_counters = counters;
            }
            Request::Tick { tick, samples, read_ns, gone } => {
                self.sweep(gone, read_ns, self.as_of_ns);
                self.tick(tick, &samples, TickTimes { heap_ns: self.as_of_ns, rss_ns: read_ns });
            }
            Request::Query(Query::Processes(query, reply)) => {
                let mut processes = query::processes(&self.table, &query, self.clock, procfs::monotonic_ns());
                for process in &mut processes {
                    process.identity = self.identities.get(&process.pid).cloned().unwrap_or_default();
                    process.allocs_before_probes = self.unseen.live(process.pid);
                }
                let estimated = self.table.config().sample_interval > 0;
                let _ = reply.send(ProcessesResponse { processes, estimated });
            }
            Request::Query(Query::Status(reply)) => {
                let _ = reply.send(self.status());
            }
            Request::Query(Query::Metrics(limits, reply)) => self.metrics(limits, reply),
            Request::Query(Query::Trace(request, reply)) => {
                self.tiers.trace(&request, &mut self.table, self.clock, reply);
            }
            Request::Tier1Attached { pid, result } => self.tiers.attached(pid, result, &mut self.table, self.clock),
            Request::ProgramStats(stats) => self.tiers.budget(stats, &mut self.table),
            Request::Query(Query::Untrace(pid, reply)) => {
                let _ = reply.send(self.tiers.untrace(pid, &mut self.table, self.clock));
            }
            Request::Query(Query::Faults(query, reply)) => {
                let (reports, stacks) = self.tiers.faults(&query, self.clock);
                let symbolizer = self.symbolizer.clone();
                let sample_interval_bytes = self.tiers.faults.interval();
                tokio::spawn(async move {
                    let mut frames = symbolizer.symbolize(stacks).await.into_iter();
                    let processes = reports
                        .into_iter()
                        .map(|mut process| {
                            for stack in &mut process.stacks {
                                stack.frames = frames.next().unwrap_or_default();
                            }
                            for stack in &mut process.map_stacks {
                                stack.frames = frames.next().unwrap_or_default();
                            }
                            process
                        })
                        .collect();
                    let _ = reply.send(FaultsResponse { processes, sample_interval_bytes });
                });
            }
            Request::Query(Query::Top(query, reply)) => {
                let (reports, stacks) = query::stacks(&self.table, &query, self.clock, procfs::monotonic_ns());
                self.answer_top(reports, stacks, reply);
            }
            Request::Query(Query::Heap(filter, max_stacks, reply)) => self.heap(&filter, max_stacks, reply),
        }
    }

    /// Sets each report's process identity.
    fn identify(&self, reports: &mut [StackReport]) {
        for report in reports {
            report.identity = self.identities.get(&report.pid).cloned().unwrap_or_default();
        }
    }

    /// Answers a heap profile's request once its top stacks are symbolized (those not symbolized within
    /// [`PROFILE_SYMBOLIZE_BUDGET`] keep bare addresses), from another task.
    fn heap(&self, filter: &HeapFilter, max_stacks: usize, reply: oneshot::Sender<HeapProfile>) {
        let no_identity = ProcessIdentity::default();
        let keep = |pid, comm: &str| filter.matches(pid, comm, self.identities.get(&pid).unwrap_or(&no_identity));
        let sample = filter.sample_index.unwrap_or_default();
        let now = procfs::monotonic_ns();
        let mut heap = query::heap_stacks(&self.table, filter.pid, sample, max_stacks, keep, self.clock, now);
        self.identify(&mut heap.reports);
        self.identify(&mut heap.rest);
        let symbolizer = self.symbolizer.clone();
        let estimated = self.table.config().sample_interval > 0;
        let deadline = Instant::now() + PROFILE_SYMBOLIZE_BUDGET;
        tokio::spawn(async move {
            let (frames, late) = symbolizer.symbolize_until(heap.requests, Some(deadline)).await;
            let stacks = heap
                .reports
                .into_iter()
                .zip(frames)
                .map(|(report, frames)| StackReport { frames, ..report })
                .chain(heap.rest)
                .collect();
            let _ = reply.send(HeapProfile {
                stacks,
                estimated,
                sample,
                omitted_stacks: heap.omitted,
                unsymbolized_stacks: late as u64,
            });
        });
    }

    /// Answers a stacks query once its frames are symbolized, from another task (symbolizing reads files), so
    /// batches keep flowing meanwhile.
    fn answer_top(
        &self,
        mut reports: Vec<StackReport>,
        stacks: Vec<StackRequest>,
        reply: oneshot::Sender<TopResponse>,
    ) {
        self.identify(&mut reports);
        let symbolizer = self.symbolizer.clone();
        let estimated = self.table.config().sample_interval > 0;
        // Symbolizing reads files: answer from another task so batches keep flowing meanwhile.
        tokio::spawn(async move {
            let frames = symbolizer.symbolize(stacks).await;
            let stacks =
                reports.into_iter().zip(frames).map(|(report, frames)| StackReport { frames, ..report }).collect();
            let _ = reply.send(TopResponse { stacks, estimated });
        });
    }

    /// The status, the processes and the top stacks by growth with their leaf frame symbolized (only that one:
    /// a scrape must stay cheap), answered from another task once symbolized.
    fn metrics(&self, limits: MetricsLimits, reply: oneshot::Sender<MetricsSnapshot>) {
        let now = procfs::monotonic_ns();
        let status = self.status();
        let processes = query::metrics_processes(&self.table, limits.top_processes, self.clock, now);
        let by_growth = TopQuery { limit: Some(limits.top_stacks), by: Some(SortBy::Growth), ..TopQuery::default() };
        let (stacks, requests) = query::stacks(&self.table, &by_growth, self.clock, now);
        let leaves = requests
            .into_iter()
            .map(|r| StackRequest { pid: r.pid, addrs: r.addrs.into_iter().take(1).collect() })
            .collect();
        let faults_query = FaultsQuery { limit: Some(limits.top_processes), stacks: Some(0), ..FaultsQuery::default() };
        let (faults, _) = self.tiers.faults(&faults_query, self.clock);
        let pids =
            processes.iter().map(|p| p.pid).chain(stacks.iter().map(|s| s.pid)).chain(faults.iter().map(|f| f.pid));
        let identities = pids.filter_map(|pid| Some((pid, self.identities.get(&pid)?.clone()))).collect();
        let own = procfs::own_process();
        let symbolizer = self.symbolizer.clone();
        tokio::spawn(async move {
            let frames = symbolizer.symbolize(leaves).await;
            let stacks =
                stacks.into_iter().zip(frames).map(|(report, frames)| StackReport { frames, ..report }).collect();
            let _ = reply.send(MetricsSnapshot { status, processes, stacks, faults, identities, own });
        });
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

    fn tier_counters(&self) -> Vec<(&'static str, u64)> {
        let faults = self.tiers.faults.counters();
        vec![
            ("fault_events", faults.events),
            ("map_events", faults.map_events),
            ("fault_processes_dropped", faults.dropped_processes),
            ("fault_stacks_dropped", faults.dropped_stacks),
            ("fault_processes_purged", faults.purged),
            ("fault_large_folios", faults.large_folios),
            ("fault_folios_deferred", self.tiers.folios.deferred),
            ("fault_folios_unresolved", self.tiers.folios.unresolved),
            ("tier1_escalations_ended", self.tiers.tier1.ended().count() as u64),
            ("tier1_attach_errors", self.tiers.attach_errors),
            ("budget_actions", self.tiers.tier1.budget_actions),
        ]
    }

    fn status(&self) -> StatusResponse {
        let (tier0, tier1, budget) = self.tiers.status(self.clock);
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
            ("implausible_sizes", table.implausible_sizes),
            ("stacks_overflowed", sizes.stacks_overflowed),
            ("processes_purged", table.processes_purged),
            ("processes_gone", table.processes_gone),
            ("series_dropped", table.series_dropped),
            ("stacks_merged", table.stacks_merged),
            ("identity_skipped", table.identity_skipped),
            ("ticks", table.ticks),
            ("ticks_skipped", self.ticks_skipped),
            ("kernel_entries_purged", self.purged_entries.load(Ordering::Relaxed)),
        ]
        .into_iter()
        .chain(self.oom.counters())
        .chain([("discovery_exec_scans_dropped", self.exec_scans_dropped)])
        .chain(self.push_stats.counters())
        .chain(self.unseen.enabled().then(|| self.unseen.counters()).into_iter().flatten())
        .chain(self.tier_counters())
        .chain(self.unwind_stats.counters())
        .chain(self.python_stats.counters())
        .map(|(name, value)| (name.to_owned(), value))
        .chain(self.discovery_counters.iter().map(|(name, &value)| (name.clone(), value)))
        .collect();
        StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_seconds: self.started.elapsed().as_secs(),
            mode: if self.table.config().sample_interval == 0 { "full" } else { "sampled" }.to_owned(),
            sample_interval_bytes: Some(self.table.config().sample_interval).filter(|&i| i > 0),
            return_probes: self.return_probes.to_owned(),
            attach_points: self.attach_points.iter().chain(&self.allocator_points).cloned().collect(),
            kernel_counters: self.kernel_counters(),
            daemon_counters,
            tables: TableSizes {
                processes: sizes.processes as u64,
                live_allocations: sizes.live_allocations as u64,
                live_bytes: sizes.live_bytes,
                stacks: sizes.stacks as u64,
                max_live_allocations: limits.max_allocations as u64,
                max_stacks: limits.max_stacks as u64,
                series: sizes.series as u64,
                max_series: limits.max_series as u64,
                series_points: sizes.series_points as u64,
                series_bytes: (sizes.series_points * POINT_BYTES) as u64,
            },
            analysis: AnalysisSettings {
                interval_seconds: self.table.config().interval_s,
                window_seconds: self.table.config().window_s,
                verdict: self.table.config().verdict,
            },
            features: BTreeMap::from([("oom".to_owned(), self.oom.enabled), ("tier0".to_owned(), tier0.enabled)]),
            oom_kills_by_comm: self.oom.kills_by_comm().clone(),
            oom_report_dir: Some(self.oom.dir.display().to_string()),
            discovery: self.discovery.clone(),
            tier0: Some(tier0),
            tier1: Some(tier1),
            budget: Some(budget),
            unwind: Some(UnwindSettings {
                mode: match (self.unwind_tables, self.stack_copy_bytes) {
                    (true, _) => "tables",
                    (false, 0) => "fp",
                    (false, _) => "dwarf",
                }
                .to_owned(),
                stack_copy_bytes: Some(u64::from(self.stack_copy_bytes)).filter(|&b| b > 0),
                unwind_seconds: self.unwind_stats.unwind_seconds(),
            }),
            traced_pid: self.traced_pid,
        }
    }
}
