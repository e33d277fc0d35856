//! Prometheus/`OpenMetrics` exposition of a snapshot of the daemon's state.
//!
//! The registry is built anew for every scrape from a [`MetricsSnapshot`] the state owner returns: series of
//! processes and stacks that left the top-K (or exited) disappear at the next scrape, so the number of series is
//! bounded by construction (see [`MetricsLimits`]).

pub mod http;
pub mod pprof;
pub mod text;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use std::collections::{BTreeMap, HashMap};

use crate::{
    core::analysis::Verdict,
    procfs::OwnProcess,
    protocol::{
        FaultProcessReport, HeapFilter, HeapProfile, ProcessIdentity, ProcessReport, StackReport, StatusResponse,
    },
};

/// Content type of the `OpenMetrics` exposition (what prometheus-client writes; see [`text`] for the other).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Path of the metrics endpoint.
pub const METRICS_PATH: &str = "/metrics";
/// Where metrics are served unless `--metrics-addr` says otherwise. 9464 is the OpenTelemetry Prometheus
/// exporter's; 9877 is leakprobe's.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9877";
/// Stacks exported as labelled series, by default.
pub const DEFAULT_TOP_STACKS: usize = 20;
/// Processes exported as labelled series per ranking (heap bytes, RSS growth), by default.
pub const DEFAULT_TOP_PROCESSES: usize = 50;
/// Stacks a heap profile symbolizes, by default: Go's own heap profiles rarely hold more, and a cold busy host
/// symbolizes this many well within a scraper's 10 s timeout.
pub const DEFAULT_PROFILE_STACKS: usize = 1_000;
/// How long a heap profile's symbolization may take: what is not symbolized by then keeps bare addresses, so a
/// scrape answers within Parca's and Alloy's default timeout (10 s) even when the symbolizer is busy.
pub const PROFILE_SYMBOLIZE_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

/// Where the metrics listener gets its answers from (the daemon's state owner).
pub trait SnapshotSource: Clone + Send + Sync + 'static {
    /// The current snapshot; `None` when the daemon is shutting down.
    fn snapshot(&self) -> impl Future<Output = Option<MetricsSnapshot>> + Send;
    /// The live heap of the processes `filter` selects, every frame symbolized; `None` when shutting down.
    fn heap(&self, filter: HeapFilter) -> impl Future<Output = Option<HeapProfile>> + Send;
}

/// How many labelled series a scrape may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsLimits {
    /// Stacks, the fastest-growing first.
    pub top_stacks: usize,
    /// Processes: the union of the top ones by live heap bytes and the top ones by RSS growth, so at most twice
    /// this many.
    pub top_processes: usize,
    /// Stacks a heap profile symbolizes (`/debug/pprof/heap`, each push): the others are summed per process.
    pub profile_stacks: usize,
}

impl Default for MetricsLimits {
    fn default() -> Self {
        Self {
            top_stacks: DEFAULT_TOP_STACKS,
            top_processes: DEFAULT_TOP_PROCESSES,
            profile_stacks: DEFAULT_PROFILE_STACKS,
        }
    }
}

/// What one scrape shows, as the state owner saw it.
#[derive(Clone, Debug)]
pub struct MetricsSnapshot {
    /// Counters, table sizes and limits, OOM kills.
    pub status: StatusResponse,
    /// The selected processes.
    pub processes: Vec<ProcessReport>,
    /// The selected stacks; `frames` holds only the leaf frame (the allocator's caller), symbolized.
    pub stacks: Vec<StackReport>,
    /// Tier 0: the processes with the most faulted-in bytes (`top_processes` at most), without their stacks.
    pub faults: Vec<FaultProcessReport>,
    /// Where the processes of the rows above live (unit, container), for their `service` and `container_id`.
    pub identities: HashMap<u32, ProcessIdentity>,
    /// The daemon's own process, for the standard `process_*` metrics.
    pub own: Option<OwnProcess>,
}

