//! The state owner's part of OOM reports: on each OOM event, count the kill, snapshot what the victim held
//! (its exit event, which purges it, comes later through the same ring buffer), and hand the snapshot to a
//! task that symbolizes it and sends it to the report thread. Nothing here blocks on more than a `/proc` read.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Arc,
};

use super::query::{stack_report, sustained_rate};

use leakprobe_common::{OOM_HAS_COMM, OOM_HAS_OOM_SCORE_ADJ, OOM_HAS_RSS, OOM_HAS_TOTAL_VM, OOM_HAS_UID, OomEvent};
use tokio::sync::mpsc;

use crate::{
    core::table::{StackRow, Table, comm_str},
    oom::{OomRequest, OomStats},
    procfs::{self, Clock},
    protocol::{OomReport, ProcessIdentity, oom::OOM_TOP_STACKS},
    symbolize::{StackRequest, SymbolizerHandle},
};

/// Distinct `comm`s counted in `oom_kills_by_comm`; further ones are counted under [`OTHER_COMM`].
pub const MAX_COMMS: usize = 256;
/// The `oom_kills_by_comm` key of kills beyond [`MAX_COMMS`] names.
pub const OTHER_COMM: &str = "(other)";

/// OOM bookkeeping of the state owner.
pub struct OomTracker {
    /// The OOM program is attached.
    pub enabled: bool,
    /// The report thread.
    pub reports: mpsc::Sender<OomRequest>,
    pub stats: Arc<OomStats>,
    /// Where reports are written.
    pub dir: PathBuf,
    kills_by_comm: BTreeMap<String, u64>,
    kills: u64,
    /// The memory cgroup of each tracked process when the daemon first saw it: by the time a victim's OOM
    /// event is read, the whole process may be gone (reaped by its parent). Its maps, for symbols, are kept
    /// by the symbolizer from the same moment.
    cgroups: HashMap<u32, String>,
}

impl OomTracker {
    pub fn new(enabled: bool, reports: mpsc::Sender<OomRequest>, stats: Arc<OomStats>, dir: PathBuf) -> Self {
        Self { enabled, reports, stats, dir, kills_by_comm: BTreeMap::new(), kills: 0, cgroups: HashMap::new() }
    }

    /// The table saw a process for the first time.
    pub fn new_process(&mut self, tgid: u32) {
        if self.enabled
            && let Some(cgroup) = procfs::memory_cgroup(tgid)
        {
            self.cgroups.insert(tgid, cgroup);
        }
    }

    /// A tracked process's cgroup, as read at a tick.
    pub fn cgroup_seen(&mut self, tgid: u32, cgroup: &str) {
        if self.enabled && self.cgroups.get(&tgid).is_none_or(|known| known != cgroup) {
            self.cgroups.insert(tgid, cgroup.to_owned());
        }
    }

    /// A process was purged (exit or exec).
    pub fn purged(&mut self, tgid: u32) {
        self.cgroups.remove(&tgid);
    }

    /// Kills by the victim's name.
    pub fn kills_by_comm(&self) -> &BTreeMap<String, u64> {
        &self.kills_by_comm
    }

    /// Counters for `status`.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut counters = vec![("oom_kills", self.kills)];
        counters.extend(self.stats.counters());
        counters
    }

    /// Handles one OOM event: count, snapshot now, symbolize and save in a spawned task. `identity`: the
    /// victim's, as read when the daemon first saw it (`None`: never seen, read now).
    pub fn on_oom(
        &mut self,
        event: &OomEvent,
        table: &Table,
        clock: Clock,
        symbolizer: &SymbolizerHandle,
        identity: Option<&ProcessIdentity>,
    ) {
        let pid = event.header.tgid;
        // Fresh if the victim is still there and not exiting, else as last seen (first sight or last tick).
        let cgroup = procfs::memory_cgroup(pid).or_else(|| self.cgroups.get(&pid).cloned());
        let identity = identity.cloned().unwrap_or_else(|| procfs::identity(pid));
        let (report, addrs) = snapshot(event, table, clock, cgroup, &identity);
        self.kills += 1;
        let key = if self.kills_by_comm.len() < MAX_COMMS || self.kills_by_comm.contains_key(&report.comm) {
            report.comm.clone()
        } else {
            OTHER_COMM.to_owned()
        };
        *self.kills_by_comm.entry(key).or_default() += 1;
        // The symbolizer kept the victim's maps from when it was first seen: this works after it is gone.
        let requests: Vec<StackRequest> = addrs.into_iter().map(|addrs| StackRequest { pid, addrs }).collect();
        let symbolizer = symbolizer.clone();
        let reports = self.reports.clone();
        tokio::spawn(async move {
            let mut report = report;
            let frames = symbolizer.symbolize(requests).await;
            let stacks = report.stacks_by_live_bytes.iter_mut().chain(report.stacks_by_growth.iter_mut());
            for (stack, frames) in stacks.zip(frames) {
                stack.frames = frames;
            }
            if reports.send(OomRequest::Save(Box::new(report))).await.is_err() {
                log::warn!("OOM report of pid {pid} lost: the report thread has stopped");
            }
        });
    }
}

