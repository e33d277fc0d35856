//! `leakprobe faults`: tier 0's view, which code paths first touched each process's growing memory, and which
//! mapped it.

use anyhow::Result;
use clap::Args;

use super::{Connect, client, format};
use crate::protocol::{DEFAULT_TOP_LIMIT, FAULTS_PATH, FaultsQuery, FaultsResponse, tiers::DEFAULT_FAULT_STACKS};

#[derive(Debug, Args)]
pub struct FaultsArgs {
    #[command(flatten)]
    connect: Connect,
    /// Only this process (host pid).
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
    /// Only processes with this name (`comm`, exact).
    #[arg(long, value_name = "NAME")]
    comm: Option<String>,
    /// Only processes whose anonymous memory grows steadily (tier 1's candidates).
    #[arg(long)]
    growing: bool,
    /// Show at most N processes, most faulted-in bytes first.
    #[arg(long, short = 'n', value_name = "N", default_value_t = DEFAULT_TOP_LIMIT)]
    limit: usize,
    /// Stacks shown per process, most bytes first.
    #[arg(long, value_name = "M", default_value_t = DEFAULT_FAULT_STACKS)]
    stacks: usize,
    /// Frames shown per stack in the table (JSON has them all).
    #[arg(long, value_name = "N", default_value_t = 8)]
    depth: usize,
    /// Print JSON (the API's `FaultsResponse`) instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: FaultsArgs) -> Result<()> {
    let query = FaultsQuery {
        pid: args.pid,
        comm: args.comm,
        limit: Some(args.limit),
        stacks: Some(args.stacks),
        growing: args.growing.then_some(true),
    };
    let response: FaultsResponse = client::get(&args.connect.socket, &client::with_query(FAULTS_PATH, &query)?).await?;
    if args.json {
        return format::print_json(&response);
    }
    if response.processes.is_empty() {
        println!("no sampled page faults{}", args.pid.map(|p| format!(" for pid {p}")).unwrap_or_default());
        return Ok(());
    }
    let mut table = format::table(&["PID", "COMM", "ANON", "GROWTH", "GROWING", "TIER 1", "FAULTED", "SHARE", "STACK"]);
    for process in &response.processes {
        let anon = process.rss_anon_bytes.map(|a| a + process.swap_bytes.unwrap_or(0));
        let tier1 = process.tier1.as_ref().map_or_else(|| "-".to_owned(), |t| format!("{} ({})", t.mode, t.trigger));
        for (i, stack) in process.stacks.iter().enumerate() {
            let first = i == 0;
            table.add_row(vec![
                if first { process.pid.to_string() } else { String::new() },
                if first { process.comm.clone() } else { String::new() },
                if first { anon.map_or_else(|| "-".into(), format::size) } else { String::new() },
                if first { format::rate(process.anon_growth.rate_bytes_per_second) } else { String::new() },
                if first { if process.growing { "yes" } else { "no" }.into() } else { String::new() },
                if first { tier1.clone() } else { String::new() },
                format!("~{}", format::size(stack.bytes)),
                format!("{:.0}%", stack.share * 100.0),
                format::stack_cell(&stack.frames, args.depth),
            ]);
        }
    }
    println!("{table}");
    if response.processes.iter().any(|p| !p.map_stacks.is_empty()) {
        let mut maps = format::table(&["PID", "COMM", "VMDATA", "GROWTH", "MAPPED", "SHARE", "CALL", "STACK"]);
        for process in response.processes.iter().filter(|p| !p.map_stacks.is_empty()) {
            for (i, stack) in process.map_stacks.iter().enumerate() {
                let first = i == 0;
                maps.add_row(vec![
                    if first { process.pid.to_string() } else { String::new() },
                    if first { process.comm.clone() } else { String::new() },
                    if first { process.vm_data_bytes.map_or_else(|| "-".into(), format::size) } else { String::new() },
                    if first { format::rate(process.data_growth.rate_bytes_per_second) } else { String::new() },
                    format!("~{}", format::size(stack.bytes)),
                    format!("{:.0}%", stack.share * 100.0),
                    stack.sources.join(", "),
                    format::stack_cell(&stack.frames, args.depth),
                ]);
            }
        }
        println!("\nanonymous memory mapped (mmap, brk), by the stacks that asked for it:");
        println!("{maps}");
    }
    println!(
        "(bytes are estimates from faults and mappings sampled every {} on average)",
        format::size(response.sample_interval_bytes)
    );
    Ok(())
}
