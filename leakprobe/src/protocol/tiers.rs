//! Tier 0 (fault stacks), tier 1 (escalation, `trace`) and the CPU budget in the API.
//!
//! - `GET /v1/faults?pid=PID&comm=NAME&limit=N&stacks=M&growing=true` -> [`FaultsResponse`]
//! - `POST /v1/trace` with a [`TraceRequest`] body -> [`TraceResponse`]; `DELETE /v1/trace?pid=PID` ends it.

use serde::{Deserialize, Serialize};

use super::{Frame, GrowthReport};

/// Path of the fault-stacks endpoint.
pub const FAULTS_PATH: &str = "/v1/faults";
/// Path of the trace endpoint.
pub const TRACE_PATH: &str = "/v1/trace";
/// Processes returned by `faults` when no limit is given.
pub const DEFAULT_FAULT_PROCESSES: usize = 20;
/// Stacks per process returned by `faults` when not asked.
pub const DEFAULT_FAULT_STACKS: usize = 5;

/// Query of `GET /v1/faults`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsQuery {
    /// Only this process.
    pub pid: Option<u32>,
    /// Only processes with this name (`comm`, exact).
    pub comm: Option<String>,
    /// At most this many processes (default [`DEFAULT_FAULT_PROCESSES`], at most [`super::MAX_TOP_LIMIT`]).
    pub limit: Option<usize>,
    /// At most this many stacks per process (default [`DEFAULT_FAULT_STACKS`], at most [`super::MAX_TOP_LIMIT`]).
    pub stacks: Option<usize>,
    /// Only processes whose anonymous memory grows steadily.
    pub growing: Option<bool>,
}

/// Body of `GET /v1/faults`: processes by estimated faulted-in bytes, largest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultsResponse {
    pub processes: Vec<FaultProcessReport>,
    /// Mean bytes of faulting pages between two sampled faults: bytes are unbiased estimates.
    pub sample_interval_bytes: u64,
}

/// Tier 0's view of one process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultProcessReport {
    pub pid: u32,
    pub comm: String,
    /// Estimated bytes of anonymous memory first touched (write faults, base pages) since the process was first
    /// seen.
    pub fault_bytes: u64,
    /// Sampled faults behind that estimate.
    pub sampled_faults: u64,
    /// `RssAnon` at the latest tick, in bytes.
    pub rss_anon_bytes: Option<u64>,
    /// `VmSwap` at the latest tick, in bytes.
    pub swap_bytes: Option<u64>,
    /// Growth of anonymous memory (resident + swap) over the window.
    pub anon_growth: GrowthReport,
    /// Estimated bytes of anonymous mappings asked for (private writable `mmap`, `brk` rises) since the process
    /// was first seen, touched or not; unmaps are not subtracted (see `vm_data_bytes`).
    pub mapped_bytes: u64,
    /// Sampled `mmap` and `brk` calls behind that estimate.
    pub sampled_maps: u64,
    /// `VmData` at the latest tick (private writable mappings and the heap, net of unmaps), in bytes.
    pub vm_data_bytes: Option<u64>,
    /// Growth of `VmData` over the window.
    pub data_growth: GrowthReport,
    /// True when anonymous memory grows steadily (tier 1's trigger).
    pub growing: bool,
    /// Tier 1's probes on this process, if any.
    pub tier1: Option<EscalationReport>,
    /// The stacks that touched the memory first, most bytes first.
    pub stacks: Vec<FaultStackReport>,
    /// The stacks that mapped anonymous memory (`mmap`, `brk`), most bytes first.
    pub map_stacks: Vec<MapStackReport>,
}

/// Mapping growth attributed to one stack of one process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MapStackReport {
    /// Stable id of the stack's frames.
    pub stack_id: String,
    /// Estimated bytes mapped from this stack.
    pub bytes: u64,
    /// Fraction of the process's estimated mapped bytes from this stack.
    pub share: f64,
    /// Sampled calls.
    pub sampled_calls: u64,
    /// The system calls seen: `mmap`, `brk`.
    pub sources: Vec<String>,
    /// Wall-clock time of the first and latest sampled call, ms since the Unix epoch.
    pub first_unix_ms: u64,
    pub last_unix_ms: u64,
    /// True when the stack was cut at the frame limit.
    pub truncated: bool,
    /// Frames, innermost first: the first is in the system call's wrapper.
    pub frames: Vec<Frame>,
}