/// A process's labels: `service` and `container_id` (empty outside a container, which Prometheus reads as no
/// label) survive its restarts; `pid` does not.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabels {
    pid: u32,
    comm: String,
    service: String,
    container_id: Option<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StackLabels {
    pid: u32,
    comm: String,
    service: String,
    container_id: Option<String>,
    stack_id: String,
    function: String,
}

/// The member of a counter family (`ringbuf_full{kind="alloc"}`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommLabels {
    comm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReturnProbesLabels {
    kind: String,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

#[expect(clippy::cast_precision_loss, reason = "byte counts and sizes are exact in f64 below 2^53")]
fn float(value: u64) -> f64 {
    value as f64
}

/// One gauge without labels. Help texts here have no final period: the encoder adds one.
fn gauge(registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>, value: f64) {
    let gauge = FloatGauge::default();
    gauge.set(value);
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, gauge),
        None => registry.register(name, help, gauge),
    }
}

/// One counter without labels (the encoder appends `_total`).
fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let counter: Counter = Counter::default();
    counter.inc_by(value);
    registry.register(name, help, counter);
}

/// A counter of microseconds, exposed in seconds (the encoder appends `_total`).
fn seconds_counter(registry: &mut Registry, name: &str, help: &str, microseconds: u64) {
    let counter: Counter<f64, std::sync::atomic::AtomicU64> = Counter::default();
    #[expect(clippy::cast_precision_loss, reason = "exact below 2^53 microseconds (285 years)")]
    counter.inc_by(microseconds as f64 / 1e6);
    registry.register(name, help, counter);
}

/// The labels of process `pid` named `comm`.
fn labels_of(identities: &HashMap<u32, ProcessIdentity>, pid: u32, comm: &str) -> ProcessLabels {
    let identity = identities.get(&pid);
    ProcessLabels {
        pid,
        comm: comm.to_owned(),
        service: identity.map_or_else(|| comm.to_owned(), |i| i.service(comm)),
        container_id: identity.and_then(|i| i.container_id.clone()),
    }
}

fn stack_labels(identities: &HashMap<u32, ProcessIdentity>, s: &StackReport) -> StackLabels {
    let leaf = s.frames.first();
    let function = leaf.and_then(|f| f.function.clone()).or_else(|| leaf.map(|f| f.addr.clone()));
    let ProcessLabels { pid, comm, service, container_id } = labels_of(identities, s.pid, &s.comm);
    StackLabels {
        pid,
        comm,
        service,
        container_id,
        stack_id: s.stack_id.clone(),
        function: function.unwrap_or_else(|| "(no stack)".to_owned()),
    }
}

/// A per-row gauge: name, help, unit, and the value of a row (none: no series for that row).
type RowGauge<R> = (&'static str, &'static str, Option<Unit>, fn(&R) -> Option<f64>);

fn bytes_per_second() -> Unit {
    Unit::Other("bytes_per_second".to_owned())
}

fn process_gauges() -> Vec<RowGauge<ProcessReport>> {
    vec![
        (
            "leakprobe_process_heap_live",
            "Tracked heap of the process: bytes allocated and not freed",
            Some(Unit::Bytes),
            |p| Some(float(p.live_bytes)),
        ),
        ("leakprobe_process_heap_live_allocations", "Tracked heap of the process: live allocations", None, |p| {
            Some(float(p.live_count))
        }),
        (
            "leakprobe_process_heap_growth",
            "Growth of the tracked heap over the analysis window (least-squares slope)",
            Some(bytes_per_second()),
            |p| Some(p.heap_growth.rate_bytes_per_second),
        ),
        (
            "leakprobe_process_heap_frozen",
            "1 when the process's tier-1 probes were detached and its heap figures are the last seen, else 0",
            None,
            |p| Some(if p.frozen.is_some() { 1.0 } else { 0.0 }),
        ),
        ("leakprobe_process_rss", "Resident set size (VmRSS) of the process", Some(Unit::Bytes), |p| {
            p.rss_bytes.map(float)
        }),
        ("leakprobe_process_rss_anon", "Anonymous resident memory (RssAnon) of the process", Some(Unit::Bytes), |p| {
            p.rss_anon_bytes.map(float)
        }),
        (
            "leakprobe_process_rss_file",
            "File-backed resident memory (RssFile) of the process",
            Some(Unit::Bytes),
            |p| p.rss_file_bytes.map(float),
        ),
        ("leakprobe_process_rss_shmem", "Shared resident memory (RssShmem) of the process", Some(Unit::Bytes), |p| {
            p.rss_shmem_bytes.map(float)
        }),
        ("leakprobe_process_swap", "Swapped-out memory (VmSwap) of the process", Some(Unit::Bytes), |p| {
            p.swap_bytes.map(float)
        }),
        (
            "leakprobe_process_rss_growth",
            "Growth of the resident set size over the analysis window (least-squares slope)",
            Some(bytes_per_second()),
            |p| p.rss_bytes.map(|_| p.rss_growth.rate_bytes_per_second),
        ),
    ]
}

