//! `leakprobe run`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use clap::Args;
use leakprobe_common::{MAX_STACK_COPY_BYTES, STACK_COPY_CHUNK};

use crate::{
    config::{
        DEFAULT_MAX_ALLOCATIONS, DEFAULT_MAX_SERIES, DEFAULT_MAX_STACKS, DEFAULT_SOCKET, DEFAULT_SOCKET_MODE,
        DEFAULT_STATE_DIR,
    },
    core::{
        analysis::VerdictConfig,
        faults::FaultLimits,
        table::{AnalysisConfig, Limits},
        tier1::Tier1Config,
    },
    daemon::{self, DaemonConfig, MetricsConfig},
    metrics::{DEFAULT_METRICS_ADDR, DEFAULT_PROFILE_STACKS, DEFAULT_TOP_PROCESSES, DEFAULT_TOP_STACKS, MetricsLimits},
    oom::store::{DEFAULT_MAX_REPORTS, StoreLimits},
    probes::{
        MallocProbes, ProbeConfig,
        discover::{DEFAULT_MAX_FILES_PER_SCAN, DiscoveryConfig},
        preflight::SysPaths,
        session::ReturnProbes,
    },
    protocol::MAX_TOP_LIMIT,
};

// Help headings: `run -h` lists one line per flag under these, and `--help` the whole text of each.
const SOCKET: &str = "Socket";
const DISCOVERY: &str = "Allocator discovery";
const TABLES: &str = "Tables and history";
const TRACKING: &str = "Tracking and stacks";
const TIERS: &str = "Tiers and CPU budget";
const OOM: &str = "OOM reports";
const METRICS: &str = "Metrics";

