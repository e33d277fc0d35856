//! What reaches the state owner: the server's queries, and the daemon's own notices (ticks, attach results,
//! discovery reports), which stay private to the daemon. Its own module, so that the discovery thread and the
//! state owner both use it without importing each other.

use std::collections::BTreeMap;

use crate::{
    core::{stacks::StackId, table::RssSample},
    probes::discover::AttachPidError,
    protocol::{AttachPoint, DiscoveryStatus, ProgramStats},
    queries::Query,
};

/// A message to the state owner.
#[derive(Debug)]
pub enum Request {
    /// A question from the server or the metrics endpoint.
    Query(Query),
    /// RSS samples for tick `tick`, read off the state task at `read_ns`; the tick is recorded when they
    /// arrive.
    Tick {
        tick: u64,
        samples: Vec<(u32, RssSample, Option<String>)>,
        read_ns: u64,
        /// Tracked processes gone from `/proc` (or zombies) at `read_ns`.
        gone: Vec<u32>,
    },
    /// The probes are attached (sent once, after attach).
    Attached(Vec<AttachPoint>),
    /// What discovery attached to, found and spent (sent after each scan).
    Discovery { points: Vec<AttachPoint>, status: Box<DiscoveryStatus>, counters: BTreeMap<String, u64> },
    /// The discovery thread attached (or failed to attach) tier 1's probes to a process.
    Tier1Attached { pid: u32, result: Result<(), AttachPidError> },
    /// Run-time statistics of the loaded programs, asked for by the CPU budget.
    ProgramStats(Vec<ProgramStats>),
    /// New stacks' identities by their resolved frames (see [`crate::core::table::Table::identify`]).
    Identities(Vec<(u32, StackId, u64)>),
}

impl From<Query> for Request {
    fn from(query: Query) -> Self {
        Self::Query(query)
    }
}
