//! The pre-tokenizer table: which regular expressions cut text into words before byte-level BPE,
//! chosen by the GGUF key `tokenizer.ggml.pre`.
//!
//! Follows llama.cpp's `src/llama-vocab.cpp` (the `tokenizer_pre` name → `LLAMA_VOCAB_PRE_TYPE_*`
//! chain, and the `regex_exprs` list of `llm_tokenizer_bpe`). llama.cpp applies the expressions of
//! a list one after another; each one cuts every piece left by the previous one into matches and
//! the text between matches, keeping both. Hugging Face's `Split(pattern, Isolated)` does exactly
//! that, so a list becomes a `Sequence` of `Split`s followed by a byte-level mapping without its
//! own regex.
//!
//! Compiling these expressions is the most expensive part of building a tokenizer (their
//! Unicode classes `\p{L}`, `\p{N}` become large automata; under the fuzzer it was two thirds of
//! each GGUF input), and `tokenizers`' `Split` compiles again on every `Clone`. So each list is
//! compiled once per process and shared behind an `Arc` ([`SharedPreTokenizer`]).

use crate::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::{Arc, Mutex, PoisonError};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizedString, PreTokenizer, PreTokenizerWrapper, SplitDelimiterBehavior};

/// GPT-2's word pattern (contractions, letters, numbers, other symbols, whitespace runs).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// Llama 3's pattern as llama.cpp spells it (the `(?i:...)` group written out per letter).
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's pattern: like Llama 3 but every digit is a word of its own.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How text is cut into words before BPE, and the per-family flags llama.cpp sets with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PreTok {
    /// The `tokenizer.ggml.pre` value this came from ("default" when the key is absent).
    pub name: String,
    /// Applied in order, each as an isolating split.
    pub regexes: Vec<&'static str>,
    /// llama.cpp's `ignore_merges`: a word that is itself a vocabulary entry is emitted whole.
    pub ignore_merges: bool,
    /// llama.cpp's default for `add_bos` when the GGUF has no `tokenizer.ggml.add_bos_token`.
    pub default_add_bos: bool,
}

impl PreTok {
    /// llama.cpp's choice for a `tokenizer.ggml.pre` value. An absent value means "default"
    /// (llama.cpp warns and does the same); an unknown one is an error, as in llama.cpp, because
    /// guessing would silently change every token count.
    pub(crate) fn llama_cpp(pre: Option<&str>) -> Result<PreTok> {
        let name = pre.unwrap_or("default");
        let (regexes, ignore_merges, default_add_bos): (Vec<&'static str>, bool, bool) = match name
        {
            "default" => (
                vec![r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
                false,
                false,
            ),
            // The Llama 3 family: llama.cpp also turns on ignore_merges and add_bos for it.
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => {
                (vec![LLAMA3], true, true)
            }
            "dbrx" | "smaug-bpe" => (vec![LLAMA3], false, false),
            "qwen2" | "deepseek-r1-qwen" | "megrez" | "stablelm2" => (vec![QWEN2], false, false),
            // Every digit a word of its own, then GPT-2's pattern (StarCoder's tokenizer.json:
            // `Digits(individual_digits) + ByteLevel`). SmolLM's vocabulary was trained this way.
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva-7b" => (vec![r"\p{N}", GPT2], false, false),
            "gpt-2" | "phi-2" | "roberta-bpe" | "mpt" | "olmo" | "jais" | "exaone4" => {
                (vec![GPT2], false, false)
            }
            other => {
                return Err(Error::Tokenizer(format!(
                    "tokenizer.ggml.pre: unknown pre-tokenizer '{other}' (llama.cpp refuses it \
                     too); known: default, gpt-2, smollm, starcoder, llama-bpe, llama3, qwen2, ..."
                )))
            }
        };
        Ok(PreTok {
            name: name.to_string(),
            regexes,
            ignore_merges,
            default_add_bos,
        })
    }

    /// What transformers 5.17's GGUF import builds for a Llama-architecture file with a `gpt2`
    /// vocabulary, whatever its `pre`: plain GPT-2 byte-level splitting (its `GGUFLlamaConverter`
    /// "llama-3" branch). Only the add_bos default of the llama.cpp family is kept.
    pub(crate) fn hf_gguf_import(pre: Option<&str>) -> Result<PreTok> {
        let base = PreTok::llama_cpp(pre)?;
        Ok(PreTok {
            regexes: vec![GPT2],
            ignore_merges: false,
            ..base
        })
    }

    /// The Hugging Face pre-tokenizer: isolating splits, then bytes → GPT-2's printable alphabet.
    /// Compiled on the first call for this list of expressions, then shared.
    pub(crate) fn build(&self) -> Result<SharedPreTokenizer> {
        // A panic while compiling cannot leave the list half-written (it is pushed to after),
        // so a poisoned lock is still usable.
        let mut compiled = COMPILED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, p)) = compiled.iter().find(|(r, _)| *r == self.regexes) {
            return Ok(p.clone());
        }
        let p = SharedPreTokenizer(Arc::new(self.compile()?));
        compiled.push((self.regexes.clone(), p.clone()));
        Ok(p)
    }

