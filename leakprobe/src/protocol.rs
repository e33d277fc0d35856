//! Requests and responses of the socket API, shared by the server and the CLI client.
//!
//! The API is HTTP/1.1 + JSON on a unix socket, under versioned paths:
//! - `GET /v1/status` -> [`StatusResponse`]
//! - `GET /v1/top?pid=PID&limit=N&by=bytes|growth|count|age&verdict=V&window=DUR` -> [`TopResponse`]
//! - `GET /v1/stacks?pid=PID&window=DUR` -> [`TopResponse`] with every stack of the process
//! - `GET /v1/processes?pid=PID&by=...&window=DUR` -> [`ProcessesResponse`]
//! - `GET /v1/export?format=pprof|folded|svg|json&pid=PID` -> the live heap as a profile (see [`export`])
//! - `GET /v1/oom` -> [`OomListResponse`], `GET /v1/oom/{id}` -> [`OomReport`] (see [`oom`])
//! - `GET /v1/faults`, `POST /v1/trace`, `DELETE /v1/trace` (see [`tiers`])
//!
//! Every error is a non-2xx status with an [`ErrorResponse`] body. Field names are stable: new fields may be
//! added, none renamed or removed within `v1`.

use serde::{Deserialize, Serialize};

use crate::core::analysis::{Growth, Verdict};

pub mod export;
pub mod oom;
pub mod status;
pub mod tiers;
pub use export::{EXPORT_PATH, ExportFormat, ExportQuery, HeapFilter, HeapProfile, HeapSample, OTHER_STACKS};
pub use oom::{OOM_PATH, OomListResponse, OomReport, OomSummary};
pub use status::{
    AnalysisSettings, AttachPoint, DiscoveryStatus, ProviderStatus, ScanCost, StatusResponse, TableSizes,
    UnwindSettings, UnwindTableStatus,
};
pub use tiers::{
    BudgetActionReport, BudgetReport, EndedEscalation, EscalationReport, FAULTS_PATH, FaultProcessReport,
    FaultStackReport, FaultsQuery, FaultsResponse, MapStackReport, ProgramStats, TRACE_PATH, Tier0Status, Tier1Status,
    TraceMode, TraceRequest, TraceResponse,
};

/// Path of the status endpoint.
pub const STATUS_PATH: &str = "/v1/status";
/// Path of the top endpoint.
pub const TOP_PATH: &str = "/v1/top";
/// Path of the stacks endpoint.
pub const STACKS_PATH: &str = "/v1/stacks";
/// Path of the processes endpoint.
pub const PROCESSES_PATH: &str = "/v1/processes";
/// Stacks returned by `top` when no limit is given.
pub const DEFAULT_TOP_LIMIT: usize = 20;
/// The largest `limit` a `top` request may ask for.
pub const MAX_TOP_LIMIT: usize = 10_000;

/// What a list is ordered by, largest first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SortBy {
    /// Live bytes.
    #[default]
    Bytes,
    /// Sustained growth: the smaller of the window's growth rate and the recent part's, so that what
    /// grew once and stopped (a cache that filled) does not outrank what grows now.
    Growth,
    /// Live allocations.
    Count,
    /// Age of the oldest live allocation.
    Age,
}

/// Query of `GET /v1/top`, `GET /v1/stacks` and `GET /v1/processes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopQuery {
    /// Only this process (host pid). Required by `/v1/stacks`.
    pub pid: Option<u32>,
    /// Only processes with this name (`comm`, exact).
    pub comm: Option<String>,
    /// At most this many rows (default [`DEFAULT_TOP_LIMIT`], at most [`MAX_TOP_LIMIT`]).
    pub limit: Option<usize>,
    /// Order (default: live bytes).
    pub by: Option<SortBy>,
    /// Only rows with this verdict.
    pub verdict: Option<Verdict>,
    /// Growth over this much recent history (e.g. `5m`) instead of the daemon's whole window.
    pub window: Option<String>,
}

impl TopQuery {
    /// The effective limit.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_TOP_LIMIT).min(MAX_TOP_LIMIT)
    }

    /// The window in seconds, if one was asked for.
    pub fn window_seconds(&self) -> Result<Option<f64>, String> {
        self.window
            .as_deref()
            .map(|w| {
                humantime::parse_duration(w)
                    .map(|d| d.as_secs_f64())
                    .map_err(|e| format!("window {w:?} is not a duration like 30s, 5m or 1h: {e}"))
            })
            .transpose()
    }
}

