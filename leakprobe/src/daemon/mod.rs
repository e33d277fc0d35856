//! `leakprobe run`: wiring, supervision, shutdown.
//!
//! Start-up order: check and load (nothing attached yet), start the consumers, attach, then bind the socket
//! (so a socket that answers means the probes are attached). Shutdown on SIGINT/SIGTERM or on the first task
//! to fail: every task stops, the probes are detached (dropping the `Ebpf` closes every link) and the socket
//! is removed.

pub mod discovery;
mod folios;
mod jvm;
mod kernel;
mod messages;
pub mod oom;
mod purge;
mod query;
pub mod state;
pub mod tiers;
mod unseen;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, atomic::AtomicU64},
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{MapData, RingBuf};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use self::{
    oom::OomTracker,
    state::{Links, Request, Setup, State},
    tiers::{TierSettings, Tiers},
};
use crate::{
    core::{
        faults::{FaultLimits, FaultTable},
        table::{AnalysisConfig, Limits, Table},
        tier1::{Tier1, Tier1Config},
    },
    ingest,
    metrics::{METRICS_PATH, MetricsLimits, MetricsSnapshot, SnapshotSource, http, pprof::HEAP_PATH},
    oom::{
        OomRequest, OomStats,
        store::{ReportStore, StoreLimits},
    },
    privileges,
    probes::{self, MallocProbes, Maps, ProbeConfig, Probes, discover::Discovery},
    protocol::{HeapFilter, HeapProfile},
    push::{self, PushConfig, PushStats},
    queries::Query,
    server,
    symbolize::{CacheLimits, SymbolizerHandle},
    unwind::{UnwindLimits, Unwinder},
};

/// Everything `leakprobe run` needs.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub socket: PathBuf,
    pub socket_mode: u32,
    /// The socket's group (a gid), if not root's.
    pub socket_group: Option<u32>,
    pub probes: ProbeConfig,
    pub limits: Limits,
    pub analysis: AnalysisConfig,
    /// The state directory: OOM reports go to its `oom/` subdirectory.
    pub state_dir: PathBuf,
    pub oom_limits: StoreLimits,
    /// Log one line per OOM kill.
    pub log_oom: bool,
    /// Where to serve `/metrics` and how many labelled series; `None`: no metrics endpoint.
    pub metrics: Option<MetricsConfig>,
    /// Where to push profiles (`--pyroscope-url`); `None`: no push.
    pub push: Option<PushConfig>,
    /// Tier 1 (escalation) and the CPU budget.
    pub tier1: Tier1Config,
    /// Limits of tier 0's fault table.
    pub fault_limits: FaultLimits,
    /// When not empty, only processes with these names are escalated automatically.
    pub escalate_only: Vec<String>,
    /// Ask escalated or traced JVMs for their perf map (`jcmd PID Compiler.perfmap`).
    pub java_perfmap: bool,
}

/// The metrics endpoint.
#[derive(Clone, Copy, Debug)]
pub struct MetricsConfig {
    pub addr: SocketAddr,
    pub limits: MetricsLimits,
    /// Serve the live heap at `/debug/pprof/heap` too.
    pub pprof_endpoint: bool,
}

/// Scrapes ask the state owner for a snapshot.
#[derive(Clone)]
struct StateSnapshots {
    requests: mpsc::Sender<Request>,
    limits: MetricsLimits,
}

impl SnapshotSource for StateSnapshots {
    async fn snapshot(&self) -> Option<MetricsSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(Request::Query(Query::Metrics(self.limits, tx))).await.ok()?;
        rx.await.ok()
    }

    async fn heap(&self, filter: HeapFilter) -> Option<HeapProfile> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(Request::Query(Query::Heap(filter, self.limits.profile_stacks, tx))).await.ok()?;
        rx.await.ok()
    }
}

/// Serves `/metrics` from `listener` in a task of `tasks`.
fn spawn_metrics(
    tasks: &mut JoinSet<Result<&'static str>>,
    listener: TcpListener,
    metrics: MetricsConfig,
    requests: mpsc::Sender<Request>,
    shutdown: CancellationToken,
) {
    // The bound address: with port 0 the kernel picked one.
    let addr = listener.local_addr().unwrap_or(metrics.addr);
    log::info!("serving metrics on http://{addr}{METRICS_PATH}");
    if metrics.pprof_endpoint {
        log::info!("serving the live heap on http://{addr}{HEAP_PATH}");
    }
    let source = StateSnapshots { requests, limits: metrics.limits };
    tasks.spawn(async move {
        http::serve(listener, source, metrics.pprof_endpoint, shutdown).await.context("serving metrics")?;
        Ok("metrics")
    });
}

