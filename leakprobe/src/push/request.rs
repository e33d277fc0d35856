//! The requests of Pyroscope's HTTP ingest API, built from the live heap: pure, no I/O.

use std::collections::BTreeMap;

use crate::{
    export::pprof,
    protocol::{HeapProfile, StackReport},
};

/// The multipart boundary: a fixed string no gzip stream of ours is tested against, so it is long and random
/// looking; the profile part's length comes from the framing, not from a search for it.
const BOUNDARY: &str = "leakprobe-7c1f0a9e3b52d864-boundary";

/// One profile to post.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestRequest {
    /// `SERVICE{labels}`, for logs.
    pub name: String,
    /// `/ingest?name=...&from=...&until=...&format=pprof&spyName=leakprobe`.
    pub path_and_query: String,
    /// The `multipart/form-data` body: one part, `profile`, the gzipped pprof.
    pub body: Vec<u8>,
}

impl IngestRequest {
    /// The `Content-Type` of the body.
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={BOUNDARY}")
    }
}

/// A name or label value as Pyroscope's series key admits it: the characters that delimit the key (`{`, `}`,
/// `,`, `=`), spaces and quotes become `_`.
fn key_safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "._-/:@".contains(c) { c } else { '_' }).collect()
}

/// One request per process of `heap`, for samples taken between `from` and `until` (Unix seconds), labelled
/// with `host`, the process's service, pid, container id and systemd unit (those it has).
pub fn ingest_requests(heap: &HeapProfile, host: &str, from: u64, until: u64) -> std::io::Result<Vec<IngestRequest>> {
    let mut by_pid: BTreeMap<u32, Vec<StackReport>> = BTreeMap::new();
    for stack in &heap.stacks {
        by_pid.entry(stack.pid).or_default().push(stack.clone());
    }
    let time_ns = i64::try_from(until).unwrap_or(0).saturating_mul(1_000_000_000);
    by_pid
        .into_iter()
        .map(|(pid, stacks)| {
            let first = &stacks[0];
            let service = first.identity.service(&first.comm);
            let mut labels = vec![("host", host.to_owned()), ("service", service.clone()), ("pid", pid.to_string())];
            if let Some(id) = &first.identity.container_id {
                labels.push(("container_id", id.clone()));
            }
            if let Some(unit) = &first.identity.unit {
                labels.push(("systemd_unit", unit.clone()));
            }
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={}", key_safe(v))).collect();
            let name = format!("{}{{{}}}", key_safe(&service), labels.join(","));
            let query = serde_urlencoded::to_string([
                ("name", name.as_str()),
                ("from", &from.to_string()),
                ("until", &until.to_string()),
                ("format", "pprof"),
                ("spyName", "leakprobe"),
            ])
            .map_err(std::io::Error::other)?;
            let profile = pprof::encode_heap(heap, &stacks, time_ns)?;
            Ok(IngestRequest { name, path_and_query: format!("/ingest?{query}"), body: multipart(&profile) })
        })
        .collect()
}

/// A `multipart/form-data` body of one file part named `profile` (RFC 7578).
fn multipart(profile: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(profile.len() + 256);
    body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
    body.extend_from_slice(b"Content-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\n");
    body.extend_from_slice(b"Content-Type: application/octet-stream\r\n\r\n");
    body.extend_from_slice(profile);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}
