//! Where a fleet looks: the live heap pulled at `/debug/pprof/heap` on the metrics listener and read by Go's own
//! `go tool pprof`, its filters and errors, the `service` identity of a process in a systemd unit, and the push to
//! Pyroscope's ingest API, checked by a receiver in the test.

use std::time::Duration;

use leakprobe_tests::expect::{ALPHA_COUNT, ALPHA_SIZE};
use leakprobe_tests::http::{RawResponse, get_tcp};
use leakprobe_tests::pprof::{Profile, go_tool_top};
use leakprobe_tests::prometheus::Prometheus;
use leakprobe_tests::unit::UnitCgroup;
use leakprobe_tests::{Daemon, Fixture, GROWTH, StackExt, dump, observe_leaker, poll_until, wait_for_fence};

fn heap(daemon: &Daemon, query: &str) -> RawResponse {
    get_tcp(daemon.metrics_addr(), &format!("/debug/pprof/heap{query}"), "*/*")
}

fn heap_profile(daemon: &Daemon, query: &str) -> (Vec<u8>, Profile) {
    let response = heap(daemon, query);
    assert_eq!(response.status, Some(200), "{response}");
    assert_eq!(response.header("content-type").as_deref(), Some("application/octet-stream"));
    let bytes = response.body_bytes().to_vec();
    let profile = Profile::from_gzip(&bytes);
    (bytes, profile)
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).expect("fits")
}

/// The basic leaker, in `unit`'s cgroup when given, once `daemon` has seen its whole heap: the fixture, its stacks
/// and their live bytes.
fn observed_leaker(daemon: &Daemon, unit: Option<&UnitCgroup>) -> (Fixture, Vec<serde_json::Value>, u64) {
    let mut fixture = unit.map_or_else(|| Fixture::leaker("basic"), |unit| unit.leaker("basic"));
    fixture.wait_line("ready");
    let stacks = wait_for_fence(daemon, fixture.pid());
    let live = stacks.iter().map(StackExt::live_bytes).sum();
    (fixture, stacks, live)
}

#[test]
fn heap_endpoint_is_read_by_go_tool_pprof() {
    let (daemon, fixture, stacks) = observe_leaker("basic");
    let pid = fixture.pid();
    let live: u64 = stacks.iter().map(StackExt::live_bytes).sum();
    let (bytes, profile) = heap_profile(&daemon, &format!("?pid={pid}"));
    assert!(profile.sample.iter().all(|s| profile.pid(s) == Some(pid)), "only the asked pid");
    assert_eq!(profile.total("inuse_space", pid), as_i64(live), "{}", dump(&stacks));
    assert!(profile.sample.iter().all(|s| profile.label(s, "service") == Some("leaker")), "service falls back to comm");

    // Go's reader: the default sample type is inuse_space, the leak's frames are named, the total is the heap.
    let top = go_tool_top(&bytes, &[]);
    println!("go tool pprof -top {}/debug/pprof/heap?pid={pid}:\n{top}", daemon.metrics_addr());
    assert!(top.contains("Type: inuse_space"), "{top}");
    let alpha = top.lines().find(|l| l.trim_end().ends_with(" leak_alpha")).unwrap_or_else(|| panic!("{top}"));
    let flat = alpha.split_whitespace().next().expect("flat column");
    assert_eq!(ALPHA_COUNT * ALPHA_SIZE, 10_000);
    assert_eq!(flat, "9.77kB", "10,000 bytes as pprof prints them: {top}");
    let objects = go_tool_top(&bytes, &["-sample_index=inuse_objects"]);
    assert!(objects.contains("Type: inuse_objects"), "{objects}");
    let alpha_objects =
        objects.lines().find(|l| l.trim_end().ends_with(" leak_alpha")).unwrap_or_else(|| panic!("{objects}"));
    assert_eq!(alpha_objects.split_whitespace().next(), Some(ALPHA_COUNT.to_string().as_str()), "{objects}");

    // The filters select the same process by name and by service; another name selects nothing.
    for query in ["?comm=leaker", "?service=leaker"] {
        let (_, by) = heap_profile(&daemon, query);
        assert_eq!(by.total("inuse_space", pid), as_i64(live), "{query}");
    }
    // Every process on this busy host: the 1,000 largest stacks symbolized, the rest summed per process (the
    // fixture's total stays whole either way), within a scraper's 10 s timeout.
    let started = std::time::Instant::now();
    let response = heap(&daemon, "");
    let took = started.elapsed();
    assert_eq!(response.status, Some(200), "{response}");
    let all = Profile::from_gzip(response.body_bytes());
    assert_eq!(all.total("inuse_space", pid), as_i64(live));
    let header = |name: &str| -> u64 {
        response.header(name).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name}: {response}"))
    };
    let (omitted, unsymbolized) = (header("x-leakprobe-stacks-omitted"), header("x-leakprobe-stacks-unsymbolized"));
    let others = all.sample.iter().filter(|s| all.label(s, "stack_id") == Some("other")).count();
    println!(
        "unfiltered /debug/pprof/heap: {} samples ({} stacks symbolized, {unsymbolized} of them late; {omitted} more \
         summed into {others} per-process samples), {} bytes gzipped, in {took:.2?}",
        all.sample.len(),
        all.sample.len() - others,
        response.body_bytes().len(),
    );
    assert!(all.sample.len() - others <= 1_000, "at most --profile-max-stacks symbolized");
    assert!(took < Duration::from_secs(10), "a scrape within the default scrape timeout: {took:?}");
    let (_, none) = heap_profile(&daemon, &format!("?pid={pid}&service=not-leaker"));
    assert!(none.sample.is_empty(), "no process of that service: an empty profile");
    let (_, none) = heap_profile(&daemon, "?container=0123456789ab");
    assert!(none.sample.iter().all(|s| profile.pid(s) != Some(pid)), "the fixture is in no container");
}

