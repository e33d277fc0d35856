//! `leakprobe run`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;

use crate::{
    config::{DEFAULT_MAX_ALLOCATIONS, DEFAULT_MAX_STACKS, DEFAULT_SOCKET, DEFAULT_SOCKET_MODE, DEFAULT_STATE_DIR},
    core::table::Limits,
    daemon::{self, DaemonConfig},
    oom::store::{DEFAULT_MAX_BYTES, DEFAULT_MAX_REPORTS, StoreLimits},
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
    /// Directory for state that outlives the daemon: OOM reports are kept in its `oom/` subdirectory
    /// (created if missing).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR, env = "LEAKPROBE_STATE_DIR")]
    state_dir: PathBuf,
    /// OOM reports kept at most; the oldest are removed first.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_REPORTS)]
    max_oom_reports: usize,
    /// Bytes of OOM report files kept at most; the oldest are removed first (the newest report always stays).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BYTES)]
    max_oom_report_bytes: u64,
    /// Do not log a line for each OOM kill (reports are still written).
    #[arg(long)]
    no_log_oom: bool,
}

pub async fn run(args: RunArgs) -> Result<()> {
    let socket_mode = u32::from_str_radix(args.socket_mode.trim_start_matches("0o"), 8)
        .with_context(|| format!("--socket-mode {:?} is not an octal mode", args.socket_mode))?;
    let config = DaemonConfig {
        socket: args.socket,
        socket_mode,
        probes: ProbeConfig { libc: args.libc, sys: SysPaths::default(), max_live_allocations: args.max_allocations },
        limits: Limits { max_allocations: args.max_allocations as usize, max_stacks: args.max_stacks as usize },
        state_dir: args.state_dir,
        oom_limits: StoreLimits { max_reports: args.max_oom_reports, max_bytes: args.max_oom_report_bytes },
        log_oom: !args.no_log_oom,
    };
    daemon::run(config).await
}
