//! Tier 0 and tier 1 as the state owner runs them: the fault table, escalations (attaching and detaching
//! pid-scoped probes), `trace` requests, and the CPU budget's measurements and decisions.
//!
//! The probes belong to the discovery thread (it knows every allocator file a process maps): attaching and
//! detaching are commands to it, and their outcomes, like the programs' statistics the budget needs, come back
//! as requests to the state owner, which never waits for them. Those commands and the maps tier 1 writes go
//! through [`Tier1Kernel`], which the unit tests (`tiers/tests.rs`) fake.

use std::{collections::HashMap, time::Instant};

use leakprobe_common::{BRK_PROGRAM, FAULT_PROGRAM, FaultEvent, MMAP_PROGRAM, MapEvent, OOM_PROGRAM};

use tokio::sync::oneshot;

use super::{folios::Folios, jvm, kernel::Tier1Kernel};
use crate::{
    core::{
        analysis::VerdictConfig,
        faults::{AnonSample, FaultTable},
        table::{RssSample, Table},
        tier1::{Action, CostSample, Escalation, Tier1, Trigger},
    },
    probes::{MallocProbes, discover::AttachPidError},
    procfs::{self, Clock},
    protocol::{ProgramStats, TraceMode, TraceRequest, TraceResponse},
};

mod reports;
#[cfg(test)]
mod tests;

/// Why a trace request was refused.
pub use crate::queries::TraceError;

/// Program totals at the previous budget check.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    uprobe_ns: u64,
    uprobe_runs: u64,
    tracepoint_ns: u64,
    daemon_cpu_s: f64,
}

/// How the tiers run, from the daemon's settings.
#[derive(Clone, Debug)]
pub struct TierSettings {
    pub malloc_probes: MallocProbes,
    /// The daemon's sampling interval (0: full), for `trace --mode sampled` and reports.
    pub sample_interval: u64,
    /// When not empty, only processes with one of these names are escalated automatically.
    pub escalate_only: Vec<String>,
    /// Ask escalated JVMs for their perf map (`--java-perfmap`).
    pub java_perfmap: bool,
}

/// Tier 0, tier 1 and the budget.
pub struct Tiers {
    faults: FaultTable,
    tier1: Tier1,
    /// The maps tier 1 writes and the per-process probes, which the discovery thread owns: tier 1 asks it to
    /// attach and detach.
    kernel: Box<dyn Tier1Kernel>,
    malloc_probes: MallocProbes,
    /// Tier 0 runs (its tracepoint is attached; set by `Request::Attached`).
    fault_enabled: bool,
    /// Tier 0 follows mapping growth (the `mmap` and `brk` tracepoints are attached).
    map_enabled: bool,
    /// Trace requests waiting for their process's probes.
    pending_traces: HashMap<u32, oneshot::Sender<Result<TraceResponse, TraceError>>>,
    /// Program statistics asked for and not yet received.
    stats_asked: bool,
    /// The latest program statistics.
    last_stats: Vec<ProgramStats>,
    /// The daemon's sampling interval (0: full), for `trace --mode sampled` and reports.
    sample_interval: u64,
    last_calls: HashMap<u32, u64>,
    last_totals: Option<(Instant, Totals)>,
    /// Attach failures of tier 1.
    attach_errors: u64,
    /// When not empty, only processes with one of these names are escalated automatically.
    escalate_only: Vec<String>,
    /// Weighs a fault that mapped a transparent huge page by its size, once the fault is done.
    folios: Folios,
    /// With `--java-perfmap` (else `None`): the escalated JVMs asked for their perf map, and when last.
    java_asked: Option<HashMap<u32, Instant>>,
}

impl Tiers {
    pub fn new(
        faults: FaultTable,
        tier1: Tier1,
        folios: Folios,
        settings: TierSettings,
        kernel: Box<dyn Tier1Kernel>,
    ) -> Self {
        Self {
            faults,
            tier1,
            kernel,
            malloc_probes: settings.malloc_probes,
            fault_enabled: false,
            map_enabled: false,
            pending_traces: HashMap::new(),
            stats_asked: false,
            last_stats: Vec::new(),
            sample_interval: settings.sample_interval,
            last_calls: HashMap::new(),
            last_totals: None,
            attach_errors: 0,
            escalate_only: settings.escalate_only,
            folios,
            java_asked: settings.java_perfmap.then(HashMap::new),
        }
    }

