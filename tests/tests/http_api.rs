//! The HTTP API on the unix socket, spoken by hand: good requests, bad requests, garbage.

use std::io::Write;
use std::os::unix::net::UnixStream;

use leakprobe_tests::http::{RawResponse, get, send_raw};
use leakprobe_tests::{Daemon, StackExt, observe_leaker};

/// Asserts `response` is an error with `status` and a JSON body `{"error": "<non-empty>"}`.
fn assert_json_error(response: &RawResponse, status: u16, what: &str) {
    assert_eq!(response.status, Some(status), "{what}: wrong status: {response}");
    let body = response.json();
    let message = body["error"].as_str().unwrap_or_else(|| panic!("{what}: body has no \"error\" string: {response}"));
    assert!(!message.trim().is_empty(), "{what}: empty error message: {response}");
}

#[test]
fn raw_http_status_and_top() {
    let (daemon, fixture, _stacks) = observe_leaker("basic");
    let status = get(daemon.socket(), "/v1/status");
    assert_eq!(status.status, Some(200), "GET /v1/status: {status}");
    assert_eq!(status.json()["pid"].as_u64(), Some(u64::from(daemon.pid())), "GET /v1/status: {status}");

    let top = get(daemon.socket(), &format!("/v1/top?pid={}&limit=1", fixture.pid()));
    assert_eq!(top.status, Some(200), "GET /v1/top: {top}");
    let body = top.json();
    let stacks = body["stacks"].as_array().unwrap_or_else(|| panic!("no stacks array: {top}"));
    assert_eq!(stacks.len(), 1, "limit=1: {top}");
    assert_eq!(stacks[0].function_at(0), Some("leak_beta"), "the largest stack first: {top}");
    assert_eq!(stacks[0]["pid"].as_u64(), Some(u64::from(fixture.pid())), "{top}");
}

#[test]
fn malformed_requests_get_json_errors_and_the_daemon_survives() {
    let daemon = Daemon::start();
    let socket = daemon.socket();

    assert_json_error(&get(socket, "/nope"), 404, "GET /nope");
    assert_json_error(&get(socket, "/v2/status"), 404, "GET /v2/status");
    assert_json_error(&get(socket, "/v1/top?limit=abc"), 400, "GET /v1/top?limit=abc");
    assert_json_error(&get(socket, "/v1/top?pid=notapid"), 400, "GET /v1/top?pid=notapid");
    assert_json_error(&get(socket, "/v1/top?limit=-1"), 400, "GET /v1/top?limit=-1");

    // Not HTTP at all: the daemon answers (an HTTP 4xx) or closes the connection, and does not hang.
    for garbage in [&b"\x00\x01\x02\xff\xfe garbage\r\n\r\n"[..], b"HELLO\r\n\r\n", b"GET\r\n\r\n"] {
        let response = send_raw(socket, garbage);
        if let Some(status) = response.status {
            assert!((400..500).contains(&status), "garbage {garbage:?} got {response}");
        } else {
            assert!(response.raw.is_empty(), "garbage {garbage:?} got a non-HTTP answer: {response}");
        }
    }

    // A client that sends half a request and stalls must not block others.
    let mut stalled = UnixStream::connect(socket).expect("connect a stalled client");
    stalled.write_all(b"GET /v1/status HTTP/1.1\r\nHo").expect("write half a request");

    let status = daemon.status();
    assert_eq!(status["pid"].as_u64(), Some(u64::from(daemon.pid())), "the daemon still answers status: {status:#}");
    let response = get(socket, "/v1/status");
    assert_eq!(response.status, Some(200), "raw status after the bad requests: {response}");
    drop(stalled);
}

#[test]
fn wrong_method_is_a_json_error() {
    let daemon = Daemon::start();
    let request = b"POST /v1/status HTTP/1.1\r\nHost: leakprobe\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let response = send_raw(daemon.socket(), request);
    assert_json_error(&response, 405, "POST /v1/status");
}