/// Pushes profiles to Pyroscope from a task of `tasks`.
fn spawn_push(
    tasks: &mut JoinSet<Result<&'static str>>,
    push: PushConfig,
    stats: Arc<PushStats>,
    requests: mpsc::Sender<Request>,
    shutdown: CancellationToken,
) {
    log::info!("pushing a heap profile per process to {}/ingest every {:?}", push.url, push.interval);
    let limits = MetricsLimits { profile_stacks: push.max_stacks, ..MetricsLimits::default() };
    let source = StateSnapshots { requests, limits };
    tasks.spawn(async move {
        push::run(source, push, stats, shutdown).await.context("pushing profiles")?;
        Ok("push")
    });
}

/// Attaches the tracepoints, the pinned libc and every allocator the start-up scan finds, and tells the state
/// owner.
async fn attach(
    probes: &mut Probes,
    discovery: &mut Discovery,
    config: &ProbeConfig,
    request_tx: &mpsc::Sender<Request>,
) -> Result<()> {
    probes.attach_tracepoints()?;
    request_tx
        .send(Request::Attached(probes.tracepoints().to_vec()))
        .await
        .map_err(|_| anyhow!("the state task ended at start-up"))?;
    // Without discovery, the libc is the host's unless `--libc` names one; with it, the host's libc is found in
    // this very process's maps like any other.
    let pinned = match (config.libc.as_deref(), discovery.enabled()) {
        (Some(path), _) => Some(path.to_path_buf()),
        (None, false) => Some(probes::libc::host_libc()?),
        (None, true) => None,
    };
    if let Some(path) = &pinned {
        discovery.pin(probes, path)?;
    }
    let scan = discovery.full_scan(probes);
    if discovery.enabled() {
        log::info!(
            "discovery: start-up scan of {} processes, {} files examined in {} ms",
            scan.pids,
            scan.files_examined,
            scan.microseconds / 1_000
        );
    }
    let points = discovery.attach_points();
    log::info!(
        "attached {} allocator probes to {} files (malloc probes: {})",
        points.len(),
        discovery.status().providers.len(),
        config.malloc_probes.as_str()
    );
    request_tx.send(discovery::report(discovery)).await.map_err(|_| anyhow!("the state task ended at start-up"))?;
    Ok(())
}

/// Waits for every task, cancelling the others when the first one ends; returns the first failure.
pub async fn join_all(
    tasks: &mut JoinSet<Result<&'static str>>,
    shutdown: &CancellationToken,
) -> Option<anyhow::Error> {
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        shutdown.cancel();
        match joined {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                log::error!("{err:#}");
                failure.get_or_insert(err);
            }
            Err(join_error) => {
                failure.get_or_insert(anyhow!("a task panicked: {join_error}"));
            }
        }
    }
    failure
}

/// Tier 0, tier 1 and the budget, which ask the discovery thread to attach and detach.
fn tiers(
    config: &DaemonConfig,
    discovery: discovery::DiscoveryHandle,
    maps: (aya::maps::HashMap<MapData, u32, u64>, aya::maps::PerCpuHashMap<MapData, u32, u64>),
) -> Tiers {
    Tiers::new(
        FaultTable::new(config.fault_limits, config.probes.fault_sample_interval),
        Tier1::new(config.tier1),
        folios::Folios::open(),
        TierSettings {
            malloc_probes: config.probes.malloc_probes,
            sample_interval: config.analysis.sample_interval,
            escalate_only: config.escalate_only.clone(),
            java_perfmap: config.java_perfmap,
        },
        Box::new(kernel::AyaTier1::new(maps.0, maps.1, discovery)),
    )
}

/// The OOM reports kept from earlier runs; files that cannot be read are logged and skipped.
fn load_reports(dir: &std::path::Path, limits: StoreLimits) -> ReportStore {
    let (store, warnings) = ReportStore::load(dir, limits);
    for warning in warnings {
        log::warn!("{warning}");
    }
    store
}

/// Tells systemd (`Type=notify`, `NOTIFY_SOCKET` set) that the daemon is ready or stopping; nothing without
/// `NOTIFY_SOCKET`. A failure to send is logged: systemd then times the start out, which says more than we could.
fn notify_systemd(state: sd_notify::NotifyState<'_>) {
    let text = state.to_string();
    if let Err(err) = sd_notify::notify(&[state]) {
        log::warn!("sd_notify {text} failed: {err}");
    } else if std::env::var_os("NOTIFY_SOCKET").is_some() {
        log::info!("sd_notify: {text}");
    }
}

/// Ends the daemon on SIGTERM or SIGINT (by ending its task, which cancels the others).
fn spawn_signals(tasks: &mut JoinSet<Result<&'static str>>, token: CancellationToken) {
    tasks.spawn(async move {
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        tokio::select! {
            _ = term.recv() => log::info!("SIGTERM: shutting down"),
            _ = int.recv() => log::info!("SIGINT: shutting down"),
            () = token.cancelled() => {}
        }
        Ok("signals")
    });
}

