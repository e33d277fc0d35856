//! Weights of sampled allocations.
//!
//! In sampled mode the kernel samples allocations as a Poisson process over allocated bytes with mean
//! interval `R`: an allocation of `S` bytes is sampled with probability `p = 1 - exp(-S / R)`. Counting each
//! sampled allocation as `S / p` bytes and `1 / p` allocations makes the estimated live bytes and counts of
//! every stack unbiased (Horvitz-Thompson), as in jemalloc's and tcmalloc's heap profilers.

use leakprobe_common::{EXP_TABLE_LEN, EXP_TABLE_SHIFT};

/// The quantile table the kernel draws exponential countdowns from (see `leakprobe_common::EXP_TABLE`).
pub fn exp_table() -> [u32; EXP_TABLE_LEN] {
    let mut table = [0; EXP_TABLE_LEN];
    let scale = f64::from(1u32 << EXP_TABLE_SHIFT);
    for (i, entry) in table.iter_mut().enumerate() {
        #[expect(clippy::cast_precision_loss, reason = "small indices")]
        let u = (i as f64 + 0.5) / EXP_TABLE_LEN as f64;
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "at most 7.7 * 2^16")]
        let value = (-u.ln() * scale).round() as u32;
        *entry = value;
    }
    table
}

/// Probability that an allocation of `size` bytes is sampled with mean interval `interval`.
pub fn probability(size: u64, interval: u64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "a ratio")]
    let ratio = size as f64 / interval as f64;
    -(-ratio).exp_m1()
}

/// `SplitMix64`: a well-mixed value from a seed, for unbiased rounding.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The estimated bytes and allocations one sampled allocation of `size` stands for. `seed` (any per-event
/// value) rounds the count up or down at random in proportion, so counts stay unbiased as integers.
pub fn weigh(size: u64, interval: u64) -> impl Fn(u64) -> (u64, u64) {
    let p = probability(size, interval);
    move |seed| {
        if p <= 0.0 {
            return (0, 1);
        }
        #[expect(clippy::cast_precision_loss, reason = "sizes below 2^53 are exact")]
        let bytes = size as f64 / p;
        let count = 1.0 / p;
        #[expect(clippy::cast_precision_loss, reason = "a uniform draw in [0, 1)")]
        let uniform = (mix(seed) >> 11) as f64 / (1u64 << 53) as f64;
        let whole = count.floor();
        let count = if uniform < count - whole { whole + 1.0 } else { whole };
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "positive, below 2^63")]
        (bytes.round() as u64, count as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    fn the_table_is_an_exponential_with_mean_one() {
        let table = exp_table();
        let mean: f64 = table.iter().map(|&q| f64::from(q) / 65536.0).sum::<f64>() / EXP_TABLE_LEN as f64;
        assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
        // P(X <= 1) = 1 - 1/e for a unit exponential.
        let below = table.iter().filter(|&&q| q <= 65536).count() as f64 / EXP_TABLE_LEN as f64;
        assert!((below - (1.0 - (-1.0f64).exp())).abs() < 0.002, "{below}");
        assert!(table.windows(2).all(|w| w[0] >= w[1]), "quantiles decrease with u");
    }

    #[test]
    fn large_allocations_weigh_their_size() {
        let weigh = weigh(64 << 20, 512 << 10)(7);
        assert_eq!(weigh, (64 << 20, 1));
    }

    #[test]
    fn weights_are_unbiased_on_average() {
        // Size 4096 at interval 8192: p = 1 - e^-0.5 = 0.3935; 1/p = 2.541.
        let w = weigh(4096, 8192);
        let (bytes, _) = w(0);
        assert_eq!(bytes, 10_410, "4096 / (1 - e^-0.5) = 10409.6");
        let n = 100_000u64;
        let counts: u64 = (0..n).map(|seed| w(seed).1).sum();
        #[expect(clippy::cast_precision_loss, reason = "a test average")]
        let mean = counts as f64 / n as f64;
        assert!((mean - 1.0 / probability(4096, 8192)).abs() < 0.01, "{mean}");
        assert_eq!(weigh(0, 8192)(1), (0, 1));
    }
}
