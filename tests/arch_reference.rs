//! Every architecture against `transformers`: tiny OPT (pre- and post-LayerNorm), GPT-2 and
//! Llama checkpoints saved by transformers, with its per-token log-likelihoods computed in
//! float64 (`tests/fixtures/tiny/make_tiny.py`, README there). QuantLab loads each checkpoint
//! (config.json, safetensors, tokenizer.json), tokenizes the same text to the same ids, and
//! scores every token on the CPU backend and on the GPU backend (lavapipe without a GPU); GPT-2
//! also from the GGUF llama.cpp's converter wrote.

use crate::gpu_check;

use gpu_check::gpu;
use quantlab::io::gguf::Gguf;
use quantlab::io::tokenizer::Tokenizer;
use quantlab::model::backend::Backend;
use quantlab::model::cpu::Cpu;
use quantlab::model::eval;
use quantlab::model::net::Model;
use quantlab::model::weights::ModelWeights;
use quantlab::tensor::TensorSource;

/// Per-token NLL against transformers' float64 reference: |ours − ref| ≤ NLL_REL_TOL ·
/// max(ref, 1) (relative, with NLLs below 1 nat held to the same absolute bound). Our f32
/// arithmetic over two layers differs from float64 by ~1e-6 relative.
const NLL_REL_TOL: f64 = 1e-4;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny");

struct Reference {
    text: String,
    ids: Vec<u32>,
    nll: Vec<f64>,
    ppl: f64,
}

fn read(name: &str, file: &str) -> Vec<u8> {
    let p = format!("{DIR}/{name}/{file}");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn reference(name: &str) -> Reference {
    let v: serde_json::Value = serde_json::from_slice(&read(name, "reference.json")).unwrap();
    let nums = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .unwrap_or_else(|| panic!("{name}: reference.json has no {k}"))
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    Reference {
        text: v["text"].as_str().unwrap().to_string(),
        ids: nums("token_ids").iter().map(|&x| x as u32).collect(),
        nll: nums("nll"),
        ppl: v["ppl"].as_f64().unwrap(),
    }
}

fn load_hf(name: &str) -> (ModelWeights, Tokenizer) {
    let cfg = read(name, "config.json");
    let st = read(name, "model.safetensors");
    let w = quantlab::model::hf::load_hf(&cfg, &[("model.safetensors", &st)]).expect("load_hf");
    let tok = Tokenizer::from_tokenizer_json(name, &read(name, "tokenizer.json")).expect("tok");
    (w, tok)
}

/// The ids QuantLab feeds the model: BOS as the tokenizer says, then the text.
fn ids(tok: &Tokenizer, text: &str) -> Vec<u32> {
    let mut ids = Vec::new();
    if tok.add_bos() {
        ids.extend(tok.bos());
    }
    ids.extend(tok.encode(text).expect("encode"));
    ids
}

/// NLL of tokens 1.. given their prefixes, one forward pass over the whole sequence
/// (`eval::token_nll`, what the page's `tokenNll` runs).
fn nll<B: Backend>(b: &B, w: &ModelWeights, ids: &[u32]) -> Vec<f64> {
    let m = Model::load(b, w).expect("load into backend");
    eval::ready(eval::token_nll(b, &m, ids)).expect("token_nll")
}

fn check(what: &str, got: &[f64], r: &Reference) {
    assert_eq!(got.len(), r.nll.len(), "{what}: token count");
    let mut worst = 0f64;
    for (i, (&a, &b)) in got.iter().zip(&r.nll).enumerate() {
        let e = (a - b).abs() / b.abs().max(1.0);
        assert!(
            e <= NLL_REL_TOL,
            "{what}: token {i}: ours {a} vs transformers {b} (relative {e:e})"
        );
        worst = worst.max(e);
    }
    let ppl = (got.iter().sum::<f64>() / got.len() as f64).exp();
    assert!(
        ((ppl - r.ppl) / r.ppl).abs() <= NLL_REL_TOL,
        "{what}: PPL {ppl} vs transformers {}",
        r.ppl
    );
    eprintln!(
        "{what}: {} tokens, PPL {ppl:.6} (transformers {:.6}), worst relative NLL error {worst:.2e}",
        got.len(),
        r.ppl
    );
}

fn check_hf(name: &str) {
    let r = reference(name);
    let (w, tok) = load_hf(name);
    let got_ids = ids(&tok, &r.text);
    assert_eq!(
        got_ids, r.ids,
        "{name}: token ids differ from transformers'"
    );
    check(&format!("{name} cpu"), &nll(&Cpu, &w, &r.ids), &r);
    check(&format!("{name} gpu"), &nll(&gpu(), &w, &r.ids), &r);
}

#[test]
fn opt_pre_layernorm_matches_transformers() {
    check_hf("opt-pre");
}

#[test]
fn opt_post_layernorm_with_projections_matches_transformers() {
    let (w, _) = load_hf("opt-post");
    assert!(w.config.post_norm && w.config.proj_dim.is_some());
    check_hf("opt-post");
}

#[test]
fn gpt2_matches_transformers() {
    check_hf("gpt2");
}

#[test]
fn llama_matches_transformers() {
    check_hf("llama");
}

#[test]
fn gpt2_gguf_from_llama_cpp_converter_matches_transformers() {
    let r = reference("gpt2");
    let bytes = read("gpt2", "model-f32.gguf");
    let g = Gguf::parse("model-f32.gguf", &bytes).expect("parse");
    let cfg = g.model_config().expect("config");
    assert_eq!(cfg.arch, "gpt2");
    let w = ModelWeights::from_source(cfg, &g as &dyn TensorSource).expect("weights");
    let tok = Tokenizer::from_gguf(&g.tokenizer_meta().expect("meta")).expect("tokenizer");
    assert_eq!(ids(&tok, &r.text), r.ids, "GGUF tokenizer ids");
    check("gpt2 gguf cpu", &nll(&Cpu, &w, &r.ids), &r);
    check("gpt2 gguf gpu", &nll(&gpu(), &w, &r.ids), &r);
}

/// The repository layout of facebook/opt-*, which has no tokenizer.json: vocab.json and
/// merges.txt as GPT-2's slow tokenizer writes them (here taken from the fixture's
/// tokenizer.json) and a tokenizer_config.json whose `add_bos_token` adds `</s>`, as OPT's
/// does. QuantLab's tokenizer from those files gives transformers' ids.
#[test]
fn opt_tokenizer_from_vocab_and_merges_gives_transformers_ids() {
    let r = reference("opt-pre");
    let t: serde_json::Value = serde_json::from_slice(&read("opt-pre", "tokenizer.json")).unwrap();
    let vocab = serde_json::to_vec(&t["model"]["vocab"]).unwrap();
    let mut merges = String::from("#version: 0.2\n");
    for m in t["model"]["merges"].as_array().unwrap() {
        let line = match m {
            serde_json::Value::Array(p) => {
                format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap())
            }
            other => other.as_str().unwrap().to_string(),
        };
        merges.push_str(&line);
        merges.push('\n');
    }
    let config = br#"{"add_bos_token": true, "bos_token": "</s>", "eos_token": "</s>",
        "unk_token": "</s>", "pad_token": "<pad>", "tokenizer_class": "GPT2Tokenizer"}"#;
    let tok = Tokenizer::from_bpe_files("opt-pre", &vocab, merges.as_bytes(), Some(config))
        .expect("tokenizer from vocab.json + merges.txt");
    assert_eq!(ids(&tok, &r.text), r.ids);
    assert_eq!(tok.decode(&r.ids[1..]).unwrap(), r.text);
}