/// The ring buffer's consumers as the daemon runs them: the ingest task, which reads the ring buffer into
/// batches, and the state owner, which applies them to the table and answers requests, with the threads the state
/// owner hands work to (purger, OOM reports, symbolizer). `leakprobe run` and `leakprobe bench-ingest` both build
/// them here, so the benchmark measures the daemon's own pipeline.
pub struct Consumers {
    state: State,
    ring: RingBuf<MapData>,
    decoder: ingest::Decoder,
    progress: Arc<ingest::Progress>,
    batch_tx: mpsc::Sender<ingest::Batch>,
    batch_rx: mpsc::Receiver<ingest::Batch>,
    request_rx: mpsc::Receiver<Request>,
    requests: mpsc::Sender<Request>,
    oom_reports: mpsc::Sender<OomRequest>,
    discovery_commands: discovery::CommandReceiver,
    threads: Threads,
}

/// What the running consumers are reached through.
pub struct Running {
    /// Requests to the state owner.
    pub requests: mpsc::Sender<Request>,
    /// Where the server sends its queries.
    pub queries: mpsc::Sender<Query>,
    /// Requests to the OOM report thread (the server's `/v1/oom`).
    pub oom_reports: mpsc::Sender<OomRequest>,
    /// The discovery thread's end of the queue whose handle the state owner holds.
    pub discovery_commands: discovery::CommandReceiver,
    /// Joined once the state task is gone.
    pub threads: Threads,
}

/// The threads the state owner feeds: they end once it is gone.
pub struct Threads {
    purger: std::thread::JoinHandle<()>,
    oom: std::thread::JoinHandle<()>,
}

impl Threads {
    /// Waits for the purger to finish its queue and the report thread its last report in flight. Call once the
    /// state task (which holds their senders) has ended.
    pub fn join(self) {
        let _ = self.purger.join();
        let _ = self.oom.join();
    }
}

impl Consumers {
    /// Builds the state owner and the ingest task over `maps` (nothing runs yet). `return_probes` is what
    /// `status` shows; `discovery` whether a discovery thread will take commands.
    pub fn new(
        config: &DaemonConfig,
        maps: Maps,
        return_probes: &'static str,
        discovery: bool,
        started: Instant,
    ) -> Result<Self> {
        let (batch_tx, batch_rx) = mpsc::channel(64);
        let (request_tx, request_rx) = mpsc::channel(64);
        let purged_entries = Arc::new(AtomicU64::new(0));
        let progress = Arc::new(ingest::Progress::default());
        let (purger, purger_thread) = purge::spawn(maps.live, purged_entries.clone()).context("starting the purger")?;
        let oom_dir = config.state_dir.join("oom");
        let store = load_reports(&oom_dir, config.oom_limits);
        let oom_stats = Arc::new(OomStats::default());
        let decoder = ingest::Decoder::new(Unwinder::new(UnwindLimits::default(), Arc::default()));
        let (oom_tx, oom_thread) =
            crate::oom::spawn(store, config.log_oom, oom_stats.clone()).context("starting the OOM report thread")?;
        let (discovery_handle, discovery_commands) = discovery::channel(discovery);
        let tiers = tiers(config, discovery_handle.clone(), (maps.pid_sample_interval, maps.pid_calls));
        let links = Links {
            counters: Box::new(maps.counters),
            unseen: unseen::UnseenFrees::new(maps.unseen_frees),
            purger,
            purged_entries,
            symbolizer: SymbolizerHandle::spawn(CacheLimits::default()).context("starting the symbolizer")?,
            // Enabled by `Request::Attached`.
            oom: OomTracker::new(false, oom_tx.clone(), oom_stats, oom_dir),
            discovery: discovery_handle,
            requests: request_tx.clone(),
            ingest: progress.clone(),
            unwind_stats: decoder.stats().clone(),
            python_stats: decoder.python_stats().clone(),
        };
        let setup = Setup {
            started,
            return_probes,
            stack_copy_bytes: config.probes.stack_copy_bytes,
            unwind_tables: config.probes.unwind_table_rows.is_some(),
            traced_pid: config.probes.pid,
        };
        let state = State::new(Table::new(config.limits, config.analysis.clone()), tiers, links, setup);
        Ok(Self {
            state,
            ring: maps.events,
            decoder,
            progress,
            batch_tx,
            batch_rx,
            request_rx,
            requests: request_tx,
            oom_reports: oom_tx,
            discovery_commands,
            threads: Threads { purger: purger_thread, oom: oom_thread },
        })
    }

