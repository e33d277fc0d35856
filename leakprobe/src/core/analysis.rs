//! Time series of live bytes, growth rates, and the leak verdict.
//!
//! Pure: points come in at ticks; the caller gives each tick's time, since a tick's sample is true as of
//! when the table had caught up with the kernel, which under load is not exactly the tick.
//!
//! The verdict rule, in words (thresholds in [`VerdictConfig`]):
//! - `new`: fewer than `min_points` samples: not enough data yet.
//! - `leaking`: live bytes grow steadily over the window (least-squares slope at least `min_growth_rate`
//!   bytes/s, fit R² at least `min_r2`), never fall back by more than `max_leak_drawdown` of their peak,
//!   still grow in the most recent part of the window (slope of the recent part at least `min_recent_ratio`
//!   of the whole), and old allocations accumulate: at least `min_old_fraction` of the live bytes are older
//!   than `old_age_fraction` of the series' span (a cache replaces its entries; a leak keeps them).
//! - `churn`: live bytes fall back by at least `churn_drawdown` of their peak: rises and falls, the
//!   "tidal" pattern.
//! - `plateau`: anything else: it grew (or not) and then stayed flat, the shape of a bounded cache.
//!
//! `frozen` is not a judgement: it marks a series that stopped because the probes that fed it were detached
//! (the CPU budget, the end of an escalation); its figures are the last ones seen, and nothing is judged on
//! a series that merely stopped.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// One sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Point {
    pub bytes: u64,
    pub count: u64,
}

/// A bounded ring of samples taken at consecutive ticks.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// Tick of the oldest point.
    first_tick: u64,
    points: VecDeque<Point>,
}

/// Memory one stored point takes, for accounting.
pub const POINT_BYTES: usize = size_of::<Point>();

impl Series {
    /// Records the sample of `tick`, keeping at most `capacity` points. A gap (ticks without samples)
    /// restarts the series: its points would not be evenly spaced any more.
    pub fn push(&mut self, tick: u64, point: Point, capacity: usize) {
        if self.points.is_empty() || tick != self.first_tick + self.points.len() as u64 {
            self.points.clear();
            self.first_tick = tick;
        }
        self.points.push_back(point);
        while self.points.len() > capacity.max(1) {
            self.points.pop_front();
            self.first_tick += 1;
        }
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The last `n` points (all when `n` is larger), oldest first, with their ticks.
    pub fn last(&self, n: usize) -> impl Iterator<Item = (u64, &Point)> {
        let skip = self.points.len().saturating_sub(n);
        self.points.iter().enumerate().skip(skip).map(|(i, p)| (self.first_tick + i as u64, p))
    }

    /// The latest point.
    pub fn latest(&self) -> Option<Point> {
        self.points.back().copied()
    }

    /// Adds `other`'s points into this series, tick by tick: before its first tick `other` had nothing (its
    /// stack was not seen yet), so the sum of two series is the series of the sum.
    pub fn add(&mut self, other: &Self) {
        for (tick, point) in other.last(other.len()) {
            self.add_at(tick, *point);
        }
    }

    /// Adds `point` to the sample of `tick`: a tick before the series' first counts from nothing (zeros are
    /// put in front), a tick not sampled yet is left out.
    pub fn add_at(&mut self, tick: u64, point: Point) {
        if self.points.is_empty() {
            self.first_tick = tick;
        }
        while tick < self.first_tick {
            self.points.push_front(Point::default());
            self.first_tick -= 1;
        }
        let index = usize::try_from(tick - self.first_tick).unwrap_or(usize::MAX);
        if let Some(mine) = self.points.get_mut(index) {
            mine.bytes = mine.bytes.saturating_add(point.bytes);
            mine.count = mine.count.saturating_add(point.count);
        } else if index == self.points.len() {
            self.points.push_back(point);
        }
    }
}

/// A least-squares line through a series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    /// Slope, in bytes per second.
    pub slope: f64,
    /// Coefficient of determination in [0, 1]: 1 is a perfect line (a flat series counts as one).
    pub r2: f64,
}

/// A sample: time in seconds (any origin), live bytes.
pub type Sample = (f64, f64);

/// Fits `y = a + b t` by least squares.
pub fn fit(samples: &[Sample]) -> Fit {
    let n = samples.len();
    if n < 2 {
        return Fit { slope: 0.0, r2: 1.0 };
    }
    #[expect(clippy::cast_precision_loss, reason = "a series has at most a few thousand points")]
    let nf = n as f64;
    let mean_t = samples.iter().map(|s| s.0).sum::<f64>() / nf;
    let mean_y = samples.iter().map(|s| s.1).sum::<f64>() / nf;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (t, y) in samples {
        let (dt, dy) = (t - mean_t, y - mean_y);
        sxy += dt * dy;
        sxx += dt * dt;
        syy += dy * dy;
    }
    if sxx <= 0.0 {
        return Fit { slope: 0.0, r2: 1.0 };
    }
    let r2 = if syy == 0.0 { 1.0 } else { (sxy * sxy / (sxx * syy)).clamp(0.0, 1.0) };
    Fit { slope: sxy / sxx, r2 }
}

