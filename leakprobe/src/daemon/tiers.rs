//! Tier 0 and tier 1 as the state owner runs them: the fault table, escalations (attaching and detaching
//! pid-scoped probes), `trace` requests, and the CPU budget's measurements and decisions.
//!
//! The probes belong to the discovery thread (it knows every allocator file a process maps): attaching and
//! detaching are commands to it, and their outcomes, like the programs' statistics the budget needs, come back
//! as requests to the state owner, which never waits for them.

use std::{collections::HashMap, os::fd::OwnedFd, time::Instant};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuHashMap};
use leakprobe_common::{BRK_PROGRAM, FAULT_PROGRAM, FaultEvent, MMAP_PROGRAM, OOM_PROGRAM};

use tokio::sync::oneshot;

use super::{
    discovery::{Command, DiscoveryHandle},
    folios::Folios,
    jvm,
};
use crate::{
    core::{
        analysis::VerdictConfig,
        faults::{AnonSample, FaultTable},
        table::{RssSample, Table},
        tier1::{Action, CostSample, Escalation, Tier1, Trigger},
    },
    probes::{MallocProbes, discover::AttachPidError},
    procfs::{self, Clock},
    protocol::{
        BudgetActionReport, BudgetReport, DEFAULT_TOP_LIMIT, EndedEscalation, EscalationReport, FaultProcessReport,
        FaultStackReport, FaultsQuery, MAX_TOP_LIMIT, MapStackReport, ProgramStats, Tier0Status, Tier1Status,
        TraceMode, TraceRequest, TraceResponse, tiers::DEFAULT_FAULT_STACKS,
    },
    symbolize::StackRequest,
};

/// Why a trace request was refused: an HTTP status and a message.
pub use crate::queries::TraceError;

/// Program totals at the previous budget check.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    uprobe_ns: u64,
    uprobe_runs: u64,
    tracepoint_ns: u64,
    daemon_cpu_s: f64,
}

/// Tier 0, tier 1 and the budget.
pub struct Tiers {
    pub faults: FaultTable,
    pub tier1: Tier1,
    /// The discovery thread, which owns the probes: tier 1 asks it to attach and detach.
    discovery: DiscoveryHandle,
    malloc_probes: MallocProbes,
    /// Tier 0 runs (its tracepoint is attached; set by `Request::Attached`).
    pub fault_enabled: bool,
    /// Tier 0 follows mapping growth (the `mmap` and `brk` tracepoints are attached).
    pub map_enabled: bool,
    /// Trace requests waiting for their process's probes.
    pending_traces: HashMap<u32, oneshot::Sender<Result<TraceResponse, TraceError>>>,
    /// Program statistics asked for and not yet received.
    stats_asked: bool,
    /// The latest program statistics.
    last_stats: Vec<ProgramStats>,
    pub pid_sample_interval: BpfHashMap<MapData, u32, u64>,
    pub pid_calls: PerCpuHashMap<MapData, u32, u64>,
    /// Keeps BPF run-time statistics on while held (`BPF_ENABLE_STATS`).
    pub stats_fd: Option<OwnedFd>,
    /// The daemon's sampling interval (0: full), for `trace --mode sampled` and reports.
    pub sample_interval: u64,
    last_calls: HashMap<u32, u64>,
    last_totals: Option<(Instant, Totals)>,
    /// Attach failures of tier 1.
    pub attach_errors: u64,
    /// When not empty, only processes with one of these names are escalated automatically.
    pub escalate_only: Vec<String>,
    /// Weighs a fault that mapped a transparent huge page by its size, once the fault is done.
    pub folios: Folios,
    /// With `--java-perfmap` (else `None`): the escalated JVMs asked for their perf map, and when last.
    pub java_asked: Option<HashMap<u32, Instant>>,
}

