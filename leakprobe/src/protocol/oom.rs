//! OOM reports: what a process held when the kernel's OOM killer chose it.
//!
//! - `GET /v1/oom` -> [`OomListResponse`], oldest first
//! - `GET /v1/oom/{id}` -> [`OomReport`]

use serde::{Deserialize, Serialize};

use super::StackReport;

/// Path of the OOM report list; one report is at `/v1/oom/{id}`.
pub const OOM_PATH: &str = "/v1/oom";
/// Stacks kept per report, in each ordering.
pub const OOM_TOP_STACKS: usize = 10;

/// Everything known about one OOM kill, as stored on disk and served by `GET /v1/oom/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OomReport {
    /// `<unix_ms, 13 digits>-<pid>`: sorts by time.
    pub id: String,
    /// When the OOM killer chose the victim, milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    /// Host pid of the victim.
    pub pid: u32,
    /// Name of the victim (from the kernel's record, else from `/proc` or the daemon's table).
    pub comm: String,
    /// The victim's uid, when the kernel's record has it.
    pub uid: Option<u32>,
    /// The victim's memory cgroup (cgroup v1 `memory` hierarchy, else the v2 path): read at the kill, or, if
    /// the victim was already gone, when the daemon first saw it allocate; `None` when never known.
    pub cgroup: Option<String>,
    /// The victim's pid in its own pid namespace, when that is not the daemon's (a container's).
    #[serde(default)]
    pub ns_pid: Option<u32>,
    /// The container id (64 hexadecimal digits) the victim's cgroup path carries, if any.
    #[serde(default)]
    pub container_id: Option<String>,
    /// Memory of the victim as the kernel reported it, in kB (`None`: not in this kernel's record).
    pub total_vm_kb: Option<u64>,
    pub anon_rss_kb: Option<u64>,
    pub file_rss_kb: Option<u64>,
    pub shmem_rss_kb: Option<u64>,
    /// The victim's `oom_score_adj`.
    pub oom_score_adj: Option<i32>,
    /// Whether the daemon tracked allocations of this process (false: no stacks below).
    pub tracked: bool,
    /// Heap bytes live in the process (allocated through the probed allocator, not freed), when tracked.
    pub heap_live_bytes: u64,
    /// Live heap allocations in the process.
    pub heap_live_allocations: u64,
    /// The stacks holding the most live bytes, largest first (at most [`OOM_TOP_STACKS`]).
    pub stacks_by_live_bytes: Vec<StackReport>,
    /// The stacks growing fastest (sustained growth, see `top --by growth`), fastest first (at most
    /// [`OOM_TOP_STACKS`]); empty when nothing was growing.
    pub stacks_by_growth: Vec<StackReport>,
}

impl OomReport {
    /// The innermost named frame of the top stack, when there is one.
    pub fn top_function(&self) -> Option<&str> {
        self.stacks_by_live_bytes.first()?.frames.iter().find_map(|f| f.function.as_deref())
    }

    /// The short form listed by `GET /v1/oom`.
    pub fn summary(&self) -> OomSummary {
        OomSummary {
            id: self.id.clone(),
            time_unix_ms: self.time_unix_ms,
            pid: self.pid,
            comm: self.comm.clone(),
            cgroup: self.cgroup.clone(),
            ns_pid: self.ns_pid,
            container_id: self.container_id.clone(),
            anon_rss_kb: self.anon_rss_kb,
            heap_live_bytes: self.heap_live_bytes,
            top_function: self.top_function().map(str::to_owned),
        }
    }
}

/// One line of `GET /v1/oom`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OomSummary {
    pub id: String,
    pub time_unix_ms: u64,
    pub pid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    /// The victim's pid in its own pid namespace, when that is not the daemon's.
    #[serde(default)]
    pub ns_pid: Option<u32>,
    /// The container id the victim's cgroup path carries, if any.
    #[serde(default)]
    pub container_id: Option<String>,
    pub anon_rss_kb: Option<u64>,
    pub heap_live_bytes: u64,
    /// Innermost named frame of the stack holding the most live bytes.
    pub top_function: Option<String>,
}

/// Body of `GET /v1/oom`: every stored report, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OomListResponse {
    pub reports: Vec<OomSummary>,
}

/// Whether `id` has the shape of a report id (`<digits>-<digits>`); anything else is a bad request, and no
/// id can name a path outside the report directory.
pub fn valid_id(id: &str) -> bool {
    let Some((ms, pid)) = id.split_once('-') else { return false };
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    digits(ms) && digits(pid)
}

/// The id of a report made at `time_unix_ms` for `pid`.
pub fn make_id(time_unix_ms: u64, pid: u32) -> String {
    format!("{time_unix_ms:013}-{pid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_are_validated() {
        assert_eq!(make_id(1_700_000_000_123, 42), "1700000000123-42");
        assert!(make_id(999, 1) < make_id(1_000, 1));
        assert!(valid_id("1700000000123-42"));
        for bad in ["", "-", "12-", "-12", "12-ab", "../etc-1", "1-2-3", "1 -2"] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
