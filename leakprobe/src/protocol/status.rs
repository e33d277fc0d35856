//! `GET /v1/status` in the API: the daemon's settings, attach points, discovery, tables and counters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{BudgetReport, Tier0Status, Tier1Status};
use crate::core::analysis::VerdictConfig;

/// Body of `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// Daemon version.
    pub version: String,
    /// Daemon pid.
    pub pid: u32,
    /// Seconds since the daemon started.
    pub uptime_seconds: u64,
    /// Tracking mode: `full` (every allocation, exact) or `sampled` (estimates).
    pub mode: String,
    /// In sampled mode, the mean bytes between sampled allocations.
    #[serde(default)]
    pub sample_interval_bytes: Option<u64>,
    /// How the allocating functions' returns are probed: `session` (session uprobes: a call the entry does not
    /// track skips the return trap) or `plain` (a uretprobe runs on every call's return).
    #[serde(default)]
    pub return_probes: String,
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
    /// How growth is measured and judged.
    pub analysis: AnalysisSettings,
    /// The allocator files found in the running processes and what finding them costs.
    #[serde(default)]
    pub discovery: DiscoveryStatus,
    /// Tier 0: page-fault attribution in every process.
    #[serde(default)]
    pub tier0: Option<Tier0Status>,
    /// Tier 1: malloc-family probes, and which processes have them.
    #[serde(default)]
    pub tier1: Option<Tier1Status>,
    /// The CPU budget and the probes' measured cost.
    #[serde(default)]
    pub budget: Option<BudgetReport>,
    /// How allocation stacks are unwound (the counters are `stacks_*` in `daemon_counters`).
    #[serde(default)]
    pub unwind: Option<UnwindSettings>,
    /// The only process traced (`run --pid`); every process when absent.
    #[serde(default)]
    pub traced_pid: Option<u32>,
}

/// Allocator discovery: which files are probed, and the cost of looking for them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryStatus {
    /// Whether the daemon looks for allocators in every process (`false`: only the libc is probed).
    pub enabled: bool,
    /// Seconds between two rescans of every process.
    pub rescan_interval_seconds: f64,
    /// Files read at most per scan; further new files wait for the next scan.
    pub max_files_per_scan: u64,
    /// Every file providing an allocator that some process maps (or that `--libc` named), including those
    /// recognised but not supported (`supported: false`, `error` says why).
    pub providers: Vec<ProviderStatus>,
    /// The most recent scan of every process (the first one is the start-up scan).
    pub last_full_scan: Option<ScanCost>,
    /// The most recent scan of one process after it called `execve`.
    pub last_exec_scan: Option<ScanCost>,
    /// Binaries whose unwind tables are loaded in the kernel (`--unwind auto`), most recently used first.
    #[serde(default)]
    pub unwind_tables: Vec<UnwindTableStatus>,
}

/// One binary's unwind tables in the kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnwindTableStatus {
    /// The path it was read through.
    pub path: String,
    /// `MAJOR:MINOR:INODE` of the file.
    pub file: String,
    /// Rows loaded.
    pub rows: u64,
    /// Bytes they take in the kernel's arena.
    pub bytes: u64,
}

/// One file providing an allocator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::struct_excessive_bools, reason = "independent yes/no facts of a file, each a JSON field of `status`")]
pub struct ProviderStatus {
    /// The path probes are attached through; `/proc/PID/root/...` for a file of another mount namespace.
    pub path: String,
    /// `MAJOR:MINOR:INODE` of the file (hexadecimal device numbers, as in `/proc/PID/maps`).
    pub file: String,
    /// `glibc`, `musl`, `jemalloc`, `tcmalloc`, `mimalloc` or `other`; `unknown` for an allocator recognised
    /// without its family (a stripped static executable).
    pub family: String,
    /// Whether its allocations can be tracked: with `--malloc-probes all` its probes are attached; otherwise
    /// tier 1 attaches them to the processes it traces. `false` for an allocator recognised that cannot be probed
    /// (a stripped static executable, a family without a freeing entry point) and for one whose probes failed to
    /// attach.
    pub supported: bool,
    /// System-wide probes attached to it (`--malloc-probes all`; pid-scoped ones are not counted).
    pub probes: u64,
    /// Processes mapping it at the last full scan.
    pub processes: u64,
    /// Probed whatever the processes map (`--libc`, and the host's allocator libraries probed at start-up).
    pub pinned: bool,
    /// Probed before any process mapped it: an allocator library of the host's library directories (at
    /// start-up) or of a new container's root filesystem (at its first `execve`), with `--malloc-probes all`.
    #[serde(default)]
    pub preprobed: bool,
    /// The entry points came from the static symbol table (an allocator linked into an executable).
    pub static_symbols: bool,
    /// Entry points recognised but not tracked, each with the reason.
    pub not_tracked: Vec<String>,
    /// Why it is not supported, when it is not (e.g. `static executable without a symbol table: malloc not
    /// found`, or the attach error).
    pub error: Option<String>,
}

/// What one scan cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanCost {
    /// Processes whose maps were read.
    pub pids: u64,
    /// New files read and examined for allocator symbols.
    pub files_examined: u64,
    /// New files left for a later scan (over the per-scan bound).
    pub files_deferred: u64,
    /// Wall-clock time of the scan, in microseconds.
    pub microseconds: u64,
}

/// The daemon's stack unwinding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnwindSettings {
    /// `tables` (walked in the kernel with the binaries' unwind tables), `fp` (frame pointers, walked in the
    /// kernel) or `dwarf` (stack copies unwound in the daemon with the binaries' unwind tables).
    pub mode: String,
    /// With `dwarf`: bytes of user stack copied per reported allocation.
    #[serde(default)]
    pub stack_copy_bytes: Option<u64>,
    /// Seconds the daemon spent unwinding stack copies (divide by `stacks_dwarf` for the mean per stack).
    #[serde(default)]
    pub unwind_seconds: f64,
}

/// The daemon's analysis settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnalysisSettings {
    /// Seconds between samples.
    pub interval_seconds: f64,
    /// Seconds of history kept.
    pub window_seconds: f64,
    /// Thresholds of the verdict rule.
    pub verdict: VerdictConfig,
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
    /// For uprobes: the probe's offset from the symbol and the instruction there, e.g. `+3 je 0x98fb8`.
    #[serde(default)]
    pub site: Option<String>,
    /// For uprobes: whether the kernel emulates that instruction (cheap) or single-steps it.
    #[serde(default)]
    pub emulated: Option<bool>,
    /// For tier 1's pid-scoped uprobes: the only process they fire in (host pid); `None` for every process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
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
    /// Time series kept (one per process and stack, four per process).
    pub series: u64,
    /// The most time series kept.
    pub max_series: u64,
    /// Samples stored in all series.
    pub series_points: u64,
    /// Memory those samples take, in bytes.
    pub series_bytes: u64,
}
