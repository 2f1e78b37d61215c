//! Text ⇄ token ids for the models QuantLab loads.
//!
//! Specs followed: llama.cpp's `src/llama-vocab.cpp` for what the GGUF keys `tokenizer.ggml.*`
//! mean (model `gpt2` = byte-level BPE with a named pre-tokenizer, `llama` = SentencePiece-style
//! BPE over scores with `<0xXX>` byte fallback; token types 3 = control, 4 = user-defined), and
//! the Hugging Face `tokenizer.json` format. The encoding itself is done by the `tokenizers` crate
//! (fancy-regex build, so native and wasm tokenize identically); this file only assembles it from
//! validated metadata. docs/tokenization.md explains why QuantLab follows llama.cpp, and the
//! two reference token counts of WikiText-2.

mod bpe_files;
mod build;
mod check;
mod partial;
mod pretok;

use crate::{Error, Result};
use build::{
    byte_level_bpe, parse_merges, sentencepiece_bpe, template_bos, token_texts, validate, vocab_map,
};
pub use partial::Partial;
use pretok::{PreTok, SharedPreTokenizer};
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper,
    TokenizerImpl,
};

/// The `tokenizers` pipeline: `tokenizers::Tokenizer` but for a pre-tokenizer that clones share
/// (`pretok::SharedPreTokenizer`) instead of compiling its expressions again.
type Pipeline = TokenizerImpl<
    ModelWrapper,
    NormalizerWrapper,
    SharedPreTokenizer,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// Most tokens (and merges) a vocabulary may have; the largest real ones are ~256 K.
pub const MAX_TOKENS: usize = 1 << 20;
/// Longest token string, in bytes (real ones stay under a few hundred).
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Largest `tokenizer.json` accepted.
pub const MAX_TOKENIZER_JSON_BYTES: usize = 64 << 20;
/// Largest text `encode` accepts (the whole of WikiText-2 test is 1.3 MB).
pub const MAX_ENCODE_BYTES: usize = 256 << 20;

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_UNKNOWN: i32 = 2;
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;
const TOKEN_TYPE_BYTE: i32 = 6;

/// Tokenizer fields of a GGUF file (`tokenizer.ggml.*`).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GgufTokenizerMeta {
    pub model: String,       // tokenizer.ggml.model: "gpt2", "llama", ...
    pub pre: Option<String>, // tokenizer.ggml.pre: "smollm", "llama-bpe", "qwen2", ...
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>, // may be empty
    pub scores: Vec<f32>,      // may be empty
    pub merges: Vec<String>,   // may be empty (SentencePiece)
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
}

/// Whose reading of a GGUF vocabulary to reproduce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerCompat {
    /// llama.cpp's: the pre-tokenizer named by `tokenizer.ggml.pre`. The default, and the way
    /// the model was trained (docs/tokenization.md).
    #[default]
    LlamaCpp,
    /// transformers 5.17's GGUF import of a Llama-architecture file with a `gpt2` vocabulary:
    /// plain GPT-2 splitting whatever `pre` says (so no digit isolation for `smollm`). Only for
    /// comparing with numbers measured by transformers; SentencePiece vocabularies are read the
    /// llama.cpp way in both modes.
    HfGgufImport,
}

/// The tokenizer files of a Hugging Face checkpoint: `tokenizer.json`, or (repositories that
/// predate it, such as `facebook/opt-*`) `vocab.json` + `merges.txt` with the special tokens in
/// `tokenizer_config.json`.
#[derive(Clone, Copy, Debug)]
pub enum TokenizerFiles<'a> {
    Json(&'a [u8]),
    Bpe {
        vocab: &'a [u8],
        merges: &'a [u8],
        config: Option<&'a [u8]>,
    },
}

