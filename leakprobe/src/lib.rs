//! leakprobe: a system-wide memory-leak profiler daemon for Linux.
//!
//! Floors, each using only the ones below it:
//! - pure core: [`core`] (table, stack interning), [`protocol`];
//! - middle: [`probes`], [`ingest`], [`symbolize`], [`procfs`], [`oom`] (report store);
//! - top: [`server`], [`daemon`], [`cli`], [`config`].

pub mod cli;
pub mod config;
pub mod core;
pub mod daemon;
pub mod ingest;
pub mod oom;
pub mod probes;
pub mod procfs;
pub mod protocol;
pub mod server;
pub mod symbolize;
