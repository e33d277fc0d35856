//! The socket API: HTTP/1.1 + JSON on a unix socket (see [`crate::protocol`]).

use std::{
    fs,
    io::ErrorKind,
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::Path,
};

use axum::{
    Json, Router,
    extract::{Path as UrlPath, Query, State, rejection::QueryRejection},
    http::{Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{MethodRouter, delete, get, post},
};
use tokio::{
    net::UnixListener,
    sync::{mpsc, oneshot},
};
use tokio_util::sync::CancellationToken;

use crate::{
    export::{self, ExportContext, ExportError},
    oom::OomRequest,
    probes::discover::AttachPidError,
    protocol::{
        EXPORT_PATH, ErrorResponse, ExportQuery, FAULTS_PATH, FaultsQuery, MAX_TOP_LIMIT, OOM_PATH, PROCESSES_PATH,
        STACKS_PATH, STATUS_PATH, TOP_PATH, TRACE_PATH, TopQuery, TraceRequest, oom::valid_id,
    },
    queries::{Query as StateQuery, TraceError},
};

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("another leakprobe daemon is already serving on {0}")]
    InUse(String),
    #[error("{path} exists and is not a socket; refusing to remove it")]
    NotASocket { path: String },
    #[error("{path}")]
    Io { path: String, source: std::io::Error },
    #[error("--socket-group {0:?}: no such group (give a group name or a numeric gid)")]
    NoSuchGroup(String),
    #[error("giving {path} to group {gid}")]
    Chown { path: String, gid: u32, source: std::io::Error },
    #[error(
        "cannot create the socket {path}: {dir} is not writable by uid {uid} (make the socket's directory this \
         user's, e.g. systemd RuntimeDirectory=leakprobe)"
    )]
    DirNotWritable { path: String, dir: String, uid: u32 },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SocketError + '_ {
    move |source| SocketError::Io { path: path.display().to_string(), source }
}

/// Fails if a live daemon serves on `path`; removes a stale socket file left by a killed daemon.
pub fn check_socket_free(path: &Path) -> Result<(), SocketError> {
    match fs::symlink_metadata(path) {
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        Err(err) => Err(io_error(path)(err)),
        Ok(meta) if !meta.file_type().is_socket() => Err(SocketError::NotASocket { path: path.display().to_string() }),
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse(path.display().to_string()));
            }
            log::info!("removing stale socket {}", path.display());
            fs::remove_file(path).map_err(io_error(path))
        }
    }
}

/// Fails unless this process may create `path`: its directory, or the closest ancestor that exists (where
/// [`bind`] starts creating it), must be writable and searchable by the effective uid. Checked at start, so that a
/// daemon that could not bind at the end does not load and attach first.
pub fn check_socket_dir(path: &Path) -> Result<(), SocketError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Some(existing) = dir.ancestors().find(|a| a.as_os_str().is_empty() || fs::metadata(a).is_ok()) else {
        return Ok(());
    };
    let existing = if existing.as_os_str().is_empty() { Path::new(".") } else { existing };
    let c_path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).map_err(|e| SocketError::Io {
        path: existing.display().to_string(),
        source: std::io::Error::new(ErrorKind::InvalidInput, e),
    })?;
    // SAFETY: a NUL-terminated path that outlives the call. AT_EACCESS: the effective uid, gid and capabilities.
    let rc = unsafe { libc::faccessat(libc::AT_FDCWD, c_path.as_ptr(), libc::W_OK | libc::X_OK, libc::AT_EACCESS) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EACCES) {
        return Err(SocketError::Io { path: existing.display().to_string(), source: err });
    }
    Err(SocketError::DirNotWritable {
        path: path.display().to_string(),
        dir: existing.display().to_string(),
        // SAFETY: geteuid has no preconditions and cannot fail.
        uid: unsafe { libc::geteuid() },
    })
}

/// The gid of `group`: a number, or a name looked up in the group database (`/etc/group`, NSS).
pub fn resolve_group(group: &str) -> Result<u32, SocketError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let missing = || SocketError::NoSuchGroup(group.to_owned());
    let name = std::ffi::CString::new(group).map_err(|_| missing())?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // SAFETY: getgrnam_r writes only into `entry` and `buf` (whose length it is given) and sets `found` to
        // null or to `&entry`; all of them outlive the call.
        let (rc, found_gid) = unsafe {
            let mut entry: libc::group = std::mem::zeroed();
            let mut found: *mut libc::group = std::ptr::null_mut();
            let rc =
                libc::getgrnam_r(name.as_ptr(), &raw mut entry, buf.as_mut_ptr().cast(), buf.len(), &raw mut found);
            (rc, (!found.is_null()).then_some(entry.gr_gid))
        };
        match (rc, found_gid) {
            (0, Some(gid)) => return Ok(gid),
            (libc::ERANGE, _) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(missing()),
        }
    }
}