fn fault_gauges() -> Vec<RowGauge<FaultProcessReport>> {
    vec![
        (
            "leakprobe_process_faulted",
            "Tier 0: estimated bytes of anonymous memory first touched by the process (sampled write faults)",
            Some(Unit::Bytes),
            |p| Some(float(p.fault_bytes)),
        ),
        (
            "leakprobe_process_anon_growth",
            "Tier 0: growth of anonymous memory (resident and swapped) over the analysis window",
            Some(bytes_per_second()),
            |p| Some(p.anon_growth.rate_bytes_per_second),
        ),
        (
            "leakprobe_process_mapped",
            "Tier 0: estimated bytes of anonymous mappings the process asked for (sampled mmap and brk calls)",
            Some(Unit::Bytes),
            |p| Some(float(p.mapped_bytes)),
        ),
        (
            "leakprobe_process_vm_data",
            "Tier 0: VmData, the process's private writable mappings and heap, net of unmaps",
            Some(Unit::Bytes),
            |p| p.vm_data_bytes.map(float),
        ),
        ("leakprobe_process_anon_growing", "Tier 0: 1 when anonymous memory grows steadily, else 0", None, |p| {
            Some(if p.growing { 1.0 } else { 0.0 })
        }),
        ("leakprobe_process_tier1", "1 when the process has tier-1 (malloc) probes, else 0", None, |p| {
            Some(if p.tier1.is_some() { 1.0 } else { 0.0 })
        }),
    ]
}

fn stack_gauges() -> Vec<RowGauge<StackReport>> {
    vec![
        (
            "leakprobe_stack_live",
            "Bytes allocated from this stack in this process and not freed",
            Some(Unit::Bytes),
            |s| Some(float(s.live_bytes)),
        ),
        ("leakprobe_stack_live_allocations", "Allocations from this stack in this process not freed", None, |s| {
            Some(float(s.live_count))
        }),
        (
            "leakprobe_stack_growth",
            "Growth of the stack's live bytes over the analysis window (least-squares slope)",
            Some(bytes_per_second()),
            |s| Some(s.growth.rate_bytes_per_second),
        ),
        ("leakprobe_stack_leaking", "1 when the stack's verdict is leaking, else 0", None, |s| {
            Some(if s.verdict == Verdict::Leaking { 1.0 } else { 0.0 })
        }),
        (
            "leakprobe_stack_frozen",
            "1 when the process's tier-1 probes were detached and the stack's figures are the last seen, else 0",
            None,
            |s| Some(if s.frozen.is_some() { 1.0 } else { 0.0 }),
        ),
    ]
}

/// One gauge family per entry of `gauges`, one series per row.
fn register_rows<R, L>(registry: &mut Registry, gauges: Vec<RowGauge<R>>, rows: &[R], labels: impl Fn(&R) -> L)
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    for (name, help, unit, value) in gauges {
        let family = Family::<L, FloatGauge>::default();
        for row in rows {
            if let Some(v) = value(row) {
                family.get_or_create(&labels(row)).set(v);
            }
        }
        match unit {
            Some(unit) => registry.register_with_unit(name, help, unit, family),
            None => registry.register(name, help, family),
        }
    }
}

