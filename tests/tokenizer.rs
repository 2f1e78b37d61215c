//! The tokenizer on the real default model's vocabulary (read with the GGUF reader), on the
//! WikiText-2 test text (tests/data), and on small vocabularies built in code for the error paths.
//!
//! Expected ids in `SHORT_CASES` were produced with the Hugging Face `tokenizers` Python package
//! (0.23.3): a `BPE` model over this GGUF's 49,152 tokens and 48,900 merges (as transformers 5.23
//! converts them) with the pre-tokenizer `Sequence([Digits(individual_digits=True),
//! ByteLevel(add_prefix_space=False)])`, i.e. what llama.cpp's `smollm` pre-tokenizer does; the
//! `HF_IMPORT_CASES` ids came from the backend tokenizer that transformers 5.17's
//! `AutoTokenizer.from_pretrained(dir, gguf_file=...)` builds, on the same strings.

use quantlab::io::gguf::Gguf;
use quantlab::io::tokenizer::{
    python_text_mode, GgufTokenizerMeta, Tokenizer, TokenizerCompat, MAX_TOKENS,
};
use std::time::Instant;

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
);
const LABEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const WIKITEXT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/wikitext-2-raw-test.txt"
);

/// llama.cpp's count for the whole file (measured with llama-tokenize; docs/tokenization.md).
const LLAMA_CPP_TOKENS: usize = 304_830;
/// transformers' count (same document): its GGUF import, on the file read in Python text mode.
const TRANSFORMERS_TOKENS: usize = 301_948;
/// transformers 5.17's GGUF import on the raw bytes (measured for docs/tokenization.md).
const HF_IMPORT_RAW_TOKENS: usize = 304_839;

fn meta() -> GgufTokenizerMeta {
    let bytes = std::fs::read(MODEL).unwrap_or_else(|e| {
        panic!("{MODEL}: {e}; run scripts/fetch-model.sh to fetch the default model")
    });
    let g = Gguf::parse(LABEL, &bytes).expect("parse GGUF");
    g.tokenizer_meta().expect("tokenizer meta")
}

fn wikitext() -> String {
    let bytes = std::fs::read(WIKITEXT)
        .unwrap_or_else(|e| panic!("{WIKITEXT}: {e}; see tests/data/README.md"));
    String::from_utf8(bytes).expect("WikiText is UTF-8")
}

/// (text, ids) with llama.cpp's `smollm` pre-tokenizer; see the file header for provenance.
const SHORT_CASES: &[(&str, &[u32])] = &[
    ("Hello world! 123", &[19556, 905, 17, 216, 33, 34, 35]),
    ("The capital of France is", &[504, 3575, 282, 4649, 314]),
    (
        " = Robert Boulter = \r\n",
        &[446, 6356, 389, 9226, 352, 446, 216, 2738],
    ),
    ("1 @,@ 000", &[33, 3394, 28, 48, 216, 32, 32, 32]),
    (
        "state @-@ of @-@ the @-@ art",
        &[
            3595, 3394, 29, 48, 282, 3394, 29, 48, 260, 3394, 29, 48, 984,
        ],
    ),
    ("4 ½ months", &[36, 216, 16738, 2704]),
    ("Hall . \r\n 1st", &[36549, 1673, 216, 23799, 33, 302]),
    (
        "naïve café — 東京 🙂",
        &[3546, 46494, 37366, 1841, 17097, 247, 126, 16736, 122, 47526],
    ),
    (
        "fn main() {\n    println!(\"hi\");\n}\n",
        &[
            7853, 1085, 1000, 1662, 472, 1628, 34115, 17, 1470, 6004, 21646, 198, 109, 198,
        ],
    ),
    ("  multiple   spaces", &[216, 2701, 256, 5600]),
    // Control tokens in user text are plain text unless asked for (tokenizers with
    // `encode_special_tokens = True`).
    (
        "<|im_start|>user\nHi<|im_end|>",
        &[
            44, 108, 306, 79, 3738, 108, 46, 4093, 198, 26843, 44, 108, 306, 79, 486, 108, 46,
        ],
    ),
];

/// The strings where transformers' GGUF import (no digit isolation) differs.
const HF_IMPORT_CASES: &[(&str, &[u32])] = &[
    ("4 ½ months", &[36, 3351, 138, 2704]),
    ("Hall . \r\n 1st", &[36549, 1673, 216, 2738, 216, 33, 302]),
];

