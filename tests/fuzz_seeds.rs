//! Seed corpora of the fuzz targets (fuzz/fuzz_targets/*.rs): small valid inputs, written to
//! fuzz/seeds/TARGET/ by `QUANTLAB_WRITE_SEEDS=1 cargo test --test all -- fuzz_seeds` (fuzz/make_seeds.sh). Each
//! seed is checked to load before it is written, so the fuzzer starts from inputs that reach
//! deep into the parsers. The GGUF seed comes from tests/gguf_malformed.rs's writer.

use crate::hf_fixture;

use hf_fixture::{serialize, Tiny};
use quantlab::io::tokenizer::Tokenizer;
use quantlab::model::hf::{load_hf, parse_hf_config};
use quantlab::model::qlab;
use quantlab::quant::config::QuantConfig;
use quantlab::sweep::grid::parse_grid;
use safetensors::Dtype;
use std::path::PathBuf;

/// Separates the files of a multi-file input (fuzz/fuzz_targets/common.rs).
const SEP: &[u8] = b"\n--8<--\n";

fn seed_dir(target: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    std::fs::create_dir_all(&d).expect("seed dir");
    d
}

/// With `QUANTLAB_WRITE_SEEDS=1` (fuzz/make_seeds.sh) write the seed; otherwise check that the
/// committed seed is exactly what the fixtures make today, so seeds cannot go stale unnoticed.
fn write(target: &str, name: &str, bytes: &[u8]) {
    let path = seed_dir(target).join(name);
    if std::env::var_os("QUANTLAB_WRITE_SEEDS").is_some() {
        std::fs::write(&path, bytes).expect("write seed");
    } else {
        let committed = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run fuzz/make_seeds.sh", path.display()));
        assert!(
            committed == bytes,
            "{} is stale; run fuzz/make_seeds.sh",
            path.display()
        );
    }
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(SEP)
}

/// Tiny checkpoints: a few KB each.
fn tiny_models() -> Vec<(&'static str, Tiny)> {
    let llama = Tiny {
        model_type: "llama",
        dim: 16,
        ffn: 16,
        layers: 1,
        heads: 2,
        kv_heads: 1,
        vocab: 8,
        tied: true,
        qkv_bias: false,
        dtype: Dtype::F16,
    };
    let qwen2 = Tiny {
        model_type: "qwen2",
        tied: false,
        qkv_bias: true,
        dtype: Dtype::BF16,
        ..llama.clone()
    };
    let f32_llama = Tiny {
        dtype: Dtype::F32,
        vocab: 4,
        ..llama.clone()
    };
    vec![("llama", llama), ("qwen2", qwen2), ("llama-f32", f32_llama)]
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

fn tokenizer_jsons() -> Vec<(&'static str, serde_json::Value)> {
    let bpe = serde_json::json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 0, "content": "<s>", "single_word": false, "lstrip": false,
             "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false,
                          "trim_offsets": true, "use_regex": true},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": false,
                    "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": {"<s>": 0, "a": 1, "b": 2, "ab": 3, "Ġ": 4},
                  "merges": [["a", "b"]]}
    });
    let unigram = serde_json::json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false,
             "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
        ]},
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ",
             "start": 1, "stop": 0}
        ]},
        "model": {"type": "Unigram", "unk_id": 0, "byte_fallback": false,
                  "vocab": [["<unk>", 0.0], ["▁", -2.0], ["a", -1.0], ["b", -1.5],
                            ["ab", -0.5], ["▁ab", -0.25]]}
    });
    vec![("bpe-bytelevel", bpe), ("unigram-metaspace", unigram)]
}

