//! The classic Prometheus text format (0.0.4), from prometheus-client's `OpenMetrics` text.
//!
//! Prometheus asks for `OpenMetrics` in its `Accept` header and gets it. Everything else (`curl`, `promtool check
//! metrics`, older scrapers) gets the classic format, as the official client libraries do: the two differ, for the
//! gauges and counters leakprobe writes, only in that `OpenMetrics` names a counter family without its `_total`
//! suffix, has `# UNIT` lines and ends with `# EOF`.

use std::{collections::HashSet, fmt::Write as _};

/// Content type of the classic text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for `OpenMetrics`.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.split(',').any(|t| t.trim().starts_with("application/openmetrics-text")))
}

/// The classic text of `OpenMetrics` text made of gauges and counters.
pub fn from_openmetrics(text: &str) -> String {
    let counters: HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let comment = ["# HELP ", "# TYPE "].into_iter().find(|p| line.starts_with(p));
        if let Some(prefix) = comment {
            let rest = &line[prefix.len()..];
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                let _ = writeln!(out, "{prefix}{name}_total {tail}");
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_total_and_openmetrics_lines_go() {
        let open = "# HELP a_bytes A.\n# TYPE a_bytes gauge\n# UNIT a_bytes bytes\na_bytes 1.0\n\
                    # HELP c C things.\n# TYPE c counter\nc_total{x=\"y\"} 3\n# EOF\n";
        assert_eq!(
            from_openmetrics(open),
            "# HELP a_bytes A.\n# TYPE a_bytes gauge\na_bytes 1.0\n# HELP c_total C things.\n# TYPE c_total counter\n\
             c_total{x=\"y\"} 3\n"
        );
    }

    #[test]
    fn negotiation() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;\
                          q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
