//! The one owner of the daemon's mutable state: the table. Ingest sends it batches; queries arrive as
//! messages with a reply channel.

use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::AtomicU64},
    time::Instant,
};

use leakprobe_common::{Event, FAULT_PROGRAM, MMAP_PROGRAM, OOM_PROGRAM};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use super::messages::Request;
use super::{
    discovery::DiscoveryHandle, folios, kernel::KernelCounters, oom::OomTracker, purge::PurgeJob, query, tiers::Tiers,
    unseen::UnseenFrees,
};
use crate::{
    core::table::{Applied, Table},
    core::{
        stacks::StackId,
        table::{RssSample, TickTimes},
    },
    ingest::Batch,
    metrics::{MetricsLimits, MetricsSnapshot, PROFILE_SYMBOLIZE_BUDGET},
    probes::MallocProbes,
    procfs::{self, Clock},
    protocol::{
        AttachPoint, DiscoveryStatus, FaultsQuery, FaultsResponse, HeapFilter, HeapProfile, ProcessIdentity,
        ProcessesResponse, SortBy, StackReport, TopQuery, TopResponse,
    },
    queries::Query,
    symbolize::{StackRequest, SymbolizerHandle},
    unwind::UnwindStats,
};

mod status;
#[cfg(test)]
mod tests;

/// What the state owner hands work to and reads from (built by `Consumers::new`, or by a unit test).
pub struct Links {
    /// The daemon's counters the kernel keeps.
    pub counters: Box<dyn KernelCounters>,
    /// Allocations the probes missed at processes' starts.
    pub unseen: UnseenFrees,
    pub purger: std::sync::mpsc::Sender<PurgeJob>,
    pub purged_entries: Arc<AtomicU64>,
    pub symbolizer: SymbolizerHandle,
    pub oom: OomTracker,
    /// Exec events go to the discovery thread.
    pub discovery: DiscoveryHandle,
    /// This task's own request channel, for the ticks it schedules.
    pub requests: mpsc::Sender<Request>,
    /// How far ingest has read the ring buffer.
    pub ingest: Arc<crate::ingest::Progress>,
    /// Counters of the stacks produced (by the kernel's walk or the daemon's unwinder), kept by ingest.
    pub unwind_stats: Arc<UnwindStats>,
    /// Counters of the Python frames spliced into stacks, kept by ingest.
    pub python_stats: Arc<crate::python::SpliceStats>,
}

/// How the probes were set up, for `status`.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub started: Instant,
    /// How allocating functions' returns are probed: `session` or `plain` (see [`crate::probes::session`]).
    pub return_probes: &'static str,
    /// Bytes of stack copied per allocation; 0: walked in the kernel.
    pub stack_copy_bytes: u32,
    /// Stacks are walked in the kernel with the unwind tables (else by frame pointers, or copied).
    pub unwind_tables: bool,
    /// The only process traced, if one was chosen.
    pub traced_pid: Option<u32>,
}

/// The state and what it needs to answer.
pub struct State {
    table: Table,
    tiers: Tiers,
    links: Links,
    setup: Setup,
    /// What the push to Pyroscope did (all zero without `--pyroscope-url`).
    push_stats: Arc<crate::push::PushStats>,
    clock: Clock,
    /// The tracepoints attached.
    attach_points: Vec<AttachPoint>,
    /// The allocator probes attached by discovery.
    allocator_points: Vec<AttachPoint>,
    discovery: DiscoveryStatus,
    discovery_counters: BTreeMap<String, u64>,
    /// Pid namespace, cgroup and container of each tracked process (read when first seen).
    identities: std::collections::HashMap<u32, ProcessIdentity>,
    /// Exec events dropped because the discovery queue was full.
    exec_scans_dropped: u64,
    /// Tracked processes found gone at the last tick (see `sweep`).
    gone_last_tick: (std::collections::HashSet<u32>, u64),
    decode_errors: u64,
    batches: u64,
    next_tick: u64,
    /// Ticks skipped because the previous one's reads were still running.
    ticks_skipped: u64,
    /// A tick's `/proc` reads are running: the next tick waits for them. Two reads in flight could come back in
    /// the other order, and a tick older than the last one restarts every series' tick log (its history gone
    /// from the window until it refills).
    tick_in_flight: bool,
    /// The table holds every event up to this monotonic time (see [`Batch::as_of_ns`]).
    as_of_ns: u64,
}