/// `leakprobe run`. Every setting also has a `LEAKPROBE_*` environment variable and a key of the `--config`
/// file, named after its flag (see [`super::settings`]); the first paragraph of each doc comment is its line in
/// `run -h`.
#[expect(clippy::struct_excessive_bools, reason = "clap flags: each is a switch of its own")]
#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML configuration file: every setting below, by its key (docs/configuration.md).
    ///
    /// TOML configuration file giving any setting below by its key (see docs/configuration.md). A setting given as
    /// a flag wins over its environment variable, which wins over the file, which wins over the built-in default.
    #[arg(long, value_name = "FILE", env = "LEAKPROBE_CONFIG")]
    config: Option<PathBuf>,
    /// Unix socket serving the query API.
    ///
    /// Unix socket to serve the query API on (HTTP + JSON); its directory is created.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET, env = "LEAKPROBE_SOCKET", help_heading = SOCKET)]
    socket: PathBuf,
    /// Permissions of the socket file, in octal.
    #[arg(long, value_name = "MODE", default_value = DEFAULT_SOCKET_MODE, help_heading = SOCKET)]
    socket_mode: String,
    /// Group of the socket file, whose members may query.
    ///
    /// Group of the socket file (a name or a numeric gid): with the default mode 0660 its members may query
    /// the daemon without being root. Default: the daemon's group (root's when it runs as root, so only root
    /// may). A group the daemon's user is not in needs `CAP_CHOWN`.
    #[arg(long, value_name = "GROUP", help_heading = SOCKET)]
    socket_group: Option<String>,
    /// A C library to probe in every process mapping it.
    ///
    /// A C library to probe from start to end, whichever processes map it (default: none beyond what discovery
    /// finds; with `--no-discovery`, the host's libc, as this process maps it).
    #[arg(long, value_name = "PATH", help_heading = DISCOVERY)]
    libc: Option<PathBuf>,
    /// Do not look for allocators in the running processes.
    ///
    /// Do not look for allocators in the running processes: probe only the libc (see `--libc`).
    #[arg(long, help_heading = DISCOVERY)]
    no_discovery: bool,
    /// Time between two scans of every process's maps.
    ///
    /// Time between two scans of every process's maps, which find libraries loaded with `dlopen` and detach
    /// from files no process maps any more, e.g. `10s` (processes are also scanned right after `execve`).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration, help_heading = DISCOVERY)]
    rescan_interval: Duration,
    /// New files examined at most per scan.
    ///
    /// New files examined at most per scan; further ones wait for the next scan.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_FILES_PER_SCAN, help_heading = DISCOVERY)]
    max_files_per_scan: usize,
    /// Never probe files under this path prefix (repeatable).
    ///
    /// Never probe files whose path (as the process sees it) starts with PREFIX, e.g. a toolchain directory
    /// whose compilers link their own allocator (repeatable; the environment variable holds one prefix).
    /// Anonymous executables (memfd) are never probed.
    #[arg(long, value_name = "PREFIX", help_heading = DISCOVERY)]
    discovery_exclude: Vec<String>,
    /// Probe the host's allocator libraries before any process maps them (`--malloc-probes all`).
    ///
    /// With `--malloc-probes all`, probe the allocator libraries of the dynamic loader's directories (libc,
    /// jemalloc, tcmalloc, mimalloc, musl) right after start-up, before any process maps them, and a new
    /// container's as soon as its first process calls `execve`: programs using them are then exact from their
    /// first allocation. `false` probes files only once a process maps them.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, help_heading = DISCOVERY)]
    preprobe: bool,
    /// Live allocations tracked at most, over all processes.
    ///
    /// Live allocations tracked at most, over all processes: the size of the kernel's live-address map and
    /// of the daemon's table (further ones are counted in `live_map_full`).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ALLOCATIONS, help_heading = TABLES)]
    max_allocations: u32,
    /// Distinct call stacks stored at most.
    ///
    /// Distinct call stacks stored at most (further ones are accounted under an overflow stack).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_STACKS, help_heading = TABLES)]
    max_stacks: u32,
    /// Time series kept at most.
    ///
    /// Time series kept at most: one per (process, stack), four per process (further ones get no growth
    /// rate and are counted in `series_dropped`).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_SERIES, help_heading = TABLES)]
    max_series: u32,
    /// Time between samples of live bytes and RSS.
    ///
    /// Time between samples of live bytes and RSS, e.g. `5s`; at least `100ms`.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration, help_heading = TABLES)]
    interval: Duration,
    /// History kept and used for growth rates and verdicts.
    ///
    /// History kept and used for growth rates and verdicts, e.g. `10m`; at least two intervals.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration, help_heading = TABLES)]
    window: Duration,
    /// Track a weighted sample of allocations, or every one.
    ///
    /// `sampled` tracks a size-weighted sample of allocations, cheap enough to leave on (figures are unbiased
    /// estimates); `full` tracks every allocation, exactly, at a higher cost per call.
    #[arg(long, value_enum, default_value_t = Mode::Sampled, help_heading = TRACKING)]
    mode: Mode,
    /// How the allocating functions' returns are probed.
    ///
    /// How the allocating functions' returns are probed. `session`: session uprobes (Linux 6.13+), one program
    /// at entry and return whose entry skips the return trap of every call it does not track (most calls in
    /// sampled mode); `plain`: an entry uprobe and a uretprobe, every call pays both traps; `auto`: session when
    /// the kernel has it, plain otherwise (`leakprobe status` shows which).
    #[arg(long, value_enum, value_name = "KIND", default_value_t = ReturnProbes::Auto, help_heading = TRACKING)]
    return_probes: ReturnProbes,
    /// Mean bytes allocated between two sampled allocations.
    ///
    /// Mean bytes allocated between two sampled allocations, in sampled mode (e.g. `512KiB`, `64KiB`).
    #[arg(long, value_name = "SIZE", default_value = "512KiB", value_parser = parse_sample_interval, help_heading = TRACKING)]
    sample_interval: u64,
    /// Only this process: its allocations, frees and page faults.
    ///
    /// Trace only this process (its allocations, frees and page faults; the probes stay system-wide, other
    /// processes pay a filtered uprobe hit). For `--mode full --unwind dwarf` on one busy process.
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..), help_heading = TRACKING)]
    pid: Option<u32>,
    /// How stacks are unwound: `auto` (in the kernel, from unwind tables), `fp` or `dwarf`.
    ///
    /// How stacks (allocations, tier-0 faults and mappings) are unwound. `auto`: in the kernel, with each
    /// binary's unwind tables (`.eh_frame`, `.debug_frame`) loaded by the daemon, frame pointers for a frame
    /// whose binary is not loaded (counted): whole stacks at frame-pointer cost (docs/unwinding.md). `fp`: the
    /// kernel's frame-pointer walk (stacks stop at code built without them, glibc included). `dwarf`: the
    /// return probe copies the user stack and the daemon unwinds it (allocations only).
    #[arg(long, value_enum, default_value_t = UnwindMode::Auto, help_heading = TRACKING)]
    unwind: UnwindMode,
    /// Memory for the kernel unwinder's tables, e.g. `16MiB`.
    ///
    /// Memory for the kernel unwinder's tables (`--unwind auto`), e.g. `16MiB`: least recently used binaries
    /// are evicted when it is full (counted in `unwind_tables_evictions`).
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_table_memory, help_heading = TRACKING)]
    unwind_table_memory: u64,
    /// Bytes of user stack copied per allocation with `--unwind dwarf`.
    ///
    /// Bytes of user stack copied per reported allocation with `--unwind dwarf`: 4KiB to 32KiB, a multiple of
    /// 4KiB. Deeper stacks are cut (counted in `stacks_dwarf_truncated`).
    #[arg(long, value_name = "SIZE", default_value = "16KiB", value_parser = parse_stack_copy, help_heading = TRACKING)]
    stack_copy: u32,
    /// Do not record the Python frames of Python processes.
    ///
    /// Do not record the Python frames of Python processes (3.10 to 3.13): their stacks then show the
    /// interpreter's native frames only (docs/python.md). Measures what the frame walk costs (`cargo xtask
    /// bench --only-python`).
    #[arg(long, help_heading = TRACKING)]
    no_python_frames: bool,
    /// Where the malloc-family probes go (tier 1).
    ///
    /// Where the malloc-family probes go (tier 1): `auto` attaches them only to processes whose anonymous
    /// memory grows steadily (seen by tier 0) or that `leakprobe trace` names, and detaches them when their time
    /// is up or the CPU budget says so; `all` probes every process, always (every allocator call of the host
    /// traps); `off` only on request.
    #[arg(long, value_enum, default_value_t = MallocProbes::Auto, help_heading = TIERS)]
    malloc_probes: MallocProbes,
    /// Tier 0: mean bytes of touched pages between two sampled faults.
    ///
    /// Tier 0: mean bytes of newly touched (write-faulted) pages between two sampled faults, whose stack is
    /// recorded; every fault is counted.
    #[arg(long, value_name = "SIZE", default_value = "256KiB", value_parser = parse_sample_interval, help_heading = TIERS)]
    fault_sample_interval: u64,
    /// Escalate automatically only processes with this name (repeatable).
    ///
    /// Escalate automatically only processes with this name (`comm`, exact); repeat for more names (the
    /// environment variable holds one name). Default: any process.
    #[arg(long, value_name = "NAME", help_heading = TIERS)]
    escalate_only: Vec<String>,
    /// Ask escalated or traced Java processes for their perf map.
    ///
    /// When a Java process (`HotSpot`, JDK 17+) is escalated or traced, ask it for its perf map (`jcmd PID
    /// Compiler.perfmap`, run as its user, in its namespaces, bounded in time; again every 30 s while
    /// escalated), so that compiled Java frames are named. See docs/languages.md.
    #[arg(long, help_heading = TIERS)]
    java_perfmap: bool,
    /// Processes with tier-1 probes at once, at most.
    ///
    /// Processes with tier-1 probes at once, at most (automatic and requested).
    #[arg(long, value_name = "N", default_value_t = 8, help_heading = TIERS)]
    max_escalated: usize,
    /// How long an automatic escalation keeps its probes.
    ///
    /// How long an automatic escalation keeps its probes, e.g. `10m`.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration, help_heading = TIERS)]
    escalation_duration: Duration,
    /// Time before a process may be escalated again.
    ///
    /// After an escalation ends, how long before the same process may be escalated automatically again.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = humantime::parse_duration, help_heading = TIERS)]
    escalation_cooldown: Duration,
    /// CPU budget of each traced process's probes, % of a core.
    ///
    /// CPU budget of the probes of each traced process, in percent of one core: over it, the process's sampling
    /// interval is raised, then its probes are detached.
    #[arg(long, value_name = "PERCENT", default_value_t = 1.0, help_heading = TIERS)]
    cpu_budget_process: f64,
    /// CPU budget of the whole daemon, % of a core.
    ///
    /// CPU budget of the whole daemon (probes of every tier plus its own CPU), in percent of one core: over it,
    /// the tier-1 probes of the busiest process are detached.
    #[arg(long, value_name = "PERCENT", default_value_t = 2.0, help_heading = TIERS)]
    cpu_budget_host: f64,
    /// Directory for state that outlives the daemon (OOM reports).
    ///
    /// Directory for state that outlives the daemon: OOM reports are kept in its `oom/` subdirectory
    /// (created if missing).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR, env = "LEAKPROBE_STATE_DIR", help_heading = OOM)]
    state_dir: PathBuf,
    /// OOM reports kept at most.
    ///
    /// OOM reports kept at most; the oldest are removed first.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_REPORTS, help_heading = OOM)]
    max_oom_reports: usize,
    /// Size of the OOM report files kept at most.
    ///
    /// Size of the OOM report files kept at most, e.g. `64MiB` (a plain number is bytes); the oldest are removed
    /// first (the newest report always stays).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_bytes, help_heading = OOM)]
    max_oom_report_bytes: u64,
    /// Do not log a line for each OOM kill.
    ///
    /// Do not log a line for each OOM kill (reports are still written).
    #[arg(long, help_heading = OOM)]
    no_log_oom: bool,
    /// Address (IP:PORT) of the Prometheus `/metrics` endpoint.
    ///
    /// Address (IP:PORT) to serve Prometheus metrics on, over HTTP at `/metrics`.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_METRICS_ADDR, help_heading = METRICS)]
    metrics_addr: SocketAddr,
    /// Do not serve metrics.
    #[arg(long, conflicts_with = "metrics_addr", help_heading = METRICS)]
    no_metrics: bool,
    /// Do not serve the live heap at `/debug/pprof/heap` on the metrics listener.
    ///
    /// Do not serve the live heap as a pprof profile at `/debug/pprof/heap` on the metrics listener (served by
    /// default, for Parca and Grafana Alloy to pull).
    #[arg(long, help_heading = METRICS)]
    no_pprof_endpoint: bool,
    /// Stacks a heap profile symbolizes; the others are summed per process.
    ///
    /// Stacks a heap profile (`/debug/pprof/heap`, each push to Pyroscope) symbolizes: the N (process, stack)
    /// pairs with the most of the requested sample type (at most 10000). The others are summed per process into
    /// one `[other stacks]` sample, and their number is in the profile's comments and the
    /// `X-Leakprobe-Stacks-Omitted` response header.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PROFILE_STACKS, help_heading = METRICS)]
    profile_max_stacks: usize,
    /// Push heap profiles to this Pyroscope server.
    ///
    /// Push one heap profile per process, labelled with its service, to this Pyroscope server's HTTP ingest API
    /// (`http://HOST:PORT`, optionally with a path prefix; plain HTTP) every --push-interval.
    #[arg(long, value_name = "URL", help_heading = METRICS)]
    pyroscope_url: Option<String>,
    /// Time between two pushes to Pyroscope.
    ///
    /// Time between two pushes to Pyroscope, e.g. `15s`; at least `1s`.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration, help_heading = METRICS)]
    push_interval: Duration,
    /// File holding `user:password` for basic auth to Pyroscope.
    ///
    /// File whose first line is `user:password`, for basic auth to Pyroscope (never on the command line).
    #[arg(long, value_name = "PATH", help_heading = METRICS)]
    pyroscope_basic_auth_file: Option<PathBuf>,
    /// File holding a bearer token for Pyroscope.
    ///
    /// File whose first line is a bearer token for Pyroscope (never on the command line).
    #[arg(long, value_name = "PATH", help_heading = METRICS)]
    pyroscope_token_file: Option<PathBuf>,
    /// Stacks exported as labelled metric series.
    ///
    /// Stacks exported as labelled metric series: the fastest-growing ones (at most 10000).
    #[arg(long, value_name = "K", default_value_t = DEFAULT_TOP_STACKS, help_heading = METRICS)]
    metrics_top_stacks: usize,
    /// Processes exported as labelled metric series.
    ///
    /// Processes exported as labelled metric series: the K with the most heap bytes and the K whose RSS grows
    /// fastest (at most 10000).
    #[arg(long, value_name = "K", default_value_t = DEFAULT_TOP_PROCESSES, help_heading = METRICS)]
    metrics_top_processes: usize,
    /// Thresholds of the verdict rule: the `[verdict]` table of the `--config` file (no flags).
    #[arg(skip)]
    verdict: VerdictConfig,
}

