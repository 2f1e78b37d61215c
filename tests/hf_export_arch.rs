//! The Hugging Face export (`quantlab export --to hf`, `model::hf_export`) of OPT — pre-LN like
//! opt-125m and post-LN with `project_in`/`project_out` like opt-350m — and GPT-2 (Conv1D
//! weights stored `[in, out]`, fused `c_attn`), from the tiny transformers checkpoints of
//! tests/fixtures/tiny/ and, for GPT-2, from llama.cpp's GGUF of the same model: as loaded and
//! after RTN 4-bit g32. The tiny Llama (untied head) is checked the same way, since its
//! config.json now takes the same path.
//!
//! - Every tensor is the source checkpoint's (names, shapes, layout read from the file
//!   transformers saved, not from QuantLab's mapping) or QuantLab's dequantized weight, rounded
//!   to f16, exactly.
//! - QuantLab's loader reads each export back to the f16-rounded model, and the as-loaded
//!   export stays within f16 rounding of transformers' float64 reference (reference.json).
//! - config.json keeps the source's fields (built from the model config for the GGUF);
//!   tokenizer_config.json names the special tokens.
//! - transformers itself loaded these very files (tests/fixtures/hf_export_arch_transformers.json,
//!   made by scripts/reference/hf_export_arch_transformers.py, SHA-256 of each
//!   model.safetensors) and its logits agree with QuantLab's.

use crate::hf_export_arch_common as common;

use common::{
    export, f16_rounded, ids, logits, nll, read_json, reload, source_tensors, tensors, Case, CASES,
    VARIANTS,
};
use half::f16;
use quantlab::playground::session::Session;
use serde_json::Value;

/// QuantLab on an export vs QuantLab on the same weights rounded to f16 in memory: the CPU
/// backend widens f16 to the same f32 values, so the logits are the same numbers.
const RELOAD_LOGIT_TOL: f32 = 0.0;
/// The as-loaded export (weights rounded to f16, relative error ≤ 2⁻¹¹) against transformers'
/// float64 reference of the f32 checkpoint, per-token NLL in nats. These random models are
/// confidently wrong (NLLs ≈ 13, logits of std ≈ 4), so f16 rounding moves NLLs by up to
/// ~0.02: measured worst 1.9e-2 (gpt2; opt-pre 1.6e-2, opt-post 1.4e-2, llama 1.3e-2), bound
/// 2.5× that.
/// (The f32 model itself is within 1e-4 relative of the reference, tests/arch_reference.rs, and
/// the export computes exactly the f16-rounded model, so this is f16 rounding alone.)
const F16_NLL_TOL: f64 = 0.05;
/// The same for the first 8 logits of the last position: measured worst 8.4e-3 (opt-post),
/// bound 3× that.
const F16_LOGIT_TOL: f64 = 0.025;
/// QuantLab (f32 on the CPU) against transformers (float64) on the very same f16 weights: only
/// arithmetic precision differs. Per logit |Δ| ≤ TOL·(1 + |logit|), per NLL likewise (1.4e-4 at
/// an NLL of 13); a row sum of 512 logits TOL·(512 + |sum|). transformers' own f32 forward of
/// these models is within 1.2e-5 of its float64 one in NLL (reference.json's `f32_check`).
const TRANSFORMERS_TOL: f64 = 1e-5;

#[test]
fn every_tensor_is_the_source_or_its_quantized_weight_in_f16() {
    for case in CASES {
        let source = source_tensors(case);
        let mut loaded: Option<common::F16Tensors> = None;
        for variant in VARIANTS {
            let (s, files) = export(case, variant);
            let what = format!("{}-{variant}", case.name);
            let got = tensors(&files["model.safetensors"]);
            assert!(
                got.keys().eq(source.keys()),
                "{what}: tensor names {:?}, the source has {:?}",
                got.keys().collect::<Vec<_>>(),
                source.keys().collect::<Vec<_>>()
            );
            let quantized = s.quantized_weights().expect("read back");
            assert_eq!(quantized.is_some(), variant != "loaded", "{what}");
            for (name, (shape, bits)) in &got {
                let (src_shape, src) = &source[name];
                assert_eq!(shape, src_shape, "{what}: {name} shape");
                let want: Vec<f32> = match quantized.and_then(|w| case.quantized(w, name)) {
                    Some(v) => v,
                    None => src.clone(),
                };
                let want: Vec<u16> = want.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
                let bad = bits.iter().zip(&want).position(|(a, b)| a != b);
                assert!(
                    bad.is_none(),
                    "{what}: {name}[{}] is {} where {} was expected",
                    bad.unwrap_or(0),
                    f16::from_bits(bits[bad.unwrap_or(0)]),
                    f16::from_bits(want[bad.unwrap_or(0)])
                );
            }
            // RTN changed every block linear (else the quantized comparison proved nothing)
            // and nothing else.
            if let Some(first) = &loaded {
                for (name, (_, bits)) in &got {
                    let linear = case.linear_of(name).is_some() && name.ends_with(".weight");
                    assert_eq!(&first[name].1 != bits, linear, "{what}: {name} changed?");
                }
            }
            loaded.get_or_insert(got);
        }
    }
}