    fn compile(&self) -> Result<PreTokenizerWrapper> {
        let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(self.regexes.len() + 1);
        for re in &self.regexes {
            let split = Split::new(
                SplitPattern::Regex((*re).to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| {
                Error::Tokenizer(format!("pre-tokenizer '{}': regex {re}: {e}", self.name))
            })?;
            steps.push(split.into());
        }
        steps.push(ByteLevel::new(false, false, false).into());
        Ok(Sequence::new(steps).into())
    }
}

/// The pre-tokenizers compiled so far, by their list of expressions. The lists are the constant
/// ones of the table in `PreTok::llama_cpp` (a handful), so this stays small.
static COMPILED: Mutex<Vec<(Vec<&'static str>, SharedPreTokenizer)>> = Mutex::new(Vec::new());

/// A compiled pre-tokenizer that tokenizers (and their clones) share. Every tokenizer QuantLab
/// builds uses this type for its pre-tokenizer (`super::Pipeline`); one read from a
/// tokenizer.json holds its own copy.
#[derive(Clone, Debug)]
pub(crate) struct SharedPreTokenizer(Arc<PreTokenizerWrapper>);

impl PreTokenizer for SharedPreTokenizer {
    fn pre_tokenize(&self, s: &mut PreTokenizedString) -> tokenizers::Result<()> {
        self.0.pre_tokenize(s)
    }
}

/// Written as the compiled pre-tokenizer's own JSON (a `Sequence` of `Split`s and `ByteLevel`):
/// what a tokenizer.json exported for transformers holds.
impl Serialize for SharedPreTokenizer {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// A tokenizer.json's `pre_tokenizer`, read as `tokenizers` reads it.
impl<'de> Deserialize<'de> for SharedPreTokenizer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        PreTokenizerWrapper::deserialize(d).map(|p| SharedPreTokenizer(Arc::new(p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_pre_is_an_error_naming_it() {
        let err = PreTok::llama_cpp(Some("no-such-pre"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no-such-pre"), "{err}");
    }

    #[test]
    fn absent_pre_is_default_and_smollm_splits_digits_first() {
        assert_eq!(PreTok::llama_cpp(None).unwrap().name, "default");
        let s = PreTok::llama_cpp(Some("smollm")).unwrap();
        assert_eq!(s.regexes, vec![r"\p{N}", GPT2]);
        let l3 = PreTok::llama_cpp(Some("llama-bpe")).unwrap();
        assert!(l3.ignore_merges && l3.default_add_bos);
        for p in [
            None,
            Some("smollm"),
            Some("llama3"),
            Some("qwen2"),
            Some("gpt-2"),
        ] {
            PreTok::llama_cpp(p).unwrap().build().unwrap();
        }
    }

    /// The second build of a list reuses the first one's compiled expressions instead of
    /// compiling them again; a different list gets its own.
    #[test]
    fn a_list_of_expressions_is_compiled_once() {
        let smollm = PreTok::llama_cpp(Some("smollm")).unwrap();
        let a = smollm.build().unwrap();
        let b = smollm.build().unwrap();
        assert!(Arc::ptr_eq(&a.0, &b.0));
        // "starcoder" has the same list as "smollm": shared too.
        let c = PreTok::llama_cpp(Some("starcoder"))
            .unwrap()
            .build()
            .unwrap();
        assert!(Arc::ptr_eq(&a.0, &c.0));
        let d = PreTok::llama_cpp(Some("qwen2")).unwrap().build().unwrap();
        assert!(!Arc::ptr_eq(&a.0, &d.0));
    }
}
