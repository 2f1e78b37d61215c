//! A GGUF file's model hyper-parameters (`{arch}.*` keys of the GGUF spec, ggml `docs/gguf.md`,
//! "Standardized key-value pairs") as a `ModelConfig`: the model layer's reading of the plain
//! metadata `io::gguf` parses (the parser itself knows nothing of models).

use crate::io::gguf::Gguf;
use crate::model::config::{ModelConfig, RopeStyle};
use crate::{Error, Result};

/// `{arch}.rope.freq_base` when the file omits it (llama.cpp's default).
const DEFAULT_ROPE_THETA: f32 = 10_000.0;

impl Gguf<'_> {
    /// The model's hyper-parameters, validated (`ModelConfig::validate`).
    pub fn model_config(&self) -> Result<ModelConfig> {
        let arch_key = "general.architecture";
        let arch = self
            .get_str(arch_key)?
            .ok_or_else(|| self.missing(arch_key))?;
        // GGUF architectures QuantLab runs, by the key that holds their norm epsilon. GPT-2 has
        // no RoPE (its style is a neutral value the forward pass never reads).
        let (rope_style, eps_name) = match arch {
            "llama" | "mistral" => (RopeStyle::Interleaved, "attention.layer_norm_rms_epsilon"),
            "qwen2" => (RopeStyle::Half, "attention.layer_norm_rms_epsilon"),
            "gpt2" => (RopeStyle::Half, "attention.layer_norm_epsilon"),
            other => {
                return Err(Error::unsupported(
                    self.label(),
                    arch_key,
                    format!("architecture {other:?}; supported: llama, mistral, qwen2, gpt2"),
                ))
            }
        };
        let k = |s: &str| format!("{arch}.{s}");
        let n_layer = self.req_u32(&k("block_count"))?;
        let dim = self.req_u32(&k("embedding_length"))?;
        let ffn_dim = self.req_u32(&k("feed_forward_length"))?;
        let heads_key = k("attention.head_count");
        let n_head = self.req_u32(&heads_key)?;
        let n_kv_head = match self.get_u32(&k("attention.head_count_kv"))? {
            Some(v) => v as usize,
            None => n_head,
        };
        let rope_theta = self
            .get_f32(&k("rope.freq_base"))?
            .unwrap_or(DEFAULT_ROPE_THETA);
        let norm_eps_key = k(eps_name);
        let norm_eps = self
            .get_f32(&norm_eps_key)?
            .ok_or_else(|| self.missing(&norm_eps_key))?;
        let max_ctx = self.req_u32(&k("context_length"))?;
        let vocab_key = k("vocab_size");
        let vocab = match self.get_u32(&vocab_key)? {
            Some(v) => v as usize,
            None => match self.get_str_array("tokenizer.ggml.tokens")? {
                Some(t) => t.len(),
                None => {
                    return Err(Error::format(
                        self.label(),
                        &vocab_key,
                        "missing, and there is no tokenizer.ggml.tokens to count",
                    ))
                }
            },
        };
        let head_dim = match self.get_u32(&k("attention.key_length"))? {
            Some(v) => v as usize,
            None if n_head > 0 && dim.is_multiple_of(n_head) => dim / n_head,
            None => {
                return Err(Error::format(
                    self.label(),
                    &heads_key,
                    format!(
                        "{n_head} heads do not divide embedding_length {dim} \
                         (and no attention.key_length is given)"
                    ),
                ))
            }
        };
        if max_ctx == 0 {
            return Err(Error::format(self.label(), k("context_length"), "is 0"));
        }
        self.check_against_tensors(arch, n_layer, head_dim)?;
        let cfg = ModelConfig {
            arch: arch.to_string(),
            n_layer,
            dim,
            ffn_dim,
            n_head,
            n_kv_head,
            head_dim,
            vocab,
            rope_theta,
            rope_style,
            norm_eps,
            max_ctx,
            tied_embeddings: self.tensor("output.weight").is_none(),
            proj_dim: None,
            post_norm: false,
        };
        cfg.validate(self.label())?;
        Ok(cfg)
    }
}