/// Entries of `daemon_counters` that are levels, not counts: they fall as well as rise, so they are gauges.
const DAEMON_GAUGES: [&str; 1] = ["discovery_known_files"];

fn register_status(registry: &mut Registry, status: &StatusResponse) {
    let versions = Family::<VersionLabels, FloatGauge>::default();
    versions.get_or_create(&VersionLabels { version: status.version.clone() }).set(1.0);
    registry.register("leakprobe_build_info", "The daemon's version, as a label; the value is always 1", versions);
    let returns = Family::<ReturnProbesLabels, FloatGauge>::default();
    returns.get_or_create(&ReturnProbesLabels { kind: status.return_probes.clone() }).set(1.0);
    registry.register(
        "leakprobe_return_probes_info",
        "How allocator returns are probed (kind: session or plain), as a label; the value is always 1",
        returns,
    );
    gauge(
        registry,
        "leakprobe_uptime",
        "Time since the daemon started",
        Some(Unit::Seconds),
        float(status.uptime_seconds),
    );
    let t = &status.tables;
    let tables: [(&str, &str, Option<Unit>, u64); 10] = [
        ("leakprobe_tracked_processes", "Processes with live allocations or stacks in the table", None, t.processes),
        ("leakprobe_live_allocations", "Live allocations tracked over all processes", None, t.live_allocations),
        (
            "leakprobe_live_allocations_limit",
            "The most live allocations tracked (--max-allocations)",
            None,
            t.max_live_allocations,
        ),
        ("leakprobe_heap_live", "Bytes in all tracked live allocations", Some(Unit::Bytes), t.live_bytes),
        ("leakprobe_stacks", "Distinct call stacks stored", None, t.stacks),
        ("leakprobe_stacks_limit", "The most distinct stacks stored (--max-stacks)", None, t.max_stacks),
        ("leakprobe_series", "Time series kept for growth analysis", None, t.series),
        ("leakprobe_series_limit", "The most time series kept (--max-series)", None, t.max_series),
        ("leakprobe_series_points", "Samples stored in all time series", None, t.series_points),
        ("leakprobe_series_memory", "Memory taken by the stored samples", Some(Unit::Bytes), t.series_bytes),
    ];
    for (name, help, unit, value) in tables {
        gauge(registry, name, help, unit, float(value));
    }
    let mut families: BTreeMap<&str, Family<KindLabels, Counter>> = BTreeMap::new();
    for (name, &value) in &status.kernel_counters {
        if let Some((family, kind)) = kernel_family(name) {
            let members = families.entry(family).or_default();
            members.get_or_create(&KindLabels { kind: kind.to_owned() }).inc_by(value);
            continue;
        }
        counter(registry, &format!("leakprobe_kernel_{name}"), &counter_help("kernel", name), value);
    }
    for (family, members) in families {
        registry.register(format!("leakprobe_kernel_{family}"), family_help(family), members);
    }
    for (name, &value) in &status.daemon_counters {
        let help = counter_help("daemon", name);
        if DAEMON_GAUGES.contains(&name.as_str()) {
            gauge(registry, &format!("leakprobe_daemon_{name}"), &help, None, float(value));
            continue;
        }
        match name.strip_suffix("_microseconds") {
            // Prometheus wants base units: a time counter is exposed in seconds.
            Some(base) => seconds_counter(registry, &format!("leakprobe_daemon_{base}_seconds"), &help, value),
            None => counter(registry, &format!("leakprobe_daemon_{name}"), &help, value),
        }
    }
    register_tiers(registry, status);
    let kills = Family::<CommLabels, Counter>::default();
    for (comm, &n) in &status.oom_kills_by_comm {
        kills.get_or_create(&CommLabels { comm: comm.clone() }).inc_by(n);
    }
    registry.register("leakprobe_oom_kills", "OOM kills seen since the daemon started, by the victim's name", kills);
}

