//! leakprobe: a system-wide memory-leak profiler daemon for Linux.
//!
//! Floors, each using only the ones below it:
//! - pure core: [`core`] (table, stack interning), [`protocol`], [`export`];
//! - middle: [`probes`], [`ingest`], [`symbolize`], [`unwind`] (stacks from stack copies), [`procfs`], [`oom`]
//!   (report store), [`metrics`] (exposition and its HTTP endpoint);
//! - top: [`server`], [`daemon`], [`cli`], [`config`]; [`fuzz`] (entry points of the fuzz targets).

pub mod cli;
pub mod config;
pub mod core;
pub mod daemon;
pub mod export;
pub mod fuzz;
pub mod ingest;
pub mod metrics;
pub mod oom;
pub mod probes;
pub mod procfs;
pub mod protocol;
pub mod server;
pub mod symbolize;
pub mod unwind;