impl RunArgs {
    /// Sets the verdict thresholds (from the configuration file).
    pub fn set_verdict(&mut self, verdict: VerdictConfig) {
        self.verdict = verdict;
    }
}

/// How allocations are tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Every allocation, exactly.
    Full,
    /// A Poisson sample over allocated bytes, weighted: unbiased estimates.
    Sampled,
}

/// How stacks are unwound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum UnwindMode {
    /// Frame pointers, walked in the kernel.
    Fp,
    /// A copy of the user stack, unwound in the daemon with the binaries' unwind tables.
    Dwarf,
    /// In the kernel, with the binaries' unwind tables (frame pointers where they are not loaded).
    Auto,
}

impl UnwindMode {
    /// Bytes of stack to copy per allocation in `mode`; 0 for frame pointers.
    pub fn stack_copy_bytes(self, mode: Mode, copy: u32) -> u32 {
        match (self, mode) {
            (Self::Dwarf, _) => copy,
            (Self::Fp | Self::Auto, _) => 0,
        }
    }
}

/// `16MiB`: the kernel unwinder's table memory, 1 MiB to 1 GiB.
fn parse_table_memory(text: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = text.parse().map_err(|e| format!("{text:?} is not a size like 16MiB: {e}"))?;
    if !(1 << 20..=1 << 30).contains(&size.as_u64()) {
        return Err(format!("the unwind table memory must be between 1MiB and 1GiB, not {size}"));
    }
    Ok(size.as_u64())
}