fn register_tiers(registry: &mut Registry, status: &StatusResponse) {
    if let Some(tier0) = &status.tier0 {
        gauge(registry, "leakprobe_tier0_processes", "Processes tier 0 follows", None, float(tier0.processes));
        gauge(
            registry,
            "leakprobe_tier0_growing_processes",
            "Processes whose anonymous memory grows steadily",
            None,
            float(tier0.growing),
        );
    }
    if let Some(tier1) = &status.tier1 {
        gauge(
            registry,
            "leakprobe_tier1_escalated_processes",
            "Processes with tier-1 (pid-scoped malloc) probes",
            None,
            float(tier1.escalated.len() as u64),
        );
    }
    if let Some(budget) = &status.budget {
        let parts = [
            (
                "leakprobe_cpu_uprobes",
                "CPU of the uprobes (run time plus the estimated trap cost), in cores",
                budget.uprobes_percent,
            ),
            (
                "leakprobe_cpu_tracepoints",
                "CPU of the tracepoint programs (tier 0, lifecycle), in cores",
                budget.tracepoints_percent,
            ),
            ("leakprobe_cpu_daemon", "CPU of the daemon itself, in cores", budget.daemon_percent),
            ("leakprobe_cpu_budget_process", "CPU budget per traced process, in cores", budget.process_percent),
            ("leakprobe_cpu_budget_host", "CPU budget of the whole daemon, in cores", budget.host_percent),
        ];
        for (name, help, percent) in parts {
            gauge(registry, name, help, Some(Unit::Other("ratio".to_owned())), percent / 100.0);
        }
    }
}

/// Kernel counters that are one name per kind, exported as one family with a `kind` label:
/// `ringbuf_full_alloc` is `leakprobe_kernel_ringbuf_full_total{kind="alloc"}`, `live_map_full` is
/// `leakprobe_kernel_map_full_total{kind="live"}`.
fn kernel_family(name: &str) -> Option<(&'static str, &str)> {
    if let Some(kind) = name.strip_prefix("ringbuf_full_") {
        return Some(("ringbuf_full", kind));
    }
    name.strip_suffix("_map_full").map(|kind| ("map_full", kind))
}

fn family_help(family: &str) -> &'static str {
    match family {
        "ringbuf_full" => {
            "Events lost because the ring buffer was full, by kind of event (alloc, free, process, fault, map)"
        }
        _ => "Allocations or calls not tracked because a kernel map was full, by map (live, inflight)",
    }
}

/// The daemon's own `process_*` metrics, named and defined as the Prometheus client-library guidelines say.
fn register_own(registry: &mut Registry, own: &OwnProcess) {
    let cpu: Counter<f64, std::sync::atomic::AtomicU64> = Counter::default();
    cpu.inc_by(own.cpu_seconds);
    registry.register("process_cpu_seconds", "Total user and system CPU time spent in seconds", cpu);
    let gauges = [
        ("process_resident_memory_bytes", "Resident memory size in bytes", float(own.resident_bytes)),
        ("process_virtual_memory_bytes", "Virtual memory size in bytes", float(own.virtual_bytes)),
        ("process_start_time_seconds", "Start time of the process since unix epoch in seconds", own.start_time_seconds),
        ("process_threads", "Number of OS threads in the process", float(own.threads)),
        ("process_open_fds", "Number of open file descriptors", float(own.open_fds)),
    ];
    for (name, help, value) in gauges {
        gauge(registry, name, help, None, value);
    }
    if let Some(max) = own.max_fds {
        gauge(registry, "process_max_fds", "Maximum number of open file descriptors", None, float(max));
    }
}

