//! A byte-level BPE tokenizer from the files of repositories without `tokenizer.json` (the
//! original `facebook/opt-*` ones hold only `vocab.json`, `merges.txt` and
//! `tokenizer_config.json`): the same GPT-2 byte-level BPE that `transformers`' `GPT2Tokenizer`
//! reads from them, assembled as GGUF-style metadata so the one validated builder
//! (`Tokenizer::from_gguf`, model `gpt2`) makes it.
//!
//! Formats: `vocab.json` maps token text (GPT-2's byte-to-unicode alphabet) to id; `merges.txt`
//! lists one merge `a b` per line by rank, after an optional `#version` comment line;
//! `tokenizer_config.json` names the special tokens (`bos_token`, `eos_token`, `unk_token`,
//! `pad_token`: a string or `{"content": ...}`) and `add_bos_token` (GPT-2's default: false;
//! OPT's files say true, its BOS being `</s>`).

use super::{GgufTokenizerMeta, MAX_TOKENS, MAX_TOKEN_BYTES};
use crate::{Error, Result};
use serde_json::Value;

/// Largest `vocab.json` / `merges.txt` accepted (GPT-2's are 1.0 MB and 0.5 MB).
pub const MAX_BPE_FILE_BYTES: usize = 64 << 20;
/// Largest `tokenizer_config.json` accepted.
pub const MAX_TOKENIZER_CONFIG_BYTES: usize = 1 << 20;

/// GGUF token types (llama.cpp): normal and control.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;

pub(super) fn meta(
    label: &str,
    vocab_json: &[u8],
    merges_txt: &[u8],
    config_json: Option<&[u8]>,
) -> Result<GgufTokenizerMeta> {
    let file = |f: &str| format!("{label}/{f}");
    for (name, bytes, max) in [
        ("vocab.json", vocab_json, MAX_BPE_FILE_BYTES),
        ("merges.txt", merges_txt, MAX_BPE_FILE_BYTES),
        (
            "tokenizer_config.json",
            config_json.unwrap_or_default(),
            MAX_TOKENIZER_CONFIG_BYTES,
        ),
    ] {
        if bytes.len() > max {
            return Err(Error::format(
                file(name),
                "size",
                format!("{} bytes, at most {max} accepted", bytes.len()),
            ));
        }
    }
    let vocab: serde_json::Map<String, Value> = serde_json::from_slice(vocab_json)
        .map_err(|e| Error::format(file("vocab.json"), "json", e))?;
    if vocab.is_empty() || vocab.len() > MAX_TOKENS {
        return Err(Error::format(
            file("vocab.json"),
            "tokens",
            format!("{} tokens; must be 1..={MAX_TOKENS}", vocab.len()),
        ));
    }
    // Ids must be exactly 0..n, each once: the GGUF form lists tokens by id.
    let mut tokens: Vec<Option<String>> = vec![None; vocab.len()];
    for (text, id) in &vocab {
        let id = id
            .as_u64()
            .filter(|&i| (i as usize) < vocab.len())
            .ok_or_else(|| {
                Error::format(
                    file("vocab.json"),
                    text.chars().take(64).collect::<String>(),
                    format!("id {id} is not an integer in 0..{}", vocab.len()),
                )
            })? as usize;
        if text.len() > MAX_TOKEN_BYTES {
            return Err(Error::format(
                file("vocab.json"),
                format!("token {id}"),
                format!("{} bytes, at most {MAX_TOKEN_BYTES}", text.len()),
            ));
        }
        if tokens[id].replace(text.clone()).is_some() {
            return Err(Error::format(
                file("vocab.json"),
                format!("token {id}"),
                "two tokens share this id",
            ));
        }
    }
    let tokens: Vec<String> = tokens.into_iter().map(Option::unwrap_or_default).collect();

    let text = std::str::from_utf8(merges_txt)
        .map_err(|e| Error::format(file("merges.txt"), "utf-8", e))?;
    let merges: Vec<String> = text
        .lines()
        .enumerate()
        // The first line may be a `#version` comment; blank lines carry nothing.
        .filter(|(i, l)| !(l.trim().is_empty() || *i == 0 && l.starts_with("#version")))
        .map(|(_, l)| l.to_string())
        .collect();
    if merges.len() > MAX_TOKENS {
        return Err(Error::format(
            file("merges.txt"),
            "merges",
            format!("{} merges, at most {MAX_TOKENS}", merges.len()),
        ));
    }

    let cfg: serde_json::Map<String, Value> = match config_json {
        Some(b) => serde_json::from_slice(b)
            .map_err(|e| Error::format(file("tokenizer_config.json"), "json", e))?,
        None => serde_json::Map::new(),
    };
    let id_of = |field: &str| -> Result<Option<u32>> {
        let text = match cfg.get(field) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).unwrap_or(""),
            Some(v) => {
                return Err(Error::format(
                    file("tokenizer_config.json"),
                    field,
                    format!("{v} is neither a string nor {{\"content\": ...}}"),
                ))
            }
        };
        match vocab.get(text).and_then(Value::as_u64) {
            Some(id) => Ok(Some(id as u32)),
            None => Err(Error::format(
                file("tokenizer_config.json"),
                field,
                format!(
                    "{:?} is not in vocab.json",
                    text.chars().take(64).collect::<String>()
                ),
            )),
        }
    };
    let (bos, eos, unk, pad) = (
        id_of("bos_token")?,
        id_of("eos_token")?,
        id_of("unk_token")?,
        id_of("pad_token")?,
    );
    let add_bos = match cfg.get("add_bos_token") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(Error::format(
                file("tokenizer_config.json"),
                "add_bos_token",
                format!("{v} is not true or false"),
            ))
        }
    };
    if add_bos && bos.is_none() {
        return Err(Error::format(
            file("tokenizer_config.json"),
            "add_bos_token",
            "is true but there is no bos_token",
        ));
    }
    // The special tokens are matched whole, never split by BPE.
    let mut token_types = vec![NORMAL; tokens.len()];
    for id in [bos, eos, unk, pad].into_iter().flatten() {
        token_types[id as usize] = CONTROL;
    }
    Ok(GgufTokenizerMeta {
        model: "gpt2".into(),
        pre: Some("gpt-2".into()),
        tokens,
        token_types,
        scores: Vec::new(),
        merges,
        bos,
        eos,
        unk,
        add_bos: Some(add_bos),
        add_eos: Some(false),
        add_space_prefix: Some(false),
    })
}

