//! A two-layer Llama-shaped model built in code (d = 64, FFN 128, 4 heads of 16 with 2 KV heads,
//! vocab 32, all f32) for quantizer tests that need a whole `ModelWeights` but not the real one.

use quantlab::model::config::{ModelConfig, RopeStyle};
use quantlab::model::weights::ModelWeights;

/// Seeded pseudo-random values in [-0.1, 0.1) (an LCG; quality is irrelevant here).
pub fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
        })
        .collect()
}

/// Norm gains of the synthetic model (64 channels each).
pub struct Norms {
    pub attn: Vec<f32>,
    pub ffn: Vec<f32>,
    pub output: Vec<f32>,
}

/// The synthetic model with the given norm gains; weights are `values` with seeds 1, 2, ….
pub fn synthetic(norms: &Norms) -> ModelWeights {
    let config = ModelConfig {
        arch: "llama".into(),
        n_layer: 2,
        dim: 64,
        ffn_dim: 128,
        n_head: 4,
        n_kv_head: 2,
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
    let mut seed = 0;
    ModelWeights::from_fn(config, &mut |name, rows, cols| {
        if name.ends_with("attn_norm.weight") {
            norms.attn.clone()
        } else if name.ends_with("ffn_norm.weight") {
            norms.ffn.clone()
        } else if name == "output_norm.weight" {
            norms.output.clone()
        } else {
            seed += 1;
            values(seed, rows * cols)
        }
    })
    .expect("the synthetic model's config is valid")
}