/// Help text of a `status` counter (without a final period: the encoder adds one).
fn counter_help(group: &str, name: &str) -> String {
    let known = match (group, name) {
        ("kernel", "allocs") => "Allocations reported to the daemon",
        ("kernel", "frees") => "Frees of reported addresses sent to the daemon",
        ("kernel", "frees_unknown") => "Frees of addresses never reported; no event sent",
        ("kernel", "failed_allocs") => "Allocator calls that returned NULL or an error",
        ("kernel", "tracked") => "Allocator calls whose return is handled (a record kept for it)",
        ("kernel", "return_runs") => "Runs of the return program (plain: every call; session: tracked calls only)",
        ("kernel", "nested_calls") => "Allocator calls inside another on the same thread; ignored",
        ("kernel", "unmatched_returns") => "Allocator returns with no entry record",
        ("kernel", "ringbuf_full_alloc") => "Allocation events lost: ring buffer full",
        ("kernel", "ringbuf_full_free") => "Free events lost: ring buffer full",
        ("kernel", "ringbuf_full_process") => "Exit and exec events lost: ring buffer full",
        ("kernel", "live_map_full") => "Allocations not tracked: the kernel's live-address map was full",
        ("kernel", "inflight_map_full") => "Allocator calls not tracked: the in-flight map was full",
        ("kernel", "stack_errors") => "Stacks that could not be read; allocation reported without one",
        ("kernel", "stack_truncated") => "Stacks cut at the frame limit",
        ("kernel", "read_errors") => "posix_memalign out-pointers that could not be read",
        ("kernel", "oom_lost") => "OOM-kill events lost",
        ("kernel", "faults") => "Write faults of user pages seen by tier 0",
        ("kernel", "faults_sampled") => "Write faults sampled with their stack by tier 0",
        ("kernel", "ringbuf_full_fault") => "Sampled fault events lost: ring buffer full",
        ("kernel", "maps") => "Anonymous mapping growths (mmap, brk) seen by tier 0",
        ("kernel", "maps_sampled") => "Mapping growths sampled with their stack by tier 0",
        ("kernel", "ringbuf_full_map") => "Sampled mapping-growth events lost: ring buffer full",
        ("kernel", "unsampled") => "Allocator calls not sampled (sampled mode)",
        ("kernel", "unseen_frees_map_full") => {
            "New processes whose allocations missed at their start cannot be counted: the kernel's map was full"
        }
        ("daemon", "allocs_before_probes_exited") => {
            "Allocations the probes missed at the start of processes since exited (their frees of addresses never reported)"
        }
        ("daemon", "processes_with_allocs_before_probes_exited") => {
            "Exited processes with allocations the probes missed at their start"
        }
        ("daemon", "discovery_files_preprobed") => "Allocator libraries probed before any process mapped them",
        ("daemon", "discovery_preprobe_microseconds") => "Time spent probing allocator libraries before use",
        ("daemon", "fault_events") => "Sampled faults applied to tier 0's table",
        ("daemon", "map_events") => "Sampled mapping growths applied to tier 0's table",
        ("daemon", "fault_processes_dropped") => "Sampled faults not attributed: tier 0's process limit reached",
        ("daemon", "fault_stacks_dropped") => "Sampled faults not attributed: the per-process stack limit reached",
        ("daemon", "fault_processes_purged") => "Processes tier 0 forgot on exit or exec",
        ("daemon", "tier1_escalations_ended") => "Tier-1 escalations ended (kept in status, at most 32)",
        ("daemon", "tier1_attach_errors") => "Tier-1 attaches that failed",
        ("daemon", "budget_actions") => "CPU budget decisions: sampling intervals raised, probes detached",
        ("kernel", "stack_copy_errors") => "User stack copies that read nothing; allocation reported with its caller",
        ("kernel", "stack_copy_short") => "User stack copies cut short by the end of the stack",
        ("daemon", "stacks_fp") => "Allocation stacks walked by frame pointers in the kernel",
        ("daemon", "stacks_fp_truncated") => "Kernel frame-pointer stacks cut at the frame limit",
        ("daemon", "stacks_dwarf") => "Allocation stacks unwound in the daemon from the binaries' unwind tables",
        ("daemon", "stacks_dwarf_truncated") => "Unwound stacks cut by the end of the stack copy or the frame limit",
        ("daemon", "stacks_dwarf_incomplete") => "Unwound stacks that stopped at code with no usable unwind rule",
        ("daemon", "unwind_maps_reads") => "Memory maps read to unwind",
        ("daemon", "python_stacks") => "Records (allocations, sampled faults) that came with Python frames",
        ("daemon", "python_stacks_empty") => "Records with Python frames of a thread that was running none",
        ("daemon", "python_stacks_no_interpreter") => "Records whose process could not be read as an interpreter",
        ("daemon", "python_stacks_spliced") => "Stacks whose Python frames were all placed at their evaluation loop",
        ("daemon", "python_stacks_no_eval_frame") => "Stacks with Python frames and no evaluation-loop frame",
        ("daemon", "python_stacks_frames_left") => "Stacks with more evaluation calls than evaluation-loop frames",
        ("daemon", "python_stacks_torn") => "Python frame walks that ended on a failed read (a torn chain)",
        ("daemon", "python_stacks_cut") => "Stacks cut at the frame limit once Python frames were spliced in",
        ("daemon", "python_frames_resolved") => "Python frames resolved to function, file and line",
        ("daemon", "python_frames_unresolved") => "Python frames whose code object could not be read",
        ("daemon", "unwind_binaries_loaded") => "Binaries whose unwind tables were read",
        ("daemon", "unwind_binary_errors") => "Binaries whose unwind tables could not be read",
        ("daemon", "events") => "Events applied to the table",
        ("daemon", "batches") => "Batches read from the ring buffer",
        ("daemon", "decode_errors") => "Ring-buffer records that could not be decoded",
        ("daemon", "unknown_frees") => "Free events for addresses the table did not hold",
        ("daemon", "replaced_live") => "Allocations at an address already live (a free was missed)",
        ("daemon", "dropped_table_full") => "Allocations not tracked: the table was full",
        ("daemon", "implausible_sizes") => "Allocation records with a size larger than any address space (corrupt)",
        ("daemon", "stacks_overflowed") => "New stacks beyond --max-stacks, accounted under the overflow stack",
        ("daemon", "processes_purged") => "Processes purged on exit or exec",
        ("daemon", "processes_gone") => "Processes purged because they were gone from /proc (exit event lost)",
        ("daemon", "series_dropped") => "Time series not kept: --max-series reached",
        ("daemon", "ticks") => "Samples taken of live bytes and RSS",
        ("daemon", "kernel_entries_purged") => "Live-address map entries removed after exits and execs",
        ("daemon", "oom_kills") => "OOM events received",
        ("daemon", "oom_reports_loaded") => "OOM reports read back at start",
        ("daemon", "oom_reports_skipped") => "OOM report files skipped at start (corrupt or unknown)",
        ("daemon", "oom_reports_written") => "OOM reports written",
        ("daemon", "oom_reports_write_errors") => "OOM reports that could not be written",
        ("daemon", "oom_reports_rotated") => "Old OOM reports removed to stay within the limits",
        ("daemon", "discovery_known_files") => {
            "Files discovery holds an answer for (allocators and files without one); falls as files are forgotten"
        }
        ("daemon", "discovery_unsupported_files") => {
            "Files found providing an allocator that cannot be probed (e.g. a stripped static executable)"
        }
        _ => return format!("The {group} counter {name} of `leakprobe status`"),
    };
    known.to_owned()
}

/// The exposition of `snapshot`, in `OpenMetrics` text.
pub fn encode_snapshot(snapshot: &MetricsSnapshot) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    register_status(&mut registry, &snapshot.status);
    if let Some(own) = &snapshot.own {
        register_own(&mut registry, own);
    }
    let ids = &snapshot.identities;
    register_rows(&mut registry, process_gauges(), &snapshot.processes, |p| labels_of(ids, p.pid, &p.comm));
    register_rows(&mut registry, stack_gauges(), &snapshot.stacks, |s| stack_labels(ids, s));
    register_rows(&mut registry, fault_gauges(), &snapshot.faults, |p| labels_of(ids, p.pid, &p.comm));
    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}

#[cfg(test)]
mod tests;