/// Faults attributed to one stack of one process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultStackReport {
    /// Stable id of the stack's frames.
    pub stack_id: String,
    /// Estimated bytes first touched from this stack.
    pub bytes: u64,
    /// Fraction of the process's sampled faults from this stack.
    pub share: f64,
    /// Sampled faults.
    pub sampled_faults: u64,
    /// Wall-clock time of the first and latest sampled fault, ms since the Unix epoch.
    pub first_fault_unix_ms: u64,
    pub last_fault_unix_ms: u64,
    /// True when the stack was cut at the frame limit.
    pub truncated: bool,
    /// Frames, innermost first: the first is the instruction that touched the page.
    pub frames: Vec<Frame>,
}

/// How a traced process's allocations are tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TraceMode {
    /// Every allocation, exactly.
    Full,
    /// A size-weighted sample (the daemon's `--sample-interval`).
    Sampled,
}

/// Body of `POST /v1/trace`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceRequest {
    pub pid: u32,
    /// Default: the daemon's mode.
    #[serde(default)]
    pub mode: Option<TraceMode>,
    /// Stop after this long (e.g. `10m`); default: until asked, the budget says so, or the process ends.
    #[serde(default, rename = "for")]
    pub duration: Option<String>,
}

/// Body of `POST /v1/trace` and `DELETE /v1/trace`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceResponse {
    pub escalation: EscalationReport,
    /// What happened: `attached`, `updated`, `detached`.
    pub result: String,
}

/// A process with tier-1 (pid-scoped malloc) probes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EscalationReport {
    pub pid: u32,
    pub comm: String,
    /// `auto` (tier 0 saw steady growth) or `request` (`leakprobe trace`).
    pub trigger: String,
    /// Why, in words.
    pub reason: String,
    /// When the probes were attached, ms since the Unix epoch.
    pub since_unix_ms: u64,
    /// When they will be detached, if bounded.
    pub until_unix_ms: Option<u64>,
    /// `full` or `sampled`.
    pub mode: String,
    /// Mean bytes between sampled allocations (sampled mode).
    pub sample_interval_bytes: Option<u64>,
    /// Estimated CPU of this process's probes at the latest budget check, percent of one core.
    pub cpu_percent: f64,
    /// Allocator calls that reached its probes.
    pub calls: u64,
}

/// An escalation that ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndedEscalation {
    pub escalation: EscalationReport,
    pub ended_unix_ms: u64,
    /// Why it ended.
    pub why: String,
}

/// Run-time statistics of one eBPF program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramStats {
    pub program: String,
    /// Runs since load (counted while BPF run-time statistics are on).
    pub run_count: u64,
    /// Time spent in the program since load, ns.
    pub run_time_ns: u64,
}

/// A decision of the CPU budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetActionReport {
    pub unix_ms: u64,
    pub pid: u32,
    /// What was done: `sampling interval raised to N bytes`, `detached`.
    pub action: String,
    pub why: String,
}

/// The CPU budget and what the probes cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetReport {
    /// Budget per traced process, percent of one core.
    pub process_percent: f64,
    /// Budget of the whole daemon, percent of one core.
    pub host_percent: f64,
    /// Whether BPF run-time statistics are on (without them program costs read 0).
    pub bpf_stats: bool,
    /// At the latest check, percent of one core: uprobes (run time plus the estimated trap cost)...
    pub uprobes_percent: f64,
    /// ... tracepoint programs (tier 0, lifecycle) ...
    pub tracepoints_percent: f64,
    /// ... and the daemon's own CPU.
    pub daemon_percent: f64,
    /// The assumed cost of one uprobe trap that run-time statistics do not see, ns.
    pub trap_ns: f64,
    /// Every program's statistics.
    pub programs: Vec<ProgramStats>,
    /// Recent decisions, oldest first (at most 32).
    pub actions: Vec<BudgetActionReport>,
}

/// Tier 0 in `status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tier0Status {
    /// Whether the fault tracepoint is attached.
    pub enabled: bool,
    /// Whether mapping growth is followed (the `syscalls` `mmap` and `brk` tracepoints are attached).
    pub mappings: bool,
    /// Mean bytes of faulting pages between sampled faults.
    pub sample_interval_bytes: u64,
    /// Processes followed.
    pub processes: u64,
    /// Distinct fault stacks stored.
    pub stacks: u64,
    /// Processes whose anonymous memory grows steadily now.
    pub growing: u64,
}

/// Tier 1 in `status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tier1Status {
    /// `all`, `auto` or `off`.
    pub malloc_probes: String,
    /// The most processes escalated at once.
    pub max_processes: u64,
    /// Escalated processes now.
    pub escalated: Vec<EscalationReport>,
    /// Recently ended escalations, oldest first (at most 32).
    pub ended: Vec<EndedEscalation>,
}
