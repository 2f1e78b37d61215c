//! A two-layer Llama-shaped model built in code (d = 64, FFN 128, 4 heads of 16 with 2 KV heads,
//! vocab 32, all f32) for quantizer tests that need a whole `ModelWeights` but not the real one.

use quantlab::model::config::{ModelConfig, RopeStyle};
use quantlab::model::weights::{LayerWeights, Linear, ModelWeights};
use quantlab::quant::format::QTensor;

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
        rms_eps: 1e-5,
        max_ctx: 128,
        tied_embeddings: true,
    };
    let mut seed = 0;
    let mut m = |rows: usize, cols: usize| {
        seed += 1;
        QTensor::from_f32(rows, cols, &values(seed, rows * cols))
    };
    let mut layers = Vec::new();
    for i in 0..2 {
        let lin = |name: &str, w: QTensor| Linear {
            name: format!("blk.{i}.{name}.weight"),
            w,
            bias: None,
        };
        layers.push(LayerWeights {
            attn_norm: norms.attn.clone(),
            ffn_norm: norms.ffn.clone(),
            wq: lin("attn_q", m(64, 64)),
            wk: lin("attn_k", m(32, 64)),
            wv: lin("attn_v", m(32, 64)),
            wo: lin("attn_output", m(64, 64)),
            w_gate: lin("ffn_gate", m(128, 64)),
            w_up: lin("ffn_up", m(128, 64)),
            w_down: lin("ffn_down", m(64, 128)),
        });
    }
    ModelWeights {
        config,
        token_embd: m(32, 64),
        output_norm: norms.output.clone(),
        output: None,
        layers,
    }
}
