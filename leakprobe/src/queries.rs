//! The questions the socket API and the metrics endpoint ask the daemon's state owner, each with the channel its
//! answer comes back on. A floor below both `server` and `daemon`, so that neither imports the other's types; the
//! daemon's internal notices (ticks, discovery reports, attach results) stay private to it (`daemon::messages`).

use tokio::sync::oneshot;

use crate::{
    metrics::{MetricsLimits, MetricsSnapshot},
    probes::discover::AttachPidError,
    protocol::{
        FaultsQuery, FaultsResponse, HeapFilter, HeapProfile, ProcessesResponse, StatusResponse, TopQuery, TopResponse,
        TraceRequest, TraceResponse,
    },
};

/// Why a trace request (`POST` or `DELETE /v1/trace`) failed; `server.rs` chooses its HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    #[error("the daemon does not trace itself")]
    OwnProcess,
    #[error("`for` is not a duration like 30s or 10m: {0}")]
    BadDuration(String),
    #[error("no process {0}")]
    NoProcess(u32),
    #[error("pid {0} is not traced")]
    NotTraced(u32),
    #[error("--malloc-probes all: every process is traced already")]
    TracedEverywhere,
    #[error("{0} processes are traced already (the most at once)")]
    Full(usize),
    #[error("a later trace request for pid {0} replaced it")]
    Replaced(u32),
    /// The escalation ended before its answer was ready.
    #[error("pid {0} is not traced any more")]
    Ended(u32),
    /// The kernel refused the process's sampling interval.
    #[error("setting the interval: {0}")]
    Interval(String),
    #[error("the probes are gone (shutting down)")]
    ShuttingDown,
    /// The discovery thread could not attach the process's probes.
    #[error(transparent)]
    Attach(#[from] AttachPidError),
}

/// A question to the state owner.
#[derive(Debug)]
pub enum Query {
    /// Stacks for `/v1/top` and `/v1/stacks`.
    Top(TopQuery, oneshot::Sender<TopResponse>),
    Processes(TopQuery, oneshot::Sender<ProcessesResponse>),
    Status(oneshot::Sender<StatusResponse>),
    /// The live heap of the processes `HeapFilter` selects, for `/debug/pprof/heap` and pushes: at most this many
    /// stacks with the most of its sample type, symbolized, and the rest summed per process.
    Heap(HeapFilter, usize, oneshot::Sender<HeapProfile>),
    /// A snapshot for one scrape of `/metrics`.
    Metrics(MetricsLimits, oneshot::Sender<MetricsSnapshot>),
    /// Tier 0's fault stacks for `/v1/faults`.
    Faults(FaultsQuery, oneshot::Sender<FaultsResponse>),
    /// `POST /v1/trace`.
    Trace(TraceRequest, oneshot::Sender<Result<TraceResponse, TraceError>>),
    /// `DELETE /v1/trace?pid=PID`.
    Untrace(u32, oneshot::Sender<Result<TraceResponse, TraceError>>),
}