#[cfg(test)]
mod tests {
    use crate::io::tokenizer::Tokenizer;

    fn files() -> (String, String, String) {
        // GPT-2's alphabet: "Ġ" is the space byte.
        let vocab = r#"{"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "a": 4, "b": 5, "Ġ": 6,
            "ab": 7, "Ġab": 8}"#;
        let merges = "#version: 0.2\na b\nĠ ab\n";
        let cfg = r#"{"bos_token": {"content": "</s>"}, "eos_token": "</s>", "unk_token": "<unk>",
            "pad_token": "<pad>", "add_bos_token": true}"#;
        (vocab.into(), merges.into(), cfg.into())
    }

    #[test]
    fn opt_style_files_encode_with_bos() {
        let (v, m, c) = files();
        let t = Tokenizer::from_bpe_files("opt", v.as_bytes(), m.as_bytes(), Some(c.as_bytes()))
            .expect("tokenizer");
        assert_eq!(t.encode("ab ab").unwrap(), vec![7, 8]);
        assert_eq!((t.bos(), t.eos(), t.add_bos()), (Some(2), Some(2), true));
        assert_eq!(t.decode(&[7, 8]).unwrap(), "ab ab");
    }

    #[test]
    fn bad_files_name_file_and_field() {
        let (v, m, _) = files();
        let e = Tokenizer::from_bpe_files("r", b"{\"a\": 5}", m.as_bytes(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("r/vocab.json") && e.contains("0..1"), "{e}");
        let e = Tokenizer::from_bpe_files(
            "r",
            v.as_bytes(),
            m.as_bytes(),
            Some(b"{\"bos_token\": \"zz\", \"add_bos_token\": true}"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("tokenizer_config.json") && e.contains("bos_token"),
            "{e}"
        );
        let dup = r#"{"a": 0, "b": 0}"#;
        let e = Tokenizer::from_bpe_files("r", dup.as_bytes(), b"", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("vocab.json"), "{e}");
    }
}
