//! `leakprobe processes`: the tracked heap next to RSS, per process.

use anyhow::Result;
use clap::Args;

use super::{Connect, client, format};
use crate::{
    core::analysis::Verdict,
    protocol::{DEFAULT_TOP_LIMIT, PROCESSES_PATH, ProcessesResponse, SortBy, TopQuery},
};

#[derive(Debug, Args)]
pub struct ProcessesArgs {
    #[command(flatten)]
    connect: Connect,
    /// Only this process (host pid).
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
    /// Only processes with this name (`comm`, exact).
    #[arg(long, value_name = "NAME")]
    comm: Option<String>,
    /// Show at most N processes.
    #[arg(long, short = 'n', value_name = "N", default_value_t = DEFAULT_TOP_LIMIT)]
    limit: usize,
    /// Order by heap bytes, heap growth, live allocations, or age of the oldest live allocation.
    #[arg(long, value_enum, default_value_t = SortBy::Bytes)]
    by: SortBy,
    /// Only processes whose heap has this verdict.
    #[arg(long, value_enum)]
    verdict: Option<Verdict>,
    /// Growth over this much recent history (e.g. `5m`) instead of the daemon's whole window.
    #[arg(long, value_name = "DURATION")]
    window: Option<String>,
    /// Print JSON (the API's `ProcessesResponse`) instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: ProcessesArgs) -> Result<()> {
    let query = TopQuery {
        pid: args.pid,
        comm: args.comm,
        limit: Some(args.limit),
        by: Some(args.by),
        verdict: args.verdict,
        window: args.window,
    };
    let response: ProcessesResponse =
        client::get(&args.connect.socket, &client::with_query(PROCESSES_PATH, &query)?).await?;
    if args.json {
        return format::print_json(&response);
    }
    if response.processes.is_empty() {
        println!("no process tracked");
        return Ok(());
    }
    let mut table = format::table(&[
        "PID",
        "COMM",
        "HEAP",
        "HEAP GROWTH",
        "VERDICT",
        "RSS",
        "RSS GROWTH",
        "ANON",
        "ANON GROWTH",
        "SWAP",
        "SWAP GROWTH",
        "HEAP SHARE",
    ]);
    let opt_size = |bytes: Option<u64>| bytes.map_or_else(|| "-".to_owned(), format::size);
    for p in &response.processes {
        table.add_row(vec![
            p.pid.to_string(),
            p.comm.clone(),
            format::size(p.live_bytes),
            format::rate(p.heap_growth.rate_bytes_per_second),
            p.verdict.as_str().to_owned(),
            opt_size(p.rss_bytes),
            format::rate(p.rss_growth.rate_bytes_per_second),
            opt_size(p.rss_anon_bytes),
            format::rate(p.rss_anon_growth.rate_bytes_per_second),
            opt_size(p.swap_bytes),
            format::rate(p.swap_growth.rate_bytes_per_second),
            p.heap_share_of_anon_growth.map_or_else(|| "-".to_owned(), |share| format!("{:.0}%", share * 100.0)),
        ]);
    }
    println!("{table}");
    Ok(())
}
