//! Requests and responses of the socket API, shared by the server and the CLI client.
//!
//! The API is HTTP/1.1 + JSON on a unix socket, under versioned paths:
//! - `GET /v1/status` -> [`StatusResponse`]
//! - `GET /v1/top?pid=PID&limit=N` -> [`TopResponse`]
//! - `GET /v1/oom` -> [`OomListResponse`], `GET /v1/oom/{id}` -> [`OomReport`] (see [`oom`])
//!
//! Every error is a non-2xx status with an [`ErrorResponse`] body. Field names are stable: new fields may be
//! added, none renamed or removed within `v1`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod oom;
pub use oom::{OOM_PATH, OomListResponse, OomReport, OomStack, OomSummary};

/// Path prefix of the current API version.
pub const API_PREFIX: &str = "/v1";
/// Path of the status endpoint.
pub const STATUS_PATH: &str = "/v1/status";
/// Path of the top endpoint.
pub const TOP_PATH: &str = "/v1/top";
/// Stacks returned by `top` when no limit is given.
pub const DEFAULT_TOP_LIMIT: usize = 20;
/// The largest `limit` a `top` request may ask for.
pub const MAX_TOP_LIMIT: usize = 10_000;

/// Query of `GET /v1/top`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopQuery {
    /// Only stacks of this process (host pid).
    pub pid: Option<u32>,
    /// At most this many stacks (default [`DEFAULT_TOP_LIMIT`], at most [`MAX_TOP_LIMIT`]).
    pub limit: Option<usize>,
}

impl TopQuery {
    /// The effective limit.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_TOP_LIMIT).min(MAX_TOP_LIMIT)
    }
}

/// Body of `GET /v1/top`: stacks ordered by live bytes, largest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopResponse {
    pub stacks: Vec<StackReport>,
}

/// Outstanding allocations of one call stack in one process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackReport {
    /// Host pid of the process.
    pub pid: u32,
    /// Process name (`/proc/PID/comm`).
    pub comm: String,
    /// Stable id of the stack's frames (the same frames give the same id).
    pub stack_id: String,
    /// Bytes allocated from this stack and not yet freed.
    pub live_bytes: u64,
    /// Allocations from this stack not yet freed.
    pub live_count: u64,
    /// Bytes ever allocated from this stack since it was first seen.
    pub total_bytes: u64,
    /// Allocations ever made from this stack since it was first seen.
    pub total_count: u64,
    /// Wall-clock time of the first allocation, in milliseconds since the Unix epoch.
    pub first_alloc_unix_ms: u64,
    /// Wall-clock time of the latest allocation, in milliseconds since the Unix epoch.
    pub last_alloc_unix_ms: u64,
    /// True when the stack was deeper than the kernel captures and was cut.
    pub truncated: bool,
    /// Frames, innermost first: the first is the allocator's caller.
    pub frames: Vec<Frame>,
}

/// One symbolized stack frame.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Instruction address in the process, as `0x...` hex.
    pub addr: String,
    /// Demangled function name, when known.
    pub function: Option<String>,
    /// Source file, when debug information has it.
    pub file: Option<String>,
    /// Source line, when debug information has it.
    pub line: Option<u32>,
    /// The binary or library the address belongs to, when known.
    pub module: Option<String>,
}

/// Body of `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// Daemon version.
    pub version: String,
    /// Daemon pid.
    pub pid: u32,
    /// Seconds since the daemon started.
    pub uptime_seconds: u64,
    /// Tracking mode (`full`: every allocation).
    pub mode: String,
    /// Every probe the daemon attached.
    pub attach_points: Vec<AttachPoint>,
    /// Counters kept in the kernel (events and losses), summed over CPUs.
    pub kernel_counters: BTreeMap<String, u64>,
    /// Counters kept by the daemon.
    pub daemon_counters: BTreeMap<String, u64>,
    /// Current sizes of the daemon's tables.
    pub tables: TableSizes,
    /// Optional features and whether they run: `oom` (OOM reports; needs the `oom/mark_victim` tracepoint).
    #[serde(default)]
    pub features: BTreeMap<String, bool>,
    /// OOM kills seen since the daemon started, by the victim's `comm` (at most 256 names; further ones are
    /// counted under `(other)`).
    #[serde(default)]
    pub oom_kills_by_comm: BTreeMap<String, u64>,
    /// The directory OOM reports are kept in.
    #[serde(default)]
    pub oom_report_dir: Option<String>,
}

/// One attached probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachPoint {
    /// `uprobe`, `uretprobe` or `tracepoint`.
    pub kind: String,
    /// Probed function, or `category/name` for tracepoints.
    pub target: String,
    /// The probed file, for uprobes.
    pub path: Option<String>,
    /// File offset of the probe, for uprobes.
    pub offset: Option<u64>,
    /// The eBPF program attached there.
    pub program: String,
}

/// Sizes of the daemon's tables and their limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSizes {
    /// Processes with live allocations or stacks.
    pub processes: u64,
    /// Live allocations tracked.
    pub live_allocations: u64,
    /// Bytes in those allocations.
    pub live_bytes: u64,
    /// Distinct stacks stored.
    pub stacks: u64,
    /// The most live allocations the daemon tracks.
    pub max_live_allocations: u64,
    /// The most distinct stacks the daemon stores.
    pub max_stacks: u64,
}

/// Body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What went wrong, in one line.
    pub error: String,
}

/// Formats an address as the API writes it.
pub fn hex_addr(addr: u64) -> String {
    format!("{addr:#x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_query_limit_is_bounded() {
        assert_eq!(TopQuery::default().limit(), DEFAULT_TOP_LIMIT);
        assert_eq!(TopQuery { pid: None, limit: Some(5) }.limit(), 5);
        assert_eq!(TopQuery { pid: None, limit: Some(usize::MAX) }.limit(), MAX_TOP_LIMIT);
    }

    #[test]
    fn stack_report_json_round_trip() {
        let report = StackReport {
            pid: 7,
            comm: "leaker".into(),
            stack_id: "00ff".into(),
            live_bytes: 10_000,
            live_count: 10,
            total_bytes: 12_000,
            total_count: 12,
            first_alloc_unix_ms: 1,
            last_alloc_unix_ms: 2,
            truncated: false,
            frames: vec![Frame {
                addr: hex_addr(0x0040_1136),
                function: Some("leak_alpha".into()),
                file: Some("leaker.c".into()),
                line: Some(12),
                module: Some("/tmp/leaker".into()),
            }],
        };
        let json = serde_json::to_string(&TopResponse { stacks: vec![report.clone()] }).expect("serializes");
        assert!(json.contains(r#""addr":"0x401136""#), "{json}");
        let back: TopResponse = serde_json::from_str(&json).expect("parses");
        assert_eq!(back.stacks, vec![report]);
    }
}
