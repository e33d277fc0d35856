//! Scraping the daemon's `/metrics` over real HTTP and reading the classic text format.

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::Daemon;
use crate::http::{RawResponse, get_tcp};

/// What Prometheus sends (it asks for `OpenMetrics` first).
pub const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                                     version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// One sample: name, labels in order, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value as a whole number; fails unless it is one.
    pub fn whole(&self) -> u64 {
        assert!(self.value >= 0.0 && self.value.fract() == 0.0 && self.value < 9e15, "not a whole number: {self:?}");
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "checked just above")]
        let whole = self.value as u64;
        whole
    }

    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// `GET /metrics` with `accept`; fails unless it answers 200.
pub fn scrape_raw(daemon: &Daemon, accept: &str) -> RawResponse {
    let response = get_tcp(daemon.metrics_addr(), "/metrics", accept);
    assert_eq!(response.status, Some(200), "scrape failed: {response}");
    response
}

/// The samples of a classic-format scrape (`curl`'s).
pub fn scrape(daemon: &Daemon) -> (String, Vec<Sample>) {
    let body = scrape_raw(daemon, "*/*").body;
    let samples = parse(&body);
    (body, samples)
}

/// Parses sample lines (label values without `"`, `,` or `}` inside, as leakprobe's are in the tests).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
            let value: f64 = value.parse().unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("bad labels in {line:?}"));
                    let labels = body
                        .split("\",")
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line:?}"));
                            (k.to_owned(), v.trim_end_matches('"').to_owned())
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, Vec::new()),
            };
            Sample { name: name.to_owned(), labels, value }
        })
        .collect()
}

/// Runs `promtool check metrics` on `text` (stdin); fails the test if promtool is missing or complains.
pub fn promtool_check_metrics(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run promtool (`cargo xtask setup` installs it): {e}"));
    child.stdin.take().expect("piped stdin").write_all(text.as_bytes()).expect("write to promtool");
    let out = child.wait_with_output().expect("wait for promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\non:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