/// Binds the socket (creating its directory), sets its mode and, with `group`, gives it to that group (the
/// owner is the daemon's user): with mode 0660, that user, root and the group's members may query, and the kernel
/// refuses everyone else at `connect(2)`.
pub fn bind(path: &Path, mode: u32, group: Option<u32>) -> Result<UnixListener, SocketError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    check_socket_free(path)?;
    let listener = UnixListener::bind(path).map_err(io_error(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_error(path))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|source| SocketError::Chown {
            path: path.display().to_string(),
            gid,
            source,
        })?;
    }
    Ok(listener)
}

/// Removes the socket file at shutdown.
pub fn remove_socket(path: &Path) {
    if let Err(err) = fs::remove_file(path)
        && err.kind() != ErrorKind::NotFound
    {
        log::warn!("removing {}: {err}", path.display());
    }
}

/// An error answer: a status and a one-line message, sent as [`ErrorResponse`].
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorResponse { error: self.1 })).into_response()
    }
}

/// Where the handlers send their questions: the state owner, and the OOM report thread.
#[derive(Clone)]
struct Api {
    requests: mpsc::Sender<StateQuery>,
    oom: mpsc::Sender<OomRequest>,
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    listener: UnixListener,
    requests: mpsc::Sender<StateQuery>,
    oom: mpsc::Sender<OomRequest>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(requests, oom)).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

/// Every route of the API: method, path (with the `{param}` templates of `OpenAPI`, which axum reads the same way) and
/// handler. `docs/api.json` describes exactly these (the `openapi_matches_the_routes` test).
fn routes() -> Vec<(Method, String, MethodRouter<Api>)> {
    vec![
        (Method::GET, STATUS_PATH.into(), get(status)),
        (Method::GET, TOP_PATH.into(), get(top)),
        (Method::GET, STACKS_PATH.into(), get(stacks)),
        (Method::GET, PROCESSES_PATH.into(), get(processes)),
        (Method::GET, EXPORT_PATH.into(), get(export)),
        (Method::GET, FAULTS_PATH.into(), get(faults)),
        (Method::POST, TRACE_PATH.into(), post(trace)),
        (Method::DELETE, TRACE_PATH.into(), delete(untrace)),
        (Method::GET, OOM_PATH.into(), get(oom_list)),
        (Method::GET, format!("{OOM_PATH}/{{id}}"), get(oom_show)),
    ]
}

/// The API's routes, answering through `requests` (the state owner) and `oom` (the report thread).
pub fn router(requests: mpsc::Sender<StateQuery>, oom: mpsc::Sender<OomRequest>) -> Router {
    let mut by_path: std::collections::BTreeMap<String, MethodRouter<Api>> = std::collections::BTreeMap::new();
    for (_, path, handler) in routes() {
        let merged = match by_path.remove(&path) {
            Some(existing) => existing.merge(handler),
            None => handler,
        };
        by_path.insert(path, merged);
    }
    by_path
        .into_iter()
        .fold(Router::new(), |router, (path, handler)| router.route(&path, handler))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(Api { requests, oom })
}

async fn ask<R, T>(to: &mpsc::Sender<R>, make: impl FnOnce(oneshot::Sender<T>) -> R) -> Result<T, ApiError> {
    let unavailable = || ApiError(StatusCode::SERVICE_UNAVAILABLE, "the daemon is shutting down".into());
    let (tx, rx) = oneshot::channel();
    to.send(make(tx)).await.map_err(|_| unavailable())?;
    rx.await.map_err(|_| unavailable())
}

async fn status(State(api): State<Api>) -> Result<Response, ApiError> {
    Ok(Json(ask(&api.requests, StateQuery::Status).await?).into_response())
}

async fn oom_list(State(api): State<Api>) -> Result<Response, ApiError> {
    Ok(Json(ask(&api.oom, OomRequest::List).await?).into_response())
}