    /// Which tracepoints are attached: faults (tier 0) and mapping growth.
    pub fn set_attached(&mut self, faults: bool, maps: bool) {
        self.fault_enabled = faults;
        self.map_enabled = maps;
    }

    /// Tier 0's processes and stacks.
    pub fn fault_table(&self) -> &FaultTable {
        &self.faults
    }

    /// A sampled mapping's growth; true when it is the first event of its process.
    pub fn on_map(&mut self, event: &MapEvent) -> bool {
        self.faults.apply_map(event)
    }

    /// Tier 0 saw process `tgid` first: its name.
    pub fn set_comm(&mut self, tgid: u32, comm: String) {
        self.faults.set_comm(tgid, comm);
    }

    /// Faults wait for their page (see [`Folios`]).
    pub fn folios_waiting(&self) -> bool {
        self.folios.waiting()
    }

    /// Tier counters for `status` and metrics.
    pub fn counters(&self) -> [(&'static str, u64); 11] {
        let faults = self.faults.counters();
        [
            ("fault_events", faults.events),
            ("map_events", faults.map_events),
            ("fault_processes_dropped", faults.dropped_processes),
            ("fault_stacks_dropped", faults.dropped_stacks),
            ("fault_processes_purged", faults.purged),
            ("fault_large_folios", faults.large_folios),
            ("fault_folios_deferred", self.folios.deferred),
            ("fault_folios_unresolved", self.folios.unresolved),
            ("tier1_escalations_ended", self.tier1.ended().count() as u64),
            ("tier1_attach_errors", self.attach_errors),
            ("budget_actions", self.tier1.budget_actions),
        ]
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
        self.kernel.detach(pid);
        self.kernel.clear_interval(pid);
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
    fn attach(&mut self, pid: u32, interval: u64, table: &mut Table) -> Result<(), TraceError> {
        // The interval first: the first calls through the new probes must be sampled as asked.
        self.kernel.set_interval(pid, interval).map_err(TraceError::Interval)?;
        table.set_interval(pid, Some(interval));
        // Probes again: its figures are fresh from the next tick.
        table.thaw(pid);
        self.ask_jvm(pid);
        if !self.kernel.attach(pid) {
            self.attach_errors += 1;
            self.kernel.clear_interval(pid);
            table.set_interval(pid, None);
            return Err(TraceError::ShuttingDown);
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
                    let answer = self.report(pid, clock).ok_or(TraceError::Ended(pid));
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
                    let _ = reply.send(Err(err.into()));
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
            self.stats_asked = self.kernel.ask_program_stats();
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
            let Some(total) = self.kernel.calls(pid) else { continue };
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
                    if let Err(err) = self.kernel.set_interval(pid, interval) {
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
                    let _ = earlier.send(Err(TraceError::Replaced(request.pid)));
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
            return Err(TraceError::OwnProcess);
        }
        if procfs::exiting(pid) {
            return Err(TraceError::NoProcess(pid));
        }
        if self.malloc_probes() == MallocProbes::All {
            return Err(TraceError::TracedEverywhere);
        }
        let duration = request
            .duration
            .as_deref()
            .map(humantime::parse_duration)
            .transpose()
            .map_err(|e| TraceError::BadDuration(e.to_string()))?;
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
            self.kernel.set_interval(pid, interval).map_err(TraceError::Interval)?;
            table.set_interval(pid, Some(interval));
            let updated = Escalation { trigger: Trigger::Request, until_ns, reason, interval, ..existing };
            self.tier1.start(updated);
            return Ok(Some(TraceResponse {
                escalation: self.report(pid, clock).ok_or(TraceError::Ended(pid))?,
                result: "updated".into(),
            }));
        }
        if !self.tier1.has_room() {
            return Err(TraceError::Full(self.tier1.config.max_processes));
        }
        self.attach(pid, interval, table)?;
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
        let report = self.report(pid, clock).ok_or(TraceError::NotTraced(pid))?;
        let why = "asked by leakprobe trace --stop";
        self.tier1.end(pid, procfs::monotonic_ns(), why);
        self.detach(pid, table, why);
        Ok(TraceResponse { escalation: report, result: "detached".into() })
    }
}

/// Whether a program is a uprobe (malloc family) rather than a tracepoint.
fn is_uprobe(program: &str) -> bool {
    ![FAULT_PROGRAM, MMAP_PROGRAM, BRK_PROGRAM, OOM_PROGRAM].contains(&program) && !program.starts_with("sched_")
}
