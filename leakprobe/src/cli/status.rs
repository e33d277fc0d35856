//! `leakprobe status`.

use anyhow::Result;
use clap::Args;

use super::{Connect, client, format};
use crate::protocol::{STATUS_PATH, StatusResponse};

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    connect: Connect,
    /// Print JSON (the API's `StatusResponse`) instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: StatusArgs) -> Result<()> {
    let status: StatusResponse = client::get(&args.connect.socket, STATUS_PATH).await?;
    if args.json {
        return format::print_json(&status);
    }
    let t = &status.tables;
    println!(
        "leakprobe {} (pid {}), up {}s, mode {}, return probes {}",
        status.version, status.pid, status.uptime_seconds, status.mode, status.return_probes
    );
    println!(
        "tracking {} live allocations ({}) in {} processes, {} stacks (limits: {} allocations, {} stacks)",
        t.live_allocations,
        format::size(t.live_bytes),
        t.processes,
        t.stacks,
        t.max_live_allocations,
        t.max_stacks
    );
    if let Some(unwind) = &status.unwind {
        let counter = |name: &str| status.daemon_counters.get(name).copied().unwrap_or(0);
        let copy = unwind.stack_copy_bytes.map(|b| format!(" ({} stack copies)", format::size(b))).unwrap_or_default();
        println!(
            "unwinding {}{copy}: {} stacks unwound from unwind tables ({} truncated, {} incomplete; {:.3}s), {} \
             by kernel frame pointers ({} truncated)",
            unwind.mode,
            counter("stacks_dwarf"),
            counter("stacks_dwarf_truncated"),
            counter("stacks_dwarf_incomplete"),
            unwind.unwind_seconds,
            counter("stacks_fp"),
            counter("stacks_fp_truncated"),
        );
    }
    println!();
    let mut points = format::table(&["KIND", "TARGET", "OFFSET", "PROGRAM", "PATH"]);
    for p in &status.attach_points {
        points.add_row(vec![
            p.kind.clone(),
            p.target.clone(),
            p.offset.map(|o| format!("{o:#x}")).unwrap_or_default(),
            p.program.clone(),
            p.path.clone().unwrap_or_default(),
        ]);
    }
    println!("{points}\n");
    let mut counters = format::table(&["COUNTER", "VALUE"]);
    for (name, value) in &status.kernel_counters {
        counters.add_row(vec![format!("kernel.{name}"), value.to_string()]);
    }
    for (name, value) in &status.daemon_counters {
        counters.add_row(vec![format!("daemon.{name}"), value.to_string()]);
    }
    println!("{counters}");
    Ok(())
}
