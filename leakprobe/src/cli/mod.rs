//! The command line: `leakprobe run` (the daemon) and the client commands that query it.

mod client;
mod export;
mod format;
mod oom;
mod processes;
mod run;
mod status;
mod top;

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::DEFAULT_SOCKET;

/// System-wide memory-leak profiler: which call stacks, in which processes, hold memory that is never freed.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: probe the malloc family in every process and serve queries (needs root).
    Run(run::RunArgs),
    /// Show the stacks holding the most live (allocated, not freed) bytes, or growing fastest.
    Top(top::TopArgs),
    /// Show every stack of one process.
    Stacks(top::StacksArgs),
    /// Show each process's tracked heap next to its RSS, anonymous RSS and swap, with growth rates.
    Processes(processes::ProcessesArgs),
    /// Show the daemon's probes, event and loss counters, and table sizes.
    Status(status::StatusArgs),
    /// Export the live heap as a pprof profile, folded stacks, a flamegraph SVG, or JSON.
    Export(export::ExportArgs),
    /// List the OOM kills the daemon recorded (what the victim's heap held), or show one.
    Oom(oom::OomArgs),
}

/// How a client reaches the daemon.
#[derive(Debug, Args)]
struct Connect {
    /// The daemon's unix socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET, env = "LEAKPROBE_SOCKET")]
    socket: PathBuf,
}

impl Cli {
    /// Log level when `RUST_LOG` is unset: the daemon reports what it does, clients only warnings.
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Run(_) => "info",
            _ => "warn",
        }
    }

    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        runtime.block_on(async move {
            match self.command {
                Command::Run(args) => run::run(args).await,
                Command::Top(args) => top::run(args).await,
                Command::Stacks(args) => top::run_stacks(args).await,
                Command::Processes(args) => processes::run(args).await,
                Command::Status(args) => status::run(args).await,
                Command::Oom(args) => oom::run(args).await,
                Command::Export(args) => export::run(args).await,
            }
        })
    }
}
