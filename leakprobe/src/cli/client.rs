//! HTTP over the daemon's unix socket.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, body::Bytes};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::protocol::ErrorResponse;

/// `path?query` with the query's set fields, URL-encoded.
pub fn with_query<Q: serde::Serialize>(path: &str, query: &Q) -> Result<String> {
    let encoded = serde_urlencoded::to_string(query).context("encoding the query")?;
    Ok(if encoded.is_empty() { path.to_owned() } else { format!("{path}?{encoded}") })
}

/// `GET path_and_query` from the daemon at `socket`, parsed as `T`.
pub async fn get<T: DeserializeOwned>(socket: &Path, path_and_query: &str) -> Result<T> {
    let body = get_bytes(socket, path_and_query).await?;
    serde_json::from_slice(&body).context("the daemon's answer is not the expected JSON")
}

/// `GET path_and_query` from the daemon at `socket`: the body of a successful answer.
pub async fn get_bytes(socket: &Path, path_and_query: &str) -> Result<Bytes> {
    send_bytes(socket, Method::GET, path_and_query, None).await
}

/// `METHOD path_and_query` with an optional JSON body, parsed as `T`.
pub async fn send<T: DeserializeOwned, B: serde::Serialize>(
    socket: &Path,
    method: Method,
    path_and_query: &str,
    body: Option<&B>,
) -> Result<T> {
    let body = body.map(serde_json::to_vec).transpose().context("encoding the request")?;
    let answer = send_bytes(socket, method, path_and_query, body).await?;
    serde_json::from_slice(&answer).context("the daemon's answer is not the expected JSON")
}

/// `METHOD path_and_query` with an optional JSON body: the body of a successful answer.
async fn send_bytes(socket: &Path, method: Method, path_and_query: &str, body: Option<Vec<u8>>) -> Result<Bytes> {
    let stream = match UnixStream::connect(socket).await {
        Ok(stream) => stream,
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "permission denied by the kernel on {}: the daemon's socket admits root and the members of its group \
             (`leakprobe run --socket-group`) only; run as root or ask to be added to that group",
            socket.display()
        ),
        Err(err) => {
            return Err(err).with_context(|| {
                format!("cannot reach the daemon at {} (is `leakprobe run` running? see --socket)", socket.display())
            });
        }
    };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.context("HTTP handshake")?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            log::debug!("connection: {err}");
        }
    });
    let mut request = Request::builder().method(method).uri(path_and_query).header("host", "leakprobe");
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let response = sender.send_request(request).await.context("sending the request")?;
    let status = response.status();
    let body = response.into_body().collect().await.context("reading the response")?.to_bytes();
    if !status.is_success() {
        let message = serde_json::from_slice::<ErrorResponse>(&body)
            .map_or_else(|_| String::from_utf8_lossy(&body).into_owned(), |e| e.error);
        bail!("the daemon answered {status}: {message}");
    }
    Ok(body)
}
