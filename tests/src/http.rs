//! Raw HTTP/1.1 over the daemon's unix socket, to send requests the CLI never sends.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long the daemon may take to answer (or close) a raw connection.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// What came back on a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    /// Everything read until the daemon closed the connection.
    pub raw: Vec<u8>,
    /// The status code, when the bytes start with an HTTP status line.
    pub status: Option<u16>,
    /// The body (de-chunked), when there was a header block.
    pub body: String,
}

impl RawResponse {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = String::from_utf8_lossy(&self.raw);
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    }
}

impl RawResponse {
    /// The body's bytes, exactly (a binary body, not chunked: axum sends a `Vec<u8>` with its length).
    pub fn body_bytes(&self) -> &[u8] {
        let start = self.raw.windows(4).position(|w| w == b"\r\n\r\n").map_or(self.raw.len(), |i| i + 4);
        assert!(self.header("transfer-encoding").is_none(), "a chunked body: {self}");
        &self.raw[start..]
    }

    /// The body parsed as JSON; fails with the whole response otherwise.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("response body is not JSON ({e}): {self}"))
    }
}

impl std::fmt::Display for RawResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.raw))
    }
}

/// Sends `request` verbatim and reads until the daemon closes the connection (fails after [`HTTP_TIMEOUT`]).
pub fn send_raw(socket: &Path, request: &[u8]) -> RawResponse {
    let mut stream = UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).expect("set read timeout");
    stream.set_write_timeout(Some(HTTP_TIMEOUT)).expect("set write timeout");
    stream.write_all(request).expect("write the raw request");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // The peer may reset instead of closing after answering garbage: that still is "closed".
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => panic!(
                "the daemon neither answered nor closed the connection within {HTTP_TIMEOUT:?} (read so far: {:?})",
                String::from_utf8_lossy(&raw)
            ),
            Err(e) => panic!("read the raw response: {e}"),
        }
    }
    parse(raw)
}

/// `GET path` over TCP from `addr` with `Connection: close` and the given `Accept` header.
pub fn get_tcp(addr: std::net::SocketAddr, path: &str, accept: &str) -> RawResponse {
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).expect("set read timeout");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("write the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap_or_else(|e| panic!("read the answer from {addr}: {e}"));
    parse(raw)
}

/// `GET path` with `Connection: close`.
pub fn get(socket: &Path, path: &str) -> RawResponse {
    send_raw(socket, format!("GET {path} HTTP/1.1\r\nHost: leakprobe\r\nConnection: close\r\n\r\n").as_bytes())
}

fn parse(raw: Vec<u8>) -> RawResponse {
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or(("", ""));
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    RawResponse { raw, status, body }
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size_line, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|e| panic!("bad chunk size line {size_line:?}: {e}"));
        if size == 0 {
            break;
        }
        body.push_str(after.get(..size).expect("chunk shorter than its size"));
        rest = after.get(size + 2..).unwrap_or("");
    }
    body
}
