//! Constructs in a `tokenizer.json` that make the `tokenizers` crate (0.22) panic, refused when
//! the file is loaded. Natively `Tokenizer` also catches panics (`guarded`), but in the browser
//! a panic aborts the whole module, so this check is what protects the page.
//!
//! Known so far (each found by a hostile-input review and reproduced in this file's tests):
//! - a `Replace` (normalizer or decoder) whose pattern matches the empty string (`{"String":
//!   ""}`, `{"Regex": ""}`, `{"Regex": "x*"}`): followed by a ByteLevel pre-tokenizer, encoding
//!   panics with an index out of bounds in `tokenizer/normalizer.rs`;
//! - a `Strip` decoder with `stop` > 0: a decoded token shorter than `stop` made only of the
//!   stripped character underflows an index in `decoders/strip.rs`. Real tokenizers (Llama 2,
//!   Mistral) strip at the start only (`"stop": 0`).

use crate::{Error, Result};
use serde_json::Value;

/// Texts on which a `Replace` regex must not produce an empty match.
const PROBES: [&str; 4] = ["", "a", " ab\n c", "é 1 ."];

/// Refuse the known-dangerous constructs anywhere under `normalizer`, `pre_tokenizer` and
/// `decoder` (nested `Sequence`s included). Errors name `label` and the JSON path.
pub(super) fn check_tokenizer_json(label: &str, json: &Value) -> Result<()> {
    for key in ["normalizer", "pre_tokenizer", "decoder"] {
        walk(label, &json[key], key)?;
    }
    Ok(())
}