impl TokenizerFiles<'_> {
    /// The tokenizer these files describe; `label` names the checkpoint in messages.
    pub fn load(&self, label: &str) -> Result<Tokenizer> {
        match *self {
            TokenizerFiles::Json(b) => {
                Tokenizer::from_tokenizer_json(&format!("{label}/tokenizer.json"), b)
            }
            TokenizerFiles::Bpe {
                vocab,
                merges,
                config,
            } => Tokenizer::from_bpe_files(label, vocab, merges, config),
        }
    }
}

/// What a tokenizer was built from, kept so that QuantLab's model file (`model::qlab`) can carry
/// it and rebuild exactly the same tokenizer (the pipeline itself has a custom pre-tokenizer
/// and is not saved).
#[derive(Clone, Debug, Default)]
pub enum Recipe {
    /// GGUF metadata (or vocab.json + merges.txt, read into the same fields).
    Gguf {
        meta: GgufTokenizerMeta,
        compat: TokenizerCompat,
    },
    /// A Hugging Face `tokenizer.json`, as its bytes.
    Json(Vec<u8>),
    /// Built in a test from parts; cannot be saved.
    #[default]
    None,
}

/// A saved tokenizer: its recipe as bytes (`kind` says which) and the special ids in force.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedSpecial {
    pub kind: String,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
}

/// `SavedSpecial::kind` of a GGUF recipe (the bytes are `{"compat", "meta"}` JSON).
const SAVED_GGUF: &str = "gguf-meta";
/// `SavedSpecial::kind` of a `tokenizer.json` recipe (the bytes are the file).
const SAVED_JSON: &str = "tokenizer.json";

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedGguf {
    compat: TokenizerCompat,
    meta: GgufTokenizerMeta,
}

/// A ready tokenizer: encode, decode and the special ids the evaluator needs.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    inner: Pipeline,
    /// What it was built from (shared by clones).
    recipe: std::sync::Arc<Recipe>,
    /// Number of ids (vocabulary plus added tokens); every valid id is below it.
    n_vocab: usize,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    /// Control tokens (text, id), matched in text only by `encode_with_special`.
    control: Vec<(String, u32)>,
}

impl Tokenizer {
    /// Build from GGUF metadata the way llama.cpp reads it.
    pub fn from_gguf(meta: &GgufTokenizerMeta) -> Result<Tokenizer> {
        Tokenizer::from_gguf_compat(meta, TokenizerCompat::LlamaCpp)
    }

    /// Build from GGUF metadata, reproducing `compat`'s reading of it.
    pub fn from_gguf_compat(
        meta: &GgufTokenizerMeta,
        compat: TokenizerCompat,
    ) -> Result<Tokenizer> {
        let n = validate(meta)?;
        let tokens = token_texts(&meta.tokens);
        let vocab = vocab_map(&tokens)?;
        let (mut inner, add_bos_default) = match meta.model.as_str() {
            "gpt2" => {
                let pre = match compat {
                    TokenizerCompat::LlamaCpp => PreTok::llama_cpp(meta.pre.as_deref())?,
                    TokenizerCompat::HfGgufImport => PreTok::hf_gguf_import(meta.pre.as_deref())?,
                };
                let merges = parse_merges(&meta.merges, &vocab)?;
                (byte_level_bpe(vocab, merges, &pre)?, pre.default_add_bos)
            }
            "llama" => (sentencepiece_bpe(meta, &tokens, vocab)?, true),
            other => {
                return Err(Error::Tokenizer(format!(
                    "tokenizer.ggml.model: unsupported tokenizer '{other}' (supported: gpt2, llama)"
                )))
            }
        };
        // Control and unknown tokens are matched in text only on request (llama.cpp's
        // parse_special); user-defined ones always (llama.cpp matches them whole regardless).
        let mut control = Vec::new();
        let mut special = Vec::new();
        let mut user = Vec::new();
        for (id, &ty) in meta.token_types.iter().enumerate() {
            let text = &tokens[id];
            match ty {
                TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNKNOWN => {
                    special.push(AddedToken::from(text.clone(), true).normalized(false));
                    control.push((text.clone(), id as u32));
                }
                TOKEN_TYPE_USER_DEFINED => {
                    user.push(AddedToken::from(text.clone(), false).normalized(false))
                }
                _ => {}
            }
        }
        inner.add_special_tokens(&special);
        inner.add_tokens(&user);
        inner.set_encode_special_tokens(true);
        // An empty control string would match everywhere (token_texts renames empty tokens, so
        // this only guards future callers).
        control.retain(|c| !c.0.is_empty());
        control.sort_by_key(|c| std::cmp::Reverse(c.0.len()));
        Ok(Tokenizer {
            inner,
            recipe: std::sync::Arc::new(Recipe::Gguf {
                meta: meta.clone(),
                compat,
            }),
            n_vocab: n,
            bos: meta.bos,
            eos: meta.eos,
            add_bos: meta.add_bos.unwrap_or(add_bos_default),
            control,
        })
    }