/// The report of `event` from the table as it is now, frames not yet symbolized, and each stack's addresses
/// (the stacks by live bytes, then those by growth). The container id comes from `cgroup` (the latest known)
/// when it carries one, else from `identity` (as first seen).
pub fn snapshot(
    event: &OomEvent,
    table: &Table,
    clock: Clock,
    cgroup: Option<String>,
    identity: &ProcessIdentity,
) -> (OomReport, Vec<Vec<u64>>) {
    let pid = event.header.tgid;
    // Ages as of the kill.
    let at = event.header.ts_ns;
    let has = |bit: u32| event.has & bit != 0;
    let process = table.processes(Some(pid), None).next();
    let comm = Some(comm_str(&event.comm))
        .filter(|c| has(OOM_HAS_COMM) && !c.is_empty())
        .or_else(|| process.as_ref().map(|p| p.comm.to_owned()))
        .or_else(|| procfs::comm(pid))
        .unwrap_or_else(|| "?".to_owned());
    let by_bytes = table.top(Some(pid), OOM_TOP_STACKS);
    // What was growing: sustained growth (see `sustained_rate`), growing stacks only.
    let mut by_growth: Vec<StackRow<'_>> =
        table.stacks(Some(pid)).filter(|row| sustained_rate(&row.analysis.growth) > 0.0).collect();
    by_growth.sort_by(|a, b| {
        sustained_rate(&b.analysis.growth)
            .total_cmp(&sustained_rate(&a.analysis.growth))
            .then(a.stack_hash.cmp(&b.stack_hash))
    });
    by_growth.truncate(OOM_TOP_STACKS);
    let addrs = by_bytes.iter().chain(&by_growth).map(|row| row.frames.to_vec()).collect();
    let container_id = cgroup.as_deref().and_then(procfs::container_id).or_else(|| identity.container_id.clone());
    let stack_report = |row: &StackRow<'_>| {
        let mut report = stack_report(row, &row.analysis, clock, at);
        report.identity = identity.clone();
        report
    };
    let report = OomReport {
        // Set by the report thread, which knows the ids already taken.
        id: String::new(),
        time_unix_ms: clock.unix_ms(event.header.ts_ns),
        pid,
        comm,
        uid: has(OOM_HAS_UID).then_some(event.uid),
        cgroup,
        ns_pid: identity.ns_pid,
        container_id,
        total_vm_kb: has(OOM_HAS_TOTAL_VM).then_some(event.total_vm_kb),
        anon_rss_kb: has(OOM_HAS_RSS).then_some(event.anon_rss_kb),
        file_rss_kb: has(OOM_HAS_RSS).then_some(event.file_rss_kb),
        shmem_rss_kb: has(OOM_HAS_RSS).then_some(event.shmem_rss_kb),
        oom_score_adj: has(OOM_HAS_OOM_SCORE_ADJ).then_some(event.oom_score_adj),
        tracked: process.is_some(),
        heap_live_bytes: process.as_ref().map_or(0, |p| p.live_bytes),
        heap_live_allocations: process.as_ref().map_or(0, |p| p.live_count),
        stacks_by_live_bytes: by_bytes.iter().map(stack_report).collect(),
        stacks_by_growth: by_growth.iter().map(stack_report).collect(),
    };
    (report, addrs)
}

