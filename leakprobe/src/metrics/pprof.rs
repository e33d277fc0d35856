//! `GET /debug/pprof/heap` on the metrics listener: the live heap as a gzipped pprof profile with Go's heap sample
//! types (default `inuse_space`), the path Parca's and Grafana Alloy's scrapers pull from Go services.

use axum::{
    extract::{Query, State, rejection::QueryRejection},
    http::{HeaderName, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::SnapshotSource;
use crate::{export::pprof, protocol::HeapFilter};

/// Path of the heap profile, as Go's `net/http/pprof` serves it.
pub const HEAP_PATH: &str = "/debug/pprof/heap";

/// The query parameters a heap request may carry.
pub const PARAMETERS: &str = "pid, comm, service, container, sample_index";

/// Response header: (process, stack) pairs beyond `--profile-max-stacks`, summed per process as `[other stacks]`.
pub const OMITTED_HEADER: &str = "x-leakprobe-stacks-omitted";
/// Response header: stacks not symbolized within the budget (addresses only).
pub const UNSYMBOLIZED_HEADER: &str = "x-leakprobe-stacks-unsymbolized";

/// The live heap of the processes the query selects; an empty profile when none has any.
pub async fn heap<S: SnapshotSource>(
    State(source): State<S>,
    query: Result<Query<HeapFilter>, QueryRejection>,
) -> Response {
    let filter = match query {
        Ok(Query(filter)) => filter,
        Err(rejection) => {
            let why = rejection.body_text();
            let why = why.strip_prefix("Failed to deserialize query string: ").unwrap_or(&why);
            let message = format!("bad query for {HEAP_PATH}: {why} (parameters: {PARAMETERS})\n");
            return (StatusCode::BAD_REQUEST, message).into_response();
        }
    };
    let Some(heap) = source.heap(filter).await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the daemon is shutting down\n").into_response();
    };
    match pprof::encode_heap(&heap, &heap.stacks, pprof::unix_now_ns()) {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"heap\"".to_owned()),
                (HeaderName::from_static(OMITTED_HEADER), heap.omitted_stacks.to_string()),
                (HeaderName::from_static(UNSYMBOLIZED_HEADER), heap.unsymbolized_stacks.to_string()),
            ],
            body,
        )
            .into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the profile: {err}\n")).into_response(),
    }
}
