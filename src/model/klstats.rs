//! Statistics of the per-token KL divergence KL(reference ‖ model) and of top-1 agreement over
//! the scored tokens, as llama.cpp's `llama-perplexity --kl-divergence` prints them
//! (tools/perplexity/perplexity.cpp, "KL divergence statistics" and "Same top p"):
//!
//! - mean ± its standard error `sqrt((E[kl²] − E[kl]²) / (n − 1))`;
//! - median and the 90, 95, 99 and 99.9 % percentiles by linear interpolation between the sorted
//!   values at `p·(n − 1)` (numpy's default `percentile`, and llama.cpp's), and the maximum;
//! - top-1 agreement ("same top p") ± the binomial standard error `sqrt(p(1 − p) / (n − 1))`.
//!
//! The per-token values are kept (one f64 per scored token, so bounded by the tokens evaluated)
//! because percentiles need them all.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KlStats {
    /// Mean KL in nats per scored token.
    pub mean: f64,
    /// Standard error of the mean.
    pub mean_err: f64,
    pub median: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
    /// Fraction of scored tokens where both models' argmax agree.
    pub top1: f64,
    /// Binomial standard error of `top1`.
    pub top1_err: f64,
    /// Scored tokens the statistics are over.
    pub n: usize,
}

/// Collects the per-token values while windows are scored.
#[derive(Clone, Debug, Default)]
pub struct KlAccumulator {
    values: Vec<f64>,
    sum: f64,
    sum_sq: f64,
    agree: usize,
}

impl KlAccumulator {
    /// Room for `tokens` scored tokens up front (the evaluation knows its count).
    pub fn with_capacity(tokens: usize) -> Self {
        KlAccumulator {
            values: Vec::with_capacity(tokens),
            ..Default::default()
        }
    }

    pub fn push(&mut self, kl: f64, top1_agree: bool) {
        self.values.push(kl);
        self.sum += kl;
        self.sum_sq += kl * kl;
        self.agree += top1_agree as usize;
    }

    /// The statistics; `None` when no token was scored.
    pub fn finish(mut self) -> Option<KlStats> {
        let n = self.values.len();
        if n == 0 {
            return None;
        }
        // The evaluation rejects non-finite KL values before they get here, so the order is
        // total; `total_cmp` keeps a stray NaN from panicking all the same.
        self.values.sort_unstable_by(|a, b| a.total_cmp(b));
        let v = &self.values;
        let mean = self.sum / n as f64;
        let top1 = self.agree as f64 / n as f64;
        let err = |var: f64| {
            if n < 2 {
                0.0
            } else {
                (var.max(0.0) / (n - 1) as f64).sqrt()
            }
        };
        Some(KlStats {
            mean,
            mean_err: err(self.sum_sq / n as f64 - mean * mean),
            median: percentile(v, 0.5),
            p90: percentile(v, 0.90),
            p95: percentile(v, 0.95),
            p99: percentile(v, 0.99),
            p99_9: percentile(v, 0.999),
            max: v[n - 1],
            top1,
            top1_err: err(top1 * (1.0 - top1)),
            n,
        })
    }
}

/// The `p` quantile (0 ≤ p ≤ 1) of non-empty ascending `sorted`, linearly interpolated between
/// the two order statistics around `p·(n − 1)`.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let pos = p.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let i = pos.floor() as usize;
    let frac = pos - i as f64;
    let j = (i + 1).min(sorted.len() - 1);
    sorted[i] + frac * (sorted[j] - sorted[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sums of a few exact binary fractions: only the last bit may differ.
    const TOL: f64 = 1e-15;

    #[test]
    fn hand_computed_small_case() {
        let mut a = KlAccumulator::default();
        for (kl, agree) in [(0.5, true), (0.0, true), (2.0, false), (1.0, true)] {
            a.push(kl, agree);
        }
        let s = a.finish().unwrap();
        // sorted 0, 0.5, 1, 2: median at 1.5 → 0.75; p90 at 2.7 → 1 + 0.7·1 = 1.7
        assert!((s.mean - 0.875).abs() < TOL);
        assert!((s.median - 0.75).abs() < TOL);
        assert!((s.p90 - 1.7).abs() < TOL);
        assert_eq!(s.max, 2.0);
        assert_eq!((s.top1, s.n), (0.75, 4));
        // E[x²] = 5.25/4; var = 1.3125 − 0.765625 = 0.546875; /3
        assert!((s.mean_err - (0.546875f64 / 3.0).sqrt()).abs() < TOL);
        assert!((s.top1_err - (0.1875f64 / 3.0).sqrt()).abs() < TOL);
    }

    #[test]
    fn one_token_has_no_error_and_none_has_no_stats() {
        let mut a = KlAccumulator::default();
        a.push(0.25, false);
        let s = a.finish().unwrap();
        assert_eq!(
            (s.mean, s.mean_err, s.median, s.p99_9, s.max),
            (0.25, 0.0, 0.25, 0.25, 0.25)
        );
        assert_eq!((s.top1, s.top1_err), (0.0, 0.0));
        assert!(KlAccumulator::default().finish().is_none());
    }
}
