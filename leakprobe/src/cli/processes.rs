//! `leakprobe processes`: the tracked heap next to RSS, per process.

use anyhow::Result;
use clap::Args;

use super::{Connect, Selection, client, format};
use crate::protocol::{PROCESSES_PATH, ProcessesResponse};

#[derive(Debug, Args)]
pub struct ProcessesArgs {
    #[command(flatten)]
    connect: Connect,
    #[command(flatten)]
    selection: Selection,
    /// Print JSON (the API's `ProcessesResponse`) instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: ProcessesArgs) -> Result<()> {
    let query = args.selection.query();
    let response: ProcessesResponse =
        client::get(&args.connect.socket, &client::with_query(PROCESSES_PATH, &query)?).await?;
    if args.json {
        return format::print_json(&response);
    }
    if response.processes.is_empty() {
        println!("no process tracked");
        return Ok(());
    }
    let places: Vec<format::Place> = response
        .processes
        .iter()
        .map(|p| format::Place::of(p.pid, p.identity.ns_pid, p.identity.container_id.as_deref()))
        .collect();
    let columns = format::PlaceColumns::for_rows(&places);
    let mut header = vec!["PID"];
    header.extend(columns.headers());
    header.extend([
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
    let mut table = format::table(&header);
    let opt_size = |bytes: Option<u64>| bytes.map_or_else(|| "-".to_owned(), format::size);
    let mut frozen_notes = Vec::new();
    for (p, place) in response.processes.iter().zip(&places) {
        let mut row = vec![p.pid.to_string()];
        row.extend(columns.cells(place));
        // Frozen heap figures are marked, and said why and since when below the table; RSS figures are fresh.
        let (mark, verdict) = match &p.frozen {
            Some(frozen) => {
                frozen_notes.push(format!(
                    "* pid {}: heap figures frozen since {}: tier-1 probes detached ({}); RSS figures are fresh, and                      the verdict is its anonymous memory's",
                    p.pid,
                    format::time(frozen.since_unix_ms),
                    frozen.why
                ));
                (" *", format!("{} (anon)", p.verdict.as_str()))
            }
            None => ("", p.verdict.as_str().to_owned()),
        };
        row.extend([
            p.comm.clone(),
            format!("{}{mark}", format::size(p.live_bytes)),
            format!("{}{mark}", format::rate(p.heap_growth.rate_bytes_per_second)),
            verdict,
            opt_size(p.rss_bytes),
            format::rate(p.rss_growth.rate_bytes_per_second),
            opt_size(p.rss_anon_bytes),
            format::rate(p.rss_anon_growth.rate_bytes_per_second),
            opt_size(p.swap_bytes),
            format::rate(p.swap_growth.rate_bytes_per_second),
            p.heap_share_of_anon_growth.map_or_else(|| "-".to_owned(), |share| format!("{:.0}%", share * 100.0)),
        ]);
        table.add_row(row);
    }
    println!("{table}");
    for note in frozen_notes {
        println!("{note}");
    }
    Ok(())
}
