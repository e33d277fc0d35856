//! Defaults shared by the daemon and the CLI client, and the daemon's TOML configuration file.
//!
//! Precedence: built-in defaults, then the file given with `--config`, then command-line flags.

use std::{fs, path::Path, time::Duration};

use anyhow::{Context as _, Result, ensure};
use leakprobe_common::LIVE_MAX_ENTRIES;
use serde::Deserialize;

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
/// Seconds between samples of the time series.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// History kept per series.
pub const DEFAULT_WINDOW: Duration = Duration::from_mins(10);

/// The configuration file. Every key is optional; unknown keys are an error.
///
/// ```toml
/// interval = "5s"          # between samples
/// window = "10m"           # history kept and used for growth rates
/// max_allocations = 2097152
/// max_stacks = 65536
/// max_series = 20000
///
/// [verdict]                # thresholds of the verdict rule (docs/concepts.md#the-verdict)
/// min_points = 6
/// min_growth_rate = 1.0    # bytes per second
/// ```
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default, with = "humantime_serde_opt")]
    pub interval: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub window: Option<Duration>,
    pub max_allocations: Option<u32>,
    pub max_stacks: Option<u32>,
    pub max_series: Option<u32>,
    #[serde(default)]
    pub verdict: VerdictConfig,
}

impl FileConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses and checks configuration text.
    pub fn parse(text: &str) -> Result<Self> {
        let config: Self = toml::from_str(text)?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        let v = &self.verdict;
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
}

/// Durations written as `"5s"`, `"10m"`.
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, de::Error as _};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map(Some).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let config = FileConfig::parse(
            "interval = \"2s\"\nwindow = \"1m\"\nmax_series = 10\n[verdict]\nmin_points = 4\nmin_r2 = 0.9\n",
        )
        .expect("valid");
        assert_eq!(config.interval, Some(Duration::from_secs(2)));
        assert_eq!(config.window, Some(Duration::from_mins(1)));
        assert_eq!(config.max_series, Some(10));
        assert_eq!(config.verdict.min_points, 4);
        assert!((config.verdict.min_r2 - 0.9).abs() < f64::EPSILON);
        assert_eq!(FileConfig::parse("").map(|c| c.verdict.min_points).ok(), Some(VerdictConfig::default().min_points));
        assert_eq!(FileConfig::parse("").expect("empty is fine"), FileConfig::default());
    }

    #[test]
    fn bad_files_say_why() {
        let err = FileConfig::parse("intervall = \"2s\"").expect_err("unknown key");
        assert!(format!("{err:#}").contains("intervall"), "{err:#}");
        let err = FileConfig::parse("interval = \"soon\"").expect_err("bad duration");
        assert!(format!("{err:#}").contains("soon") || format!("{err:#}").contains("interval"), "{err:#}");
        let err = FileConfig::parse("[verdict]\nmin_r2 = 2.0").expect_err("out of range");
        assert!(format!("{err:#}").contains("min_r2"), "{err:#}");
    }
}