/// `16KiB`: a stack-copy size, a multiple of 4 KiB between 4 KiB and 32 KiB.
fn parse_stack_copy(text: &str) -> Result<u32, String> {
    let size: bytesize::ByteSize = text.parse().map_err(|e| format!("{text:?} is not a size like 16KiB: {e}"))?;
    let bytes = u32::try_from(size.as_u64()).unwrap_or(u32::MAX);
    if !(STACK_COPY_CHUNK..=MAX_STACK_COPY_BYTES).contains(&bytes) || !bytes.is_multiple_of(STACK_COPY_CHUNK) {
        return Err(format!("the stack copy must be a multiple of 4KiB between 4KiB and 32KiB, not {size}"));
    }
    Ok(bytes)
}

/// `512KiB`, `1 MiB`, `4096`: a size in bytes, at least 1.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = text.parse().map_err(|e| format!("{text:?} is not a size like 512KiB: {e}"))?;
    if size.as_u64() == 0 {
        return Err("the size must be at least 1 byte".into());
    }
    Ok(size.as_u64())
}

/// A sampling interval: a size between 1 byte and 1 TiB.
fn parse_sample_interval(text: &str) -> Result<u64, String> {
    let bytes = parse_bytes(text)?;
    if bytes > leakprobe_common::MAX_SAMPLE_INTERVAL {
        return Err("the sample interval must be between 1 byte and 1 TiB".into());
    }
    Ok(bytes)
}

