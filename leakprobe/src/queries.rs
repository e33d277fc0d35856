//! The questions the socket API and the metrics endpoint ask the daemon's state owner, each with the channel its
//! answer comes back on. A floor below both `server` and `daemon`, so that neither imports the other's types; the
//! daemon's internal notices (ticks, discovery reports, attach results) stay private to it (`daemon::messages`).

use tokio::sync::oneshot;

use crate::{
    metrics::{MetricsLimits, MetricsSnapshot},
    protocol::{
        FaultsQuery, FaultsResponse, HeapFilter, HeapProfile, ProcessesResponse, StatusResponse, TopQuery, TopResponse,
        TraceRequest, TraceResponse,
    },
};

/// Why a trace request failed: the HTTP status the server answers with, and the message.
pub type TraceError = (u16, String);

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
