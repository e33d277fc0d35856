//! leakprobe: a system-wide memory-leak profiler daemon for Linux.
//!
//! Floors, each using only the ones below it:
//! - ground: [`privileges`] (capabilities, used by every thread the daemon starts);
//! - pure core: [`core`] (table, stack interning), [`protocol`], [`export`];
//! - middle: [`queries`] (what the server asks the daemon), [`probes`], [`ingest`], [`symbolize`], [`unwind`] (stacks from stack copies), [`procfs`], [`oom`]
//!   (report store), [`metrics`] (exposition and its HTTP endpoint);
//! - top: [`server`], [`daemon`], [`cli`], [`config`]; [`fuzz`] (entry points of the fuzz targets).

pub mod cli;
pub mod config;
pub mod core;
pub mod daemon;
pub mod export;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
pub mod ingest;
pub mod metrics;
pub mod oom;
pub mod privileges;
pub mod probes;
pub mod procfs;
pub mod protocol;
pub mod push;
pub mod python;
pub mod queries;
pub mod segments;
pub mod server;
pub mod symbolize;
pub mod unwind;

#[cfg(test)]
mod module_graph_tests;
