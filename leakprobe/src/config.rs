//! Defaults shared by the daemon and the CLI client, and the daemon's TOML configuration file.
//!
//! Precedence (applied by `cli::settings`): command-line flag, then `LEAKPROBE_*` environment variable, then the
//! file given with `--config`, then the built-in default.

use std::{collections::BTreeMap, fs, path::Path};

use anyhow::{Context as _, Result, bail, ensure};
use leakprobe_common::LIVE_MAX_ENTRIES;

use crate::core::analysis::VerdictConfig;

/// Where the daemon serves and the client connects, unless `--socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/leakprobe/leakprobe.sock";
/// Mode of the socket file: root and the socket's group may query.
pub const DEFAULT_SOCKET_MODE: &str = "0660";
/// Live allocations tracked: the kernel's live-address map holds as many.
pub const DEFAULT_MAX_ALLOCATIONS: u32 = LIVE_MAX_ENTRIES;
/// Distinct stacks stored.
pub const DEFAULT_MAX_STACKS: u32 = 65_536;
/// Where the daemon keeps what outlives it (OOM reports under `oom/`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/leakprobe";
/// Time series kept: 20,000 series of 121 points take about 39 MB.
pub const DEFAULT_MAX_SERIES: u32 = 20_000;

/// The configuration file, read but not yet checked against `run`'s settings (`cli::settings` does that).
///
/// Every key is optional. A key is a setting of `leakprobe run`, named as its flag without the dashes
/// (`--max-series` is `max_series`); its value is a string, a number, a boolean or an array of them (repeatable
/// flags). The verdict thresholds, which have no flags, are under `[verdict]`:
///
/// ```toml
/// interval = "5s"          # --interval
/// max_series = 20000       # --max-series
/// max_oom_report_bytes = "64MiB"
/// discovery_exclude = ["/opt/toolchain/"]
///
/// [verdict]                # thresholds of the verdict rule (docs/concepts.md#the-verdict)
/// min_points = 6
/// min_growth_rate = 1.0    # bytes per second
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileConfig {
    /// Each setting's value(s), as they would be written on the command line, by key.
    pub settings: BTreeMap<String, Vec<String>>,
    /// Thresholds of the verdict rule.
    pub verdict: VerdictConfig,
}

impl FileConfig {
    /// Reads a configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses configuration text: TOML syntax, value types and the verdict thresholds.
    pub fn parse(text: &str) -> Result<Self> {
        let mut table: toml::Table = toml::from_str(text)?;
        let verdict = match table.remove("verdict") {
            Some(value) => value.try_into::<VerdictConfig>().context("in [verdict]")?,
            None => VerdictConfig::default(),
        };
        check_verdict(&verdict)?;
        let mut settings = BTreeMap::new();
        for (key, value) in table {
            let values = match value {
                toml::Value::Array(items) => items.into_iter().map(|item| scalar(&key, item)).collect::<Result<_>>()?,
                value => vec![scalar(&key, value)?],
            };
            settings.insert(key, values);
        }
        Ok(Self { settings, verdict })
    }
}

/// A value as it would be written on the command line.
fn scalar(key: &str, value: toml::Value) -> Result<String> {
    Ok(match value {
        toml::Value::String(text) => text,
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => bail!("{key}: expected a string, a number or a boolean, not {}", other.type_str()),
    })
}

fn check_verdict(v: &VerdictConfig) -> Result<()> {
    ensure!(v.min_points >= 2, "verdict.min_points must be at least 2");
    for (name, value) in [
        ("min_r2", v.min_r2),
        ("max_leak_drawdown", v.max_leak_drawdown),
        ("recent_fraction", v.recent_fraction),
        ("old_age_fraction", v.old_age_fraction),
        ("min_old_fraction", v.min_old_fraction),
        ("churn_drawdown", v.churn_drawdown),
    ] {
        ensure!((0.0..=1.0).contains(&value), "verdict.{name} must be between 0 and 1, not {value}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let config = FileConfig::parse(
            "interval = \"2s\"\nmax_series = 10\nno_discovery = true\ndiscovery_exclude = [\"/a\", \"/b\"]\n\
             cpu_budget_host = 2.5\n[verdict]\nmin_points = 4\nmin_r2 = 0.9\n",
        )
        .expect("valid");
        let get = |key: &str| config.settings.get(key).cloned().unwrap_or_default();
        assert_eq!(get("interval"), ["2s"]);
        assert_eq!(get("max_series"), ["10"]);
        assert_eq!(get("no_discovery"), ["true"]);
        assert_eq!(get("discovery_exclude"), ["/a", "/b"]);
        assert_eq!(get("cpu_budget_host"), ["2.5"]);
        assert_eq!(config.verdict.min_points, 4);
        assert!((config.verdict.min_r2 - 0.9).abs() < f64::EPSILON);
        assert_eq!(FileConfig::parse("").expect("empty is fine"), FileConfig::default());
    }

    #[test]
    fn bad_files_say_why() {
        let err = FileConfig::parse("interval = ").expect_err("syntax");
        assert!(format!("{err:#}").contains("line 1"), "{err:#}");
        let err = FileConfig::parse("[verdict]\nmin_r2 = 2.0").expect_err("out of range");
        assert!(format!("{err:#}").contains("min_r2"), "{err:#}");
        let err = FileConfig::parse("[verdict]\nmin_rr = 0.5").expect_err("unknown threshold");
        assert!(format!("{err:#}").contains("min_rr"), "{err:#}");
        let err = FileConfig::parse("interval = { a = 1 }").expect_err("a table");
        assert!(format!("{err:#}").contains("interval"), "{err:#}");
    }
}