fn walk(label: &str, v: &Value, path: &str) -> Result<()> {
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(label, item, &format!("{path}[{i}]"))?;
            }
        }
        Value::Object(o) => {
            // The library reads an object whose "type" it does not know by its fields alone
            // (its legacy untagged form), so a Strip or Replace is recognised by its fields too.
            let ty = match o.get("type").and_then(Value::as_str) {
                Some("Strip") | Some("Replace") => o.get("type").and_then(Value::as_str),
                _ if o.contains_key("stop") => Some("Strip"),
                _ if o.contains_key("pattern") && o.contains_key("content") => Some("Replace"),
                t => t,
            };
            match ty {
                Some("Replace") => {
                    // `&o["pattern"]` would panic on a missing key (a Map, unlike a Value); a
                    // missing pattern is left to the library, which refuses it.
                    let pattern = o.get("pattern").unwrap_or(&Value::Null);
                    check_replace(label, pattern, &format!("{path}.pattern"))?
                }
                Some("Strip") => {
                    let stop = o.get("stop").unwrap_or(&Value::Null);
                    if stop.as_u64().is_some_and(|s| s > 0) {
                        return Err(Error::format(
                            label,
                            format!("{path}.stop"),
                            format!(
                                "Strip decoder with stop {stop} is refused: the tokenizers \
                                 library panics on a token shorter than stop (only stop 0 is \
                                 accepted)"
                            ),
                        ));
                    }
                }
                _ => {}
            }
            for (k, child) in o {
                if matches!(child, Value::Array(_) | Value::Object(_)) {
                    walk(label, child, &format!("{path}.{k}"))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_replace(label: &str, pattern: &Value, path: &str) -> Result<()> {
    let refuse = |what: String| {
        Err(Error::format(
            label,
            path,
            format!(
                "Replace {what} matches the empty string, which the tokenizers library cannot \
                 handle (it panics while encoding); a Replace pattern must match at least one \
                 character"
            ),
        ))
    };
    if let Some(s) = pattern.get("String").and_then(Value::as_str) {
        if s.is_empty() {
            return refuse("pattern {\"String\": \"\"}".to_string());
        }
    }
    if let Some(r) = pattern.get("Regex").and_then(Value::as_str) {
        let shown: String = r.chars().take(64).collect();
        if r.is_empty() {
            return refuse("pattern {\"Regex\": \"\"}".to_string());
        }
        // A regex the library cannot compile fails its own loading with an error.
        if let Ok(re) = tokenizers::utils::SysRegex::new(r) {
            if PROBES.iter().any(|p| re.find_iter(p).any(|(s, e)| s == e)) {
                return refuse(format!("regex {shown:?}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Tokenizer;

    const BYTE_LEVEL: &str =
        r#"{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}"#;

    /// A byte-level BPE `tokenizer.json` with the given normalizer and decoder.
    fn json(normalizer: &str, decoder: &str) -> String {
        format!(
            r#"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
            "normalizer":{normalizer},"pre_tokenizer":{BYTE_LEVEL},"post_processor":null,
            "decoder":{decoder},"model":{{"type":"BPE","vocab":{{"a":0,"b":1,"Ġ":2,"x":3}},
            "merges":[]}}}}"#
        )
    }

    const EMPTY_REPLACE: &str = r#"{"type":"Replace","pattern":{"String":""},"content":"x"}"#;
    const LABEL: &str = "m/tokenizer.json";

    fn load_err(j: &str) -> String {
        Tokenizer::from_tokenizer_json(LABEL, j.as_bytes())
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn empty_replace_patterns_are_refused_at_load() {
        let e = load_err(&json(EMPTY_REPLACE, "null"));
        assert!(
            e.contains(LABEL) && e.contains("normalizer.pattern") && e.contains("empty string"),
            "{e}"
        );
        // Nested in a sequence, as a regex that matches nothing but the empty string.
        let seq = r#"{"type":"Sequence","normalizers":[{"type":"NFC"},
            {"type":"Replace","pattern":{"Regex":"x*"},"content":"y"}]}"#;
        let e = load_err(&json(seq, "null"));
        assert!(
            e.contains("normalizer.normalizers[1].pattern") && e.contains("\"x*\""),
            "{e}"
        );
        // The same in a decoder.
        let e = load_err(&json("null", EMPTY_REPLACE));
        assert!(e.contains("decoder.pattern"), "{e}");
        // A Strip decoder that strips at the end.
        let strip = r#"{"type":"Strip","content":" ","start":1,"stop":2}"#;
        let e = load_err(&json("null", strip));
        assert!(e.contains("decoder.stop") && e.contains("stop 2"), "{e}");
    }

    /// Found by fuzzing (fuzz/fuzz_targets/tokenizer_json.rs): a `Strip` without `stop` or a
    /// `Replace` without `pattern` made the check itself panic (indexing a JSON map by a missing
    /// key) before the file reached the library; they must be plain errors.
    #[test]
    fn strip_without_stop_and_replace_without_pattern_are_errors() {
        for (normalizer, decoder) in [
            ("null", r#"{"type":"Strip"}"#),
            ("null", r#"{"type":"Strip","content":" ","start":1}"#),
            (r#"{"type":"Replace","content":"y"}"#, "null"),
            ("null", r#"{"type":"Replace"}"#),
        ] {
            let e = load_err(&json(normalizer, decoder));
            assert!(e.contains(LABEL), "{e}");
        }
        for minimal in [
            r#"{"decoder":{"type":"Strip"}}"#,
            r#"{"normalizer":{"type":"Replace"}}"#,
        ] {
            let e = load_err(minimal);
            assert!(e.contains(LABEL), "{e}");
        }
    }

    /// Found by fuzzing: the library loads an object with an unknown "type" by its fields, so a
    /// Strip or Replace under another type name slipped past the check and panicked in decode.
    #[test]
    fn strip_and_replace_under_another_type_name_are_refused() {
        let strip = r#"{"type":"ocntentStrip","content":" ","start":0,"stop":1}"#;
        let e = load_err(&json("null", strip));
        assert!(e.contains("decoder.stop") && e.contains("stop 1"), "{e}");
        let rep = r#"{"type":"Beplace","pattern":{"String":""},"content":"y"}"#;
        let e = load_err(&json(rep, "null"));
        assert!(
            e.contains("normalizer.pattern") && e.contains("empty string"),
            "{e}"
        );
    }

    #[test]
    fn ordinary_replace_and_strip_still_load() {
        let rep = r#"{"type":"Replace","pattern":{"String":" "},"content":"▁"}"#;
        let strip = r#"{"type":"Strip","content":" ","start":1,"stop":0}"#;
        let t = Tokenizer::from_tokenizer_json(LABEL, json(rep, strip).as_bytes()).expect("loads");
        t.encode("ab ab").expect("encodes");
    }

    /// Natively a panic inside the tokenizers library becomes an error, for causes the load
    /// check does not know yet: build the tokenizer past the check and encode.
    #[test]
    fn a_panic_inside_tokenizers_becomes_an_error() {
        let inner = serde_json::from_slice(json(EMPTY_REPLACE, "null").as_bytes())
            .expect("the library itself accepts the file");
        let t = Tokenizer {
            inner,
            recipe: Default::default(),
            n_vocab: 4,
            bos: None,
            eos: None,
            add_bos: false,
            control: Vec::new(),
        };
        let e = t.encode("ab ab").expect_err("panics inside").to_string();
        assert!(e.contains("encode") && e.contains("panicked"), "{e}");
        // Still usable afterwards (nothing was poisoned).
        assert!(t.encode("").is_ok());

        let strip = r#"{"type":"Strip","content":"a","start":0,"stop":5}"#;
        let inner = serde_json::from_slice(json("null", strip).as_bytes())
            .expect("the library itself accepts the file");
        let t = Tokenizer { inner, ..t };
        let e = t.decode(&[0]).expect_err("panics inside").to_string();
        assert!(e.contains("decode") && e.contains("panicked"), "{e}");
    }

    /// Padding in the file would change the evaluated tokens and let the file choose an
    /// allocation: it is switched off.
    #[test]
    fn padding_from_the_file_is_ignored() {
        let j = json("null", "null").replace(
            r#""padding":null"#,
            r#""padding":{"strategy":{"Fixed":1000000000000},"direction":"Right",
               "pad_to_multiple_of":null,"pad_id":0,"pad_type_id":0,"pad_token":"a"}"#,
        );
        let t = Tokenizer::from_tokenizer_json(LABEL, j.as_bytes()).expect("loads");
        assert_eq!(t.encode("ab").expect("encodes").len(), 2);
    }
}
