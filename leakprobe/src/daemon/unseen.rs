//! Allocations the probes missed at a process's start, estimated from its frees of addresses never reported.
//!
//! With every allocator file probed system-wide in full mode, a process that calls `execve` under the daemon
//! has each of its allocations reported, except those made before the probes reached its allocator (a file
//! no process had mapped yet: a container's own libc, a library loaded with `dlopen`). The kernel counts, per
//! such process and CPU, the frees of addresses it never reported
//! ([`leakprobe_common::maps::UNSEEN_FREES`]): each one is an allocation missed. Allocations missed and never
//! freed cannot be counted. A running process's count is read when asked; an exited one's is read and removed
//! when its exit event arrives (or when a tick finds it gone).

use aya::maps::{MapData, PerCpuHashMap};

/// The kernel's per-process counts, and the totals of the processes that ended.
pub struct UnseenFrees {
    map: Option<PerCpuHashMap<MapData, u32, u64>>,
    /// Sum over exited processes.
    ended_total: u64,
    /// Exited processes with at least one.
    ended_processes: u64,
}

impl UnseenFrees {
    /// Counts kept in `map`; `None` when not counted (sampled mode, or probes scoped to processes).
    pub fn new(map: Option<PerCpuHashMap<MapData, u32, u64>>) -> Self {
        Self { map, ended_total: 0, ended_processes: 0 }
    }

    /// Whether processes' missed allocations are counted.
    pub fn enabled(&self) -> bool {
        self.map.is_some()
    }

    /// Process `pid` is gone: its count joins the totals and its entry is removed.
    pub fn gone(&mut self, pid: u32) {
        let Some(count) = self.live(pid) else { return };
        if let Some(map) = &mut self.map {
            // Already removed (the exit event and a tick's sweep both report a process gone): nothing to do.
            let _ = map.remove(&pid);
        }
        if count > 0 {
            self.ended_total += count;
            self.ended_processes += 1;
        }
    }

    /// The count of running process `pid`; `None` when it is not counted (started before the daemon, or
    /// counting is off).
    pub fn live(&self, pid: u32) -> Option<u64> {
        let values = self.map.as_ref()?.get(&pid, 0).ok()?;
        Some(values.iter().sum())
    }

    /// For `status` and metrics.
    pub fn counters(&self) -> [(&'static str, u64); 2] {
        [
            ("allocs_before_probes_exited", self.ended_total),
            ("processes_with_allocs_before_probes_exited", self.ended_processes),
        ]
    }
}
