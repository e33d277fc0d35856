//! What tier 0, tier 1 and the budget report: `status`, `GET /v1/faults` and the escalations, read from the
//! tiers' state without changing it.

use super::Tiers;
use crate::{
    core::tier1::Escalation,
    procfs::{self, Clock},
    protocol::{
        BudgetActionReport, BudgetReport, DEFAULT_TOP_LIMIT, EndedEscalation, EscalationReport, FaultProcessReport,
        FaultStackReport, FaultsQuery, MAX_TOP_LIMIT, MapStackReport, Tier0Status, Tier1Status,
        tiers::DEFAULT_FAULT_STACKS,
    },
    symbolize::StackRequest,
};

impl Tiers {
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

    pub(super) fn report(&self, pid: u32, clock: Clock) -> Option<EscalationReport> {
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
            bpf_stats: self.kernel.bpf_stats(),
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
