//! Rates and verdicts on synthetic series.
#![allow(
    clippy::float_cmp,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "synthetic series of small exact values"
)]

use super::*;

const INTERVAL: f64 = 5.0;

fn series(values: impl IntoIterator<Item = u64>) -> Series {
    let mut s = Series::default();
    for (tick, bytes) in values.into_iter().enumerate() {
        s.push(tick as u64, Point { bytes, count: 1 }, 1000);
    }
    s
}

/// A deterministic pseudo-random sequence in [-1, 1] (xorshift), for noise.
fn noise(n: usize) -> Vec<f64> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2001) as f64 / 1000.0 - 1.0
        })
        .collect()
}

/// The last `n` points of a series, at evenly spaced times.
fn samples(s: &Series, n: usize) -> Vec<Sample> {
    s.last(n).map(|(tick, p)| (tick as f64 * INTERVAL, p.bytes as f64)).collect()
}

fn judge(s: &Series, old_fraction: f64) -> (Verdict, Growth) {
    let config = VerdictConfig::default();
    let g = growth(&samples(s, usize::MAX), &config);
    (verdict(s.len(), &g, old_fraction, &config), g)
}

#[test]
fn fit_of_a_line_is_exact() {
    let f = fit(&[(0.0, 10.0), (2.0, 20.0), (4.0, 30.0), (6.0, 40.0)]);
    assert!((f.slope - 5.0).abs() < 1e-9, "{f:?}");
    assert!((f.r2 - 1.0).abs() < 1e-9);
    assert_eq!(fit(&[(0.0, 7.0), (1.0, 7.0), (2.0, 7.0)]), Fit { slope: 0.0, r2: 1.0 });
    assert_eq!(fit(&[(0.0, 7.0)]), Fit { slope: 0.0, r2: 1.0 });
    assert_eq!(fit(&[]), Fit { slope: 0.0, r2: 1.0 });
    // All samples at one instant: no slope can be told.
    assert_eq!(fit(&[(3.0, 1.0), (3.0, 9.0)]), Fit { slope: 0.0, r2: 1.0 });
}

#[test]
fn uneven_sample_times_still_give_the_true_rate() {
    // A leak of 100 B/s sampled at jittered times (a lagging consumer): fitting against the tick index
    // would be off; fitting against the real times is exact.
    let jitter = noise(40);
    let samples: Vec<Sample> = (0..40)
        .map(|i| {
            let t = i as f64 * 5.0 + 2.0 * jitter[i];
            (t, 100.0 * t + 1000.0)
        })
        .collect();
    let g = growth(&samples, &VerdictConfig::default());
    assert!((g.rate - 100.0).abs() < 1e-6, "{g:?}");
    assert!((g.r2 - 1.0).abs() < 1e-9);
}

#[test]
fn drawdown_measures_falls() {
    assert_eq!(drawdown(&[1.0, 2.0, 3.0]), 0.0);
    assert_eq!(drawdown(&[5.0, 5.0]), 0.0);
    assert!((drawdown(&[0.0, 10.0, 5.0, 10.0]) - 0.5).abs() < 1e-9);
    // A full cache dipping by one block of 64 is not a fall back.
    assert!((drawdown(&[64.0, 63.0, 64.0, 63.0]) - 1.0 / 64.0).abs() < 1e-9);
    assert_eq!(drawdown(&[]), 0.0);
}

#[test]
fn steady_growth_with_old_allocations_is_leaking() {
    // 1 KiB every 5 s: 204.8 B/s.
    let s = series((0..60).map(|i| 1024 * i));
    let (v, g) = judge(&s, 0.7);
    assert_eq!(v, Verdict::Leaking);
    assert!((g.rate - 204.8).abs() < 1e-6, "{g:?}");
}

#[test]
fn noisy_steady_growth_is_still_leaking_with_a_close_rate() {
    let jitter = noise(120);
    let s = series((0..120).map(|i| (10_000.0 * i as f64 + 3_000.0 * jitter[i]) as u64 + 5_000));
    let (v, g) = judge(&s, 0.6);
    assert_eq!(v, Verdict::Leaking, "{g:?}");
    assert!((g.rate - 2_000.0).abs() / 2_000.0 < 0.02, "{g:?}");
}