async fn oom_show(State(api): State<Api>, UrlPath(id): UrlPath<String>) -> Result<Response, ApiError> {
    if !valid_id(&id) {
        return Err(ApiError(StatusCode::BAD_REQUEST, format!("{id:?} is not an OOM report id (<unix_ms>-<pid>)")));
    }
    match ask(&api.oom, |tx| OomRequest::Get(id.clone(), tx)).await? {
        Some(report) => Ok(Json(report).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no OOM report {id}; list them with GET {OOM_PATH}"))),
    }
}

/// The query, checked: a parse error or a bad window is a 400 naming the endpoint.
fn checked(path: &str, query: Result<Query<TopQuery>, QueryRejection>) -> Result<TopQuery, ApiError> {
    let bad = |why: String| ApiError(StatusCode::BAD_REQUEST, format!("bad query for {path}: {why}"));
    let Query(query) = query.map_err(|rejection| bad(rejection.body_text()))?;
    query.window_seconds().map_err(bad)?;
    Ok(query)
}

async fn top(State(api): State<Api>, query: Result<Query<TopQuery>, QueryRejection>) -> Result<Response, ApiError> {
    let query = checked(TOP_PATH, query)?;
    Ok(Json(ask(&api.requests, |tx| StateQuery::Top(query, tx)).await?).into_response())
}

async fn stacks(State(api): State<Api>, query: Result<Query<TopQuery>, QueryRejection>) -> Result<Response, ApiError> {
    let mut query = checked(STACKS_PATH, query)?;
    if query.pid.is_none() {
        return Err(ApiError(StatusCode::BAD_REQUEST, format!("{STACKS_PATH} needs pid=PID")));
    }
    query.limit = Some(query.limit.unwrap_or(MAX_TOP_LIMIT));
    Ok(Json(ask(&api.requests, |tx| StateQuery::Top(query, tx)).await?).into_response())
}

async fn processes(
    State(api): State<Api>,
    query: Result<Query<TopQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = checked(PROCESSES_PATH, query)?;
    Ok(Json(ask(&api.requests, |tx| StateQuery::Processes(query, tx)).await?).into_response())
}

async fn faults(
    State(api): State<Api>,
    query: Result<Query<FaultsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError(StatusCode::BAD_REQUEST, format!("bad query for {FAULTS_PATH}: {}", rejection.body_text()))
    })?;
    Ok(Json(ask(&api.requests, |tx| StateQuery::Faults(query, tx)).await?).into_response())
}

/// The answer of a trace request, or its error with its status.
fn traced(answer: Result<crate::protocol::TraceResponse, TraceError>) -> Result<Response, ApiError> {
    answer.map(|response| Json(response).into_response()).map_err(|err| ApiError(trace_status(&err), err.to_string()))
}

/// The HTTP status of a refused trace request.
fn trace_status(err: &TraceError) -> StatusCode {
    match err {
        TraceError::OwnProcess | TraceError::BadDuration(_) => StatusCode::BAD_REQUEST,
        TraceError::NoProcess(_) | TraceError::NotTraced(_) | TraceError::Attach(AttachPidError::Gone(_)) => {
            StatusCode::NOT_FOUND
        }
        TraceError::TracedEverywhere | TraceError::Full(_) | TraceError::Replaced(_) => StatusCode::CONFLICT,
        TraceError::Attach(AttachPidError::Unprobeable(_)) => StatusCode::UNPROCESSABLE_ENTITY,
        TraceError::Ended(_)
        | TraceError::Interval(_)
        | TraceError::ShuttingDown
        | TraceError::Attach(AttachPidError::Failed(_)) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn trace(
    State(api): State<Api>,
    body: Result<Json<TraceRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(|rejection| {
        ApiError(StatusCode::BAD_REQUEST, format!("bad body for POST {TRACE_PATH}: {}", rejection.body_text()))
    })?;
    traced(ask(&api.requests, |tx| StateQuery::Trace(request, tx)).await?)
}

/// Query of `DELETE /v1/trace`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UntraceQuery {
    pid: u32,
}

async fn untrace(
    State(api): State<Api>,
    query: Result<Query<UntraceQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError(StatusCode::BAD_REQUEST, format!("bad query for DELETE {TRACE_PATH}: {}", rejection.body_text()))
    })?;
    traced(ask(&api.requests, |tx| StateQuery::Untrace(query.pid, tx)).await?)
}

