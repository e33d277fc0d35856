//! JIT frames: the perf maps of the processes whose frames fall outside every file-backed mapping, kept per
//! process (bounded, least recently used first out) so that they still resolve after the process exited.

use std::{
    num::NonZeroUsize,
    sync::Arc,
    time::{Duration, Instant},
};

use lru::LruCache;

use super::perfmap::PerfMap;

/// Processes whose perf map is kept.
const MAX_PROCESSES: usize = 64;
/// Processes remembered as having no perf map.
const MAX_ABSENT: usize = 4_096;
/// A process without a perf map is looked at again after this long (a JVM writes one when asked).
const ABSENT_RECHECK: Duration = Duration::from_secs(5);

/// A frame resolved through a perf map.
#[derive(Clone, Debug)]
pub struct JitFrame {
    /// The map's name of the function.
    pub name: Arc<str>,
    /// The map as the process sees it (`/tmp/perf-PID.map`).
    pub map: Arc<str>,
}

/// The perf maps of processes with JIT frames.
#[derive(Debug)]
pub struct JitMaps {
    maps: LruCache<u32, PerfMap>,
    /// Processes found without a perf map, and when.
    absent: LruCache<u32, Instant>,
}

impl Default for JitMaps {
    fn default() -> Self {
        let n = |n| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        Self { maps: LruCache::new(n(MAX_PROCESSES)), absent: LruCache::new(n(MAX_ABSENT)) }
    }
}

impl JitMaps {
    /// The function holding `addr` (outside every file-backed mapping of `pid`), from the process's perf map.
    pub fn lookup(&mut self, pid: u32, addr: u64, now: Instant) -> Option<JitFrame> {
        if !self.has_map(pid, now) {
            return None;
        }
        let map = self.maps.get_mut(&pid)?;
        map.lookup(addr, now).map(|name| JitFrame { name, map: map.shown.clone() })
    }

    /// Whether `pid` has a perf map: kept, or read now (a process found without one is looked at again only
    /// after [`ABSENT_RECHECK`], so asking for a process without one costs a cache lookup).
    pub fn has_map(&mut self, pid: u32, now: Instant) -> bool {
        if self.maps.contains(&pid) {
            return true;
        }
        if self.absent.get(&pid).is_some_and(|&at| now.duration_since(at) < ABSENT_RECHECK) {
            return false;
        }
        let Some(map) = open(pid) else {
            self.absent.put(pid, now);
            return false;
        };
        self.absent.pop(&pid);
        self.maps.put(pid, map);
        true
    }

    /// Whether `addr` of `pid` resolves through the perf map as already read (nothing is read).
    pub fn knows(&self, pid: u32, addr: u64) -> bool {
        self.maps.peek(&pid).is_some_and(|m| m.find(addr).is_some())
    }
}

/// The perf map of a live process, read once, if it has one.
fn open(pid: u32) -> Option<PerfMap> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ns_pid = crate::procfs::parse_ns_pid(&status).unwrap_or(pid);
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()?;
    let mut map = PerfMap::of(pid, ns_pid, uid);
    match map.read_more() {
        Ok(()) => Some(map),
        Err(err) => {
            log::debug!("perf map of pid {pid}: {}: {err}", map.path().display());
            None
        }
    }
}