    /// Starts the ingest and state tasks in `tasks`; both end when `shutdown` is cancelled.
    pub fn spawn(self, tasks: &mut JoinSet<Result<&'static str>>, shutdown: &CancellationToken) -> Running {
        let Self { state, ring, decoder, progress, batch_tx, batch_rx, request_rx, .. } = self;
        let token = shutdown.clone();
        tasks.spawn(async move {
            ingest::run(ring, decoder, batch_tx, progress, token).await.context("reading the ring buffer")?;
            Ok("ingest")
        });
        let token = shutdown.clone();
        tasks.spawn(async move {
            state.run(batch_rx, request_rx, token).await;
            Ok("state")
        });
        let (queries, mut query_rx) = mpsc::channel::<Query>(64);
        let forward = self.requests.clone();
        // The server's queries join the state owner's one queue; this ends with the server's senders or the state.
        tokio::spawn(async move {
            while let Some(query) = query_rx.recv().await {
                if forward.send(Request::Query(query)).await.is_err() {
                    break;
                }
            }
        });
        Running {
            requests: self.requests,
            queries,
            oom_reports: self.oom_reports,
            discovery_commands: self.discovery_commands,
            threads: self.threads,
        }
    }
}

/// Runs the daemon until SIGINT/SIGTERM.
pub async fn run(config: DaemonConfig) -> Result<()> {
    let started = Instant::now();
    // Capabilities and kernel features first: without them nothing else matters, and the error says what is
    // missing. Then whatever else could fail at the end (the socket), before anything is loaded.
    let startup = privileges::Startup {
        socket_group: config.socket_group,
        metrics_port: config.metrics.map(|metrics| metrics.addr.port()),
    };
    privileges::check(privileges::needed(startup))?;
    probes::preflight::check(&config.probes.sys)?;
    server::check_socket_free(&config.socket)?;
    server::check_socket_dir(&config.socket)?;
    // Before loading anything: a port in use is a one-line error at once.
    let metrics_listener = match &config.metrics {
        Some(metrics) => Some(http::bind(metrics.addr).await?),
        None => None,
    };
    let (mut probes, maps) = Probes::load(&config.probes)?;
    let mut discovery =
        Discovery::new(config.probes.discovery.clone(), config.probes.malloc_probes == MallocProbes::All);
    discovery.set_unwind_tables(probes.take_unwind_tables());
    let shutdown = CancellationToken::new();
    let consumers = Consumers::new(&config, maps, probes.return_probes(), discovery.enabled(), started)?;
    let mut tasks: JoinSet<Result<&'static str>> = JoinSet::new();
    let push_stats = consumers.state.push_stats().clone();
    let Running { requests: request_tx, queries, oom_reports: oom_tx, discovery_commands: commands, threads } =
        consumers.spawn(&mut tasks, &shutdown);

    attach(&mut probes, &mut discovery, &config.probes, &request_tx).await?;
    let discovery_thread =
        discovery::spawn(probes, discovery, commands, request_tx.clone()).context("starting the discovery thread")?;

    let listener = server::bind(&config.socket, config.socket_mode, config.socket_group)?;
    // The last step that needed more than the kept capabilities: the other threads dropped them when they started.
    privileges::drop_in_this_thread();
    log::info!("capabilities kept: {}", privileges::describe_effective());
    log::info!("serving on {}", config.socket.display());
    // Probes attached and the socket bound: `systemctl start` (Type=notify) returns now.
    notify_systemd(sd_notify::NotifyState::Ready);
    let token = shutdown.clone();
    tasks.spawn(async move {
        server::serve(listener, queries, oom_tx, token).await.context("serving the socket API")?;
        Ok("server")
    });
    if let Some(push) = config.push.clone() {
        spawn_push(&mut tasks, push, push_stats, request_tx.clone(), shutdown.clone());
    }
    if let (Some(listener), Some(metrics)) = (metrics_listener, config.metrics) {
        spawn_metrics(&mut tasks, listener, metrics, request_tx, shutdown.clone());
    }
    spawn_signals(&mut tasks, shutdown.clone());

    let failure = join_all(&mut tasks, &shutdown).await;
    notify_systemd(sd_notify::NotifyState::Stopping);
    let stopping = Instant::now();
    // The state task is gone, and with it the discovery handle: the thread ends and hands the probes back.
    match discovery_thread.join() {
        Ok(probes) => drop(probes),
        Err(_) => log::error!("the discovery thread panicked"),
    }
    log::info!("probes detached in {:?}", stopping.elapsed());
    server::remove_socket(&config.socket);
    // The state task is gone, so are the purger's and the report thread's senders: they finish their queues.
    threads.join();
    failure.map_or(Ok(()), Err)
}
