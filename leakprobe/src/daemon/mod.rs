//! `leakprobe run`: wiring, supervision, shutdown.
//!
//! Start-up order: check and load (nothing attached yet), start the consumers, attach, then bind the socket
//! (so a socket that answers means the probes are attached). Shutdown on SIGINT/SIGTERM or on the first task
//! to fail: every task stops, the probes are detached (dropping the `Ebpf` closes every link) and the socket
//! is removed.

pub mod oom;
mod purge;
mod query;
pub mod state;
pub mod tiers;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64},
    },
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use self::{
    oom::OomTracker,
    state::{Request, State},
    tiers::Tiers,
};
use crate::{
    core::{
        faults::{FaultLimits, FaultTable},
        table::{AnalysisConfig, Limits, Table},
        tier1::{Tier1, Tier1Config},
    },
    ingest,
    metrics::{
        METRICS_PATH, MetricsLimits, MetricsSnapshot,
        http::{self, SnapshotSource},
    },
    oom::{
        OomStats,
        store::{ReportStore, StoreLimits},
    },
    probes::{ProbeConfig, Probes},
    procfs::Clock,
    server,
    symbolize::{CacheLimits, SymbolizerHandle},
};

/// Everything `leakprobe run` needs.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub socket: PathBuf,
    pub socket_mode: u32,
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
    /// Tier 1 (escalation) and the CPU budget.
    pub tier1: Tier1Config,
    /// Limits of tier 0's fault table.
    pub fault_limits: FaultLimits,
    /// When not empty, only processes with these names are escalated automatically.
    pub escalate_only: Vec<String>,
}

/// The metrics endpoint.
#[derive(Clone, Copy, Debug)]
pub struct MetricsConfig {
    pub addr: SocketAddr,
    pub limits: MetricsLimits,
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
        self.requests.send(Request::Metrics(self.limits, tx)).await.ok()?;
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
    let source = StateSnapshots { requests, limits: metrics.limits };
    tasks.spawn(async move {
        http::serve(listener, source, shutdown).await.context("serving metrics")?;
        Ok("metrics")
    });
}

/// Attaches the probes and hands them to tier 1, which attaches and detaches pid-scoped ones from then on.
fn attach(
    mut probes: Probes,
    config: &DaemonConfig,
    pid_sample_interval: aya::maps::HashMap<aya::maps::MapData, u32, u64>,
    pid_calls: aya::maps::PerCpuHashMap<aya::maps::MapData, u32, u64>,
) -> Result<(Vec<crate::protocol::AttachPoint>, Tiers)> {
    probes.attach()?;
    let points = probes.attach_points().to_vec();
    log::info!(
        "attached {} probes (malloc probes: {}) to {}",
        points.len(),
        config.probes.malloc_probes.as_str(),
        probes.libc().path.display()
    );
    let mut tiers = Tiers::new(
        FaultTable::new(config.fault_limits, config.probes.fault_sample_interval),
        Tier1::new(config.tier1),
        probes,
        (pid_sample_interval, pid_calls),
        config.analysis.sample_interval,
    );
    tiers.escalate_only.clone_from(&config.escalate_only);
    Ok((points, tiers))
}

/// Runs the daemon until SIGINT/SIGTERM.
pub async fn run(config: DaemonConfig) -> Result<()> {
    let started = Instant::now();
    server::check_socket_free(&config.socket)?;
    // Before loading anything: a port in use is a one-line error at once.
    let metrics_listener = match &config.metrics {
        Some(metrics) => Some(http::bind(metrics.addr).await?),
        None => None,
    };
    let (probes, maps) = Probes::load(&config.probes)?;
    let shutdown = CancellationToken::new();
    let (batch_tx, batch_rx) = mpsc::channel(64);
    let (request_tx, request_rx) = mpsc::channel(64);
    let purged_entries = Arc::new(AtomicU64::new(0));
    let caught_up = Arc::new(AtomicBool::new(true));
    let caught_up_state = caught_up.clone();
    let (purger, purger_thread) = purge::spawn(maps.live, purged_entries.clone()).context("starting the purger")?;
    let oom_dir = config.state_dir.join("oom");
    let (store, warnings) = ReportStore::load(&oom_dir, config.oom_limits);
    for warning in warnings {
        log::warn!("{warning}");
    }
    let oom_stats = Arc::new(OomStats::default());
    let (oom_tx, oom_thread) =
        crate::oom::spawn(store, config.log_oom, oom_stats.clone()).context("starting the OOM report thread")?;
    let mut tasks: JoinSet<Result<&'static str>> = JoinSet::new();
    let token = shutdown.clone();
    tasks.spawn(async move {
        ingest::run(maps.events, batch_tx, caught_up, token).await.context("reading the ring buffer")?;
        Ok("ingest")
    });
    // The consumer runs: attach now (events wait in the ring buffer until the state task reads them).
    let (points, tiers) = attach(probes, &config, maps.pid_sample_interval, maps.pid_calls)?;
    let state = State {
        table: Table::new(config.limits, config.analysis.clone()),
        counters: maps.counters,
        purger,
        purged_entries,
        symbolizer: SymbolizerHandle::spawn(CacheLimits::default()).context("starting the symbolizer")?,
        clock: Clock::new(),
        started,
        attach_points: Vec::new(),
        decode_errors: 0,
        batches: 0,
        requests: request_tx.clone(),
        next_tick: 0,
        as_of_ns: 0,
        ingest_caught_up: caught_up_state,
        // Enabled by `Request::Attached`.
        oom: OomTracker::new(false, oom_tx.clone(), oom_stats, oom_dir),
        tiers,
    };
    let token = shutdown.clone();
    tasks.spawn(async move {
        state.run(batch_rx, request_rx, token).await;
        Ok("state")
    });
    request_tx.send(Request::Attached(points)).await.map_err(|_| anyhow!("the state task ended at start-up"))?;

    let listener = server::bind(&config.socket, config.socket_mode)?;
    let server_requests = request_tx.clone();
    log::info!("serving on {}", config.socket.display());
    let token = shutdown.clone();
    tasks.spawn(async move {
        server::serve(listener, server_requests, oom_tx, token).await.context("serving the socket API")?;
        Ok("server")
    });
    if let (Some(listener), Some(metrics)) = (metrics_listener, config.metrics) {
        spawn_metrics(&mut tasks, listener, metrics, request_tx, shutdown.clone());
    }
    let token = shutdown.clone();
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
    // The state task dropped the probes (detaching every one) when it ended.
    server::remove_socket(&config.socket);
    // The state task is gone, so is the purger's sender: the thread finishes its queue and ends.
    let _ = purger_thread.join();
    // Likewise for the report thread once the last report in flight is written.
    let _ = oom_thread.join();
    failure.map_or(Ok(()), Err)
}
