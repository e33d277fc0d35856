//! `GET /v1/status` as the state owner answers it: settings, attach points, tables, and every counter (the
//! kernel's, the table's, the tiers', discovery's, ingest's).

use std::{collections::BTreeMap, sync::atomic::Ordering};

use leakprobe_common::Counter;

use super::State;
use crate::{
    core::analysis::POINT_BYTES,
    protocol::{AnalysisSettings, StatusResponse, TableSizes, UnwindSettings},
};

impl State {
    fn kernel_counters(&self) -> BTreeMap<String, u64> {
        Counter::ALL
            .iter()
            .map(|&counter| {
                let sum = self.links.counters.read(counter).unwrap_or_else(|err| {
                    log::warn!("reading counter {}: {err}", counter.name());
                    0
                });
                (counter.name().to_owned(), sum)
            })
            .collect()
    }

    pub(super) fn status(&self) -> StatusResponse {
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
            ("kernel_entries_purged", self.links.purged_entries.load(Ordering::Relaxed)),
        ]
        .into_iter()
        .chain(self.links.oom.counters())
        .chain([("discovery_exec_scans_dropped", self.exec_scans_dropped)])
        .chain(self.push_stats.counters())
        .chain(self.links.unseen.enabled().then(|| self.links.unseen.counters()).into_iter().flatten())
        .chain(self.tiers.counters())
        .chain(self.links.unwind_stats.counters())
        .chain(self.links.python_stats.counters())
        .map(|(name, value)| (name.to_owned(), value))
        .chain(self.discovery_counters.iter().map(|(name, &value)| (name.clone(), value)))
        .collect();
        StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_seconds: self.setup.started.elapsed().as_secs(),
            mode: if self.table.config().sample_interval == 0 { "full" } else { "sampled" }.to_owned(),
            sample_interval_bytes: Some(self.table.config().sample_interval).filter(|&i| i > 0),
            return_probes: self.setup.return_probes.to_owned(),
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
            features: BTreeMap::from([("oom".to_owned(), self.links.oom.enabled), ("tier0".to_owned(), tier0.enabled)]),
            oom_kills_by_comm: self.links.oom.kills_by_comm().clone(),
            oom_report_dir: Some(self.links.oom.dir.display().to_string()),
            discovery: self.discovery.clone(),
            tier0: Some(tier0),
            tier1: Some(tier1),
            budget: Some(budget),
            unwind: Some(UnwindSettings {
                mode: match (self.setup.unwind_tables, self.setup.stack_copy_bytes) {
                    (true, _) => "tables",
                    (false, 0) => "fp",
                    (false, _) => "dwarf",
                }
                .to_owned(),
                stack_copy_bytes: Some(u64::from(self.setup.stack_copy_bytes)).filter(|&b| b > 0),
                unwind_seconds: self.links.unwind_stats.unwind_seconds(),
            }),
            traced_pid: self.setup.traced_pid,
        }
    }
}
