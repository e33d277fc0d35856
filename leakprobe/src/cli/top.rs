//! `leakprobe top` and `leakprobe stacks`.

use anyhow::Result;
use clap::Args;

use super::{Connect, Selection, client, format};
use crate::protocol::{STACKS_PATH, TOP_PATH, TopQuery, TopResponse};

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    connect: Connect,
    #[command(flatten)]
    selection: Selection,
    #[command(flatten)]
    output: Output,
}

#[derive(Debug, Args)]
pub struct StacksArgs {
    #[command(flatten)]
    connect: Connect,
    /// The process (host pid).
    #[arg(long, value_name = "PID")]
    pid: u32,
    /// Growth over this much recent history (e.g. `5m`) instead of the daemon's whole window.
    #[arg(long, value_name = "DURATION")]
    window: Option<String>,
    #[command(flatten)]
    output: Output,
}

/// How stacks are printed.
#[derive(Debug, Args)]
struct Output {
    /// Frames shown per stack in the table (JSON has them all).
    #[arg(long, value_name = "N", default_value_t = 8)]
    depth: usize,
    /// Print JSON (the API's `TopResponse`) instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: TopArgs) -> Result<()> {
    let pid = args.selection.pid;
    let query = args.selection.query();
    let response: TopResponse = client::get(&args.connect.socket, &client::with_query(TOP_PATH, &query)?).await?;
    print(&response, &args.output, pid)
}

pub async fn run_stacks(args: StacksArgs) -> Result<()> {
    let query = TopQuery { pid: Some(args.pid), window: args.window, ..TopQuery::default() };
    let response: TopResponse = client::get(&args.connect.socket, &client::with_query(STACKS_PATH, &query)?).await?;
    print(&response, &args.output, Some(args.pid))
}

fn print(response: &TopResponse, output: &Output, pid: Option<u32>) -> Result<()> {
    if output.json {
        return format::print_json(response);
    }
    if response.stacks.is_empty() {
        println!("no live allocations tracked{}", pid.map(|p| format!(" for pid {p}")).unwrap_or_default());
        return Ok(());
    }
    let places: Vec<format::Place> = response
        .stacks
        .iter()
        .map(|s| format::Place::of(s.pid, s.identity.ns_pid, s.identity.container_id.as_deref()))
        .collect();
    let columns = format::PlaceColumns::for_rows(&places);
    let mut header = vec!["PID"];
    header.extend(columns.headers());
    header.extend(["COMM", "LIVE", "COUNT", "GROWTH", "VERDICT", "OLDEST", "STACK"]);
    let mut table = format::table(&header);
    for (stack, place) in response.stacks.iter().zip(&places) {
        let mut row = vec![stack.pid.to_string()];
        row.extend(columns.cells(place));
        row.extend([
            stack.comm.clone(),
            format::size(stack.live_bytes),
            stack.live_count.to_string(),
            format::rate(stack.growth.rate_bytes_per_second),
            format::verdict(stack.verdict, stack.frozen.as_ref()),
            format::age(stack.ages.oldest_seconds),
            format::stack_cell(&stack.frames, output.depth),
        ]);
        table.add_row(row);
    }
    println!("{table}");
    Ok(())
}
