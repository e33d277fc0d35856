//! What discovery reports: the attach points, the providers found (and the files found unsupported), and its
//! counters, for `status` and metrics.

use std::collections::BTreeMap;

use super::{AttachedFile, Discovery, Known, Provider};
use crate::{
    probes::unwind_tables::KernelTables,
    protocol::{AttachPoint, DiscoveryStatus, ProviderStatus},
};

impl Discovery {
    /// Every attached allocator probe: the system-wide ones, then tier 1's pid-scoped ones by pid.
    pub fn attach_points(&self) -> Vec<AttachPoint> {
        let mut providers: Vec<&Provider> = self.providers().map(|(_, p)| p).collect();
        providers.sort_by(|a, b| a.shown.cmp(&b.shown));
        let mut scoped: Vec<(&u32, &Vec<AttachedFile>)> = self.scoped.iter().collect();
        scoped.sort_unstable_by_key(|&(pid, _)| *pid);
        providers
            .iter()
            .filter_map(|p| p.attached.as_ref())
            .chain(scoped.into_iter().flat_map(|(_, files)| files))
            .flat_map(|a| a.points.iter().cloned())
            .collect()
    }

    /// What discovery found and what it cost.
    pub fn status(&self) -> DiscoveryStatus {
        let mut providers: Vec<ProviderStatus> = self
            .providers()
            .map(|(id, p)| ProviderStatus {
                path: p.shown.display().to_string(),
                file: id.to_string(),
                family: p.symbols.family.name().to_owned(),
                supported: p.error.is_none(),
                probes: p.attached.as_ref().map_or(0, |a| a.points.len() as u64),
                processes: p.processes,
                pinned: p.pinned,
                preprobed: p.preprobed,
                static_symbols: p.symbols.from_symtab,
                not_tracked: p.symbols.not_tracked.iter().map(|(name, why)| format!("{name}: {why}")).collect(),
                error: p.error.clone(),
            })
            .collect();
        providers.extend(self.known.iter().filter_map(|(id, known)| {
            let Known::Unsupported(file) = known else { return None };
            Some(ProviderStatus {
                path: file.shown.display().to_string(),
                file: id.to_string(),
                family: file.what.family_name().to_owned(),
                supported: false,
                probes: 0,
                processes: file.processes,
                pinned: false,
                preprobed: false,
                static_symbols: false,
                not_tracked: Vec::new(),
                error: Some(file.what.reason.clone()),
            })
        }));
        providers.sort_by(|a, b| (&a.path, &a.file).cmp(&(&b.path, &b.file)));
        DiscoveryStatus {
            enabled: self.enabled(),
            rescan_interval_seconds: self.config.as_ref().map_or(0.0, |c| c.rescan_interval.as_secs_f64()),
            max_files_per_scan: self.config.as_ref().map_or(0, |c| c.max_files_per_scan as u64),
            providers,
            last_full_scan: self.last_full,
            last_exec_scan: self.last_exec,
            unwind_tables: self.tables.as_ref().map(KernelTables::binaries).unwrap_or_default(),
        }
    }

    /// Cumulative counters (`discovery_*` in `status` and metrics).
    pub fn counters(&self) -> BTreeMap<String, u64> {
        let t = self.totals;
        [
            ("discovery_full_scans", t.full_scans),
            ("discovery_exec_scans", t.exec_scans),
            ("discovery_pids_scanned", t.pids_scanned),
            ("discovery_files_examined", t.files_examined),
            ("discovery_files_deferred", t.files_deferred),
            ("discovery_scan_microseconds", t.scan_microseconds),
            ("discovery_files_attached", t.files_attached),
            ("discovery_files_detached", t.files_detached),
            ("discovery_attach_errors", t.attach_errors),
            ("discovery_open_errors", t.open_errors),
            ("discovery_not_elf", t.not_elf),
            ("discovery_unsupported_files", t.unsupported),
            ("discovery_known_files", self.known.len() as u64),
            ("discovery_files_preprobed", t.files_preprobed),
            ("discovery_preprobe_microseconds", t.preprobe_microseconds),
        ]
        .into_iter()
        .chain(self.tables.iter().flat_map(KernelTables::counter_pairs))
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }
}