#[test]
fn reloaded_exports_compute_the_f16_rounded_model_and_stay_near_transformers() {
    for case in CASES {
        let r = read_json(&format!("{}/reference.json", case.dir));
        let want_ids: Vec<u32> = r["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        for variant in VARIANTS {
            let what = format!("{}-{variant}", case.name);
            let (s, files) = export(case, variant);
            let (w, tok) = reload(&files);
            let text = r["text"].as_str().unwrap();
            assert_eq!(ids(&tok, text), want_ids, "{what}: token ids");
            let got = logits(&w, &want_ids);
            let w16 = f16_rounded(
                s.quantized_weights()
                    .expect("read back")
                    .unwrap_or(s.source()),
            );
            let want = logits(&w16, &want_ids);
            let worst = max_diff(&got, &want);
            assert!(
                worst <= RELOAD_LOGIT_TOL,
                "{what}: reloaded logits differ from the f16-rounded model's by {worst}"
            );
            if variant != "loaded" {
                continue;
            }
            // The as-loaded export against transformers' float64 reference of the source.
            let ref_nll: Vec<f64> = r["nll"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let ours = nll(&got, &want_ids);
            let d = ours
                .iter()
                .zip(&ref_nll)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(d <= F16_NLL_TOL, "{what}: NLL {d} from transformers'");
            let last = got.last().unwrap();
            let l = r["last_logits_first8"]
                .as_array()
                .unwrap()
                .iter()
                .zip(last)
                .map(|(a, &b)| (a.as_f64().unwrap() - b as f64).abs())
                .fold(0.0, f64::max);
            assert!(
                l <= F16_LOGIT_TOL,
                "{what}: last logits {l} from transformers'"
            );
            eprintln!("{what}: vs transformers' f32 reference: NLL {d:.2e}, logits {l:.2e}");
        }
    }
}

#[test]
fn config_keeps_the_source_fields_and_tokenizer_config_names_the_special_tokens() {
    for case in CASES {
        let src = read_json(&format!("{}/config.json", case.dir));
        let src = src.as_object().unwrap();
        let (_, files) = export(case, "rtn4");
        let out: Value = serde_json::from_slice(&files["config.json"]).unwrap();
        let out = out.as_object().unwrap();
        let what = case.name;
        // The source's dtype key (transformers 5 writes `dtype`); a built config says
        // `torch_dtype`, which transformers 4 reads and 5 still accepts.
        let dtype = if case.gguf { "torch_dtype" } else { "dtype" };
        assert_eq!(out[dtype], "float16", "{what}");
        for (k, v) in src {
            let want = match (case.gguf, k.as_str()) {
                (_, "dtype") => continue,
                // The GGUF has no config.json: fields that do not shape the model are
                // transformers' defaults, and n_inner is written out (null means 4·n_embd).
                (true, "n_inner") => Value::from(256),
                (true, _) if !out.contains_key(k) => continue,
                _ => v.clone(),
            };
            assert_eq!(out.get(k), Some(&want), "{what}: config.json {k}");
        }
        // QuantLab reads the same model from both (the check the export makes too).
        let parse = |v: &serde_json::Map<String, Value>| {
            quantlab::model::hf::parse_config(&serde_json::to_vec(v).unwrap()).unwrap()
        };
        assert_eq!(parse(out), parse(src), "{what}");

        let tc: Value = serde_json::from_slice(&files["tokenizer_config.json"]).unwrap();
        // tokenizer.json names no EOS: it comes from config.json's eos_token_id.
        let (bos, eos, pad, add_bos) = match case.name {
            "opt-pre" | "opt-post" => ("</s>", "</s>", Some("<pad>"), true),
            "llama" => ("<s>", "</s>", None, true),
            _ => ("<|endoftext|>", "<|endoftext|>", None, false),
        };
        assert_eq!(tc["tokenizer_class"], "PreTrainedTokenizerFast", "{what}");
        assert_eq!(tc["bos_token"], bos, "{what}");
        assert_eq!(tc["eos_token"], eos, "{what}");
        assert_eq!(tc["add_bos_token"], add_bos, "{what}");
        assert_eq!(tc.get("pad_token").and_then(Value::as_str), pad, "{what}");
        if !case.gguf {
            // A tokenizer.json goes out as the loader read it.
            let src = std::fs::read(common::tiny(case.dir, "tokenizer.json")).unwrap();
            assert!(files["tokenizer.json"] == src, "{what}: tokenizer.json");
        }
    }
}

#[test]
fn exports_are_the_files_transformers_loaded_and_agree_with_its_logits() {
    // Written first, so that a missing fixture can be made from them (README in tests/fixtures).
    let all: Vec<(String, Case, &str)> = CASES
        .iter()
        .flat_map(|&c| VARIANTS.map(|v| (format!("{}-{v}", c.name), c, v)))
        .collect();
    let mut made = Vec::new();
    for (name, case, variant) in &all {
        let files = export(*case, variant).1;
        common::write(name, &files);
        made.push(files);
    }
    let path = std::path::Path::new(common::TINY).join("../hf_export_arch_transformers.json");
    assert!(
        path.exists(),
        "{}: missing; the exports are in {} (tests/fixtures/README.md says how to measure them)",
        path.display(),
        common::OUT
    );
    let fx = read_json("../hf_export_arch_transformers.json");
    let exports = fx["exports"].as_object().unwrap();
    assert_eq!(exports.len(), all.len(), "exports in the fixture");
    for ((name, _, _), files) in all.iter().zip(&made) {
        let Some(t) = exports.get(name.as_str()) else {
            panic!("{name}: not in the fixture");
        };
        assert_eq!(
            common::sha256(&files["model.safetensors"]),
            t["model_safetensors_sha256"].as_str().unwrap(),
            "{name}: model.safetensors is not the file transformers loaded"
        );
        // transformers built the model from the file, nothing missing or re-initialized.
        for k in ["missing_keys", "unexpected_keys", "mismatched_keys"] {
            assert_eq!(t["loading"][k], serde_json::json!([]), "{name}: {k}");
        }
        assert_eq!(t["weights_equal_file"], true, "{name}");
        assert_eq!(t["decodes_to_text"], true, "{name}");
        let class = match name.split('-').next() {
            Some("opt") => "OPTForCausalLM",
            Some("llama") => "LlamaForCausalLM",
            _ => "GPT2LMHeadModel",
        };
        assert_eq!(t["model_class"], class, "{name}");

        let (w, tok) = reload(files);
        let want_ids: Vec<u32> = t["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            ids(&tok, fx["text"].as_str().unwrap()),
            want_ids,
            "{name}: token ids"
        );
        let got = logits(&w, &want_ids);
        // |Δ| ≤ TOL·(scale + |theirs|): relative, with values below `scale` held to TOL·scale.
        let close = |ours: f64, theirs: f64, scale: f64| {
            (ours - theirs).abs() <= TRANSFORMERS_TOL * (scale + theirs.abs())
        };
        let mut worst = (0f64, 0f64);
        for (row, first) in t["logits_rows"].as_object().unwrap() {
            let row: usize = row.parse().unwrap();
            for (k, v) in first.as_array().unwrap().iter().enumerate() {
                let (a, b) = (got[row][k] as f64, v.as_f64().unwrap());
                assert!(close(a, b, 1.0), "{name}: logit [{row}][{k}] {a} vs {b}");
                worst.0 = worst.0.max((a - b).abs());
            }
        }
        for (row, v) in t["row_sums"].as_array().unwrap().iter().enumerate() {
            let a: f64 = got[row].iter().map(|&x| x as f64).sum();
            let b = v.as_f64().unwrap();
            assert!(close(a, b, 512.0), "{name}: row {row} sum {a} vs {b}");
        }
        for (i, (a, v)) in nll(&got, &want_ids)
            .iter()
            .zip(t["nll"].as_array().unwrap())
            .enumerate()
        {
            let b = v.as_f64().unwrap();
            assert!(
                close(*a, b, 1.0),
                "{name}: NLL of token {} {a} vs {b}",
                i + 1
            );
            worst.1 = worst.1.max((a - b).abs());
        }
        eprintln!(
            "{name}: vs transformers: logits {:.2e}, NLL {:.2e}",
            worst.0, worst.1
        );
    }
}

/// BinaryMoS weights have token-adaptive scales: no dense f16 weight represents them, so the
/// export is refused, naming the layer.
#[test]
fn binarymos_is_refused_by_name() {
    let mut s: Session = common::session(CASES[0]);
    let ids = quantlab::testkit::tokens(64, s.source().config.vocab, 11);
    let opts = quantlab::quant::calib::CalibOptions {
        n_seq: 2,
        seq_len: 16,
        ..Default::default()
    };
    s.calibrate(&ids, &opts, &mut |_, _| true).unwrap();
    s.set_quant(&common::binarymos()).unwrap();
    let err = s.export_hf().unwrap_err().to_string();
    assert!(err.contains("BinaryMoS") && err.contains("blk.0."), "{err}");
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

/// A weight f16 cannot hold is refused, naming the tensor as the checkpoint would and the limit.
#[test]
fn a_weight_beyond_f16_is_refused_by_name() {
    let s = common::session(CASES[0]);
    let mut w = s.source().clone();
    let l = &mut w.layers[1].linears[3];
    let mut v = l.w.dequantize().unwrap();
    v[5] = 1e5;
    l.w = quantlab::format::QTensor::from_f32(l.w.rows, l.w.cols, &v);
    let err = quantlab::model::hf_export::export_hf(&w, s.tokenizer(), "big", None)
        .unwrap_err()
        .to_string();
    for want in [
        "big",
        "model.decoder.layers.1.self_attn.out_proj.weight",
        "100000",
        "65504",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
}