/// The live heap (the [`MAX_TOP_LIMIT`] stacks with the most live bytes) in the asked format.
async fn export(
    State(api): State<Api>,
    query: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError(StatusCode::BAD_REQUEST, format!("bad query for {EXPORT_PATH}: {}", rejection.body_text()))
    })?;
    let top = TopQuery { pid: query.pid, limit: Some(MAX_TOP_LIMIT), ..TopQuery::default() };
    let response = ask(&api.requests, |tx| StateQuery::Top(top, tx)).await?;
    let time_unix_ns = export::pprof::unix_now_ns();
    let context = ExportContext { pid: query.pid, time_unix_ns, estimated: response.estimated };
    match export::render(query.format, &response.stacks, context) {
        Ok(body) => Ok(([(header::CONTENT_TYPE, query.format.content_type())], body).into_response()),
        Err(err @ ExportError::Empty(_)) => Err(ApiError(StatusCode::NOT_FOUND, err.to_string())),
        Err(err) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())),
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!(
            "no endpoint {method} {}; endpoints: GET {STATUS_PATH}, {TOP_PATH}, {STACKS_PATH}, {PROCESSES_PATH}, \
             {EXPORT_PATH}, {OOM_PATH}, {OOM_PATH}/ID, {FAULTS_PATH}; POST and DELETE {TRACE_PATH}",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    let allowed = if uri.path() == TRACE_PATH { "POST or DELETE" } else { "GET" };
    ApiError(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {}; use {allowed}", uri.path()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{AttachPidError, StatusCode, TRACE_PATH, TraceError, routes, trace_status};

    fn api_doc() -> serde_json::Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.json");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// `docs/api.json` names exactly the server's routes: same paths, same methods.
    #[test]
    fn openapi_matches_the_routes() {
        let doc = api_doc();
        let paths = doc["paths"].as_object().unwrap_or_else(|| panic!("docs/api.json has no paths"));
        let documented: BTreeSet<(String, String)> = paths
            .iter()
            .flat_map(|(path, item)| {
                let methods = item.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
                methods.into_iter().map(move |method| (method.to_uppercase(), path.clone()))
            })
            .collect();
        let served: BTreeSet<(String, String)> =
            routes().into_iter().map(|(method, path, _)| (method.as_str().to_owned(), path)).collect();
        assert_eq!(
            documented, served,
            "docs/api.json (left) and the server's routes (right) differ: describe every route in docs/api.json"
        );
    }

    /// Every refusal of a trace request answers with a status `docs/api.json` documents for its method.
    #[test]
    fn trace_errors_answer_with_documented_statuses() {
        let doc = api_doc();
        let documented = |method: &str, status: StatusCode| {
            doc["paths"][TRACE_PATH][method]["responses"].get(status.as_u16().to_string()).is_some()
        };
        let post = [
            (TraceError::OwnProcess, StatusCode::BAD_REQUEST),
            (TraceError::BadDuration("x".into()), StatusCode::BAD_REQUEST),
            (TraceError::NoProcess(1), StatusCode::NOT_FOUND),
            (TraceError::TracedEverywhere, StatusCode::CONFLICT),
            (TraceError::Full(8), StatusCode::CONFLICT),
            (TraceError::Replaced(1), StatusCode::CONFLICT),
            (TraceError::Ended(1), StatusCode::INTERNAL_SERVER_ERROR),
            (TraceError::Interval("full".into()), StatusCode::INTERNAL_SERVER_ERROR),
            (TraceError::ShuttingDown, StatusCode::INTERNAL_SERVER_ERROR),
            (TraceError::Attach(AttachPidError::Gone("gone".into())), StatusCode::NOT_FOUND),
            (TraceError::Attach(AttachPidError::Unprobeable("static".into())), StatusCode::UNPROCESSABLE_ENTITY),
            (TraceError::Attach(AttachPidError::Failed("refused".into())), StatusCode::INTERNAL_SERVER_ERROR),
        ];
        for (err, status) in post {
            assert_eq!(trace_status(&err), status, "{err:?}");
            assert!(documented("post", status), "POST {TRACE_PATH} answers {status} ({err}): document it");
        }
        let stop = TraceError::NotTraced(1);
        assert_eq!(trace_status(&stop), StatusCode::NOT_FOUND);
        assert!(documented("delete", StatusCode::NOT_FOUND), "DELETE {TRACE_PATH} answers 404: document it");
    }
}