#[test]
fn wikitext_count_equals_llama_cpp() {
    let tok = Tokenizer::from_gguf(&meta()).expect("tokenizer");
    let text = wikitext();
    let t0 = Instant::now();
    let ids = tok.encode(&text).expect("encode");
    eprintln!(
        "encoded {} bytes into {} tokens in {:.2} s",
        text.len(),
        ids.len(),
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(ids.len(), LLAMA_CPP_TOKENS);
    assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
    assert_eq!(
        tok.decode(&ids).expect("decode"),
        text,
        "byte-exact round trip"
    );
}

#[test]
fn wikitext_counts_of_transformers() {
    let m = meta();
    let text = wikitext();
    let hf = Tokenizer::from_gguf_compat(&m, TokenizerCompat::HfGgufImport).expect("compat");
    assert_eq!(hf.encode(&text).unwrap().len(), HF_IMPORT_RAW_TOKENS);
    // The reference 301,948 is the file read with CRLF → LF; on such text both readings of the
    // vocabulary give the same count.
    let lf = python_text_mode(&text);
    assert_eq!(hf.encode(&lf).unwrap().len(), TRANSFORMERS_TOKENS);
    let cpp = Tokenizer::from_gguf(&m).unwrap();
    assert_eq!(cpp.encode(&lf).unwrap().len(), TRANSFORMERS_TOKENS);
}

#[test]
fn short_strings_match_hf_tokenizers() {
    let m = meta();
    let tok = Tokenizer::from_gguf(&m).unwrap();
    for (text, want) in SHORT_CASES {
        assert_eq!(&tok.encode(text).unwrap(), want, "{text:?}");
    }
    let hf = Tokenizer::from_gguf_compat(&m, TokenizerCompat::HfGgufImport).unwrap();
    for (text, want) in HF_IMPORT_CASES {
        assert_eq!(&hf.encode(text).unwrap(), want, "{text:?} (hf import)");
    }
}

#[test]
fn round_trips() {
    let tok = Tokenizer::from_gguf(&meta()).unwrap();
    for text in [
        "",
        "naïve café — 東京 🙂👍🏽 Ωμέγα",
        "line one\r\nline two\r\n\r\n\tindented\n",
        "fn main() {\n    let x: Vec<u8> = vec![0xFF; 3]; // ok\n}\n",
        "   leading and trailing   ",
        "<|im_end|> is text here",
    ] {
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text, "{text:?}");
    }
}

#[test]
fn special_tokens_and_accessors() {
    let tok = Tokenizer::from_gguf(&meta()).unwrap();
    assert_eq!(tok.vocab_size(), 49_152);
    assert_eq!(
        (tok.bos(), tok.eos(), tok.add_bos()),
        (Some(1), Some(2), false)
    );
    assert_eq!(
        tok.encode_with_special("<|im_start|>user\nHi<|im_end|>")
            .unwrap(),
        vec![1, 4093, 198, 26843, 2]
    );
    assert_eq!(
        tok.encode_with_special("a<|im_end|><|im_end|>b").unwrap(),
        vec![81, 2, 2, 82]
    );
    assert_eq!(
        tok.decode(&[1, 4093, 2]).unwrap(),
        "<|im_start|>user<|im_end|>"
    );
    assert_eq!(tok.token_str(905).as_deref(), Some("Ġworld"));
    assert_eq!(tok.token_piece(905).as_deref(), Some(" world"));
    assert_eq!(tok.token_piece(49_152), None);
    let err = tok.decode(&[49_152]).unwrap_err().to_string();
    assert!(err.contains("49152"), "{err}");
}

/// A tiny byte-level vocabulary: the 256 byte symbols, "ab" and one control token.
fn tiny_gpt2() -> GgufTokenizerMeta {
    let mut tokens: Vec<String> = (0u8..=255).map(byte_symbol).collect();
    tokens.push("ab".into());
    tokens.push("<|end|>".into());
    let mut token_types = vec![1; tokens.len()];
    token_types[257] = 3;
    GgufTokenizerMeta {
        model: "gpt2".into(),
        pre: Some("gpt-2".into()),
        tokens,
        token_types,
        merges: vec!["a b".into()],
        eos: Some(257),
        ..Default::default()
    }
}

/// GPT-2's printable spelling of a byte (bytes_to_unicode).
fn byte_symbol(b: u8) -> String {
    let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable {
        char::from_u32(b as u32).unwrap().to_string()
    } else {
        let rank = (0u8..b)
            .filter(|&c| !((b'!'..=b'~').contains(&c) || (0xA1..=0xAC).contains(&c) || c >= 0xAE))
            .count() as u32;
        char::from_u32(256 + rank).unwrap().to_string()
    }
}

