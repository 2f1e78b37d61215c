//! Assembling a `tokenizers` pipeline from validated GGUF fields or a tokenizer.json: the bounds
//! checks, merge parsing, and the byte-level and SentencePiece models. Spec: llama.cpp's
//! `src/llama-vocab.cpp` (see the parent module).

use super::pretok::PreTok;
use super::Pipeline;
use super::{
    GgufTokenizerMeta, MAX_TOKENS, MAX_TOKEN_BYTES, TOKEN_TYPE_BYTE, TOKEN_TYPE_CONTROL,
    TOKEN_TYPE_UNKNOWN,
};
use crate::{Error, Result};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::{DecoderWrapper, NormalizerWrapper};

/// Check every count, length and id of the metadata; returns the number of tokens.
pub(super) fn validate(meta: &GgufTokenizerMeta) -> Result<usize> {
    let n = meta.tokens.len();
    if n == 0 || n > MAX_TOKENS {
        return Err(Error::Tokenizer(format!(
            "tokenizer.ggml.tokens: {n} tokens; must be 1..={MAX_TOKENS}"
        )));
    }
    for (field, len) in [
        ("tokenizer.ggml.token_type", meta.token_types.len()),
        ("tokenizer.ggml.scores", meta.scores.len()),
    ] {
        if len != 0 && len != n {
            return Err(Error::Tokenizer(format!(
                "{field}: {len} entries but tokenizer.ggml.tokens has {n}"
            )));
        }
    }
    if meta.merges.len() > MAX_TOKENS {
        return Err(Error::Tokenizer(format!(
            "tokenizer.ggml.merges: {} merges exceeds the limit {MAX_TOKENS}",
            meta.merges.len()
        )));
    }
    if let Some((i, t)) = meta
        .tokens
        .iter()
        .enumerate()
        .find(|(_, t)| t.len() > MAX_TOKEN_BYTES)
    {
        return Err(Error::Tokenizer(format!(
            "tokenizer.ggml.tokens[{i}]: {} bytes exceeds the limit {MAX_TOKEN_BYTES}",
            t.len()
        )));
    }
    for (field, id) in [
        ("tokenizer.ggml.bos_token_id", meta.bos),
        ("tokenizer.ggml.eos_token_id", meta.eos),
        ("tokenizer.ggml.unknown_token_id", meta.unk),
    ] {
        if let Some(id) = id {
            if id as usize >= n {
                return Err(Error::Tokenizer(format!(
                    "{field}: {id} is outside the vocabulary of {n} tokens"
                )));
            }
        }
    }
    if meta.add_bos == Some(true) && meta.bos.is_none() {
        return Err(Error::Tokenizer(
            "tokenizer.ggml.add_bos_token is true but there is no tokenizer.ggml.bos_token_id"
                .into(),
        ));
    }
    Ok(n)
}

/// Token strings, with empty ones renamed `[EMPTY_i]` as llama.cpp does (an empty string cannot
/// be a BPE symbol).
pub(super) fn token_texts(tokens: &[String]) -> Vec<String> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                t.clone()
            }
        })
        .collect()
}

/// Token string → id. A repeated string is an error (llama.cpp asserts on it too).
pub(super) fn vocab_map(tokens: &[String]) -> Result<Vocab> {
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        if let Some(first) = vocab.insert(t.clone(), i as u32) {
            return Err(Error::Tokenizer(format!(
                "tokenizer.ggml.tokens[{i}]: {t:?} repeats tokens[{first}]"
            )));
        }
    }
    Ok(vocab)
}

/// Merge lines `"left right"`: exactly one space between two non-empty vocabulary entries whose
/// concatenation is also one.
pub(super) fn parse_merges(lines: &[String], vocab: &Vocab) -> Result<Merges> {
    let mut merges = Merges::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let bad =
            |why: &str| Error::Tokenizer(format!("tokenizer.ggml.merges[{i}]: {line:?}: {why}"));
        let (a, b) = line
            .split_once(' ')
            .ok_or_else(|| bad("no space between the two parts"))?;
        if a.is_empty() || b.is_empty() || b.contains(' ') {
            return Err(bad(
                "must be two non-empty parts separated by exactly one space",
            ));
        }
        for part in [a, b] {
            if !vocab.contains_key(part) {
                return Err(bad(&format!("{part:?} is not in the vocabulary")));
            }
        }
        if !vocab.contains_key(&format!("{a}{b}")) {
            return Err(bad("the merged token is not in the vocabulary"));
        }
        merges.push((a.to_string(), b.to_string()));
    }
    Ok(merges)
}