    /// Build from `vocab.json` + `merges.txt` (+ `tokenizer_config.json` for the special tokens
    /// and `add_bos_token`), for repositories without `tokenizer.json` (`bpe_files.rs`).
    pub fn from_bpe_files(
        label: &str,
        vocab_json: &[u8],
        merges_txt: &[u8],
        tokenizer_config_json: Option<&[u8]>,
    ) -> Result<Tokenizer> {
        let meta = bpe_files::meta(label, vocab_json, merges_txt, tokenizer_config_json)?;
        Tokenizer::from_gguf(&meta)
    }

    /// Build from a Hugging Face `tokenizer.json`. `bos`/`add_bos` come from its post-processor:
    /// a template whose single-sequence form starts with a special token (Llama 3's
    /// `<|begin_of_text|> $A`), or a Roberta/Bert processor's `cls`, means "add that BOS". Files
    /// without one (SmolLM2's) add none. tokenizer.json does not say which token is EOS, so `eos`
    /// is `None` until `set_special` supplies it from tokenizer_config.json / config.json.
    pub fn from_tokenizer_json(label: &str, bytes: &[u8]) -> Result<Tokenizer> {
        if bytes.len() > MAX_TOKENIZER_JSON_BYTES {
            return Err(Error::format(
                label,
                "size",
                format!(
                    "{} bytes exceeds the limit {MAX_TOKENIZER_JSON_BYTES}",
                    bytes.len()
                ),
            ));
        }
        let json: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| Error::format(label, "tokenizer.json", e))?;
        check::check_tokenizer_json(label, &json)?;
        let mut inner = guarded("load", || {
            serde_json::from_slice::<Pipeline>(bytes)
                .map_err(|e| Error::format(label, "tokenizer.json", e))
        })?;
        // Padding or truncation would change the token stream that is evaluated (and a fixed
        // padding length is an allocation the file chooses); QuantLab uses neither.
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::format(label, "truncation", e))?;
        let n_vocab = inner
            .get_vocab(true)
            .values()
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0);
        if n_vocab == 0 || n_vocab > MAX_TOKENS {
            return Err(Error::format(
                label,
                "model.vocab",
                format!("{n_vocab} ids; must be 1..={MAX_TOKENS}"),
            ));
        }
        let bos =
            template_bos(&json["post_processor"], &inner).filter(|&id| (id as usize) < n_vocab);
        let mut control: Vec<(String, u32)> = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special && !t.content.is_empty())
            .map(|(id, t)| (t.content, id))
            .collect();
        control.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        inner.set_encode_special_tokens(true);
        Ok(Tokenizer {
            inner,
            recipe: std::sync::Arc::new(Recipe::Json(bytes.to_vec())),
            n_vocab,
            bos,
            eos: None,
            add_bos: bos.is_some(),
            control,
        })
    }

    /// This tokenizer as a Hugging Face `tokenizer.json` (the pipeline as built, so a GGUF
    /// vocabulary comes out with llama.cpp's pre-tokenizer expressions): what a checkpoint
    /// exported for transformers carries. A tokenizer read from a tokenizer.json gives back
    /// that file's bytes.
    pub fn to_tokenizer_json(&self) -> Result<Vec<u8>> {
        if let Recipe::Json(b) = &*self.recipe {
            return Ok(b.clone());
        }
        serde_json::to_vec(&self.inner)
            .map_err(|e| Error::Tokenizer(format!("writing tokenizer.json: {e}")))
    }

    /// What this tokenizer was built from.
    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    /// This tokenizer as bytes plus the special ids, for QuantLab's model file; `from_saved`
    /// rebuilds it.
    pub fn save(&self) -> Result<(SavedSpecial, Vec<u8>)> {
        let (kind, bytes) = match &*self.recipe {
            Recipe::Gguf { meta, compat } => (
                SAVED_GGUF,
                serde_json::to_vec(&SavedGguf {
                    compat: *compat,
                    meta: meta.clone(),
                })
                .map_err(|e| Error::Tokenizer(format!("saving the tokenizer: {e}")))?,
            ),
            Recipe::Json(b) => (SAVED_JSON, b.clone()),
            Recipe::None => {
                return Err(Error::Tokenizer(
                    "this tokenizer was built from parts and cannot be saved".into(),
                ))
            }
        };
        let special = SavedSpecial {
            kind: kind.to_string(),
            bos: self.bos,
            eos: self.eos,
            add_bos: self.add_bos,
        };
        Ok((special, bytes))
    }

    /// Rebuild a tokenizer `save` wrote (`label` names the file in messages). The bytes are
    /// untrusted: they go through the same checks as a GGUF file's or a tokenizer.json.
    pub fn from_saved(label: &str, special: &SavedSpecial, bytes: &[u8]) -> Result<Tokenizer> {
        let mut t = match special.kind.as_str() {
            SAVED_GGUF => {
                if bytes.len() > MAX_TOKENIZER_JSON_BYTES {
                    return Err(Error::format(
                        label,
                        "tokenizer",
                        format!(
                            "{} bytes exceeds the limit {MAX_TOKENIZER_JSON_BYTES}",
                            bytes.len()
                        ),
                    ));
                }
                let s: SavedGguf = serde_json::from_slice(bytes)
                    .map_err(|e| Error::format(label, "tokenizer", e))?;
                Tokenizer::from_gguf_compat(&s.meta, s.compat)?
            }
            SAVED_JSON => Tokenizer::from_tokenizer_json(label, bytes)?,
            other => {
                return Err(Error::format(
                    label,
                    "tokenizer.kind",
                    format!("{other:?}; expected {SAVED_GGUF:?} or {SAVED_JSON:?}"),
                ))
            }
        };
        t.set_special(special.bos, special.eos, special.add_bos)
            .map_err(|e| Error::format(label, "tokenizer.special", e))?;
        Ok(t)
    }

    /// Override the special ids (from tokenizer_config.json, config.json or a user choice).
    pub fn set_special(&mut self, bos: Option<u32>, eos: Option<u32>, add_bos: bool) -> Result<()> {
        for (field, id) in [("bos", bos), ("eos", eos)] {
            if let Some(id) = id {
                self.check_id(field, id)?;
            }
        }
        if add_bos && bos.is_none() {
            return Err(Error::Tokenizer(
                "add_bos is set but there is no bos id".into(),
            ));
        }
        self.bos = bos;
        self.eos = eos;
        self.add_bos = add_bos;
        Ok(())
    }

    /// Token ids of `text`. Control tokens written in the text (`<|im_end|>`) are encoded as
    /// plain text, and no BOS is added: the evaluator adds BOS itself according to `add_bos`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if text.len() > MAX_ENCODE_BYTES {
            return Err(Error::Tokenizer(format!(
                "text of {} bytes exceeds the limit {MAX_ENCODE_BYTES}",
                text.len()
            )));
        }
        let enc = guarded("encode", || {
            self.inner
                .encode_fast(text, false)
                .map_err(|e| Error::Tokenizer(format!("encode: {e}")))
        })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Like `encode`, but control tokens written in the text become their ids (for chat
    /// templates). The text between them is encoded separately, as llama.cpp does.
    pub fn encode_with_special(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut rest = text;
        // Next occurrence of each control token in `rest`, found once and advanced lazily.
        let mut next: Vec<Option<usize>> = self
            .control
            .iter()
            .map(|(t, _)| rest.find(t.as_str()))
            .collect();
        let mut consumed = 0usize;
        loop {
            // Leftmost occurrence; `control` is sorted longest first, so ties prefer the longest.
            let mut best: Option<(usize, usize)> = None;
            for (k, pos) in next.iter().enumerate() {
                if let Some(p) = *pos {
                    if best.is_none_or(|(bp, _)| p < bp) {
                        best = Some((p, k));
                    }
                }
            }
            let Some((p, k)) = best else { break };
            let (tok_text, tok_id) = &self.control[k];
            let local = p - consumed;
            if local > 0 {
                out.extend(self.encode(&rest[..local])?);
            }
            out.push(*tok_id);
            rest = &rest[local + tok_text.len()..];
            consumed = p + tok_text.len();
            for (j, pos) in next.iter_mut().enumerate() {
                if matches!(*pos, Some(q) if q < consumed) {
                    *pos = rest.find(self.control[j].0.as_str()).map(|q| q + consumed);
                }
            }
        }
        if !rest.is_empty() {
            out.extend(self.encode(rest)?);
        }
        Ok(out)
    }

    /// Text of `ids`. Control tokens are written out (`<|im_end|>`); invalid UTF-8 from partial
    /// byte sequences becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        for &id in ids {
            self.check_id("decode", id)?;
        }
        guarded("decode", || {
            self.inner
                .decode(ids, false)
                .map_err(|e| Error::Tokenizer(format!("decode: {e}")))
        })
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
    /// Whether the model expects a BOS token before a sequence.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    /// Number of ids; every id the tokenizer produces is below it.
    pub fn vocab_size(&self) -> usize {
        self.n_vocab
    }

    /// The vocabulary entry as the file spells it (`Ġthe` in a byte-level vocabulary).
    pub fn token_str(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The text one token stands for (` the`), for display; a token holding part of a UTF-8
    /// character shows U+FFFD.
    pub fn token_piece(&self, id: u32) -> Option<String> {
        if (id as usize) >= self.n_vocab {
            return None;
        }
        guarded("decode", || {
            self.inner
                .decode(&[id], false)
                .map_err(|e| Error::Tokenizer(e.to_string()))
        })
        .ok()
    }

    fn check_id(&self, field: &str, id: u32) -> Result<()> {
        if (id as usize) < self.n_vocab {
            Ok(())
        } else {
            Err(Error::Tokenizer(format!(
                "{field}: token id {id} is outside the vocabulary of {}",
                self.n_vocab
            )))
        }
    }
}

/// Run a call into the `tokenizers` crate, turning a panic inside it into an error (natively;
/// a wasm build aborts on panic, so there `check` refusing the known causes at load is what
/// protects the page). The library's state is only read by these calls, so it stays usable.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Error::Tokenizer(format!(
                "{what}: the tokenizers library failed (panicked: {msg}); the tokenizer \
                 definition is probably malformed"
            )))
        })
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = what;
        f()
    }
}

/// Python's universal-newline reading of a text file (`open(path).read()`): `\r\n` and a lone
/// `\r` become `\n`. transformers-based harnesses read text this way, llama.cpp does not; use it
/// to reproduce their token counts (docs/tokenization.md).
pub fn python_text_mode(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('\r') {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
}