/// Growth of a series, as reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GrowthReport {
    /// Least-squares slope of live bytes over the window, bytes per second.
    pub rate_bytes_per_second: f64,
    /// Goodness of the fit, R² in [0, 1].
    pub r2: f64,
    /// Slope over the most recent part of the window, bytes per second.
    pub recent_rate_bytes_per_second: f64,
    /// Largest fall from a peak, as a fraction of the highest live bytes.
    pub drawdown: f64,
    /// Seconds of history the rate was computed over.
    pub span_seconds: f64,
}

impl From<Growth> for GrowthReport {
    fn from(g: Growth) -> Self {
        Self {
            rate_bytes_per_second: g.rate,
            r2: g.r2,
            recent_rate_bytes_per_second: g.recent_rate,
            drawdown: g.drawdown,
            span_seconds: g.span_seconds,
        }
    }
}

/// Live bytes of one age range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgeBucket {
    /// Upper bound of the ages in this bucket, in seconds; `null` for the last (oldest) bucket.
    pub max_age_seconds: Option<u64>,
    pub bytes: u64,
}

/// Ages of the live allocations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgeReport {
    /// Age of the oldest live allocation, in seconds (`null` when none is live).
    pub oldest_seconds: Option<f64>,
    /// Live bytes old enough to count as accumulating in the verdict rule.
    pub old_bytes: u64,
    /// Live bytes by age.
    pub buckets: Vec<AgeBucket>,
}

/// Body of `GET /v1/top`: stacks ordered by live bytes, largest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopResponse {
    pub stacks: Vec<StackReport>,
    /// True in sampled mode: bytes and counts are unbiased estimates from weighted samples, not exact.
    #[serde(default)]
    pub estimated: bool,
}

/// Outstanding allocations of one call stack in one process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// Growth of this stack's live bytes.
    pub growth: GrowthReport,
    /// `leaking`, `plateau`, `churn` or `new`; `frozen` while the process's probes are detached.
    pub verdict: Verdict,
    /// Ages of this stack's live allocations.
    pub ages: AgeReport,
    /// Set while the process's tier-1 probes are detached: every figure of this stack is as of then.
    #[serde(default)]
    pub frozen: Option<FrozenReport>,
    /// Frames, innermost first: the first is the allocator's caller.
    pub frames: Vec<Frame>,
    /// The process's pid in its own pid namespace, its cgroup and container.
    #[serde(default, flatten)]
    pub identity: ProcessIdentity,
}

/// Since when and why a process's heap figures stand still: its tier-1 probes were detached.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrozenReport {
    /// Wall-clock time of the detach, in milliseconds since the Unix epoch.
    pub since_unix_ms: u64,
    /// Why: the CPU budget, the end of the escalation, `trace --stop`.
    pub why: String,
}

/// Where a process lives: its pid namespace, cgroup and container (read when the daemon first saw it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// The pid as the process's own pid namespace sees it (the last `NSpid` of `/proc/PID/status`), when that
    /// namespace is not the daemon's.
    #[serde(default)]
    pub ns_pid: Option<u32>,
    /// The cgroup path (cgroup v2, else the v1 memory hierarchy's).
    #[serde(default)]
    pub cgroup: Option<String>,
    /// The container id (64 hexadecimal digits) when the cgroup path carries one: docker, containerd, CRI-O,
    /// podman.
    #[serde(default)]
    pub container_id: Option<String>,
    /// The systemd unit the process runs in (`foo.service`), from its cgroup path.
    #[serde(default)]
    pub unit: Option<String>,
    /// The container's name when the process is in one: its hostname as the runtime set it (Kubernetes: the
    /// pod's name), else the short id (12 digits, as docker shows it).
    #[serde(default)]
    pub container_name: Option<String>,
}

impl ProcessIdentity {
    /// The process's stable name across restarts, for labels: the systemd unit without `.service`, else the
    /// container's name, else `comm`.
    pub fn service(&self, comm: &str) -> String {
        let unit = self.unit.as_deref().map(|u| u.strip_suffix(".service").unwrap_or(u));
        unit.or(self.container_name.as_deref()).unwrap_or(comm).to_owned()
    }

    /// Whether `container` names the process's container: its name, or its id or a prefix of it (at least 12
    /// digits, as docker shows them).
    pub fn in_container(&self, container: &str) -> bool {
        self.container_name.as_deref() == Some(container)
            || (container.len() >= 12
                && self.container_id.as_deref().is_some_and(|id| id.starts_with(&container.to_ascii_lowercase())))
    }
}

#[cfg(test)]
impl StackReport {
    /// A `leaking` stack of process `pid` named `leaker`, for tests: `live` and `total` are (bytes, count).
    pub fn for_test(pid: u32, id: &str, live: (u64, u64), total: (u64, u64), frames: Vec<Frame>) -> Self {
        Self {
            pid,
            comm: "leaker".into(),
            stack_id: id.into(),
            live_bytes: live.0,
            live_count: live.1,
            total_bytes: total.0,
            total_count: total.1,
            first_alloc_unix_ms: 1,
            last_alloc_unix_ms: 2,
            truncated: false,
            growth: GrowthReport::default(),
            verdict: Verdict::Leaking,
            ages: AgeReport::default(),
            frozen: None,
            frames,
            identity: ProcessIdentity::default(),
        }
    }
}

