//! Tokenizer fields from GGUF metadata, following the key names of the GGUF spec (ggml
//! `docs/gguf.md`, "Standardized key-value pairs": `tokenizer.ggml.*`). The model's
//! hyper-parameters (`{arch}.*`) are read by the model layer (`model::gguf`).

use super::Gguf;
use crate::io::tokenizer::GgufTokenizerMeta;
use crate::{Error, Result};

impl Gguf<'_> {
    /// The error for a required key the file lacks.
    pub fn missing(&self, key: &str) -> Error {
        Error::format(&self.label, key, "required key is missing")
    }

    /// A required `u32` key.
    pub fn req_u32(&self, key: &str) -> Result<usize> {
        self.get_u32(key)?
            .map(|v| v as usize)
            .ok_or_else(|| self.missing(key))
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
