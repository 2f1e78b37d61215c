//! AdamW (Loshchilov & Hutter, arXiv 1711.05101, as `torch.optim.AdamW`) and the cosine
//! learning-rate schedule with linear warm-up (as `transformers`' `get_cosine_schedule_with_warmup`,
//! which the BinaryMoS authors train with).

use serde::{Deserialize, Serialize};

/// AdamW's constants.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Decoupled weight decay (the authors' runs: transformers' default, 0).
    pub weight_decay: f32,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// First and second moments of one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

impl Moments {
    pub fn zeros(n: usize) -> Self {
        Moments {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }
}

impl AdamW {
    /// One update of `p` by gradient `g` at step `t` (1-based) with learning rate `lr`.
    pub fn step(&self, p: &mut [f32], g: &[f32], s: &mut Moments, lr: f32, t: u64) {
        let t = t.min(i32::MAX as u64) as i32;
        let (c1, c2) = (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t));
        let decay = 1.0 - lr * self.weight_decay;
        for i in 0..p.len() {
            s.m[i] = self.beta1 * s.m[i] + (1.0 - self.beta1) * g[i];
            s.v[i] = self.beta2 * s.v[i] + (1.0 - self.beta2) * g[i] * g[i];
            let (mh, vh) = (s.m[i] / c1, s.v[i] / c2);
            p[i] = p[i] * decay - lr * mh / (vh.sqrt() + self.eps);
        }
    }
}

/// The learning rate of step `step` (0-based) of `total`: linear warm-up over `warmup` steps
/// (reaching `base` at the end of it; transformers' starts at 0 and wastes the first step),
/// then a half cosine from `base` to 0.
pub fn cosine_lr(base: f32, step: usize, total: usize, warmup: usize) -> f32 {
    if step < warmup {
        return base * (step + 1) as f32 / warmup as f32;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / span as f64).min(1.0);
    (base as f64 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_follows_a_half_cosine() {
        let lr = |s| cosine_lr(1.0, s, 103, 3);
        assert_eq!([lr(0), lr(1), lr(2)], [1.0 / 3.0, 2.0 / 3.0, 1.0]);
        assert_eq!(lr(3), 1.0);
        assert!((lr(53) - 0.5).abs() < 1e-6, "{}", lr(53));
        assert!(lr(102) < 1e-3 && lr(102) > 0.0);
        assert_eq!(cosine_lr(2.0, 0, 10, 0), 2.0);
    }

    #[test]
    fn adamw_by_hand() {
        // First step: m̂ = g, v̂ = g², so p moves by lr·g/(|g| + eps) after decaying by lr·wd.
        let o = AdamW {
            weight_decay: 0.1,
            ..AdamW::default()
        };
        let mut p = vec![1.0f32, -2.0];
        let mut s = Moments::zeros(2);
        o.step(&mut p, &[0.5, -4.0], &mut s, 0.01, 1);
        let want = [1.0 * (1.0 - 0.001) - 0.01, -2.0 * (1.0 - 0.001) + 0.01];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{p:?} vs {want:?}");
        }
    }
}