impl Tiers {
    pub fn new(
        faults: FaultTable,
        tier1: Tier1,
        discovery: DiscoveryHandle,
        malloc_probes: MallocProbes,
        maps: (BpfHashMap<MapData, u32, u64>, PerCpuHashMap<MapData, u32, u64>),
        sample_interval: u64,
    ) -> Self {
        let stats_fd = match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
            Ok(fd) => Some(fd),
            Err(err) => {
                log::warn!("BPF run-time statistics are off ({err}): the CPU budget sees only the daemon's own CPU");
                None
            }
        };
        Self {
            folios: Folios::open(),
            faults,
            tier1,
            discovery,
            malloc_probes,
            fault_enabled: false,
            map_enabled: false,
            pending_traces: HashMap::new(),
            stats_asked: false,
            last_stats: Vec::new(),
            pid_sample_interval: maps.0,
            pid_calls: maps.1,
            stats_fd,
            sample_interval,
            last_calls: HashMap::new(),
            last_totals: None,
            attach_errors: 0,
            escalate_only: Vec::new(),
            java_asked: None,
        }
    }

    pub fn malloc_probes(&self) -> MallocProbes {
        self.malloc_probes
    }

    /// A process exited or exec'd: tier 0 forgets it, tier 1 detaches.
    pub fn gone(&mut self, pid: u32, table: &mut Table) {
        self.forget_tier0(pid);
        self.last_calls.remove(&pid);
        if self.tier1.gone(pid, procfs::monotonic_ns()) {
            self.detach(pid, table, "the process exited or exec'd");
        }
    }

    /// Process `pid` called `execve` at `exec_ns` (monotonic): as [`Self::gone`], except for an escalation that
    /// began after it, which is kept for the new image it was asked for: `trace --pid` of a process that had just
    /// exec'd, answered before the exec's event came through the ring buffer. Returns that escalation's sampling
    /// interval, which the table must keep (its purge of the old image forgets it).
    pub fn exec(&mut self, pid: u32, exec_ns: u64, table: &mut Table) -> Option<u64> {
        match self.tier1.get(pid) {
            Some(escalation) if escalation.since_ns > exec_ns => {
                let interval = escalation.interval;
                self.forget_tier0(pid);
                Some(interval)
            }
            _ => {
                self.gone(pid, table);
                None
            }
        }
    }

    /// Tier 0 forgets process `pid`'s old image: its waiting faults and its fault and mapping stacks.
    fn forget_tier0(&mut self, pid: u32) {
        self.folios.forget(pid);
        self.faults.purge(pid);
    }

    /// A sampled fault; true when it is the first of its process. A fault whose page is not mapped yet waits
    /// (see [`Folios`]) and is applied by [`Self::resolve_folios`].
    pub fn on_fault(&mut self, event: &FaultEvent) -> bool {
        self.folios.weigh(event, procfs::monotonic_ns()).is_some_and(|mapped| self.faults.apply(event, mapped))
    }

    /// Applies the waiting faults whose page is mapped now (or that waited too long); returns the processes
    /// seen for the first time.
    pub fn resolve_folios(&mut self) -> Vec<u32> {
        let mut ready = Vec::new();
        self.folios.ready(procfs::monotonic_ns(), &mut ready);
        ready.iter().filter(|(event, mapped)| self.faults.apply(event, *mapped)).map(|(e, _)| e.header.tgid).collect()
    }

    /// Detaches the probes of `pid`; its heap figures freeze (see [`Table::freeze`]), saying `why`.
    fn detach(&mut self, pid: u32, table: &mut Table, why: &str) {
        // Sent after the attach command of the same process, if any: the thread takes them in order.
        self.discovery.send(Command::DetachPid(pid));
        let _ = self.pid_sample_interval.remove(&pid);
        table.set_interval(pid, None);
        table.freeze(pid, procfs::monotonic_ns(), why);
        if let Some(asked) = &mut self.java_asked {
            asked.remove(&pid);
        }
    }

    /// With `--java-perfmap`, asks JVM `pid` for its perf map now, and again every [`jvm::REASK`] while escalated.
    fn ask_jvm(&mut self, pid: u32) {
        let Some(asked) = &mut self.java_asked else { return };
        if !jvm::is_jvm(pid) {
            return;
        }
        jvm::request_perf_map(pid);
        asked.insert(pid, Instant::now());
    }

    /// Sets the process's interval and asks the discovery thread to attach its probes; the outcome comes back
    /// as [`Self::attached`].
    fn attach(&mut self, pid: u32, interval: u64, table: &mut Table) -> Result<(), String> {
        // The interval first: the first calls through the new probes must be sampled as asked.
        self.pid_sample_interval.insert(pid, interval, 0).map_err(|e| format!("setting the interval: {e}"))?;
        table.set_interval(pid, Some(interval));
        // Probes again: its figures are fresh from the next tick.
        table.thaw(pid);
        self.ask_jvm(pid);
        if !self.discovery.send(Command::AttachPid(pid)) {
            self.attach_errors += 1;
            let _ = self.pid_sample_interval.remove(&pid);
            table.set_interval(pid, None);
            return Err("the probes are gone (shutting down)".to_owned());
        }
        Ok(())
    }

    /// The discovery thread attached process `pid`'s probes, or could not: a failed escalation ends, and a
    /// waiting `trace` request gets its answer.
    pub fn attached(&mut self, pid: u32, result: Result<(), AttachPidError>, table: &mut Table, clock: Clock) {
        let reply = self.pending_traces.remove(&pid);
        match result {
            Ok(()) => {
                if let Some(reply) = reply {
                    let answer = self.report(pid, clock).ok_or((500, format!("pid {pid} is not traced any more")));
                    let _ =
                        reply.send(answer.map(|escalation| TraceResponse { escalation, result: "attached".into() }));
                }
            }
            Err(err) => {
                self.attach_errors += 1;
                log::warn!("tier 1: pid {pid}: attaching failed: {err}");
                if self.tier1.get(pid).is_some() {
                    let why = format!("attaching failed: {err}");
                    self.tier1.end(pid, procfs::monotonic_ns(), &why);
                    self.detach(pid, table, &why);
                }
                if let Some(reply) = reply {
                    let _ = reply.send(Err((err.status(), err.to_string())));
                }
            }
        }
    }

    /// After a tick's RSS samples: records anonymous memory, escalates growing processes, ends expired
    /// escalations, and runs the budget.
    pub fn tick(
        &mut self,
        samples: &[(u32, RssSample, Option<String>)],
        read_ns: u64,
        capacity: usize,
        rule: &VerdictConfig,
        table: &mut Table,
    ) {
        #[expect(clippy::cast_precision_loss, reason = "ns since boot fit f64 closely enough")]
        let t_s = read_ns as f64 / 1e9;
        for (pid, sample, _) in samples {
            self.faults.record_anon(
                *pid,
                t_s,
                AnonSample { anon: sample.anon, swap: sample.swap, data: sample.data },
                capacity,
                rule,
            );
        }
        let now = procfs::monotonic_ns();
        for pid in self.tier1.expired(now) {
            self.tier1.end(pid, now, "its time is up");
            self.detach(pid, table, "the escalation's time is up");
            log::info!("tier 1: pid {pid}: probes detached, its time is up");
        }
        if self.malloc_probes() == MallocProbes::Auto {
            let mut growing: Vec<(u32, f64, f64)> = self
                .faults
                .processes(None)
                .filter(|r| r.growing)
                .filter(|r| self.escalate_only.is_empty() || self.escalate_only.iter().any(|c| c == r.comm))
                .map(|r| (r.tgid, r.growth.rate, r.growth.r2))
                .collect();
            growing.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            for escalation in self.tier1.candidates(&growing, now) {
                let pid = escalation.pid;
                match self.attach(pid, escalation.interval, table) {
                    Ok(()) => {
                        log::info!("tier 1: pid {pid}: malloc probes attaching: {}", escalation.reason);
                        self.tier1.start(escalation);
                    }
                    Err(err) => log::warn!("tier 1: pid {pid}: attaching failed: {err}"),
                }
            }
        }
        let again: Vec<u32> = self
            .java_asked
            .iter()
            .flatten()
            .filter(|(_, at)| at.elapsed() >= jvm::REASK)
            .map(|(&pid, _)| pid)
            .collect();
        for pid in again {
            self.ask_jvm(pid);
        }
        // The budget runs when the statistics arrive ([`Self::budget`]).
        if !self.stats_asked {
            self.stats_asked = self.discovery.send(Command::ProgramStats);
        }
    }

    /// The CPU budget, with the programs' statistics the discovery thread read.
    pub fn budget(&mut self, stats: Vec<ProgramStats>, table: &mut Table) {
        self.stats_asked = false;
        self.last_stats = stats;
        let stats = &self.last_stats;
        let mut totals = Totals { daemon_cpu_s: procfs::own_cpu_seconds().unwrap_or(0.0), ..Totals::default() };
        for program in stats {
            if is_uprobe(&program.program) {
                totals.uprobe_ns += program.run_time_ns;
                // Only entries trap on every call; count the entry programs' runs as traps.
                if program.program != leakprobe_common::ALLOC_EXIT_PROGRAM {
                    totals.uprobe_runs += program.run_count;
                }
            } else {
                totals.tracepoint_ns += program.run_time_ns;
            }
        }
        // Only the traced processes' counts: with `--malloc-probes all` the map holds thousands of processes.
        let mut calls = HashMap::new();
        for pid in self.tier1.active().map(|e| e.pid).collect::<Vec<_>>() {
            let Ok(values) = self.pid_calls.get(&pid, 0) else { continue };
            let total: u64 = values.iter().sum();
            let before = self.last_calls.insert(pid, total).unwrap_or(0);
            calls.insert(pid, total.saturating_sub(before));
        }
        let now = Instant::now();
        let Some((then, before)) = self.last_totals.replace((now, totals)) else { return };
        let sample = CostSample {
            now_ns: procfs::monotonic_ns(),
            elapsed_s: now.duration_since(then).as_secs_f64(),
            calls,
            uprobe_run_ns: totals.uprobe_ns.saturating_sub(before.uprobe_ns),
            uprobe_runs: totals.uprobe_runs.saturating_sub(before.uprobe_runs),
            tracepoint_run_ns: totals.tracepoint_ns.saturating_sub(before.tracepoint_ns),
            daemon_cpu_s: (totals.daemon_cpu_s - before.daemon_cpu_s).max(0.0),
        };
        for action in self.tier1.budget(&sample) {
            match action {
                Action::Detach { pid } => {
                    let why = self.tier1.ended().rev().find(|e| e.escalation.pid == pid).map(|e| e.why.clone());
                    self.detach(pid, table, why.as_deref().unwrap_or("CPU budget"));
                    log::warn!("CPU budget: pid {pid}: tier-1 probes detached");
                }
                Action::SetInterval { pid, interval } => {
                    if let Err(err) = self.pid_sample_interval.insert(pid, interval, 0) {
                        log::warn!("CPU budget: pid {pid}: setting the interval failed: {err}");
                    }
                    table.set_interval(pid, Some(interval));
                    log::warn!("CPU budget: pid {pid}: sampling interval raised to {interval} bytes");
                }
                Action::Attach { pid, interval } => {
                    if let Err(err) = self.attach(pid, interval, table) {
                        log::warn!("CPU budget: pid {pid}: attaching failed: {err}");
                    }
                }
            }
        }
    }

    /// `POST /v1/trace`: answered now, or once the process's probes are attached (see [`Self::attached`]).
    pub fn trace(
        &mut self,
        request: &TraceRequest,
        table: &mut Table,
        clock: Clock,
        reply: oneshot::Sender<Result<TraceResponse, TraceError>>,
    ) {
        match self.start_trace(request, table, clock) {
            Ok(None) => {
                if let Some(earlier) = self.pending_traces.insert(request.pid, reply) {
                    let _ =
                        earlier.send(Err((409, format!("a later trace request for pid {} replaced it", request.pid))));
                }
            }
            Ok(Some(response)) => {
                let _ = reply.send(Ok(response));
            }
            Err(err) => {
                let _ = reply.send(Err(err));
            }
        }
    }

    /// A trace request: `None` when the probes are being attached (the answer comes later).
    fn start_trace(
        &mut self,
        request: &TraceRequest,
        table: &mut Table,
        clock: Clock,
    ) -> Result<Option<TraceResponse>, TraceError> {
        let pid = request.pid;
        if pid == std::process::id() {
            return Err((400, "the daemon does not trace itself".into()));
        }
        if procfs::exiting(pid) {
            return Err((404, format!("no process {pid}")));
        }
        if self.malloc_probes() == MallocProbes::All {
            return Err((409, "--malloc-probes all: every process is traced already".into()));
        }
        let duration = request
            .duration
            .as_deref()
            .map(humantime::parse_duration)
            .transpose()
            .map_err(|e| (400, format!("`for` is not a duration like 30s or 10m: {e}")))?;
        let interval = match request.mode {
            Some(TraceMode::Full) => 0,
            Some(TraceMode::Sampled) => self.sample_interval.max(1),
            None => self.sample_interval,
        };
        let now = procfs::monotonic_ns();
        let until_ns = duration.map(|d| now + u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2));
        let reason = format!(
            "asked by leakprobe trace{}",
            duration.map(|d| format!(" for {}", humantime::format_duration(d))).unwrap_or_default()
        );
        if let Some(existing) = self.tier1.get(pid).cloned() {
            self.pid_sample_interval
                .insert(pid, interval, 0)
                .map_err(|e| (500, format!("setting the interval: {e}")))?;
            table.set_interval(pid, Some(interval));
            let updated = Escalation { trigger: Trigger::Request, until_ns, reason, interval, ..existing };
            self.tier1.start(updated);
            return Ok(Some(TraceResponse {
                escalation: self.report(pid, clock).ok_or((500, "gone".to_owned()))?,
                result: "updated".into(),
            }));
        }
        if !self.tier1.has_room() {
            return Err((
                409,
                format!("{} processes are traced already (the most at once)", self.tier1.config.max_processes),
            ));
        }
        self.attach(pid, interval, table).map_err(|e| (500, e))?;
        self.tier1.start(Escalation {
            pid,
            trigger: Trigger::Request,
            since_ns: now,
            until_ns,
            reason,
            interval,
            cpu: 0.0,
            calls: 0,
        });
        log::info!("tier 1: pid {pid}: malloc probes attaching on request");
        Ok(None)
    }

    /// `DELETE /v1/trace?pid=PID`.
    pub fn untrace(&mut self, pid: u32, table: &mut Table, clock: Clock) -> Result<TraceResponse, TraceError> {
        let report = self.report(pid, clock).ok_or((404, format!("pid {pid} is not traced")))?;
        let why = "asked by leakprobe trace --stop";
        self.tier1.end(pid, procfs::monotonic_ns(), why);
        self.detach(pid, table, why);
        Ok(TraceResponse { escalation: report, result: "detached".into() })
    }

    fn escalation_report(e: &Escalation, comm: String, clock: Clock) -> EscalationReport {
        EscalationReport {
            pid: e.pid,
            comm,
            trigger: e.trigger.as_str().into(),
            reason: e.reason.clone(),
            since_unix_ms: clock.unix_ms(e.since_ns),
            until_unix_ms: e.until_ns.map(|u| clock.unix_ms(u)),
            mode: if e.interval == 0 { "full" } else { "sampled" }.into(),
            sample_interval_bytes: Some(e.interval).filter(|&i| i > 0),
            cpu_percent: e.cpu * 100.0,
            calls: e.calls,
        }
    }

    fn comm(&self, pid: u32) -> String {
        self.faults
            .processes(Some(pid))
            .next()
            .map(|r| r.comm.to_owned())
            .or_else(|| procfs::comm(pid))
            .unwrap_or_default()
    }

    fn report(&self, pid: u32, clock: Clock) -> Option<EscalationReport> {
        self.tier1.get(pid).map(|e| Self::escalation_report(e, self.comm(pid), clock))
    }

    /// Tier 0, tier 1 and the budget for `status`.
    pub fn status(&self, clock: Clock) -> (Tier0Status, Tier1Status, BudgetReport) {
        let (processes, stacks) = self.faults.sizes();
        let tier0 = Tier0Status {
            enabled: self.fault_enabled,
            mappings: self.map_enabled,
            sample_interval_bytes: self.faults.interval(),
            processes: processes as u64,
            stacks: stacks as u64,
            growing: self.faults.processes(None).filter(|r| r.growing).count() as u64,
        };
        let tier1 = Tier1Status {
            malloc_probes: self.malloc_probes().as_str().into(),
            max_processes: self.tier1.config.max_processes as u64,
            escalated: self.tier1.active().map(|e| Self::escalation_report(e, self.comm(e.pid), clock)).collect(),
            ended: self
                .tier1
                .ended()
                .map(|e| EndedEscalation {
                    escalation: Self::escalation_report(&e.escalation, self.comm(e.escalation.pid), clock),
                    ended_unix_ms: clock.unix_ms(e.ended_ns),
                    why: e.why.clone(),
                })
                .collect(),
        };
        let costs = self.tier1.costs;
        let budget = BudgetReport {
            process_percent: self.tier1.config.process_budget * 100.0,
            host_percent: self.tier1.config.host_budget * 100.0,
            bpf_stats: self.stats_fd.is_some(),
            uprobes_percent: costs.uprobes * 100.0,
            tracepoints_percent: costs.tracepoints * 100.0,
            daemon_percent: costs.daemon * 100.0,
            trap_ns: self.tier1.config.trap_ns,
            programs: self.last_stats.clone(),
            actions: self
                .tier1
                .budget_actions()
                .map(|a| BudgetActionReport {
                    unix_ms: clock.unix_ms(a.ns),
                    pid: a.pid,
                    action: a.action.clone(),
                    why: a.why.clone(),
                })
                .collect(),
        };
        (tier0, tier1, budget)
    }

    /// Reports for `GET /v1/faults` (frames not yet symbolized) and the stacks to symbolize.
    pub fn faults(&self, query: &FaultsQuery, clock: Clock) -> (Vec<FaultProcessReport>, Vec<StackRequest>) {
        let mut rows: Vec<_> = self
            .faults
            .processes(query.pid)
            .filter(|r| query.comm.as_ref().is_none_or(|c| c == r.comm))
            .filter(|r| query.growing.is_none_or(|g| g == r.growing))
            .collect();
        rows.sort_by(|a, b| b.totals.bytes.cmp(&a.totals.bytes).then(a.tgid.cmp(&b.tgid)));
        rows.truncate(query.limit.unwrap_or(DEFAULT_TOP_LIMIT).min(MAX_TOP_LIMIT));
        let per_process = query.stacks.unwrap_or(DEFAULT_FAULT_STACKS).min(MAX_TOP_LIMIT);
        let mut requests = Vec::new();
        let reports = rows
            .iter()
            .map(|row| {
                let stacks = self
                    .faults
                    .stacks_of(row.tgid, per_process)
                    .into_iter()
                    .map(|s| {
                        requests.push(StackRequest { pid: row.tgid, addrs: s.frames.to_vec() });
                        #[expect(clippy::cast_precision_loss, reason = "a share")]
                        let share = if row.totals.samples == 0 {
                            0.0
                        } else {
                            s.stats.samples as f64 / row.totals.samples as f64
                        };
                        FaultStackReport {
                            stack_id: format!("{:016x}", s.stack_hash),
                            bytes: s.stats.bytes,
                            share,
                            sampled_faults: s.stats.samples,
                            first_fault_unix_ms: clock.unix_ms(s.stats.first_ns),
                            last_fault_unix_ms: clock.unix_ms(s.stats.last_ns),
                            truncated: s.truncated,
                            frames: Vec::new(),
                        }
                    })
                    .collect();
                let map_stacks = self
                    .faults
                    .map_stacks_of(row.tgid, per_process)
                    .into_iter()
                    .map(|s| {
                        requests.push(StackRequest { pid: row.tgid, addrs: s.frames.to_vec() });
                        #[expect(clippy::cast_precision_loss, reason = "a share")]
                        let share = if row.map_totals.bytes == 0 {
                            0.0
                        } else {
                            s.stats.stats.bytes as f64 / row.map_totals.bytes as f64
                        };
                        MapStackReport {
                            stack_id: format!("{:016x}", s.stack_hash),
                            bytes: s.stats.stats.bytes,
                            share,
                            sampled_calls: s.stats.stats.samples,
                            sources: s.stats.source_names().into_iter().map(str::to_owned).collect(),
                            first_unix_ms: clock.unix_ms(s.stats.stats.first_ns),
                            last_unix_ms: clock.unix_ms(s.stats.stats.last_ns),
                            truncated: s.truncated,
                            frames: Vec::new(),
                        }
                    })
                    .collect();
                FaultProcessReport {
                    pid: row.tgid,
                    comm: row.comm.to_owned(),
                    fault_bytes: row.totals.bytes,
                    sampled_faults: row.totals.samples,
                    rss_anon_bytes: row.latest.map(|s| s.anon),
                    swap_bytes: row.latest.map(|s| s.swap),
                    anon_growth: row.growth.into(),
                    mapped_bytes: row.map_totals.bytes,
                    sampled_maps: row.map_totals.samples,
                    vm_data_bytes: row.latest.map(|s| s.data),
                    data_growth: row.data_growth.into(),
                    growing: row.growing,
                    tier1: self.tier1.get(row.tgid).map(|e| Self::escalation_report(e, row.comm.to_owned(), clock)),
                    stacks,
                    map_stacks,
                }
            })
            .collect();
        (reports, requests)
    }
}

/// Whether a program is a uprobe (malloc family) rather than a tracepoint.
fn is_uprobe(program: &str) -> bool {
    ![FAULT_PROGRAM, MMAP_PROGRAM, BRK_PROGRAM, OOM_PROGRAM].contains(&program) && !program.starts_with("sched_")
}