pub async fn run(args: RunArgs) -> Result<()> {
    daemon::run(config(args)?).await
}

/// The daemon's configuration from the command line (and the configuration file it names).
pub fn config(args: RunArgs) -> Result<DaemonConfig> {
    let socket_mode = u32::from_str_radix(args.socket_mode.trim_start_matches("0o"), 8)
        .with_context(|| format!("--socket-mode {:?} is not an octal mode", args.socket_mode))?;
    let socket_group = args.socket_group.as_deref().map(crate::server::resolve_group).transpose()?;
    let (interval, window) = (args.interval, args.window);
    ensure!(interval >= Duration::from_millis(100), "--interval must be at least 100ms");
    ensure!(args.rescan_interval >= Duration::from_millis(100), "--rescan-interval must be at least 100ms");
    ensure!(args.max_files_per_scan > 0, "--max-files-per-scan must be at least 1");
    ensure!(window >= interval * 2, "--window must cover at least two intervals");
    ensure!(args.metrics_top_stacks <= MAX_TOP_LIMIT, "--metrics-top-stacks must be at most {MAX_TOP_LIMIT}");
    ensure!(args.metrics_top_processes <= MAX_TOP_LIMIT, "--metrics-top-processes must be at most {MAX_TOP_LIMIT}");
    ensure!(
        (1..=MAX_TOP_LIMIT).contains(&args.profile_max_stacks),
        "--profile-max-stacks must be from 1 to {MAX_TOP_LIMIT}"
    );
    let metrics = (!args.no_metrics).then_some(MetricsConfig {
        addr: args.metrics_addr,
        limits: MetricsLimits {
            top_stacks: args.metrics_top_stacks,
            top_processes: args.metrics_top_processes,
            profile_stacks: args.profile_max_stacks,
        },
        pprof_endpoint: !args.no_pprof_endpoint,
    });
    let max_allocations = args.max_allocations;
    let limits = Limits {
        max_allocations: max_allocations as usize,
        max_stacks: args.max_stacks as usize,
        max_series: args.max_series as usize,
    };
    let sample_interval = if args.mode == Mode::Sampled { args.sample_interval } else { 0 };
    ensure!(
        args.cpu_budget_process > 0.0 && args.cpu_budget_host > 0.0,
        "--cpu-budget-process and --cpu-budget-host must be positive percentages"
    );
    let tier1 = Tier1Config {
        auto: args.malloc_probes == MallocProbes::Auto,
        max_processes: args.max_escalated,
        duration_s: args.escalation_duration.as_secs_f64(),
        cooldown_s: args.escalation_cooldown.as_secs_f64(),
        sample_interval,
        process_budget: args.cpu_budget_process / 100.0,
        host_budget: args.cpu_budget_host / 100.0,
        ..Tier1Config::default()
    };
    let stack_copy_bytes = args.unwind.stack_copy_bytes(args.mode, args.stack_copy);
    ensure!(
        stack_copy_bytes == 0 || cfg!(target_arch = "x86_64"),
        "--unwind dwarf is implemented for x86-64 only; use --unwind fp"
    );
    let config = DaemonConfig {
        socket: args.socket,
        socket_mode,
        socket_group,
        probes: ProbeConfig {
            libc: args.libc,
            discovery: (!args.no_discovery).then_some(DiscoveryConfig {
                rescan_interval: args.rescan_interval,
                max_files_per_scan: args.max_files_per_scan,
                exclude: args.discovery_exclude,
                preprobe: args.preprobe,
                python_frames: !args.no_python_frames,
            }),
            sys: SysPaths::default(),
            max_live_allocations: max_allocations,
            sample_interval,
            return_probes: args.return_probes,
            malloc_probes: args.malloc_probes,
            fault_sample_interval: args.fault_sample_interval,
            stack_copy_bytes,
            unwind_table_rows: (args.unwind == UnwindMode::Auto && cfg!(target_arch = "x86_64"))
                .then(|| crate::probes::unwind_tables::arena_rows(args.unwind_table_memory)),
            pid: args.pid,
        },
        limits,
        analysis: AnalysisConfig {
            interval_s: interval.as_secs_f64(),
            window_s: window.as_secs_f64(),
            verdict: args.verdict,
            sample_interval,
        },
        state_dir: args.state_dir,
        oom_limits: StoreLimits { max_reports: args.max_oom_reports, max_bytes: args.max_oom_report_bytes },
        log_oom: !args.no_log_oom,
        metrics,
        push: push_config(
            args.pyroscope_url.as_deref(),
            args.push_interval,
            args.profile_max_stacks,
            args.pyroscope_basic_auth_file.as_deref(),
            args.pyroscope_token_file.as_deref(),
        )?,
        tier1,
        fault_limits: FaultLimits::default(),
        escalate_only: args.escalate_only,
        java_perfmap: args.java_perfmap,
    };
    Ok(config)
}

