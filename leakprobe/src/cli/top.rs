//! `leakprobe top`.

use anyhow::Result;
use clap::Args;

use super::{Connect, client, format};
use crate::protocol::{DEFAULT_TOP_LIMIT, TOP_PATH, TopResponse};

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    connect: Connect,
    /// Only stacks of this process (host pid).
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
    /// Show at most N stacks.
    #[arg(long, short = 'n', value_name = "N", default_value_t = DEFAULT_TOP_LIMIT)]
    limit: usize,
    /// Frames shown per stack in the table (JSON has them all).
    #[arg(long, value_name = "N", default_value_t = 8)]
    depth: usize,
    /// Print JSON (the API's `TopResponse`) instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: TopArgs) -> Result<()> {
    let pid = args.pid.map(|pid| format!("&pid={pid}")).unwrap_or_default();
    let query = format!("{TOP_PATH}?limit={}{pid}", args.limit);
    let response: TopResponse = client::get(&args.connect.socket, &query).await?;
    if args.json {
        return format::print_json(&response);
    }
    if response.stacks.is_empty() {
        println!("no live allocations tracked{}", args.pid.map(|p| format!(" for pid {p}")).unwrap_or_default());
        return Ok(());
    }
    let mut table = format::table(&["PID", "COMM", "LIVE", "COUNT", "ALLOCATED", "STACK"]);
    for stack in &response.stacks {
        let mut frames: Vec<String> = stack.frames.iter().take(args.depth).map(format::frame).collect();
        if stack.frames.len() > args.depth {
            frames.push(format!("... {} more", stack.frames.len() - args.depth));
        }
        if frames.is_empty() {
            frames.push("(no stack)".into());
        }
        table.add_row(vec![
            stack.pid.to_string(),
            stack.comm.clone(),
            format::size(stack.live_bytes),
            stack.live_count.to_string(),
            format::size(stack.total_bytes),
            frames.join("\n"),
        ]);
    }
    println!("{table}");
    Ok(())
}