#[cfg(test)]
mod tests {
    use leakprobe_common::{AllocEvent, AllocFn, Event, EventHeader, EventKind, MAX_FRAMES, OOM_HAS_ALL};

    use super::*;
    use crate::core::table::{AnalysisConfig, Limits};

    fn header(kind: EventKind, tgid: u32) -> EventHeader {
        EventHeader { kind: kind as u32, pad: 0, ts_ns: 1_000_000_000, tgid, tid: tgid }
    }

    fn oom(tgid: u32, has: u32) -> OomEvent {
        OomEvent {
            header: header(EventKind::Oom, tgid),
            total_vm_kb: 70_000,
            anon_rss_kb: 60_000,
            file_rss_kb: 1_000,
            shmem_rss_kb: 0,
            uid: 1000,
            oom_score_adj: -100,
            has,
            pad: 0,
            comm: *b"victim\0\0\0\0\0\0\0\0\0\0",
        }
    }

    #[test]
    fn snapshot_takes_the_victims_stacks_largest_first() {
        let mut table =
            Table::new(Limits { max_allocations: 100, max_stacks: 100, max_series: 100 }, AnalysisConfig::default());
        for (i, (leaf, size)) in [(0xa, 100), (0xb, 1 << 20), (0xb, 1 << 20), (0xc, 10)].into_iter().enumerate() {
            let mut frames = [0; MAX_FRAMES];
            frames[0] = leaf;
            table.apply(&Event::Alloc(AllocEvent {
                header: header(EventKind::Alloc, 7),
                addr: 0x1000 * (i as u64 + 1),
                size,
                old_addr: 0,
                func: AllocFn::Malloc as u32,
                nframes: 1,
                flags: 0,
                pad: 0,
                comm: *b"thread\0\0\0\0\0\0\0\0\0\0",
                frames,
            }));
        }
        let identity = ProcessIdentity {
            ns_pid: Some(1),
            cgroup: Some("/cg".into()),
            container_id: None,
            ..ProcessIdentity::default()
        };
        let cgroup = format!("/system.slice/docker-{}.scope", "ab".repeat(32));
        let (report, addrs) = snapshot(&oom(7, OOM_HAS_ALL), &table, Clock::new(), Some(cgroup.clone()), &identity);
        assert_eq!(addrs, vec![vec![0xb], vec![0xa], vec![0xc]]);
        assert_eq!(report.stacks_by_live_bytes[0].live_bytes, 2 << 20);
        assert_eq!(report.stacks_by_live_bytes[0].live_count, 2);
        assert_eq!((report.heap_live_bytes, report.heap_live_allocations), ((2 << 20) + 110, 4));
        assert_eq!((report.pid, report.comm.as_str(), report.cgroup.as_deref()), (7, "victim", Some(&*cgroup)));
        // The container as the kill's cgroup says, the pid as the victim's namespace saw it.
        assert_eq!((report.ns_pid, report.container_id), (Some(1), Some("ab".repeat(32))));
        assert_eq!(report.stacks_by_live_bytes[0].identity, identity);
        assert_eq!((report.anon_rss_kb, report.uid, report.oom_score_adj), (Some(60_000), Some(1000), Some(-100)));
        assert!(report.tracked);
        assert!(report.stacks_by_growth.is_empty());
    }

    #[test]
    fn an_unknown_victim_still_gets_a_report() {
        let table =
            Table::new(Limits { max_allocations: 10, max_stacks: 10, max_series: 10 }, AnalysisConfig::default());
        // Only the pid in the record (an old kernel): nothing else is claimed.
        let (report, addrs) = snapshot(&oom(u32::MAX, 0), &table, Clock::new(), None, &ProcessIdentity::default());
        assert!(addrs.is_empty() && report.stacks_by_live_bytes.is_empty());
        assert!(!report.tracked);
        assert_eq!(report.comm, "?");
        assert_eq!((report.anon_rss_kb, report.total_vm_kb, report.uid), (None, None, None));
        assert_eq!((report.ns_pid, report.container_id), (None, None));
    }
}