/// The push configuration of the `--pyroscope-*` flags: the URL checked, the credentials read.
fn push_config(
    url: Option<&str>,
    interval: Duration,
    max_stacks: usize,
    basic_file: Option<&Path>,
    token_file: Option<&Path>,
) -> Result<Option<crate::push::PushConfig>> {
    let Some(url) = url else {
        ensure!(basic_file.is_none() && token_file.is_none(), "a Pyroscope credentials file needs --pyroscope-url");
        return Ok(None);
    };
    ensure!(interval >= Duration::from_secs(1), "--push-interval must be at least 1s");
    let uri: hyper::Uri = url.parse().with_context(|| format!("--pyroscope-url {url:?} is not a URL"))?;
    ensure!(
        uri.scheme_str() == Some("http") && uri.host().is_some(),
        "--pyroscope-url {url:?}: give http://HOST:PORT (plain HTTP; for HTTPS, push to a local Grafana Alloy)"
    );
    let read = |path: &Path, basic: bool| {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        crate::push::authorization(&text, basic).with_context(|| format!("{}", path.display()))
    };
    ensure!(
        basic_file.is_none() || token_file.is_none(),
        "give --pyroscope-basic-auth-file or --pyroscope-token-file, not both"
    );
    let authorization = match (basic_file, token_file) {
        (Some(path), _) => Some(read(path, true)?),
        (None, Some(path)) => Some(read(path, false)?),
        (None, None) => None,
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_owned();
    Ok(Some(crate::push::PushConfig { url: uri, interval, max_stacks, authorization, host }))
}