/// GPT-2-style byte-level BPE with the given pre-tokenizer.
pub(super) fn byte_level_bpe(vocab: Vocab, merges: Merges, pre: &PreTok) -> Result<Pipeline> {
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(pre.ignore_merges)
        .build()
        .map_err(|e| Error::Tokenizer(format!("byte-level BPE: {e}")))?;
    let mut inner = Pipeline::new(bpe.into());
    inner.with_pre_tokenizer(Some(pre.build()?));
    inner.with_decoder(Some(ByteLevel::new(false, false, false)));
    Ok(inner)
}

/// SentencePiece-style BPE (GGUF model `llama`): symbols are characters, ` ` is written `▁`,
/// the pair whose merged token has the highest score merges first, and characters outside the
/// vocabulary fall back to `<0xXX>` byte tokens. Merges come from the file if present, else
/// from the scores.
pub(super) fn sentencepiece_bpe(
    meta: &GgufTokenizerMeta,
    tokens: &[String],
    vocab: Vocab,
) -> Result<Pipeline> {
    let merges = if !meta.merges.is_empty() {
        parse_merges(&meta.merges, &vocab)?
    } else if !meta.scores.is_empty() {
        merges_from_scores(tokens, &meta.scores, &meta.token_types, &vocab)
    } else {
        return Err(Error::Tokenizer(
            "tokenizer.ggml.model 'llama' needs tokenizer.ggml.scores or tokenizer.ggml.merges"
                .into(),
        ));
    };
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = meta.unk.and_then(|id| tokens.get(id as usize)) {
        builder = builder.unk_token(unk.clone());
    }
    let bpe = builder
        .build()
        .map_err(|e| Error::Tokenizer(format!("SentencePiece BPE: {e}")))?;
    // llama.cpp's default for `llama` vocabularies is to add the prefix space.
    let prefix = meta.add_space_prefix.unwrap_or(true);
    let space = Replace::new(" ", "▁").map_err(|e| Error::Tokenizer(e.to_string()))?;
    let mut norms: Vec<NormalizerWrapper> = Vec::new();
    if prefix {
        norms.push(Prepend::new("▁".into()).into());
    }
    norms.push(space.into());
    let unspace = Replace::new("▁", " ").map_err(|e| Error::Tokenizer(e.to_string()))?;
    let mut decoders = vec![
        DecoderWrapper::Replace(unspace),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if prefix {
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    let mut inner = Pipeline::new(bpe.into());
    inner.with_normalizer(Some(NormalizerSequence::new(norms)));
    inner.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(inner)
}

/// Merges implied by SentencePiece scores: every split of a token into two vocabulary entries,
/// ranked by the token's score (highest first), so BPE's "lowest rank first" picks the pair
/// llama.cpp's score queue picks. Byte, control and unknown tokens never form from text.
fn merges_from_scores(tokens: &[String], scores: &[f32], types: &[i32], vocab: &Vocab) -> Merges {
    let mut ranked: Vec<(f32, u32, String, String)> = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        let ty = types.get(id).copied().unwrap_or(1);
        if matches!(
            ty,
            TOKEN_TYPE_BYTE | TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNKNOWN
        ) {
            continue;
        }
        let score = scores.get(id).copied().unwrap_or(0.0);
        for (cut, _) in tok.char_indices().skip(1) {
            let (a, b) = tok.split_at(cut);
            if vocab.contains_key(a) && vocab.contains_key(b) {
                ranked.push((score, id as u32, a.to_string(), b.to_string()));
            }
        }
    }
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    ranked.into_iter().map(|(_, _, a, b)| (a, b)).collect()
}

/// The BOS a tokenizer.json's post-processor prepends to a single sequence, if any.
pub(super) fn template_bos(pp: &serde_json::Value, inner: &Pipeline) -> Option<u32> {
    let by_name = |name: &str| inner.token_to_id(name);
    match pp["type"].as_str()? {
        "TemplateProcessing" => {
            let first = pp["single"].as_array()?.first()?;
            let name = first["SpecialToken"]["id"].as_str()?;
            // The template's own table gives the id; fall back to the vocabulary.
            pp["special_tokens"][name]["ids"][0]
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .or_else(|| by_name(name))
        }
        "RobertaProcessing" | "BertProcessing" => pp["cls"][1]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .or_else(|| by_name(pp["cls"][0].as_str()?)),
        "Sequence" => pp["processors"]
            .as_array()?
            .iter()
            .find_map(|p| template_bos(p, inner)),
        _ => None,
    }
}
