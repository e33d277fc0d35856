//! HTTP over the daemon's unix socket.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use http_body_util::{BodyExt as _, Empty};
use hyper::{Request, body::Bytes};
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
    let request = Request::get(path_and_query).header("host", "leakprobe").body(Empty::<Bytes>::new())?;
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
