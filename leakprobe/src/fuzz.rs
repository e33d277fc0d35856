//! Entry points of the fuzz targets (`fuzz/`, run by `cargo xtask fuzz`) and of their regression tests: one per
//! parser of input from outside the daemon. Each takes arbitrary bytes and must return, whatever they are: a
//! panic or a hang is a bug. Inputs that once crashed are kept in `fuzz/regressions/TARGET/` and replayed by
//! `cargo test` (see `tests` below).

use std::{sync::OnceLock, time::Duration};

use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use leakprobe_common::decode;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::mpsc,
};

use crate::{
    config::FileConfig,
    core::table::{AnalysisConfig, Limits, Table, TickTimes},
    oom::{OomRequest, store},
    protocol::{OomListResponse, ProcessesResponse, TopResponse},
    queries::Query,
};

/// Ring-buffer records, as the kernel could write them: the input is split into records by a 2-byte length
/// prefix; each is decoded, and what decodes is applied to a small table, which then ticks. The table's limits
/// must hold whatever the records say.
pub fn ring_records(data: &[u8]) {
    let limits = Limits { max_allocations: 64, max_stacks: 16, max_series: 32 };
    let mut table = Table::new(limits, AnalysisConfig::default());
    let mut rest = data;
    let mut tick = 0;
    while let [lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (record, next) = tail.split_at(len);
        rest = next;
        if let Ok(event) = decode(record) {
            table.apply(&event);
            if event.header().ts_ns % 7 == 0 {
                tick += 1;
                table.tick(tick, TickTimes { heap_ns: event.header().ts_ns, rss_ns: event.header().ts_ns });
            }
        }
        let sizes = table.sizes();
        assert!(sizes.live_allocations <= limits.max_allocations, "{sizes:?} over {limits:?}");
        assert!(sizes.stacks <= limits.max_stacks, "{sizes:?} over {limits:?}");
        assert!(sizes.series <= limits.max_series, "{sizes:?} over {limits:?}");
    }
    let _ = table.top(None, 10);
    let _ = table.processes(None, Some(20.0)).count();
}

/// A configuration file (`--config`).
pub fn config_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = FileConfig::parse(text);
    }
}

/// A persisted OOM report file, as the daemon reads its report directory at startup.
pub fn oom_report_file(data: &[u8]) {
    let _ = store::parse_report(data, "1700000000000-42");
}

/// One connection to the socket API: the bytes are what a client sends (request line, headers, body, maybe
/// several pipelined requests), served by the daemon's real router with a state owner that answers every
/// question with an empty table. Whatever arrives, the server answers or closes; it never panics or hangs.
pub fn api_request(data: &[u8]) {
    let answer = serve_one_connection(data);
    assert!(answer.is_empty() || answer.starts_with(b"HTTP/1."), "not an HTTP answer: {answer:?}");
}

/// Serves one connection on which the client sends `data` then closes its side; returns all the server sent.
fn serve_one_connection(data: &[u8]) -> Vec<u8> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a current-thread runtime")
    });
    runtime.block_on(async {
        let (requests, requests_rx) = mpsc::channel(8);
        let (oom, oom_rx) = mpsc::channel(8);
        let owner = tokio::spawn(empty_state_owner(requests_rx, oom_rx));
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let service = TowerToHyperService::new(crate::server::router(requests, oom));
        let connection = tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .serve_connection(TokioIo::new(server), service)
                .await;
        });
        let exchange = async {
            client.write_all(data).await?;
            client.shutdown().await?;
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .expect("the server answers or closes within 5 s")
            // The server closed the connection before reading everything: a fine answer to garbage.
            .unwrap_or_default();
        connection.abort();
        owner.abort();
        answer
    })
}

/// Answers like a daemon that has seen nothing yet; status and metrics go unanswered (the client gets the
/// daemon's 503), as when the state owner is gone.
async fn empty_state_owner(mut requests: mpsc::Receiver<Query>, mut oom: mpsc::Receiver<OomRequest>) {
    loop {
        tokio::select! {
            Some(request) = requests.recv() => match request {
                Query::Top(_, reply) => { let _ = reply.send(TopResponse { stacks: Vec::new(), estimated: false }); }
                Query::Processes(_, reply) => { let _ = reply.send(ProcessesResponse { processes: Vec::new(), estimated: false }); }
                _ => {}
            },
            Some(request) = oom.recv() => match request {
                OomRequest::List(reply) => { let _ = reply.send(OomListResponse { reports: Vec::new() }); }
                OomRequest::Get(_, reply) => { let _ = reply.send(None); }
                OomRequest::Save(_) => {}
            },
            else => return,
        }
    }
}

/// The function a target's inputs go to, by the target's name.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    match name {
        "ring_records" => Some(ring_records),
        "config_file" => Some(config_file),
        "oom_report_file" => Some(oom_report_file),
        "api_request" => Some(api_request),
        _ => None,
    }
}

/// Every fuzz target's name.
pub const TARGETS: [&str; 4] = ["ring_records", "config_file", "oom_report_file", "api_request"];

#[cfg(test)]
mod tests {
    use std::{fs, path::PathBuf};

    use super::*;

    /// Replays every input kept under `fuzz/regressions/TARGET/` (crashes found by fuzzing, fixed since) and
    /// the seed corpus under `fuzz/seeds/TARGET/`.
    #[test]
    fn kept_inputs_still_pass() {
        let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut replayed = 0;
        for name in TARGETS {
            let run = target(name).expect("a known target");
            for kind in ["regressions", "seeds"] {
                let Ok(entries) = fs::read_dir(fuzz.join(kind).join(name)) else { continue };
                for entry in entries.flatten() {
                    let bytes = fs::read(entry.path()).expect("readable input");
                    run(&bytes);
                    replayed += 1;
                }
            }
        }
        assert!(replayed >= TARGETS.len(), "every target has at least one kept input ({replayed} replayed)");
    }

    fn answer(request: &[u8]) -> String {
        String::from_utf8_lossy(&serve_one_connection(request)).into_owned()
    }

    #[test]
    fn the_harness_reaches_the_real_router() {
        let ok = answer(b"GET /v1/top HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains(r#""stacks":[]"#), "{ok}");
        let missing = answer(b"GET /v1/nope HTTP/1.1\r\nconnection: close\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404") && missing.contains("no endpoint GET /v1/nope"), "{missing}");
        let bad = answer(b"GET /v1/top?limit=x HTTP/1.1\r\nconnection: close\r\n\r\n");
        assert!(bad.starts_with("HTTP/1.1 400") && bad.contains("bad query for /v1/top"), "{bad}");
        let garbage = answer(b"\x00\xff garbage\r\n\r\n");
        assert!(garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    }
}
