//! Model hyper-parameters, read from GGUF metadata (`{arch}.*` keys) or a Hugging Face
//! `config.json`. One struct for every architecture (`model::arch`); fields an architecture
//! does not use keep neutral values (a GPT-2 has no RoPE, a Llama no projection).

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
    /// Epsilon of the norms (RMSNorm or LayerNorm).
    #[serde(alias = "norm_eps")]
    pub norm_eps: f32,
    /// Longest context the model was trained for (evaluation refuses longer windows).
    pub max_ctx: usize,
    /// LM head shares the token embedding.
    pub tied_embeddings: bool,
    /// Width of the token embedding when it differs from `dim` (OPT's `word_embed_proj_dim`,
    /// with `project_in`/`project_out` around the blocks).
    #[serde(default)]
    pub proj_dim: Option<usize>,
    /// Post-LayerNorm blocks (OPT-350m: `do_layer_norm_before = false`).
    #[serde(default)]
    pub post_norm: bool,
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
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0 && self.norm_eps < 1.0) {
            return Err(Error::format(
                file,
                "norm_eps",
                format!("{} is outside (0, 1)", self.norm_eps),
            ));
        }
        if let Some(p) = self.proj_dim {
            bound("proj_dim", p, Self::MAX_DIM)?;
        }
        bound("max_ctx", self.max_ctx, 1 << 24)?;
        let arch = self
            .architecture()
            .map_err(|e| Error::format(file, "architecture", e.to_string()))?;
        arch.validate(self, file)
    }

    /// Parameters in the linear layers of the blocks (what quantizers act on).
    pub fn block_linear_params(&self) -> usize {
        self.topology()
            .map_or(0, |t| self.n_layer * t.linear_params_per_layer())
    }
}
