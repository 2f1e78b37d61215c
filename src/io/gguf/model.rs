//! Model hyper-parameters and tokenizer fields from GGUF metadata, following the key names of
//! the GGUF spec (ggml `docs/gguf.md`, "Standardized key-value pairs": `{arch}.*` and
//! `tokenizer.ggml.*`).

use super::Gguf;
use crate::io::tokenizer::GgufTokenizerMeta;
use crate::model::config::{ModelConfig, RopeStyle};
use crate::{Error, Result};

/// `{arch}.rope.freq_base` when the file omits it (llama.cpp's default).
const DEFAULT_ROPE_THETA: f32 = 10_000.0;

impl Gguf<'_> {
    fn missing(&self, key: &str) -> Error {
        Error::format(&self.label, key, "required key is missing")
    }

    fn req_u32(&self, key: &str) -> Result<usize> {
        self.get_u32(key)?
            .map(|v| v as usize)
            .ok_or_else(|| self.missing(key))
    }

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
                    &self.label,
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
                        &self.label,
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
                    &self.label,
                    &heads_key,
                    format!(
                        "{n_head} heads do not divide embedding_length {dim} \
                         (and no attention.key_length is given)"
                    ),
                ))
            }
        };
        if max_ctx == 0 {
            return Err(Error::format(&self.label, k("context_length"), "is 0"));
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
        cfg.validate(&self.label)?;
        Ok(cfg)
    }

    /// The `tokenizer.ggml.*` fields. Parallel arrays must match the token count and special
    /// token ids must index it.
    pub fn tokenizer_meta(&self) -> Result<GgufTokenizerMeta> {
        let model_key = "tokenizer.ggml.model";
        let tokens_key = "tokenizer.ggml.tokens";
        let model = self
            .get_str(model_key)?
            .ok_or_else(|| self.missing(model_key))?;
        let tokens = self
            .get_str_array(tokens_key)?
            .ok_or_else(|| self.missing(tokens_key))?;
        let n = tokens.len();
        let same_len = |key: &str, len: usize| -> Result<()> {
            if len != 0 && len != n {
                return Err(Error::format(
                    &self.label,
                    key,
                    format!("{len} entries for {n} tokens"),
                ));
            }
            Ok(())
        };
        let types_key = "tokenizer.ggml.token_type";
        let token_types = self.get_i32_array(types_key)?.unwrap_or_default();
        same_len(types_key, token_types.len())?;
        let scores_key = "tokenizer.ggml.scores";
        let scores = self.get_f32_array(scores_key)?.unwrap_or_default();
        same_len(scores_key, scores.len())?;
        let id = |key: &str| -> Result<Option<u32>> {
            match self.get_u32(key)? {
                Some(i) if i as usize >= n => Err(Error::format(
                    &self.label,
                    key,
                    format!("token id {i} is outside the vocabulary of {n} tokens"),
                )),
                v => Ok(v),
            }
        };
        Ok(GgufTokenizerMeta {
            model: model.to_string(),
            pre: self.get_str("tokenizer.ggml.pre")?.map(str::to_string),
            tokens: tokens.to_vec(),
            token_types,
            scores,
            merges: self
                .get_str_array("tokenizer.ggml.merges")?
                .map(<[String]>::to_vec)
                .unwrap_or_default(),
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            unk: id("tokenizer.ggml.unknown_token_id")?,
            add_bos: self.get_bool("tokenizer.ggml.add_bos_token")?,
            add_eos: self.get_bool("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: self.get_bool("tokenizer.ggml.add_space_prefix")?,
        })
    }
}