#[test]
fn tiny_byte_level_vocab_works() {
    let tok = Tokenizer::from_gguf(&tiny_gpt2()).unwrap();
    // "ab" merges, the space before "ab" stays a byte of its own (there is no "Ġab").
    assert_eq!(tok.encode("ab ab").unwrap(), vec![256, 32, 256]);
    assert_eq!(
        tok.encode_with_special("ab<|end|>").unwrap(),
        vec![256, 257]
    );
    assert_eq!(tok.decode(&[256, 32, 257]).unwrap(), "ab <|end|>");
}

fn err_of(meta: &GgufTokenizerMeta) -> String {
    Tokenizer::from_gguf(meta).unwrap_err().to_string()
}

#[test]
fn malformed_meta_is_an_error_naming_the_field() {
    let mut m = tiny_gpt2();
    m.token_types.pop();
    assert!(err_of(&m).contains("token_type: 257 entries but tokenizer.ggml.tokens has 258"));

    let mut m = tiny_gpt2();
    m.scores = vec![0.0; 3];
    assert!(err_of(&m).contains("scores: 3 entries"));

    for bad in ["ab", "a  b", " a b", "a b ", "a b c"] {
        let mut m = tiny_gpt2();
        m.merges = vec!["a b".into(), bad.into()];
        let e = err_of(&m);
        assert!(e.contains("merges[1]"), "{bad:?}: {e}");
    }
    let mut m = tiny_gpt2();
    m.merges = vec!["b c".into()];
    assert!(err_of(&m).contains("merged token is not in the vocabulary"));

    let mut m = tiny_gpt2();
    m.model = "bert".into();
    assert!(err_of(&m).contains("'bert'"));

    let mut m = tiny_gpt2();
    m.pre = Some("mystery-pre".into());
    assert!(err_of(&m).contains("'mystery-pre'"));

    let mut m = tiny_gpt2();
    m.tokens.clear();
    m.token_types.clear();
    assert!(err_of(&m).contains("0 tokens"));

    let mut m = tiny_gpt2();
    m.tokens = vec!["x".into(); MAX_TOKENS + 1];
    m.token_types.clear();
    assert!(err_of(&m).contains(&format!("{} tokens", MAX_TOKENS + 1)));

    let mut m = tiny_gpt2();
    m.bos = Some(258);
    assert!(err_of(&m).contains("bos_token_id: 258"));

    let mut m = tiny_gpt2();
    m.tokens[256] = "a".into();
    assert!(err_of(&m).contains("tokens[256]"));

    let mut m = tiny_gpt2();
    m.add_bos = Some(true);
    assert!(err_of(&m).contains("add_bos_token"));

    let mut m = tiny_gpt2();
    m.tokens[10] = "y".repeat(5000);
    assert!(err_of(&m).contains("tokens[10]: 5000 bytes"));
}

/// A tiny SentencePiece vocabulary (GGUF model `llama`): unk, bos, eos, 256 byte tokens, then
/// pieces with scores.
fn tiny_spm() -> GgufTokenizerMeta {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0, 0.0, 0.0];
    for b in 0..=255u32 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (t, s) in [
        ("▁", -10.0),
        ("h", -10.0),
        ("e", -10.0),
        ("l", -10.0),
        ("o", -10.0),
        ("▁h", -1.0),
        ("ll", -2.0),
        ("▁he", -3.0),
        ("llo", -4.0),
        ("▁hello", -5.0),
        ("el", -0.5),
    ] {
        tokens.push(t.into());
        types.push(1);
        scores.push(s);
    }
    GgufTokenizerMeta {
        model: "llama".into(),
        tokens,
        token_types: types,
        scores,
        bos: Some(1),
        eos: Some(2),
        unk: Some(0),
        ..Default::default()
    }
}

#[test]
fn sentencepiece_scores_byte_fallback_and_prefix_space() {
    let m = tiny_spm();
    let tok = Tokenizer::from_gguf(&m).unwrap();
    let id = |t: &str| m.tokens.iter().position(|x| x == t).unwrap() as u32;
    // "▁hello": "el" (-0.5) outranks "▁h" (-1), and once "e" is taken no "▁he"/"▁hello" can
    // form: ▁ h el l o → ▁h el l o (▁h) → stop, since "ell", "▁hel" are not pieces.
    assert_eq!(
        tok.encode("hello").unwrap(),
        vec![id("▁h"), id("el"), id("l"), id("o")]
    );
    // "é" is not a piece: its UTF-8 bytes C3 A9 become byte tokens.
    assert_eq!(
        tok.encode("é").unwrap(),
        vec![id("▁"), id("<0xC3>"), id("<0xA9>")]
    );
    assert_eq!(
        tok.decode(&tok.encode("hello é").unwrap()).unwrap(),
        "hello é"
    );
    assert!(
        tok.add_bos(),
        "llama.cpp adds BOS to SentencePiece vocabularies by default"
    );

    let mut no_scores = tiny_spm();
    no_scores.scores.clear();
    assert!(err_of(&no_scores).contains("scores"));
}