/// The largest fall from a running peak, as a fraction of the highest value; 0 for a series that never
/// falls. Relative to the level, not to the range: a full cache that frees one block before allocating its
/// replacement dips by a sliver of its size, while a wave falls back to (near) nothing.
pub fn drawdown(values: &[f64]) -> f64 {
    let Some(max) = values.iter().copied().reduce(f64::max) else { return 0.0 };
    if max <= 0.0 {
        return 0.0;
    }
    let mut peak = f64::MIN;
    let mut worst: f64 = 0.0;
    for &v in values {
        peak = peak.max(v);
        worst = worst.max(peak - v);
    }
    worst / max
}

/// A stack's or a process's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Not enough data yet.
    New,
    /// Steady growth, old allocations accumulating.
    Leaking,
    /// Grew, then flat: a bounded cache.
    Plateau,
    /// Rises and falls.
    Churn,
    /// The probes were detached (the CPU budget shed the process, or its escalation ended): the figures are
    /// the last ones seen, and not judged.
    Frozen,
}

impl Verdict {
    /// The verdict as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Leaking => "leaking",
            Self::Plateau => "plateau",
            Self::Churn => "churn",
            Self::Frozen => "frozen",
        }
    }
}

/// Thresholds of the verdict rule (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerdictConfig {
    /// Samples needed before any other verdict than `new`.
    pub min_points: usize,
    /// Slope (bytes/s) at or above which growth counts.
    pub min_growth_rate: f64,
    /// R² of the line fit at or above which growth is steady.
    pub min_r2: f64,
    /// Largest fall from a peak, as a fraction of the highest value, that a leak may show.
    pub max_leak_drawdown: f64,
    /// Fraction of the window, at its end, that must still grow for `leaking`.
    pub recent_fraction: f64,
    /// The recent part's slope must be at least this fraction of the whole window's. 0.3: a leak whose rate
    /// falls to a third (its traffic dropped, the process is starved of CPU) still grows at 0.4 of the window's
    /// rate and stays `leaking`; a cache that fills ever more slowly, with a time constant under a third of the
    /// window, is under it and reads `plateau`.
    pub min_recent_ratio: f64,
    /// Allocations older than this fraction of the series' span are old.
    pub old_age_fraction: f64,
    /// Fraction of live bytes that must be old for `leaking`.
    pub min_old_fraction: f64,
    /// A fall from a peak of at least this fraction of the highest value is `churn`.
    pub churn_drawdown: f64,
}

impl Default for VerdictConfig {
    fn default() -> Self {
        Self {
            min_points: 6,
            min_growth_rate: 1.0,
            min_r2: 0.8,
            max_leak_drawdown: 0.1,
            recent_fraction: 1.0 / 3.0,
            min_recent_ratio: 0.3,
            old_age_fraction: 0.25,
            min_old_fraction: 0.25,
            churn_drawdown: 0.3,
        }
    }
}

/// Everything the verdict is made of, as reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Growth {
    /// Least-squares growth rate over the window, bytes per second.
    pub rate: f64,
    /// Goodness of that fit, R² in [0, 1].
    pub r2: f64,
    /// Growth rate over the recent part of the window, bytes per second.
    pub recent_rate: f64,
    /// Largest fall from a peak, as a fraction of the highest value.
    pub drawdown: f64,
    /// Seconds covered by the samples used.
    pub span_seconds: f64,
}

/// Growth of time-ordered samples.
pub fn growth(samples: &[Sample], config: &VerdictConfig) -> Growth {
    let whole = fit(samples);
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a small positive count of points"
    )]
    let recent_len = ((samples.len() as f64 * config.recent_fraction).ceil() as usize).max(2).min(samples.len());
    let recent = fit(&samples[samples.len() - recent_len..]);
    let values: Vec<f64> = samples.iter().map(|s| s.1).collect();
    let span_seconds = match (samples.first(), samples.last()) {
        (Some(first), Some(last)) => last.0 - first.0,
        _ => 0.0,
    };
    Growth { rate: whole.slope, r2: whole.r2, recent_rate: recent.slope, drawdown: drawdown(&values), span_seconds }
}

/// The verdict for a series with `points` samples, its growth, and the fraction of its live bytes that
/// are old (see [`VerdictConfig::old_age_fraction`]).
pub fn verdict(points: usize, growth: &Growth, old_fraction: f64, config: &VerdictConfig) -> Verdict {
    if points < config.min_points {
        return Verdict::New;
    }
    let steady = growth.rate >= config.min_growth_rate
        && growth.r2 >= config.min_r2
        && growth.drawdown <= config.max_leak_drawdown
        && growth.recent_rate >= config.min_recent_ratio * growth.rate;
    if steady && old_fraction >= config.min_old_fraction {
        Verdict::Leaking
    } else if growth.drawdown >= config.churn_drawdown {
        Verdict::Churn
    } else {
        Verdict::Plateau
    }
}

#[cfg(test)]
#[path = "analysis_tests.rs"]
mod tests;
