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
    if let Some(unwind) = status.unwind.as_ref().filter(|u| u.mode == "tables") {
        let counter = |name: &str| status.daemon_counters.get(name).copied().unwrap_or(0);
        let kernel = |name: &str| status.kernel_counters.get(name).copied().unwrap_or(0);
        let fallback: u64 = ["no_process", "no_mapping", "no_binary", "no_rule"]
            .iter()
            .map(|reason| kernel(&format!("unwind_fp_{reason}")))
            .sum();
        println!(
            "unwinding {} (in the kernel): {} frames from unwind tables, {fallback} by frame pointers where none was \
             loaded; tables of {} binaries, {} of {}",
            unwind.mode,
            kernel("unwind_table_frames"),
            counter("unwind_tables_binaries_loaded"),
            format::size(counter("unwind_tables_bytes_used")),
            format::size(counter("unwind_tables_bytes_limit")),
        );
    } else if let Some(unwind) = &status.unwind {
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
    print_python(&status);
    print_tiers(&status);
    print_allocators(&status);
    println!();
    let mut points = format::table(&["KIND", "TARGET", "OFFSET", "PROGRAM", "PID", "PATH"]);
    for p in &status.attach_points {
        points.add_row(vec![
            p.kind.clone(),
            p.target.clone(),
            p.offset.map(|o| format!("{o:#x}")).unwrap_or_default(),
            p.program.clone(),
            p.pid.map_or_else(|| "all".to_owned(), |pid| pid.to_string()),
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

/// The Python frames spliced into stacks, and why the others were not (`python_*` counters), once there were.
fn print_python(status: &StatusResponse) {
    let counter = |name: &str| status.daemon_counters.get(name).copied().unwrap_or(0);
    if counter("python_stacks") == 0 {
        return;
    }
    println!(
        "python frames: {} stacks, {} spliced; not placed: {} without an evaluation-loop frame, {} with frames \
         left over; not shown: {} of threads running no Python, {} of processes not read as interpreters; {} \
         torn walks, {} frames unresolved",
        counter("python_stacks"),
        counter("python_stacks_spliced"),
        counter("python_stacks_no_eval_frame"),
        counter("python_stacks_frames_left"),
        counter("python_stacks_empty"),
        counter("python_stacks_no_interpreter"),
        counter("python_stacks_torn"),
        counter("python_frames_unresolved"),
    );
}

/// The allocator files discovery found, supported or not; why not, for those that are not.
fn print_allocators(status: &StatusResponse) {
    let providers = &status.discovery.providers;
    if providers.is_empty() {
        return;
    }
    let unsupported = providers.iter().filter(|p| !p.supported).count();
    println!(
        "\nallocators: {} files, {} supported, {unsupported} recognised but not supported",
        providers.len(),
        providers.len() - unsupported
    );
    let mut header = vec!["FAMILY", "SUPPORTED", "PROBES", "PROCESSES", "FILE", "PATH"];
    if unsupported > 0 {
        header.push("REASON");
    }
    let mut table = format::table(&header);
    for p in providers {
        let mut row = vec![
            p.family.clone(),
            if p.supported { "yes" } else { "no" }.to_owned(),
            p.probes.to_string(),
            p.processes.to_string(),
            p.file.clone(),
            p.path.clone(),
        ];
        if unsupported > 0 {
            row.push(p.error.clone().unwrap_or_default());
        }
        table.add_row(row);
    }
    println!("{table}");
}

/// Tier 0, tier 1 and the budget, when the daemon reports them.
fn print_tiers(status: &StatusResponse) {
    if let Some(tier0) = &status.tier0 {
        println!(
            "tier 0: {}, faults sampled every {}: {} processes ({} growing), {} stacks",
            if tier0.enabled { "on" } else { "off" },
            format::size(tier0.sample_interval_bytes),
            tier0.processes,
            tier0.growing,
            tier0.stacks
        );
    }
    if let Some(tier1) = &status.tier1 {
        println!(
            "tier 1: malloc probes {}: {} of at most {} processes escalated",
            tier1.malloc_probes,
            tier1.escalated.len(),
            tier1.max_processes
        );
        for e in &tier1.escalated {
            println!(
                "  pid {} ({}) since {}, {} {}: {}; probes {:.2}% of a core",
                e.pid,
                e.comm,
                format::time(e.since_unix_ms),
                e.trigger,
                e.mode,
                e.reason,
                e.cpu_percent
            );
        }
        for e in tier1.ended.iter().rev().take(5) {
            println!(
                "  ended: pid {} ({}) at {}: {}",
                e.escalation.pid,
                e.escalation.comm,
                format::time(e.ended_unix_ms),
                e.why
            );
        }
    }
    if let Some(budget) = &status.budget {
        println!(
            "CPU budget: {:.2}% per traced process, {:.2}% in all; now: uprobes {:.2}%, tracepoints {:.2}%, daemon {:.2}%{}",
            budget.process_percent,
            budget.host_percent,
            budget.uprobes_percent,
            budget.tracepoints_percent,
            budget.daemon_percent,
            if budget.bpf_stats { "" } else { " (BPF run-time statistics off)" }
        );
        for a in budget.actions.iter().rev().take(5) {
            println!("  budget: pid {} at {}: {}: {}", a.pid, format::time(a.unix_ms), a.action, a.why);
        }
    }
}