/// Body of `GET /v1/processes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessesResponse {
    pub processes: Vec<ProcessReport>,
    /// True in sampled mode: heap bytes and counts are estimates (RSS figures are always exact).
    #[serde(default)]
    pub estimated: bool,
}

/// The heap of one process next to its RSS: does the heap explain the RSS growth?
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessReport {
    pub pid: u32,
    pub comm: String,
    /// Tracked heap: bytes allocated and not freed.
    pub live_bytes: u64,
    /// Tracked heap: live allocations.
    pub live_count: u64,
    /// Distinct stacks with allocations.
    pub stacks: u64,
    /// Growth of the tracked heap.
    pub heap_growth: GrowthReport,
    /// The process's verdict: its tracked heap's, or while the heap is frozen (`frozen` set) its anonymous
    /// memory's (resident + swapped, read from `/proc` at every tick), judged by the same rule.
    pub verdict: Verdict,
    /// What `verdict` was judged on: `heap`, or `anon` while the heap figures are frozen.
    #[serde(default)]
    pub verdict_source: String,
    /// Set while the process's tier-1 probes are detached: the heap figures (`live_bytes`, `live_count`,
    /// `stacks`, `heap_growth`, `ages`) are as of then; the RSS figures stay fresh.
    #[serde(default)]
    pub frozen: Option<FrozenReport>,
    /// Ages of the live allocations.
    pub ages: AgeReport,
    /// `VmRSS` from `/proc/PID/status`, in bytes (`null` before the first sample).
    pub rss_bytes: Option<u64>,
    /// `RssAnon`, in bytes.
    pub rss_anon_bytes: Option<u64>,
    /// `RssFile` (resident file-backed pages), in bytes.
    pub rss_file_bytes: Option<u64>,
    /// `RssShmem` (resident shared memory: shmem, tmpfs, shared anonymous mappings), in bytes.
    pub rss_shmem_bytes: Option<u64>,
    /// `VmSwap`, in bytes.
    pub swap_bytes: Option<u64>,
    pub rss_growth: GrowthReport,
    pub rss_anon_growth: GrowthReport,
    pub swap_growth: GrowthReport,
    /// Heap growth divided by the growth of anonymous memory (RSS + swap): near 1 when the tracked heap
    /// explains it, near 0 when something else grows (another allocator, mmap). `null` when anonymous memory
    /// does not grow.
    pub heap_share_of_anon_growth: Option<f64>,
    /// Allocations the probes missed at the process's start, estimated by its frees of addresses never
    /// reported (full mode with `--malloc-probes all`, processes started under the daemon; `null` otherwise).
    /// Missed allocations not freed yet are not in it.
    #[serde(default)]
    pub allocs_before_probes: Option<u64>,
    /// The process's pid in its own pid namespace, its cgroup and container.
    #[serde(default, flatten)]
    pub identity: ProcessIdentity,
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
        assert_eq!(TopQuery { limit: Some(5), ..TopQuery::default() }.limit(), 5);
        assert_eq!(TopQuery { limit: Some(usize::MAX), ..TopQuery::default() }.limit(), MAX_TOP_LIMIT);
    }

    #[test]
    fn windows_parse_or_say_why() {
        let q = |w: &str| TopQuery { window: Some(w.into()), ..TopQuery::default() }.window_seconds();
        assert_eq!(q("5m"), Ok(Some(300.0)));
        assert_eq!(q("30s"), Ok(Some(30.0)));
        assert!(q("soon").expect_err("not a duration").contains("soon"));
        assert_eq!(TopQuery::default().window_seconds(), Ok(None));
    }

    #[test]
    fn stack_report_json_round_trip() {
        let frame = Frame {
            addr: hex_addr(0x0040_1136),
            function: Some("leak_alpha".into()),
            file: Some("leaker.c".into()),
            line: Some(12),
            module: Some("/tmp/leaker".into()),
        };
        let report = StackReport::for_test(7, "00ff", (10_000, 10), (12_000, 12), vec![frame]);
        let json =
            serde_json::to_string(&TopResponse { stacks: vec![report.clone()], estimated: false }).expect("serializes");
        assert!(json.contains(r#""addr":"0x401136""#), "{json}");
        assert!(json.contains(r#""verdict":"leaking""#), "{json}");
        let back: TopResponse = serde_json::from_str(&json).expect("parses");
        assert_eq!(back.stacks, vec![report]);
    }
}
