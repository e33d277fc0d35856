//! `leakprobe run`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;

use crate::{
    config::{DEFAULT_MAX_ALLOCATIONS, DEFAULT_MAX_STACKS, DEFAULT_SOCKET, DEFAULT_SOCKET_MODE},
    core::table::Limits,
    daemon::{self, DaemonConfig},
    probes::{ProbeConfig, preflight::SysPaths},
};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Unix socket to serve the query API on (HTTP + JSON); its directory is created.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET, env = "LEAKPROBE_SOCKET")]
    socket: PathBuf,
    /// Permissions of the socket file, in octal.
    #[arg(long, value_name = "MODE", default_value = DEFAULT_SOCKET_MODE)]
    socket_mode: String,
    /// The C library to probe (default: the host's, as this process maps it).
    #[arg(long, value_name = "PATH")]
    libc: Option<PathBuf>,
    /// Live allocations tracked at most, over all processes: the size of the kernel's live-address map and
    /// of the daemon's table (further ones are counted in `live_map_full`).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ALLOCATIONS)]
    max_allocations: u32,
    /// Distinct call stacks stored at most (further ones are accounted under an overflow stack).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_STACKS)]
    max_stacks: u32,
}

pub async fn run(args: RunArgs) -> Result<()> {
    let socket_mode = u32::from_str_radix(args.socket_mode.trim_start_matches("0o"), 8)
        .with_context(|| format!("--socket-mode {:?} is not an octal mode", args.socket_mode))?;
    let config = DaemonConfig {
        socket: args.socket,
        socket_mode,
        probes: ProbeConfig { libc: args.libc, sys: SysPaths::default(), max_live_allocations: args.max_allocations },
        limits: Limits { max_allocations: args.max_allocations as usize, max_stacks: args.max_stacks as usize },
    };
    daemon::run(config).await
}
