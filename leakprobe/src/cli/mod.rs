//! The command line: `leakprobe run` (the daemon) and the client commands that query it.

#[cfg(feature = "bench")]
mod bench_ingest;
#[cfg(feature = "bench")]
mod bench_unwind;
mod client;
mod export;
mod faults;
mod format;
mod oom;
mod processes;
#[cfg(test)]
mod reference;
mod run;
pub mod settings;
mod status;
mod top;
mod trace;

use std::{ffi::OsString, path::PathBuf};

use anyhow::{Context as _, Result};
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use crate::{
    config::{DEFAULT_SOCKET, FileConfig},
    core::analysis::Verdict,
    protocol::{DEFAULT_TOP_LIMIT, SortBy, TopQuery},
};

/// System-wide memory-leak profiler: which call stacks, in which processes, hold memory that is never freed.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: page faults of every process (tier 0), malloc-family probes where memory grows (tier 1),
    /// and serve queries (needs root, or `CAP_SYS_ADMIN`, `CAP_SYS_PTRACE` and `CAP_DAC_READ_SEARCH`).
    Run(Box<run::RunArgs>),
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
    /// Show, per process, the code paths that first touched its anonymous memory (tier 0, every process).
    Faults(faults::FaultsArgs),
    /// Attach the malloc-family probes to one process (tier 1), or detach them with --stop.
    Trace(trace::TraceArgs),
    /// Measure the daemon's stack unwinding on this process's own stack (for `cargo xtask bench`).
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    BenchUnwind(bench_unwind::BenchUnwindArgs),
    /// Measure the daemon's ingest end to end: the eBPF object's event generator fills the real ring buffer at a
    /// given rate on one CPU, the daemon's ingest and state tasks consume it on another (for `cargo xtask bench`;
    /// needs root).
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    BenchIngest(bench_ingest::BenchIngestArgs),
}

/// Which rows a listing shows, and in what order (`top`, `processes`).
#[derive(Debug, Args)]
struct Selection {
    /// Only this process (host pid).
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
    /// Only processes with this name (`comm`, exact).
    #[arg(long, value_name = "NAME")]
    comm: Option<String>,
    /// Show at most N rows.
    #[arg(long, short = 'n', value_name = "N", default_value_t = DEFAULT_TOP_LIMIT)]
    limit: usize,
    /// Order by live bytes, sustained growth (the smaller of the window and recent rates), live allocations,
    /// or age of the oldest live allocation.
    #[arg(long, value_enum, default_value_t = SortBy::Bytes)]
    by: SortBy,
    /// Only rows with this verdict.
    #[arg(long, value_enum)]
    verdict: Option<Verdict>,
    /// Growth over this much recent history (e.g. `5m`) instead of the daemon's whole window.
    #[arg(long, value_name = "DURATION")]
    window: Option<String>,
}

impl Selection {
    fn query(self) -> TopQuery {
        TopQuery {
            pid: self.pid,
            comm: self.comm,
            limit: Some(self.limit),
            by: Some(self.by),
            verdict: self.verdict,
            window: self.window,
        }
    }
}

/// How a client reaches the daemon.
#[derive(Debug, Args)]
struct Connect {
    /// The daemon's unix socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET, env = "LEAKPROBE_SOCKET")]
    socket: PathBuf,
}

impl Cli {
    /// The command line's definition, with every setting of `run` given its environment variable.
    pub fn definition() -> clap::Command {
        Self::command().mut_subcommand("run", settings::with_env)
    }

    /// Parses the command line (clap's errors, `--help` and `--version` exit here), with `run`'s settings
    /// layered: flag, then environment, then the `--config` file, then the built-in default. Fails on a file that
    /// cannot be read or holds a bad key or value.
    pub fn parse_layered(args: impl IntoIterator<Item = OsString>) -> Result<Self> {
        let args: Vec<OsString> = args.into_iter().collect();
        let mut definition = Self::definition();
        let matches = definition.try_get_matches_from_mut(&args).unwrap_or_else(|err| err.exit());
        let file = match matches.subcommand() {
            Some(("run", run)) => match settings::config_path(run) {
                Some(path) => {
                    let file = FileConfig::load(&path)?;
                    let run = definition.find_subcommand("run").cloned().context("no run subcommand")?;
                    let run = settings::with_file(run, &file).with_context(|| format!("in {}", path.display()))?;
                    definition = Self::definition().mut_subcommand("run", |_| run);
                    Some(file)
                }
                None => None,
            },
            _ => None,
        };
        let matches = match file {
            Some(_) => definition.try_get_matches_from_mut(&args).unwrap_or_else(|err| err.exit()),
            None => matches,
        };
        let mut cli = Self::from_arg_matches(&matches).unwrap_or_else(|err| err.format(&mut definition).exit());
        if let (Command::Run(run), Some(file)) = (&mut cli.command, file) {
            run.set_verdict(file.verdict);
        }
        Ok(cli)
    }

    /// Whether this runs the daemon (rather than a client of it).
    pub fn is_daemon(&self) -> bool {
        matches!(self.command, Command::Run(_))
    }

    /// Log level when `RUST_LOG` is unset: the daemon reports what it does, clients only warnings.
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Run(_) => "info",
            _ => "warn",
        }
    }

    /// Runs the command.
    pub fn run(self) -> Result<()> {
        #[cfg(feature = "bench")]
        if let Command::BenchIngest(args) = &self.command {
            // Outside any runtime: it blocks on the state owner's replies, and runs its own runtime on one CPU.
            return bench_ingest::run(args);
        }
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if self.is_daemon() {
            // Before the first thread: every thread inherits the restricted sets and drops the start-up ones.
            crate::privileges::restrict_process()?;
            builder.on_thread_start(crate::privileges::drop_in_this_thread);
        }
        let runtime = builder.worker_threads(2).enable_all().build().context("starting the async runtime")?;
        runtime.block_on(async move {
            match self.command {
                Command::Run(args) => run::run(*args).await,
                Command::Top(args) => top::run(args).await,
                Command::Stacks(args) => top::run_stacks(args).await,
                Command::Processes(args) => processes::run(args).await,
                Command::Status(args) => status::run(args).await,
                Command::Oom(args) => oom::run(args).await,
                Command::Export(args) => export::run(args).await,
                Command::Faults(args) => faults::run(args).await,
                Command::Trace(args) => trace::run(args).await,
                #[cfg(feature = "bench")]
                Command::BenchUnwind(args) => bench_unwind::run(&args),
                #[cfg(feature = "bench")]
                Command::BenchIngest(_) => unreachable!("run before the runtime starts"),
            }
        })
    }
}