#[test]
fn heap_endpoint_keeps_the_largest_stacks_and_counts_the_rest() {
    let daemon = Daemon::start_with_args(&["--profile-max-stacks", "2"]);
    let (fixture, stacks, live) = observed_leaker(&daemon, None);
    let pid = fixture.pid();
    assert!(stacks.len() > 2, "{}", dump(&stacks));
    let response = heap(&daemon, &format!("?pid={pid}"));
    assert_eq!(response.status, Some(200), "{response}");
    let bytes = response.body_bytes().to_vec();
    let profile = Profile::from_gzip(&bytes);
    let (top, rest): (Vec<_>, Vec<_>) =
        profile.sample.iter().partition(|s| profile.label(s, "stack_id") != Some("other"));
    assert_eq!((top.len(), rest.len()), (2, 1), "two stacks, and one sample for the rest");
    assert_eq!(profile.total("inuse_space", pid), as_i64(live), "the rest is summed, not dropped");
    let omitted = stacks.len() - 2;
    assert_eq!(response.header("x-leakprobe-stacks-omitted"), Some(omitted.to_string()), "{response}");
    assert!(
        profile.comments().iter().any(|c| c.contains(&format!("{omitted} more stacks"))),
        "{:?}",
        profile.comments()
    );
    // The largest by live bytes are kept: beta's 5 x 4096 bytes and alpha's 10 x 1000; the fence's 4321 is not.
    let top = go_tool_top(&bytes, &[]);
    println!("go tool pprof -top (--profile-max-stacks 2):\n{top}");
    for function in [" leak_beta", " leak_alpha", " [other stacks]"] {
        assert!(top.lines().any(|l| l.trim_end().ends_with(function)), "{function}: {top}");
    }

    // Chosen by another sample type, which is then the profile's default.
    let response = heap(&daemon, &format!("?pid={pid}&sample_index=inuse_objects"));
    let objects = go_tool_top(response.body_bytes(), &[]);
    assert!(objects.contains("Type: inuse_objects"), "{objects}");
    drop(fixture);
}

#[test]
fn heap_endpoint_rejects_bad_queries_and_can_be_off() {
    let daemon = Daemon::start();
    for (query, says) in [("?pid=abc", "pid: invalid digit"), ("?seconds=30", "unknown field `seconds`")] {
        let response = heap(&daemon, query);
        assert_eq!(response.status, Some(400), "{query}: {response}");
        assert!(response.body.contains(says), "{query}: {}", response.body);
        assert!(response.body.contains("parameters: pid, comm, service, container"), "{}", response.body);
    }
    let other = get_tcp(daemon.metrics_addr(), "/debug/pprof/profile", "*/*");
    assert_eq!(other.status, Some(404), "{other}");
    assert!(other.body.contains("GET /metrics and /debug/pprof/heap"), "{}", other.body);

    let off = Daemon::start_with_args(&["--no-pprof-endpoint"]);
    let response = heap(&off, "");
    assert_eq!(response.status, Some(404), "{response}");
    assert!(response.body.contains("serves only GET /metrics here"), "{}", response.body);
}

