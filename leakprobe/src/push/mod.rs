//! `--pyroscope-url`: every `--push-interval`, one heap profile per process (labelled with its service) is sent to
//! Pyroscope's HTTP ingest API, `POST /ingest?name=SERVICE{labels}&from=&until=&format=pprof` with the profile as
//! the multipart `profile` part.
//!
//! Two tasks: the collector asks the state owner for the live heap and queues one request per process in a
//! bounded queue (a full queue drops the request and counts it: the daemon never waits for the network); the
//! sender posts them one at a time, retrying a failed post with exponential backoff, and counts what it sent,
//! what failed and what it gave up on.

mod request;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Uri, body::Bytes, header};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, sync::mpsc, time::MissedTickBehavior};
use tokio_util::sync::CancellationToken;

pub use self::request::{IngestRequest, ingest_requests};
use crate::{metrics::SnapshotSource, protocol::HeapFilter};

/// Profiles waiting to be sent, at most: 4 intervals of 64 processes.
pub const QUEUE: usize = 256;
/// Posts of one profile, at most (the first and three retries).
pub const ATTEMPTS: u32 = 4;
/// The first retry's delay; each next one doubles it.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// How long one post may take, connection included.
pub const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to push.
#[derive(Clone, Debug)]
pub struct PushConfig {
    /// The server's base URL (`http://HOST:PORT`, optionally with a path prefix).
    pub url: Uri,
    pub interval: Duration,
    /// Stacks each collection symbolizes (`--profile-max-stacks`), over all processes.
    pub max_stacks: usize,
    /// The `Authorization` header's value (`Basic ...` or `Bearer ...`), read from a file at start.
    pub authorization: Option<String>,
    /// The `host` label.
    pub host: String,
}

/// What the push did, for `status` and the metrics (`push_*` daemon counters).
#[derive(Debug, Default)]
pub struct PushStats {
    /// Profiles the server accepted.
    pub sent: AtomicU64,
    /// Posts that failed (connection, timeout, or a status other than 2xx).
    pub failures: AtomicU64,
    /// Posts retried after a failure.
    pub retries: AtomicU64,
    /// Profiles not sent: the queue was full, or every attempt failed.
    pub dropped: AtomicU64,
}

impl PushStats {
    /// The counters, named as `status` shows them.
    pub fn counters(&self) -> [(&'static str, u64); 4] {
        [
            ("push_profiles", self.sent.load(Ordering::Relaxed)),
            ("push_failures", self.failures.load(Ordering::Relaxed)),
            ("push_retries", self.retries.load(Ordering::Relaxed)),
            ("push_dropped", self.dropped.load(Ordering::Relaxed)),
        ]
    }
}

/// The `Authorization` value of a credentials file: `user:password` on its first line for basic auth, or a token
/// for a bearer.
pub fn authorization(contents: &str, basic: bool) -> Result<String> {
    use base64::Engine as _;
    let secret = contents.lines().next().unwrap_or("").trim();
    if secret.is_empty() {
        bail!("the file is empty");
    }
    if basic {
        if !secret.contains(':') {
            bail!("a basic-auth file holds `user:password`");
        }
        return Ok(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(secret)));
    }
    Ok(format!("Bearer {secret}"))
}

/// Collects and queues a profile per process every interval until `shutdown`; the sender runs alongside.
pub async fn run<S: SnapshotSource>(
    source: S,
    config: PushConfig,
    stats: Arc<PushStats>,
    shutdown: CancellationToken,
) -> Result<()> {
    let (queue, waiting) = mpsc::channel(QUEUE);
    let sender = tokio::spawn(send_all(waiting, config.clone(), stats.clone(), shutdown.clone()));
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    ticks.tick().await;
    let mut from = unix_seconds();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let until = unix_seconds();
        let Some(heap) = source.heap(HeapFilter::default()).await else { break };
        for request in ingest_requests(&heap, &config.host, from, until)? {
            if queue.try_send(request).is_err() {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        from = until;
    }
    drop(queue);
    sender.await.context("the push sender")?;
    Ok(())
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Sends the queued requests, each with retries, until the queue closes or `shutdown`.
async fn send_all(
    mut waiting: mpsc::Receiver<IngestRequest>,
    config: PushConfig,
    stats: Arc<PushStats>,
    shutdown: CancellationToken,
) {
    while let Some(request) = tokio::select! {
        () = shutdown.cancelled() => None,
        request = waiting.recv() => request,
    } {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            match tokio::time::timeout(POST_TIMEOUT, post(&config, &request)).await {
                Ok(Ok(())) => {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(Err(err)) => log::debug!("pushing {}: {err:#}", request.name),
                Err(_) => log::debug!("pushing {}: no answer within {POST_TIMEOUT:?}", request.name),
            }
            stats.failures.fetch_add(1, Ordering::Relaxed);
            if attempt == ATTEMPTS {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                log::warn!("could not push the profile of {} to {} ({ATTEMPTS} attempts)", request.name, config.url);
                break;
            }
            stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff *= 2;
        }
    }
}

/// One `POST /ingest`; fails unless the server answers 2xx.
async fn post(config: &PushConfig, request: &IngestRequest) -> Result<()> {
    let authority = config.url.authority().context("the URL has no host")?;
    let port = authority.port_u16().unwrap_or(80);
    let stream =
        TcpStream::connect((authority.host(), port)).await.with_context(|| format!("connecting to {authority}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let prefix = config.url.path().trim_end_matches('/');
    let mut builder = Request::post(format!("{prefix}{}", request.path_and_query))
        .header(header::HOST, authority.as_str())
        .header(header::CONTENT_TYPE, request.content_type());
    if let Some(value) = &config.authorization {
        builder = builder.header(header::AUTHORIZATION, value);
    }
    let answer = sender.send_request(builder.body(Full::new(Bytes::from(request.body.clone())))?).await?;
    let status = answer.status();
    if !status.is_success() {
        let body = answer.into_body().collect().await.map(http_body_util::Collected::to_bytes).unwrap_or_default();
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        bail!("{status}: {}", text.trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
