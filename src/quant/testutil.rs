//! Seeded data and a tiny Llama model for the quantizers' unit tests.

use crate::model::config::{ModelConfig, RopeStyle};
use crate::model::weights::ModelWeights;

/// Seeded values in [-0.5, 0.5), from the test kit's one generator (`testkit::Rng`).
pub fn lcg(seed: u64, n: usize) -> Vec<f32> {
    // Any seed (0 included) maps to a nonzero xorshift state.
    let mut r = crate::testkit::Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    (0..n).map(|_| 0.5 * r.next()).collect()
}

/// Two layers, d = 64, FFN 128, 4 query heads of 16 over `n_kv` KV heads, vocab 32, f32; norm
/// gains vary by channel so activations have outlier channels, as real ones do.
pub fn tiny_model(n_kv: usize) -> ModelWeights {
    let config = ModelConfig {
        arch: "llama".into(),
        n_layer: 2,
        dim: 64,
        ffn_dim: 128,
        n_head: 4,
        n_kv_head: n_kv,
        head_dim: 16,
        vocab: 32,
        rope_theta: 10_000.0,
        rope_style: RopeStyle::Interleaved,
        norm_eps: 1e-5,
        max_ctx: 128,
        tied_embeddings: true,
        proj_dim: None,
        post_norm: false,
    };
    let gains: Vec<f32> = (0..64)
        .map(|j| {
            if j % 13 == 3 {
                6.0
            } else {
                0.5 + (j % 5) as f32 * 0.3
            }
        })
        .collect();
    let mut seed = 0;
    ModelWeights::from_fn(config, &mut |name, rows, cols| {
        if name.ends_with("attn_norm.weight") {
            gains.clone()
        } else if name.ends_with("ffn_norm.weight") {
            gains.iter().rev().copied().collect()
        } else if name == "output_norm.weight" {
            vec![1.0; cols]
        } else {
            seed += 1;
            lcg(seed, rows * cols).iter().map(|x| x * 0.2).collect()
        }
    })
    .expect("the tiny model's config is valid")
}

pub fn tokens(n: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) % 32)
        .collect()
}
/// Approximately standard normal values (sum of 12 uniforms − 6).
pub fn gaussian(seed: u64, n: usize) -> Vec<f32> {
    let u = lcg(seed, 12 * n);
    u.chunks_exact(12).map(|c| c.iter().sum::<f32>()).collect()
}