/// PID 1 of the test host is not systemd, so `systemd-run` cannot start a unit: the fixture runs in a real cgroup
/// named like a unit's (`/sys/fs/cgroup/…/leakprobe-test-PID.slice/NAME.service`, see [`UnitCgroup`]), removed
/// when the test ends.
#[test]
fn a_process_in_a_systemd_unit_is_its_service() {
    let daemon = Daemon::start();
    let unit = UnitCgroup::new("leakprobe-fleet");
    let (fixture, stacks, live) = observed_leaker(&daemon, Some(&unit));
    let pid = fixture.pid();
    let (_, profile) = heap_profile(&daemon, &format!("?service={}", unit.name()));
    assert_eq!(profile.total("inuse_space", pid), as_i64(live), "{}", dump(&stacks));
    assert!(profile.sample.iter().all(|s| profile.label(s, "service") == Some(unit.name())));
    assert!(profile.sample.iter().all(|s| profile.pid(s) == Some(pid)), "only the unit's process");
    let (_, by_comm) = heap_profile(&daemon, &format!("?pid={pid}&service=leaker"));
    assert!(by_comm.sample.is_empty(), "a process in a unit is not named after its comm");
    drop(fixture);
}

/// One request a [`Receiver`] got: the request line, the headers (lowercase names) and the body.
struct Received {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The query parameters of the request line.
    fn params(&self) -> Vec<(String, String)> {
        let target = self.line.split(' ').nth(1).unwrap_or("");
        let query = target.split_once('?').map_or("", |(_, q)| q);
        serde_urlencoded::from_str(query).unwrap_or_else(|e| panic!("a query string in {:?}: {e}", self.line))
    }

    fn param(&self, key: &str) -> Option<String> {
        self.params().into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The `profile` part of a `multipart/form-data` body, as RFC 7578 frames it.
    fn profile_part(&self) -> Vec<u8> {
        let content_type = self.header("content-type").unwrap_or_else(|| panic!("no content type: {}", self.line));
        let boundary = content_type
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap_or_else(|| panic!("not multipart/form-data: {content_type}"));
        let delimiter = format!("--{boundary}");
        let body = &self.body;
        let find =
            |from: usize, needle: &[u8]| body[from..].windows(needle.len()).position(|w| w == needle).map(|i| i + from);
        let start = find(0, delimiter.as_bytes()).expect("the first boundary");
        let head_end = find(start, b"\r\n\r\n").expect("the part's headers") + 4;
        let head = String::from_utf8_lossy(&body[start..head_end]);
        assert!(head.contains("Content-Disposition: form-data; name=\"profile\""), "{head}");
        let end = find(head_end, format!("\r\n{delimiter}--").as_bytes()).expect("the closing boundary");
        body[head_end..end].to_vec()
    }
}

/// A Pyroscope ingest endpoint for the test: answers the first request 503 (to see a retry), every other 200, and
/// hands each request over a channel.
struct Receiver {
    addr: std::net::SocketAddr,
    requests: std::sync::mpsc::Receiver<Received>,
}

impl Receiver {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
        let addr = listener.local_addr().expect("its address");
        let (tx, requests) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let Some(received) = read_request(&mut stream) else { continue };
                let answer: &[u8] = if n == 0 {
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                };
                let _ = std::io::Write::write_all(&mut stream, answer);
                if tx.send(received).is_err() {
                    break;
                }
            }
        });
        Self { addr, requests }
    }
}

fn read_request(stream: &mut std::net::TcpStream) -> Option<Received> {
    use std::io::{BufRead as _, Read as _};
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut reader = std::io::BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (k, v) = header.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let length: usize = headers.iter().find(|(k, _)| k == "content-length")?.1.parse().ok()?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received { line: line.trim_end().to_owned(), headers, body })
}