impl State {
    pub fn new(table: Table, tiers: Tiers, links: Links, setup: Setup) -> Self {
        Self {
            table,
            tiers,
            links,
            setup,
            push_stats: Arc::new(crate::push::PushStats::default()),
            clock: Clock::new(),
            attach_points: Vec::new(),
            allocator_points: Vec::new(),
            discovery: DiscoveryStatus::default(),
            discovery_counters: BTreeMap::new(),
            identities: std::collections::HashMap::new(),
            exec_scans_dropped: 0,
            gone_last_tick: (std::collections::HashSet::new(), 0),
            decode_errors: 0,
            batches: 0,
            next_tick: 0,
            ticks_skipped: 0,
            tick_in_flight: false,
            as_of_ns: 0,
        }
    }

    /// What the push to Pyroscope did, for its task to count in.
    pub fn push_stats(&self) -> &Arc<crate::push::PushStats> {
        &self.push_stats
    }
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
                () = tokio::time::sleep(folios::RETRY), if self.tiers.folios_waiting() => self.resolve_folios(),
                request = requests.recv() => match request {
                    Some(Request::Tick { tick, samples, read_ns, gone }) => {
                        // Read before looking at the channel (see `Progress::drained_ns`).
                        let drained_ns = self.links.ingest.drained_ns();
                        let caught_up_to = batches.is_empty().then_some(drained_ns);
                        self.on_tick(tick, &samples, read_ns, gone, caught_up_to);
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
                    self.links.oom.on_oom(oom, &self.table, self.clock, &self.links.symbolizer, identity);
                }
                Event::Fault(fault) => {
                    if self.tiers.on_fault(fault) {
                        self.new_faulting(fault.header.tgid);
                    }
                    continue;
                }
                Event::Map(map) => {
                    if self.tiers.on_map(map) {
                        self.new_faulting(map.header.tgid);
                    }
                    continue;
                }
                Event::Exit(process) => {
                    self.links.unseen.gone(process.header.tgid);
                    self.tiers.gone(process.header.tgid, &mut self.table);
                    self.identities.remove(&process.header.tgid);
                }
                Event::Exec(process) => {
                    kept_interval = self.tiers.exec(process.header.tgid, process.header.ts_ns, &mut self.table);
                    self.identities.remove(&process.header.tgid);
                    // With probes in every process, each one that allocates is kept: its new image's maps are
                    // read now, the earliest moment, for a process killed before its first event arrives.
                    let everywhere = self.tiers.malloc_probes() == MallocProbes::All;
                    self.links.symbolizer.exec(process.header.tgid, everywhere);
                    if !self.links.discovery.exec(process.header.tgid) {
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
                    self.links.symbolizer.seen(tgid, true);
                    self.links.oom.new_process(tgid);
                    self.identities.entry(tgid).or_insert_with(|| procfs::identity(tgid));
                }
                Applied::Purged { tgid, addrs, before_ns } => self.purged(tgid, addrs, before_ns),
            }
            if let Some(interval) = kept_interval {
                self.table.set_interval(event.header().tgid, Some(interval));
            }
        }
        // The batch took a while: faults that waited may have their page now.
        if self.tiers.folios_waiting() {
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
            self.tiers.set_comm(tgid, comm);
        }
        self.identities.entry(tgid).or_insert_with(|| procfs::identity(tgid));
        self.links.symbolizer.seen(tgid, false);
    }

    fn purged(&mut self, tgid: u32, addrs: Vec<u64>, before_ns: u64) {
        self.links.oom.purged(tgid);
        self.identities.remove(&tgid);
        if !addrs.is_empty() {
            // The purger thread outlives this task; a send only fails during shutdown.
            let _ = self.links.purger.send(PurgeJob { tgid, addrs, before_ns });
        }
    }

    /// Purges the processes gone at this tick (`/proc` read at `read_ns`) and the previous one: their exit
    /// event was lost (ring buffer full), or they would be purged already. Only once the table holds every event
    /// up to the previous read (`as_of_ns`, see [`Batch::as_of_ns`]): a process gone then had emitted its last
    /// events (an OOM kill, its exit) before it, and an OOM report needs the victim's allocations. Ingest being
    /// caught up is not enough: batches may still wait in the channel, behind a busy state owner.
    fn sweep(&mut self, gone: Vec<u32>, read_ns: u64, as_of_ns: u64) {
        let (previous, previous_ns) =
            std::mem::replace(&mut self.gone_last_tick, (gone.into_iter().collect(), read_ns));
        if as_of_ns < previous_ns {
            return;
        }
        let both: Vec<u32> = self.gone_last_tick.0.intersection(&previous).copied().collect();
        for tgid in both {
            // Its exit event was lost (a full ring buffer): the kernel's entry goes now.
            self.links.unseen.gone(tgid);
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
        pids.extend(self.tiers.fault_table().pids());
        pids.sort_unstable();
        pids.dedup();
        let requests = self.links.requests.clone();
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

    /// A tick's `/proc` reads are back: sweep, then sample. `caught_up_to`: when every batch sent has been
    /// applied, ingest's `drained_ns` as read before the channel was found empty (`None`: not known to be).
    fn on_tick(
        &mut self,
        tick: u64,
        samples: &[(u32, RssSample, Option<String>)],
        read_ns: u64,
        gone: Vec<u32>,
        caught_up_to: Option<u64>,
    ) {
        self.tick_in_flight = false;
        let as_of_ns = caught_up_to.map_or(self.as_of_ns, |drained_ns| self.as_of_ns.max(drained_ns));
        self.sweep(gone, read_ns, as_of_ns);
        // Caught up and nothing waiting: the table is current now. Otherwise it is as of the last batch applied
        // (the consumer lags under load; samples must say when they were true).
        let current = self.links.ingest.caught_up() && caught_up_to.is_some();
        let heap_ns = if current { procfs::monotonic_ns() } else { self.as_of_ns };
        self.tick(tick, samples, TickTimes { heap_ns, rss_ns: read_ns });
    }

    fn tick(&mut self, tick: u64, samples: &[(u32, RssSample, Option<String>)], times: TickTimes) {
        for (pid, sample, cgroup) in samples {
            self.table.record_rss(tick, *pid, *sample);
            if let Some(cgroup) = cgroup {
                self.links.oom.cgroup_seen(*pid, cgroup);
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
        let symbolizer = self.links.symbolizer.clone();
        let requests = self.links.requests.clone();
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
                self.links.oom.enabled = points.iter().any(|p| p.program == OOM_PROGRAM);
                self.tiers.set_attached(
                    points.iter().any(|p| p.program == FAULT_PROGRAM),
                    points.iter().any(|p| p.program == MMAP_PROGRAM),
                );
                self.attach_points = points;
            }
            Request::Discovery { points, status, counters } => {
                self.allocator_points = points;
                self.discovery = *status;
                self.discovery_counters = counters;
            }
            // Without the batch channel at hand: as of the last batch applied.
            Request::Tick { tick, samples, read_ns, gone } => self.on_tick(tick, &samples, read_ns, gone, None),
            Request::Query(Query::Processes(query, reply)) => {
                let mut processes = query::processes(&self.table, &query, self.clock, procfs::monotonic_ns());
                for process in &mut processes {
                    process.identity = self.identities.get(&process.pid).cloned().unwrap_or_default();
                    process.allocs_before_probes = self.links.unseen.live(process.pid);
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
                let symbolizer = self.links.symbolizer.clone();
                let sample_interval_bytes = self.tiers.fault_table().interval();
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
        let symbolizer = self.links.symbolizer.clone();
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
        let symbolizer = self.links.symbolizer.clone();
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
        let symbolizer = self.links.symbolizer.clone();
        tokio::spawn(async move {
            let frames = symbolizer.symbolize(leaves).await;
            let stacks =
                stacks.into_iter().zip(frames).map(|(report, frames)| StackReport { frames, ..report }).collect();
            let _ = reply.send(MetricsSnapshot { status, processes, stacks, faults, identities, own });
        });
    }
}
