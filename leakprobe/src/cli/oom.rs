//! `leakprobe oom` and `leakprobe oom show ID`.

use anyhow::Result;
use clap::{Args, Subcommand};

use super::{Connect, client, format};
use crate::protocol::{OOM_PATH, OomListResponse, OomReport, StackReport};

#[derive(Debug, Args)]
pub struct OomArgs {
    #[command(subcommand)]
    command: Option<OomCommand>,
    #[command(flatten)]
    connect: Connect,
    /// Print JSON (the API's `OomListResponse`) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum OomCommand {
    /// Show one report in full: the victim, its memory, and its heap's stacks with every frame.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
struct ShowArgs {
    /// The report's id, as `leakprobe oom` lists it.
    id: String,
    #[command(flatten)]
    connect: Connect,
    /// Print JSON (the API's `OomReport`) instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: OomArgs) -> Result<()> {
    match args.command {
        Some(OomCommand::Show(show)) => run_show(show).await,
        None => run_list(args).await,
    }
}

async fn run_list(args: OomArgs) -> Result<()> {
    let list: OomListResponse = client::get(&args.connect.socket, OOM_PATH).await?;
    if args.json {
        return format::print_json(&list);
    }
    if list.reports.is_empty() {
        println!("no OOM kills recorded");
        return Ok(());
    }
    let places: Vec<format::Place> =
        list.reports.iter().map(|r| format::Place::of(r.pid, r.ns_pid, r.container_id.as_deref())).collect();
    let columns = format::PlaceColumns::for_rows(&places);
    let mut header = vec!["ID", "TIME", "PID"];
    header.extend(columns.headers());
    header.extend(["COMM", "ANON RSS", "CGROUP", "TOP STACK"]);
    let mut table = format::table(&header);
    for (r, place) in list.reports.iter().zip(&places) {
        let mut row = vec![r.id.clone(), format::time(r.time_unix_ms), r.pid.to_string()];
        row.extend(columns.cells(place));
        row.extend([
            r.comm.clone(),
            format::kb(r.anon_rss_kb),
            r.cgroup.clone().unwrap_or_else(|| "?".into()),
            r.top_function.clone().unwrap_or_else(|| "-".into()),
        ]);
        table.add_row(row);
    }
    println!("{table}");
    Ok(())
}

async fn run_show(args: ShowArgs) -> Result<()> {
    let report: OomReport = client::get(&args.connect.socket, &format!("{OOM_PATH}/{}", args.id)).await?;
    if args.json {
        return format::print_json(&report);
    }
    let or_unknown = |v: Option<String>| v.unwrap_or_else(|| "?".into());
    println!("OOM report {}", report.id);
    println!("  time           {}", format::time(report.time_unix_ms));
    println!("  pid            {}", report.pid);
    let place = format::Place::of(report.pid, report.ns_pid, report.container_id.as_deref());
    if let Some(ns_pid) = place.ns_pid {
        println!("  ns pid         {ns_pid}");
    }
    if let Some(container) = &place.container {
        println!("  container      {container}");
    }
    println!("  comm           {}", report.comm);
    println!("  uid            {}", or_unknown(report.uid.map(|u| u.to_string())));
    println!("  cgroup         {}", or_unknown(report.cgroup.clone()));
    println!("  total vm       {}", format::kb(report.total_vm_kb));
    println!("  anon rss       {}", format::kb(report.anon_rss_kb));
    println!("  file rss       {}", format::kb(report.file_rss_kb));
    println!("  shmem rss      {}", format::kb(report.shmem_rss_kb));
    println!("  oom_score_adj  {}", or_unknown(report.oom_score_adj.map(|a| a.to_string())));
    if !report.tracked {
        println!("  heap           not tracked (no allocation of this process was seen)");
        return Ok(());
    }
    println!(
        "  heap           {} live in {} allocations",
        format::size(report.heap_live_bytes),
        report.heap_live_allocations
    );
    print_stacks("Stacks by live bytes", &report.stacks_by_live_bytes);
    if !report.stacks_by_growth.is_empty() {
        print_stacks("Stacks by growth", &report.stacks_by_growth);
    }
    Ok(())
}

fn print_stacks(title: &str, stacks: &[StackReport]) {
    println!("\n{title}:");
    if stacks.is_empty() {
        println!("  (none)");
    }
    for (i, s) in stacks.iter().enumerate() {
        let growth = format!(", growing {}", format::rate(s.growth.rate_bytes_per_second));
        let verdict = format!(", {}", s.verdict.as_str());
        println!(
            "  #{} {} live in {} allocations ({} in {} allocated){}{}  [stack {}{}]",
            i + 1,
            format::size(s.live_bytes),
            s.live_count,
            format::size(s.total_bytes),
            s.total_count,
            growth,
            verdict,
            s.stack_id,
            if s.truncated { ", truncated" } else { "" }
        );
        if s.frames.is_empty() {
            println!("      (no stack)");
        }
        for frame in &s.frames {
            println!("      {}", format::frame(frame));
        }
    }
}
