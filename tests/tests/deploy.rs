//! The files under `deploy/`: the alerting rules pass their `promtool test rules` unit tests, and the Grafana
//! dashboard is valid JSON whose every metric is in a real scrape of the daemon.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use leakprobe_tests::metrics::scrape;
use leakprobe_tests::{Daemon, Fixture, describe, poll_until, run_with_timeout, wait_for_fence};

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

#[test]
fn alerting_rules_pass_their_promtool_unit_tests() {
    let tests = format!("{DEPLOY}/prometheus/leakprobe-rules.test.yml");
    let out = run_with_timeout(Command::new("promtool").args(["test", "rules", &tests]), Duration::from_mins(1));
    assert!(out.status.success(), "promtool test rules {tests}\n{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"), "{}", describe(&out));
    // Every alert of the rules has a test.
    let rules = std::fs::read_to_string(format!("{DEPLOY}/prometheus/leakprobe-rules.yml")).expect("the rules");
    let test_text = std::fs::read_to_string(&tests).expect("the rule tests");
    let alerts: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    assert!(alerts.len() >= 4, "{alerts:?}");
    for alert in alerts {
        assert!(test_text.contains(&format!("alertname: {alert}\n")), "no unit test of {alert}");
        assert!(!rules.contains("pid }}"), "alerts are keyed on service, not pid");
    }
}

/// Metric names in a `PromQL` expression: identifiers starting with `leakprobe_` or `process_`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if (word.starts_with("leakprobe_") || word.starts_with("process_")) && c != '=' {
            names.insert(std::mem::take(&mut word));
        }
        word.clear();
    }
    names
}

#[test]
fn dashboard_queries_only_metrics_the_daemon_exports() {
    let path = format!("{DEPLOY}/grafana/leakprobe-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut exprs: Vec<String> = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().expect("variables") {
        if let Some(query) = variable["query"].as_str() {
            exprs.push(query.to_owned());
        }
    }
    let wanted: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert!(wanted.len() >= 10, "{wanted:?}");

    // A scrape with a leaking process in it has every family the dashboard reads.
    let daemon = Daemon::start_with_args(&["--interval", "500ms"]);
    let mut fixture = Fixture::leaker("basic");
    fixture.wait_line("ready");
    wait_for_fence(&daemon, fixture.pid());
    let exported = poll_until(Duration::from_secs(30), "an RSS sample in /metrics", || {
        let (text, samples) = scrape(&daemon);
        let names: BTreeSet<String> = samples.into_iter().map(|s| s.name).collect();
        names.contains("leakprobe_process_rss_growth_bytes_per_second").then_some((text, names))
    });
    let missing: Vec<&String> = wanted.iter().filter(|name| !exported.1.contains(*name)).collect();
    assert!(missing.is_empty(), "the dashboard reads metrics the daemon does not export: {missing:?}\n{}", exported.0);
}
