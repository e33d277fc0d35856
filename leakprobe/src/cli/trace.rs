//! `leakprobe trace`: attach the malloc-family probes to one process (tier 1), or detach them.

use anyhow::Result;
use clap::Args;
use hyper::Method;

use super::{Connect, client, format};
use crate::protocol::{TRACE_PATH, TraceMode, TraceRequest, TraceResponse};

#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    connect: Connect,
    /// The process (host pid).
    #[arg(long, value_name = "PID")]
    pid: u32,
    /// `full` tracks every allocation exactly; `sampled` a size-weighted sample [default: the daemon's --mode].
    #[arg(long, value_enum)]
    mode: Option<TraceMode>,
    /// Detach after this long, e.g. `10m` [default: until --stop, the CPU budget, or the process's end].
    #[arg(long = "for", value_name = "DURATION", conflicts_with = "stop")]
    duration: Option<String>,
    /// Detach the probes of this process now.
    #[arg(long)]
    stop: bool,
    /// Print JSON (the API's `TraceResponse`).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: TraceArgs) -> Result<()> {
    let response: TraceResponse = if args.stop {
        let path = format!("{TRACE_PATH}?pid={}", args.pid);
        client::send(&args.connect.socket, Method::DELETE, &path, None::<&()>).await?
    } else {
        let request = TraceRequest { pid: args.pid, mode: args.mode, duration: args.duration };
        client::send(&args.connect.socket, Method::POST, TRACE_PATH, Some(&request)).await?
    };
    if args.json {
        return format::print_json(&response);
    }
    let e = &response.escalation;
    let until = e.until_unix_ms.map(|u| format!(" until {}", format::time(u))).unwrap_or_default();
    println!("pid {} ({}): malloc probes {} ({}){until}", e.pid, e.comm, response.result, e.mode);
    Ok(())
}