#[test]
fn growth_without_old_allocations_is_not_leaking() {
    // Growing, but everything live is young: a cache that replaces its entries while it grows.
    let s = series((0..60).map(|i| 1024 * i));
    assert_eq!(judge(&s, 0.05).0, Verdict::Plateau);
}

#[test]
fn fill_then_flat_is_a_plateau() {
    let s = series((0..60).map(|i| 1024 * i.min(20)));
    assert_eq!(judge(&s, 0.9).0, Verdict::Plateau);
    // Flat from the start, too, and a full cache that dips while it replaces an entry.
    assert_eq!(judge(&series([4096; 30]), 1.0).0, Verdict::Plateau);
    assert_eq!(
        judge(&series((0..30).map(|i| if i % 3 == 0 { 63 * 4096 } else { 64 * 4096 })), 0.5).0,
        Verdict::Plateau
    );
}

#[test]
fn waves_are_churn() {
    let s = series((0..60).map(|i| 1024 * (i % 10)));
    assert_eq!(judge(&s, 0.5).0, Verdict::Churn);
    // Noisy waves.
    let jitter = noise(60);
    let s = series((0..60).map(|i| (50_000.0 + 40_000.0 * (i as f64 / 3.0).sin() + 2_000.0 * jitter[i]) as u64));
    assert_eq!(judge(&s, 0.5).0, Verdict::Churn);
}

#[test]
fn short_series_are_new() {
    let s = series([0, 1024, 2048]);
    assert_eq!(judge(&s, 1.0).0, Verdict::New);
    assert_eq!(judge(&Series::default(), 1.0).0, Verdict::New);
}

#[test]
fn a_leak_that_slows_down_is_still_leaking() {
    // 3,000 B per sample for 40 samples, then 1,000: the leaking requests fell to a third, or the process got
    // a third of the CPU it had. Still a leak: the recent third grows at 0.4 of the window's rate.
    let s = series((0..60u64).map(|i| 3_000 * i.min(40) + 1_000 * i.saturating_sub(40)));
    let (v, g) = judge(&s, 0.9);
    assert_eq!(v, Verdict::Leaking, "{g:?}");
    assert!((g.recent_rate - 200.0).abs() < 1e-6, "{g:?}");
}

#[test]
fn a_cache_that_fills_ever_more_slowly_is_a_plateau() {
    // 1 - e^(-t/τ) with τ a fifth and a quarter of the window: the recent third grows at 0.11 and 0.2 of the
    // window's rate.
    for tau in [12.0, 15.0] {
        let s = series((0..60).map(|i| (1e6 * (1.0 - (-f64::from(i) / tau).exp())) as u64));
        let (v, g) = judge(&s, 0.9);
        assert_eq!(v, Verdict::Plateau, "τ {tau}: {g:?}");
    }
}

#[test]
fn growth_that_stopped_recently_is_not_leaking() {
    // Grew for 40 samples then flat for 20: the recent third is flat.
    let s = series((0..60).map(|i| 1000 * i.min(40)));
    assert_eq!(judge(&s, 0.9).0, Verdict::Plateau);
}

#[test]
fn series_keep_capacity_and_restart_on_gaps() {
    let mut s = Series::default();
    for tick in 0..10 {
        s.push(tick, Point { bytes: tick, count: 0 }, 4);
    }
    assert_eq!(s.len(), 4);
    assert_eq!(s.last(2).map(|(tick, p)| (tick, p.bytes)).collect::<Vec<_>>(), vec![(8, 8), (9, 9)]);
    s.push(20, Point { bytes: 1, count: 0 }, 4);
    assert_eq!(s.len(), 1);
    assert_eq!(s.latest(), Some(Point { bytes: 1, count: 0 }));
}

#[test]
fn window_limits_the_points_used() {
    // Old history flat, recent growth: a window over the recent part sees steady growth.
    let s = series((0..100).map(|i| if i < 50 { 0 } else { 100 * (i - 50) }));
    let config = VerdictConfig::default();
    let g = growth(&samples(&s, 40), &config);
    assert!((g.rate - 20.0).abs() < 1e-6, "{g:?}");
    assert_eq!(verdict(40, &g, 0.5, &config), Verdict::Leaking);
}
