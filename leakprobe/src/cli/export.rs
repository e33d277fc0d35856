//! `leakprobe export`.

use std::{
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use super::{Connect, client};
use crate::protocol::{EXPORT_PATH, ExportFormat, ExportQuery};

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    connect: Connect,
    /// pprof: gzipped protobuf for `go tool pprof`, Pyroscope, Parca; folded: folded stacks of live bytes for any
    /// flamegraph tool; svg: a flamegraph of live bytes; json: the stacks as the API's `TopResponse`.
    #[arg(long, value_enum)]
    format: ExportFormat,
    /// Only stacks of this process (host pid).
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
    /// Write to FILE instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
}

pub async fn run(args: ExportArgs) -> Result<()> {
    if args.output.is_none() && args.format.is_binary() && std::io::stdout().is_terminal() {
        bail!("refusing to write a binary pprof profile to a terminal: use -o FILE or redirect standard output");
    }
    let query = ExportQuery { format: args.format, pid: args.pid };
    let body = client::get_bytes(&args.connect.socket, &client::with_query(EXPORT_PATH, &query)?).await?;
    if let Some(path) = &args.output {
        return std::fs::write(path, &body).with_context(|| format!("writing {}", path.display()));
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&body).and_then(|()| stdout.flush()).context("writing to standard output")
}