#[test]
fn tokenizer_json_bos_from_post_processor() {
    let json = |post: serde_json::Value| {
        serde_json::json!({
            "version": "1.0",
            "added_tokens": [
                {"id": 0, "content": "<s>", "single_word": false, "lstrip": false,
                 "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false,
                              "trim_offsets": true, "use_regex": true},
            "post_processor": post,
            "decoder": {"type": "ByteLevel", "add_prefix_space": false,
                        "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": {"<s>": 0, "a": 1, "b": 2, "ab": 3, "Ġ": 4},
                      "merges": [["a", "b"]]}
        })
        .to_string()
    };
    let with_bos = json(serde_json::json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}
    }));
    let tok = Tokenizer::from_tokenizer_json("t.json", with_bos.as_bytes()).unwrap();
    assert_eq!(
        (tok.bos(), tok.add_bos(), tok.vocab_size()),
        (Some(0), true, 5)
    );
    // encode adds no BOS itself and does not parse "<s>" in the text.
    assert_eq!(tok.encode("ab ab").unwrap(), vec![3, 4, 3]);
    assert_eq!(tok.encode_with_special("<s>ab").unwrap(), vec![0, 3]);

    let plain = json(serde_json::Value::Null);
    let mut tok = Tokenizer::from_tokenizer_json("t.json", plain.as_bytes()).unwrap();
    assert_eq!((tok.bos(), tok.add_bos()), (None, false));
    tok.set_special(Some(0), Some(0), true).unwrap();
    assert_eq!(
        (tok.bos(), tok.eos(), tok.add_bos()),
        (Some(0), Some(0), true)
    );
    assert!(tok.set_special(Some(5), None, false).is_err());

    let err = Tokenizer::from_tokenizer_json("t.json", b"{not json")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("t.json: tokenizer.json"), "{err}");
}

/// `encode_head` / `encode_tail` (what `eval --windows` and calibration from the tail use) give
/// exactly the first / last tokens of the whole encoding, on the real vocabulary and WikiText.
#[test]
fn head_and_tail_of_a_text_match_the_whole_encoding() {
    let tok = Tokenizer::from_gguf(&meta()).expect("tokenizer");
    let text = wikitext();
    let all = tok.encode(&text).expect("encode");
    for n in [1, 512, 20 * 512, 32 * 512] {
        let h = tok.encode_head(&text, n).expect("head");
        assert!(h.tokens.len() >= n, "{n}: {} tokens", h.tokens.len());
        assert!(!h.whole && h.bytes_encoded < text.len(), "{n}: {h:?}");
        assert_eq!(h.tokens[..], all[..h.tokens.len()], "head for {n}");
        let t = tok.encode_tail(&text, n).expect("tail");
        assert!(t.tokens.len() >= n, "{n}: {} tokens", t.tokens.len());
        assert_eq!(
            t.tokens[..],
            all[all.len() - t.tokens.len()..],
            "tail for {n}"
        );
    }
    // More than the text holds: the whole text, exactly.
    let h = tok.encode_head(&text, all.len() + 1).expect("head");
    assert!(h.whole);
    assert_eq!(h.tokens, all);
}

/// One window of a 20 MB text tokenizes a few kB of it, not 20 MB (issue: 50 MB with
/// `--windows 1` peaked at 6–7 GB).
#[test]
fn one_window_of_a_20_mb_text_tokenizes_a_small_part() {
    let tok = Tokenizer::from_gguf(&meta()).expect("tokenizer");
    let wiki = wikitext();
    let big = wiki.repeat(20_000_000 / wiki.len() + 1);
    assert!(big.len() >= 20_000_000);
    let cut = (0..=100_000)
        .rev()
        .find(|&i| wiki.is_char_boundary(i))
        .unwrap_or(0);
    let first = tok.encode(&wiki[..cut]).expect("encode");
    let h = tok.encode_head(&big, 512).expect("head");
    assert!(h.tokens.len() >= 512 && !h.whole);
    assert!(
        h.bytes_encoded < 64 << 10,
        "{} bytes given to the tokenizer for 512 tokens",
        h.bytes_encoded
    );
    assert!(h.tokens.len() < 2048, "{} tokens", h.tokens.len());
    assert_eq!(h.tokens[..512], first[..512]);
    let t = tok.encode_tail(&big, 32 * 512).expect("tail");
    assert!(t.bytes_encoded < 1 << 20, "{} bytes", t.bytes_encoded);
}
