//! `quantlab export` and `quantlab binarize` write QuantLab's model file; `eval`, `info` and
//! `generate` load it. The file evaluates to exactly the perplexity the same quantization gives
//! in memory (the default model, RTN; a tiny checkpoint, BinaryMoS), and says where it came from.

use crate::cli;

use cli::{last_json, quantlab, root, run};
use sha2::{Digest, Sha256};

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const TEXT: &str = "tests/data/wikitext-2-raw-test.txt";

fn out_dir() -> std::path::PathBuf {
    let d = root().join("target/test-qlab-cli");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn eval_json(model: &str, extra: &[&str]) -> serde_json::Value {
    let mut a = vec![
        "eval",
        "--model",
        model,
        "--text",
        TEXT,
        "--windows",
        "2",
        "--no-kl",
        "--json",
    ];
    a.extend(extra);
    last_json(&quantlab(&a).0)
}

#[test]
fn an_exported_default_model_evaluates_to_the_same_perplexity_and_names_its_source() {
    let out = out_dir().join("rtn4.qlab");
    let out = out.to_str().unwrap();
    let q = ["--method", "rtn", "--bits", "4", "--group", "32"];
    let mut a = vec!["export", "--model", MODEL, "--out", out];
    a.extend(q);
    let (so, _) = quantlab(&a);
    assert!(
        so.contains("blk.29.ffn_down.weight") && so.contains("int4-g32-sym"),
        "{so}"
    );
    assert!(so.contains("4.5000 bits/weight"), "{so}");

    let want = eval_json(MODEL, &q);
    let got = eval_json(out, &[]);
    assert_eq!(got["ppl"], want["ppl"], "PPL of the file against in memory");
    assert_eq!(got["bits_per_weight"], want["bits_per_weight"]);

    let (info, _) = quantlab(&["info", "--model", out, "--json"]);
    let info: serde_json::Value = serde_json::from_str(info.trim()).unwrap();
    let gguf = std::fs::read(root().join(MODEL)).unwrap();
    let sha: String = Sha256::digest(&gguf)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let saved = &info["saved"];
    assert_eq!(saved["source"]["sha256"], sha.as_str(), "{saved}");
    assert_eq!(
        saved["source"]["name"], "SmolLM2-135M-Instruct.Q4_1.gguf",
        "{saved}"
    );
    assert_eq!(saved["quant"][0]["method"], "rtn", "{saved}");
    assert_eq!(info["identity"]["kind"], "qlab");

    let (gen, _) = quantlab(&[
        "generate",
        "--model",
        out,
        "--prompt",
        "The capital of France",
        "--tokens",
        "4",
        "--json",
    ]);
    let g = last_json(&gen);
    assert_eq!(
        g["reference"]["tokens"].as_array().map(Vec::len),
        Some(4),
        "{g}"
    );
}

#[test]
fn binarize_writes_a_binarymos_file_that_evaluates_as_trained() {
    let tiny = "tests/fixtures/tiny/llama";
    let out = out_dir().join("tiny-mos.qlab");
    let out = out.to_str().unwrap();
    let calib = ["--calib-n", "2", "--calib-len", "16"];
    let mut a = vec![
        "binarize",
        "--model",
        tiny,
        "--text",
        "www/texts/dialogue.txt",
        "--method",
        "binarymos",
        "--experts",
        "2",
        "--steps",
        "3",
        "--out",
        out,
    ];
    a.extend(calib);
    let (so, _) = quantlab(&a);
    assert!(so.contains("binarymos2"), "{so}");

    let ev = |model: &str, extra: &[&str]| {
        let mut a = vec![
            "eval",
            "--model",
            model,
            "--text",
            "www/texts/prose.txt",
            "--ctx",
            "32",
            "--windows",
            "2",
            "--no-kl",
            "--json",
            "--calib-text",
            "www/texts/dialogue.txt",
        ];
        a.extend(extra);
        a.extend(calib);
        last_json(&quantlab(&a).0)
    };
    let want = ev(
        tiny,
        &[
            "--method",
            "binarymos",
            "--bits",
            "1",
            "--experts",
            "2",
            "--mos-steps",
            "3",
        ],
    );
    let got = ev(out, &[]);
    assert_eq!(got["ppl"], want["ppl"]);
    let (info, _) = quantlab(&["info", "--model", out, "--json"]);
    let info: serde_json::Value = serde_json::from_str(info.trim()).unwrap();
    let b = &info["saved"]["extra"]["binarize"];
    assert_eq!(b["method"], "binarymos", "{info}");
    assert_eq!(b["calibration"]["n_seq"], 2, "{info}");
}

#[test]
fn a_damaged_file_fails_with_its_name_and_leaves_no_partial_output() {
    let dir = out_dir();
    let bad = dir.join("truncated.qlab");
    let good = dir.join("good-tiny.qlab");
    quantlab(&[
        "export",
        "--model",
        "tests/fixtures/tiny/gpt2",
        "--bits",
        "8",
        "--out",
        good.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() - 100]).unwrap();
    let o = run(&["info", "--model", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("truncated.qlab"), "{err}");
    // An export that fails (a method that calibrates, on a calibration text that is missing)
    // writes nothing.
    let never = dir.join("never.qlab");
    let o = run(&[
        "export",
        "--model",
        "tests/fixtures/tiny/gpt2",
        "--method",
        "gptq",
        "--bits",
        "4",
        "--calib-text",
        "tests/no-such-calibration.txt",
        "--out",
        never.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("no-such-calibration.txt"),
        "{err}"
    );
    assert!(!never.exists());
}
