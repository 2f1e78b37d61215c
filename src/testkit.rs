//! The test kit shared by unit tests, integration tests and benchmarks: one seeded random
//! generator and one tiny synthetic model per architecture (all tensors f32), so that a test
//! written for one architecture runs on every other by changing one argument. Compiled into the
//! library (it is small and has no dependencies of its own) so integration tests can use it.

use crate::model::arch::Arch;
use crate::model::config::{ModelConfig, RopeStyle};
use crate::model::weights::ModelWeights;
use half::f16;

/// The seeded xorshift64 generator shared by the kernel, format and quantizer tests
/// (Marsaglia, "Xorshift RNGs", J. Stat. Softw. 8(14), 2003: shifts 13, 7, 17). Quality is
/// irrelevant here; what matters is that a seed always gives the same numbers, so a failure
/// reproduces. The seed must be nonzero (zero is a fixed point of xorshift).
pub struct Rng(pub u64);

// `next` is the name every test already calls; it is not an iterator.
#[allow(clippy::should_implement_trait)]
impl Rng {
    /// The high 32 bits of the next state.
    pub fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }
    /// Uniform in [-1, 1), on a grid of 2^-23 (24 random bits).
    pub fn next(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
    }
    /// Roughly normal (sum of four uniforms).
    pub fn normal(&mut self) -> f32 {
        (0..4).map(|_| self.next()).sum::<f32>() * 0.866
    }
    /// `n` uniform values in [-1, 1).
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
    /// `n` random bytes (the low byte of each draw).
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u32() as u8).collect()
    }
    /// `n` little-endian f16 values uniform in `lo ± span`, padded with zeros to a multiple of
    /// 4 bytes (the GPU binds whole words).
    pub fn f16s(&mut self, n: usize, lo: f32, span: f32) -> Vec<u8> {
        let mut v: Vec<u8> = (0..n)
            .flat_map(|_| f16::from_f32(lo + span * self.next()).to_le_bytes())
            .collect();
        v.resize(v.len().div_ceil(4) * 4, 0);
        v
    }
}

/// The tiny models' shapes: d = 64, 4 heads of 16, 2 layers.
pub const TINY_DIM: usize = 64;
/// Their vocabulary and longest context.
pub const TINY_VOCAB: usize = 48;
pub const TINY_CTX: usize = 64;

/// A tiny configuration of `arch`; `flavour` picks a variant where the architecture has one
/// (OPT: 0 pre-LayerNorm like opt-125m, 1 post-LayerNorm with a 32-wide projected embedding
/// like opt-350m; Llama: 0 with 2 KV heads (GQA), 1 with 4).
pub fn tiny_config(arch: Arch, flavour: usize) -> ModelConfig {
    let mut c = ModelConfig {
        arch: arch.names_of()[0].to_string(),
        n_layer: 2,
        dim: TINY_DIM,
        ffn_dim: 128,
        n_head: 4,
        n_kv_head: 4,
        head_dim: 16,
        vocab: TINY_VOCAB,
        rope_theta: 10_000.0,
        rope_style: RopeStyle::Half,
        norm_eps: 1e-5,
        max_ctx: TINY_CTX,
        tied_embeddings: true,
        proj_dim: None,
        post_norm: false,
    };
    match arch {
        Arch::Llama => {
            c.n_kv_head = if flavour == 0 { 2 } else { 4 };
            c.tied_embeddings = false;
        }
        Arch::Opt => {
            if flavour == 1 {
                c.post_norm = true;
                c.proj_dim = Some(32);
            }
        }
        Arch::Gpt2 => c.ffn_dim = 4 * TINY_DIM,
    }
    c
}

/// A tiny model of `config` with seeded values: matrices uniform in ±0.15, embeddings ±0.5,
/// norm weights 1 ± 0.2 with a few channels at 4 (outlier channels, as real models have),
/// biases ±0.05.
pub fn tiny_model(config: ModelConfig, seed: u64) -> ModelWeights {
    let mut r = Rng(seed.max(1));
    ModelWeights::from_fn(config, &mut |name, rows, cols| {
        let n = rows * cols;
        if name.contains("norm.weight") {
            (0..n)
                .map(|j| {
                    if j % 17 == 5 {
                        4.0
                    } else {
                        1.0 + 0.2 * r.next()
                    }
                })
                .collect()
        } else if name.ends_with(".bias") || name.contains("norm.bias") {
            (0..n).map(|_| 0.05 * r.next()).collect()
        } else if name.starts_with("token_embd") || name.starts_with("position_embd") {
            (0..n).map(|_| 0.5 * r.next()).collect()
        } else {
            (0..n).map(|_| 0.15 * r.next()).collect()
        }
    })
    .expect("the tiny configurations are valid")
}

/// Every architecture's tiny variants, with a label: what "runs on every architecture" loops
/// over.
pub fn tiny_variants() -> Vec<(&'static str, ModelConfig)> {
    vec![
        ("llama-gqa", tiny_config(Arch::Llama, 0)),
        ("opt-pre", tiny_config(Arch::Opt, 0)),
        ("opt-post", tiny_config(Arch::Opt, 1)),
        ("gpt2", tiny_config(Arch::Gpt2, 0)),
    ]
}

/// `n` token ids below `vocab` from a seeded stream.
pub fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut r = Rng(seed.max(1));
    (0..n).map(|_| r.next_u32() % vocab as u32).collect()
}