/// PID 1 of the test host is not systemd, so `systemd-run` cannot start a unit: the fixture runs in a real cgroup
/// named like a unit's (`/sys/fs/cgroup/…/leakprobe-test-PID.slice/NAME.service`, see [`UnitCgroup`]), removed
/// when the test ends.
#[test]
fn profiles_are_pushed_to_pyroscopes_ingest_api() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").expect("write the token");
    let url = format!("http://{}", receiver.addr);
    let daemon = Daemon::start_with_args(&[
        "--pyroscope-url",
        &url,
        "--push-interval",
        "1s",
        "--pyroscope-token-file",
        token.to_str().expect("utf-8"),
    ]);
    let unit = UnitCgroup::new("leakprobe-push");
    let (fixture, _, live) = observed_leaker(&daemon, Some(&unit));
    let pid = fixture.pid();

    // Requests of every process arrive; wait for the fixture's with its whole heap.
    let deadline = std::time::Instant::now() + Duration::from_mins(1);
    let (request, profile, bytes) = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let request = receiver.requests.recv_timeout(left).expect("a push of the fixture's heap within 60 s");
        if request.param("name").is_none_or(|n| !n.contains(&format!(",pid={pid}"))) {
            continue;
        }
        let bytes = request.profile_part();
        let profile = Profile::from_gzip(&bytes);
        if profile.total("inuse_space", pid) == as_i64(live) {
            break (request, profile, bytes);
        }
    };
    println!("received: {}", request.line);
    assert!(request.line.starts_with("POST /ingest?") && request.line.ends_with(" HTTP/1.1"), "{}", request.line);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname").trim().to_owned();
    let service = unit.name();
    assert_eq!(
        request.param("name"),
        Some(format!("{service}{{host={host},service={service},pid={pid},systemd_unit={service}.service}}"))
    );
    let (from, until): (u64, u64) = (
        request.param("from").and_then(|v| v.parse().ok()).expect("from, Unix seconds"),
        request.param("until").and_then(|v| v.parse().ok()).expect("until, Unix seconds"),
    );
    assert!(from <= until && until.abs_diff(leakprobe_tests::now_unix_ms() / 1000) < 120, "{from} {until}");
    assert_eq!(request.param("format").as_deref(), Some("pprof"));
    assert_eq!(request.header("authorization"), Some("Bearer s3cret-token"));
    assert!(profile.sample.iter().all(|s| profile.pid(s) == Some(pid)), "one process per profile");
    let top = go_tool_top(&bytes, &[]);
    assert!(top.contains("Type: inuse_space") && top.contains(" leak_alpha"), "{top}");

    // The first post was answered 503: counted, retried, and the rest went through.
    let count = |name: &str| daemon.counter("daemon_counters", name);
    assert!(count("push_failures") >= 1 && count("push_retries") >= 1, "the 503 was counted and retried");
    assert!(count("push_profiles") >= 1);
    drop(fixture);
}

/// PID 1 of the test host is not systemd, so `systemd-run` cannot start a unit: the fixture runs in a real cgroup
/// named like a unit's (`/sys/fs/cgroup/…/leakprobe-test-PID.slice/NAME.service`, see [`UnitCgroup`]), removed
/// when the test ends.
#[test]
fn a_real_prometheus_reads_growth_by_service_and_the_leak_alert() {
    // The daemon samples every half second over 20 s, so a steady leak is judged within seconds.
    let daemon = Daemon::start_with_args(&[
        "--interval",
        "500ms",
        "--window",
        "20s",
        "--metrics-top-processes",
        "10000",
        "--metrics-top-stacks",
        "200",
    ]);
    let unit = UnitCgroup::new("leakprobe-prom");
    let mut fixture = unit.spawn(GROWTH, "steady");
    fixture.wait_line("ready");
    let service = unit.name().to_owned();
    // The shipped rules, with the leak alert's 15 minutes shortened to 2 s.
    let rules =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus/leakprobe-rules.yml"))
            .expect("the shipped rules");
    assert!(rules.contains("for: 15m"), "{rules}");
    let prometheus = Prometheus::start(daemon.metrics_addr(), &rules.replace("for: 15m", "for: 2s"));

    // `growth steady` leaks 2048 bytes every 100 ms: 20480 B/s.
    let by_service =
        format!("sum by (service) (leakprobe_process_heap_growth_bytes_per_second{{service=\"{service}\"}})");
    let rate = poll_until(Duration::from_mins(2), "the leaker's heap growth by service in Prometheus", || {
        let result = prometheus.query(&by_service);
        let value: f64 = result.first()?["value"][1].as_str()?.parse().ok()?;
        (value > 15_000.0).then_some(value)
    });
    println!("{by_service} = {rate:.0} B/s");
    assert!(rate < 25_000.0, "20480 B/s leaked, {rate} measured");
    let firing = format!("ALERTS{{alertname=\"LeakprobeStackLeaking\",alertstate=\"firing\",service=\"{service}\"}}");
    let alert = poll_until(Duration::from_mins(2), "LeakprobeStackLeaking firing in ALERTS", || {
        prometheus.query(&firing).first().cloned()
    });
    println!("{firing}: {alert}");
    assert_eq!(alert["metric"]["function"], "leak_steady", "{alert:#}");
    assert!(alert["metric"].get("pid").is_none(), "keyed on the service, not the pid: {alert:#}");
    drop(fixture);
}
