//! Model hyper-parameters, read from GGUF metadata (`llama.*` keys) or a Hugging Face
//! `config.json`. One struct for the whole Llama family.

use serde::{Deserialize, Serialize};

/// How rotary embeddings pair up the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RopeStyle {
    /// Pairs `(2i, 2i+1)`: what llama.cpp uses for GGUF `llama` (the converter permutes q/k).
    Interleaved,
    /// Pairs `(i, i + d/2)`: Hugging Face checkpoints and GGUF `qwen2` ("NeoX" style).
    Half,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Architecture name as the file states it (`llama`, `qwen2`, `mistral`, ...).
    pub arch: String,
    pub n_layer: usize,
    /// Hidden size d.
    pub dim: usize,
    /// FFN inner size.
    pub ffn_dim: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub rope_theta: f32,
    pub rope_style: RopeStyle,
    pub rms_eps: f32,
    /// Longest context the model was trained for (evaluation refuses longer windows).
    pub max_ctx: usize,
    /// LM head shares the token embedding.
    pub tied_embeddings: bool,
}

impl ModelConfig {
    /// Upper bounds that keep a hostile file from asking for absurd allocations. Generous for
    /// "small LLMs" (up to a few billion parameters).
    pub const MAX_DIM: usize = 16_384;
    pub const MAX_LAYERS: usize = 256;
    pub const MAX_VOCAB: usize = 1 << 20;
    pub const MAX_HEADS: usize = 1024;

    /// Check internal consistency; `file` names the source in the message.
    pub fn validate(&self, file: &str) -> crate::Result<()> {
        use crate::Error;
        let bound = |field: &str, v: usize, max: usize| -> crate::Result<()> {
            if v == 0 || v > max {
                return Err(Error::format(
                    file,
                    field,
                    format!("{v} is outside 1..={max}"),
                ));
            }
            Ok(())
        };
        bound("n_layer", self.n_layer, Self::MAX_LAYERS)?;
        bound("dim", self.dim, Self::MAX_DIM)?;
        bound("ffn_dim", self.ffn_dim, 8 * Self::MAX_DIM)?;
        bound("n_head", self.n_head, Self::MAX_HEADS)?;
        bound("n_kv_head", self.n_kv_head, Self::MAX_HEADS)?;
        bound("head_dim", self.head_dim, 1024)?;
        bound("vocab", self.vocab, Self::MAX_VOCAB)?;
        if !self.n_head.is_multiple_of(self.n_kv_head) {
            return Err(Error::format(
                file,
                "n_kv_head",
                format!(
                    "{} query heads are not a multiple of {} KV heads",
                    self.n_head, self.n_kv_head
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(Error::format(
                file,
                "head_dim",
                format!("{} is odd; RoPE needs pairs", self.head_dim),
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(Error::format(
                file,
                "rope_theta",
                format!("{} is not a positive number", self.rope_theta),
            ));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps > 0.0 && self.rms_eps < 1.0) {
            return Err(Error::format(
                file,
                "rms_eps",
                format!("{} is outside (0, 1)", self.rms_eps),
            ));
        }
        Ok(())
    }

    /// Parameters in the linear layers of the blocks (what quantizers act on).
    pub fn block_linear_params(&self) -> usize {
        let kv = self.n_kv_head * self.head_dim;
        let q = self.n_head * self.head_dim;
        self.n_layer
            * (self.dim * q + 2 * self.dim * kv + q * self.dim + 3 * self.dim * self.ffn_dim)
    }
}
