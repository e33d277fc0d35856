//! `GET /metrics` over HTTP on a TCP address, for Prometheus to scrape.

use std::net::SocketAddr;

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{
    CONTENT_TYPE, METRICS_PATH, SnapshotSource, encode_snapshot,
    pprof::{self, HEAP_PATH},
    text,
};

/// The metrics address could not be listened on.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {source} (choose another address with --metrics-addr, or --no-metrics)")]
pub struct BindError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Listens on `addr`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError { addr, source })
}

/// Serves `/metrics`, and `/debug/pprof/heap` when `pprof_endpoint`, until `shutdown` is cancelled.
pub async fn serve<S: SnapshotSource>(
    listener: TcpListener,
    source: S,
    pprof_endpoint: bool,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut router = Router::new().route(METRICS_PATH, get(metrics::<S>));
    if pprof_endpoint {
        router = router.route(HEAP_PATH, get(pprof::heap::<S>));
    }
    let served =
        if pprof_endpoint { format!("GET {METRICS_PATH} and {HEAP_PATH}") } else { format!("GET {METRICS_PATH}") };
    let router = router.fallback(move || std::future::ready(not_found(&served))).with_state(source);
    axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

/// `OpenMetrics` when the scraper asks for it (Prometheus does), else the classic text format.
async fn metrics<S: SnapshotSource>(State(source): State<S>, headers: HeaderMap) -> Response {
    let Some(snapshot) = source.snapshot().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the daemon is shutting down\n").into_response();
    };
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    match encode_snapshot(&snapshot) {
        Ok(open) if text::wants_openmetrics(accept) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], open).into_response(),
        Ok(open) => ([(header::CONTENT_TYPE, text::CONTENT_TYPE)], text::from_openmetrics(&open)).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the metrics: {err}\n")).into_response(),
    }
}

fn not_found(served: &str) -> Response {
    (StatusCode::NOT_FOUND, format!("leakprobe serves only {served} here\n")).into_response()
}
