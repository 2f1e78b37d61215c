//! The Hugging Face export (`quantlab export --to hf`) against transformers: the default model as
//! loaded and RTN 4-bit g32, exported here, are the very files transformers measured
//! (tests/fixtures/hf_export_transformers.json, SHA-256 of model.safetensors and tokenizer.json),
//! and QuantLab evaluates each export to transformers' perplexity and token ids (GPTQ protocol).

use crate::cli;

use cli::{last_json, quantlab, root};
use serde_json::Value;
use sha2::{Digest, Sha256};

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const TEXT: &str = "tests/data/wikitext-2-raw-test.txt";
/// transformers (f32 on CUDA) against QuantLab (f32 on the CPU) on the same weights and tokens:
/// only summation order differs; 40 windows agreed to 2e-7 (the fixture's `forty_windows`).
const PPL_REL_TOL: f64 = 1e-5;

fn sha256(path: &std::path::Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn exports_are_the_files_transformers_measured_and_evaluate_to_its_perplexity() {
    let fx: Value = serde_json::from_slice(
        &std::fs::read(root().join("tests/fixtures/hf_export_transformers.json")).unwrap(),
    )
    .unwrap();
    let windows = fx["windows"].as_u64().unwrap().to_string();
    for (name, flags) in [
        ("loaded", vec![]),
        (
            "rtn4",
            vec!["--method", "rtn", "--bits", "4", "--group", "32"],
        ),
    ] {
        let dir = root().join("target/test-hf-export").join(name);
        let d = dir.to_str().unwrap();
        let mut a = vec!["export", "--model", MODEL, "--to", "hf", "--out", d];
        a.extend(&flags);
        quantlab(&a);
        let want = &fx["exports"][name];
        assert_eq!(
            sha256(&dir.join("model.safetensors")),
            want["model_safetensors_sha256"].as_str().unwrap(),
            "{name}: model.safetensors differs from the file transformers measured"
        );
        assert_eq!(
            sha256(&dir.join("tokenizer.json")),
            fx["tokenizer_json_sha256"].as_str().unwrap(),
            "{name}: tokenizer.json"
        );
        let config: Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["architectures"][0], "LlamaForCausalLM");
        assert_eq!(config["num_key_value_heads"], 3);

        let (out, _) = quantlab(&[
            "eval",
            "--model",
            d,
            "--text",
            TEXT,
            "--protocol",
            "gptq",
            "--windows",
            &windows,
            "--python-newlines",
            "--no-kl",
            "--json",
        ]);
        let got = last_json(&out);
        assert_eq!(got["tokens_scored"], fx["scored"], "{name}: tokens scored");
        let (p, r) = (got["ppl"].as_f64().unwrap(), want["ppl"].as_f64().unwrap());
        assert!(
            (p - r).abs() <= PPL_REL_TOL * r,
            "{name}: QuantLab {p} vs transformers {r}"
        );
    }
    // The exported tokenizer gives transformers' first ids for the text.
    let tok = quantlab::io::tokenizer::Tokenizer::from_tokenizer_json(
        "tokenizer.json",
        &std::fs::read(root().join("target/test-hf-export/rtn4/tokenizer.json")).unwrap(),
    )
    .unwrap();
    let text = std::fs::read_to_string(root().join(TEXT)).unwrap();
    let text = quantlab::io::tokenizer::python_text_mode(&text);
    let ids = tok.encode(&text[..2000]).unwrap();
    let first: Vec<u32> = fx["first_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(&ids[..first.len()], &first[..]);
}

#[test]
fn models_that_a_checkpoint_cannot_hold_are_refused_by_name() {
    let never = root().join("target/test-hf-export/never");
    // (BinaryMoS, the other refusal, is tests/hf_export_arch.rs's.)
    for (model, extra, want) in [
        (
            "tests/fixtures/tiny/gpt2",
            vec!["--bits", "4", "--act-bits", "8"],
            "activations",
        ),
        (
            "tests/fixtures/tiny/llama",
            vec!["--bits", "4", "--act-bits", "8"],
            "activations",
        ),
    ] {
        let mut a = vec!["export", "--model", model, "--to", "hf"];
        a.extend(extra);
        a.extend(["--out", never.to_str().unwrap()]);
        let out = cli::run(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{model}: {err}"
        );
    }
    assert!(!never.exists());
}