#[test]
fn fuzz_seeds_load_and_match_the_committed_ones() {
    // Safetensors shards with Llama names, config.json + shard pairs, config.json alone.
    for (name, tiny) in tiny_models() {
        let shard = serialize(&tiny.tensors());
        let config = tiny.config_json();
        load_hf(&config, &[("model.safetensors", &shard)]).expect("seed checkpoint loads");
        parse_hf_config(&config).expect("seed config parses");
        write("hf_load", name, &join(&[&config, &shard]));
        write("hf_config", &format!("{name}.json"), &config);
        if name.starts_with("llama") {
            write("safetensors", name, &shard);
        }
    }

    // QuantLab model files: the tiny Llama as loaded (f16) and quantized (int4 groups of 8 with
    // int8 LoRC, and OneBit), with the byte-level BPE tokenizer. Model files are not committed:
    // these seeds are made here, every run, into the git-ignored fuzz/seeds/qlab/
    // (scripts/fuzz-smoke.sh runs this test first when they are missing).
    let tiny = &tiny_models()[0].1;
    let w = load_hf(
        &tiny.config_json(),
        &[("model.safetensors", &serialize(&tiny.tensors()))],
    )
    .expect("seed checkpoint loads");
    let bpe = serde_json::to_vec(&tokenizer_jsons()[0].1).expect("json");
    let tok = Tokenizer::from_tokenizer_json("seed", &bpe).expect("seed tokenizer loads");
    let int4: QuantConfig = serde_json::from_str(
        r#"{"version":1,"method":"rtn","default":{"bits":4,"gran":{"group":8},"sym":false},
            "lorc":{"rank":2,"bits8":true}}"#,
    )
    .expect("config");
    let onebit: QuantConfig = serde_json::from_str(
        r#"{"version":1,"method":{"onebit":{"fit":0}},"default":{"bits":1,"gran":"per_row","sym":true}}"#,
    )
    .expect("config");
    let mut models = vec![("as-loaded", w.clone())];
    for (name, c) in [("int4-lorc", int4), ("onebit", onebit)] {
        models.push((name, c.apply(&w).expect("quantize the seed")));
    }
    for (name, m) in models {
        let bytes = qlab::write(&m, &tok, &serde_json::json!({"seed": name})).expect("write");
        qlab::read("seed", &bytes).expect("seed .qlab loads");
        let path = seed_dir("qlab").join(format!("{name}.qlab"));
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    // tokenizer.json.
    for (name, v) in tokenizer_jsons() {
        let bytes = serde_json::to_vec_pretty(&v).expect("json");
        let tok = Tokenizer::from_tokenizer_json(name, &bytes).expect("seed tokenizer.json loads");
        tok.encode("ab ab").expect("encode");
        write("tokenizer_json", &format!("{name}.json"), &bytes);
    }

    // vocab.json + merges.txt (+ tokenizer_config.json).
    let mut vocab = serde_json::Map::new();
    for b in 0u8..=255 {
        vocab.insert(byte_symbol(b), vocab.len().into());
    }
    for t in ["ab", "Ġab", "<|endoftext|>"] {
        vocab.insert(t.into(), vocab.len().into());
    }
    let vocab = serde_json::to_vec(&vocab).expect("json");
    let merges = b"#version: 0.2\na b\n\xc4\xa0 ab\n".to_vec();
    let config = br#"{"add_bos_token": false, "bos_token": "<|endoftext|>", "eos_token": {"content": "<|endoftext|>", "special": true}, "added_tokens_decoder": {"258": {"content": "<|endoftext|>", "special": true}}}"#;
    for (name, cfg) in [("two-files", None), ("with-config", Some(&config[..]))] {
        let tok =
            Tokenizer::from_bpe_files("seed", &vocab, &merges, cfg).expect("seed BPE files load");
        tok.encode("ab ab").expect("encode");
        let mut parts: Vec<&[u8]> = vec![&vocab, &merges];
        parts.extend(cfg);
        write("bpe_files", name, &join(&parts));
    }

    // Sweep grids (the committed ones), and their configs as QuantConfig JSON and share links.
    let grids = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("grids");
    let mut files: Vec<_> = std::fs::read_dir(&grids)
        .expect("grids/")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let mut seen = std::collections::BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("grid");
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let configs = parse_grid(&text, &name).expect("grid parses");
        write("sweep_grid", &name, text.as_bytes());
        // One config per method (and LoRC or not) is enough variety.
        for c in configs {
            let key = format!("{}-{}", c.method.name(), c.lorc.is_some());
            if seen.insert(key.clone()) {
                QuantConfig::from_url(&c.to_url()).expect("link parses");
                write(
                    "quant_config",
                    &format!("{key}.json"),
                    c.to_json().as_bytes(),
                );
                write(
                    "quant_config",
                    &format!("{key}.link"),
                    c.to_url().as_bytes(),
                );
            }
        }
    }

    // HTTP request heads.
    for (name, head) in [
        ("get", "GET / HTTP/1.1\r\nHost: localhost:8080\r\n\r\n"),
        (
            "head-http10",
            "HEAD /models/x.gguf?v=1#top HTTP/1.0\r\nAccept: */*\r\n\r\n",
        ),
        (
            "get-escaped",
            "\r\nGET /www/a%20b/index.html HTTP/1.1\r\nUser-Agent: t\r\nhost: [::1]:8080\r\n\r\n",
        ),
    ] {
        write("serve_head", name, head.as_bytes());
    }
}
