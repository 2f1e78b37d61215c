//! QuantLab's model file (`model::qlab`): a model quantized by every method family, saved and
//! loaded again, is the same model (every tensor's bytes, the activation plan, the tokenizer's
//! ids, the perplexity to the last bit); and a damaged file is refused with an error naming the
//! file and the field, never a panic.

use quantlab::format::act::ActGranularity;
use quantlab::format::Granularity;
use quantlab::io::tokenizer::TokenizerFiles;
use quantlab::model::eval::{EvalOptions, Protocol};
use quantlab::model::qlab;
use quantlab::model::weights::ModelWeights;
use quantlab::playground::engine::Device;
use quantlab::playground::saved::SavedInfo;
use quantlab::playground::session::Session;
use quantlab::quant::act::{ActConfig, ActScaleKind, TenderAct};
use quantlab::quant::binary::OneBitOptions;
use quantlab::quant::binarymos::BinaryMosOptions;
use quantlab::quant::calib::CalibOptions;
use quantlab::quant::cmpq::CmpqOptions;
use quantlab::quant::codebook::{KmeansOptions, Per};
use quantlab::quant::config::{LayerQuant, Method, QuantConfig};
use quantlab::quant::gptq::GptqOptions;
use quantlab::quant::lorc::LorcOptions;
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny");
const TEXT: &str = "The quick brown fox jumps over the lazy dog. A tiny model, a tiny text: \
                    enough tokens to calibrate and to evaluate two short windows of it.";

fn read(name: &str, file: &str) -> Vec<u8> {
    let p = format!("{DIR}/{name}/{file}");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// The tiny Llama checkpoint (tokenizer.json recipe).
fn llama() -> Session {
    let tok = read("llama", "tokenizer.json");
    Session::load_hf(
        "tiny-llama",
        &read("llama", "config.json"),
        TokenizerFiles::Json(&tok),
        &[("model.safetensors", &read("llama", "model.safetensors"))],
    )
    .expect("tiny llama loads")
}

/// The tiny GPT-2 as llama.cpp's converter wrote it (GGUF tokenizer recipe).
fn gpt2_gguf() -> Session {
    Session::load_gguf("model-f32.gguf", read("gpt2", "model-f32.gguf")).expect("tiny gpt2 loads")
}

fn layer(bits: u8, gran: Granularity, sym: bool) -> LayerQuant {
    LayerQuant {
        bits,
        gran,
        sym,
        ..LayerQuant::default()
    }
}

/// Configs covering every format family and add-on, and both activation plans with data.
fn configs() -> Vec<(&'static str, QuantConfig)> {
    let base = QuantConfig::default();
    let a8 = |scale, tender| ActConfig {
        bits: 8,
        gran: ActGranularity::PerTensor,
        scale,
        percentile: None,
        tender,
    };
    vec![
        (
            "rtn int3 g32 asym + int8 LoRC",
            QuantConfig {
                method: Method::Rtn,
                default: layer(3, Granularity::Group(32), false),
                lorc: Some(LorcOptions {
                    rank: 4,
                    bits8: true,
                }),
                ..base.clone()
            },
        ),
        (
            "gptq int4 row, A8 static",
            QuantConfig {
                method: Method::Gptq(GptqOptions::default()),
                default: layer(4, Granularity::PerRow, true),
                act: Some(a8(ActScaleKind::Static, None)),
                ..base.clone()
            },
        ),
        (
            "k-means per column with outliers",
            QuantConfig {
                method: Method::Kmeans(KmeansOptions {
                    per: Per::Column,
                    outlier_frac: 0.01,
                    weighted: false,
                }),
                default: layer(3, Granularity::PerRow, true),
                ..base.clone()
            },
        ),
        (
            "nf4 g32, Tender A8 static",
            QuantConfig {
                method: Method::Nf4,
                default: layer(4, Granularity::Group(32), true),
                act: Some(a8(
                    ActScaleKind::Static,
                    Some(TenderAct {
                        groups: 4,
                        chunk: 64,
                        round: Default::default(),
                    }),
                )),
                ..base.clone()
            },
        ),
        (
            "cmpq 3.0",
            QuantConfig {
                method: Method::Cmpq(CmpqOptions {
                    budget: 3.0,
                    ..CmpqOptions::default()
                }),
                ..base.clone()
            },
        ),
        (
            "onebit",
            QuantConfig {
                method: Method::OneBit(OneBitOptions { fit: 0 }),
                default: layer(1, Granularity::PerRow, true),
                ..base.clone()
            },
        ),
        (
            "binarymos 2 experts",
            QuantConfig {
                method: Method::BinaryMos(BinaryMosOptions {
                    experts: 2,
                    steps: 3,
                    lr: 0.01,
                }),
                default: layer(1, Granularity::PerRow, true),
                ..base
            },
        ),
    ]
}

fn calib() -> CalibOptions {
    CalibOptions {
        n_seq: 2,
        seq_len: 16,
        ..CalibOptions::default()
    }
}

fn eval_opts() -> EvalOptions {
    EvalOptions {
        protocol: Protocol::Llamacpp,
        ctx: 16,
        max_windows: Some(2),
        kl: false,
    }
}

/// Every tensor, norm, bias and the activation plan are equal.
fn assert_same(a: &ModelWeights, b: &ModelWeights, what: &str) {
    assert_eq!(a.config, b.config, "{what}: config");
    assert_eq!(a.token_embd, b.token_embd, "{what}: token_embd");
    assert_eq!(a.output, b.output, "{what}: output");
    assert_eq!(a.output_norm, b.output_norm, "{what}: output_norm");
    assert_eq!(a.act, b.act, "{what}: activation plan");
    assert_eq!(a.globals.len(), b.globals.len(), "{what}: globals");
    for (x, y) in a.globals.iter().zip(&b.globals) {
        assert_eq!((&x.name, &x.w, &x.bias), (&y.name, &y.w, &y.bias), "{what}");
    }
    for (i, (x, y)) in a.layers.iter().zip(&b.layers).enumerate() {
        assert_eq!(x.norms, y.norms, "{what}: layer {i} norms");
        for (p, q) in x.linears.iter().zip(&y.linears) {
            assert_eq!(p.name, q.name, "{what}");
            assert_eq!(p.w, q.w, "{what}: {}", p.name);
            assert_eq!(p.bias, q.bias, "{what}: {} bias", p.name);
        }
    }
    assert_eq!(a.layers.len(), b.layers.len(), "{what}: layers");
}

fn round_trip(mut s: Session, model: &str) {
    let ids = s.tokenize(TEXT).expect("tokenize");
    assert!(ids.len() >= 40, "{model}: {} tokens", ids.len());
    for (what, cfg) in configs() {
        let what = format!("{model}: {what}");
        if cfg.needs_calibration() {
            s.calibrate(&ids, &calib(), &mut |_, _| true)
                .unwrap_or_else(|e| panic!("{what}: calibrate: {e}"));
        }
        s.set_quant(&cfg)
            .unwrap_or_else(|e| panic!("{what}: set_quant: {e}"));
        let want = s
            .evaluate_tokens(&ids, &eval_opts(), &mut |_| true)
            .unwrap_or_else(|e| panic!("{what}: eval: {e}"));
        let bytes = s.save_qlab(Value::Null).expect("save");
        assert!(qlab::sniff(&bytes), "{what}: sniff");
        let back = Session::load_file_on("back.qlab", bytes, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{what}: load: {e}"));
        assert_same(
            s.quantized_weights().unwrap().unwrap(),
            back.source(),
            &what,
        );
        assert_eq!(back.tokenize(TEXT).unwrap(), ids, "{what}: tokenizer");
        assert_eq!(back.bos(), s.bos(), "{what}: bos");
        let got = back
            .evaluate_tokens(&ids, &eval_opts(), &mut |_| true)
            .unwrap();
        assert_eq!(
            got.ppl.to_bits(),
            want.ppl.to_bits(),
            "{what}: {} vs {}",
            got.ppl,
            want.ppl
        );
        assert!(want.ppl.is_finite(), "{what}");
        // What the file says of itself.
        let info: SavedInfo =
            serde_json::from_value(back.info().saved.clone().expect("saved info")).unwrap();
        assert_eq!(
            info.quant,
            vec![serde_json::to_value(&cfg).unwrap()],
            "{what}"
        );
        assert_eq!(info.source, s.info().identity, "{what}: source identity");
        assert_eq!(
            info.memory.total_bytes,
            s.memory().total_bytes,
            "{what}: memory"
        );
    }
}

#[test]
fn every_format_family_round_trips_bit_exactly_hf_tokenizer() {
    round_trip(llama(), "tiny llama");
}

#[test]
fn every_format_family_round_trips_bit_exactly_gguf_tokenizer() {
    round_trip(gpt2_gguf(), "tiny gpt2 gguf");
}

#[test]
fn a_file_saved_from_a_loaded_file_keeps_its_source_and_history() {
    let mut s = llama();
    let first = QuantConfig {
        method: Method::Rtn,
        default: layer(8, Granularity::PerRow, true),
        ..QuantConfig::default()
    };
    s.set_quant(&first).unwrap();
    let origin = s.info().identity;
    assert_eq!(origin.kind, "hf");
    assert_eq!(origin.sha256.as_ref().map(String::len), Some(64));
    let mut t =
        Session::load_file_on("one.qlab", s.save_qlab(Value::Null).unwrap(), &Device::Cpu).unwrap();
    let second = QuantConfig {
        method: Method::Rtn,
        default: layer(4, Granularity::Group(32), true),
        ..QuantConfig::default()
    };
    t.set_quant(&second).unwrap();
    let extra = serde_json::json!({"note": "second step"});
    let u = Session::load_file_on(
        "two.qlab",
        t.save_qlab(extra.clone()).unwrap(),
        &Device::Cpu,
    )
    .unwrap();
    let info: SavedInfo = serde_json::from_value(u.info().saved.unwrap()).unwrap();
    assert_eq!(info.source, origin, "the first model stays the source");
    assert_eq!(
        info.loaded.as_ref().map(|l| l.name.as_str()),
        Some("one.qlab")
    );
    assert_eq!(
        info.quant,
        vec![
            serde_json::to_value(&first).unwrap(),
            serde_json::to_value(&second).unwrap()
        ]
    );
    assert_eq!(info.extra, extra);
}

/// The JSON header of a safetensors file, and the offset of its data.
fn header(bytes: &[u8]) -> (Value, usize) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&bytes[8..8 + n]).unwrap(), 8 + n)
}

/// `bytes` with its header replaced by `h` (the data, and so every offset, unchanged).
fn with_header(bytes: &[u8], h: &Value) -> Vec<u8> {
    let (_, data) = header(bytes);
    let mut j = serde_json::to_vec(h).unwrap();
    while !(8 + j.len()).is_multiple_of(8) {
        j.push(b' ');
    }
    let mut out = (j.len() as u64).to_le_bytes().to_vec();
    out.extend(j);
    out.extend_from_slice(&bytes[data..]);
    out
}

/// Rewrite one part (`config`, `tensors`, `act`, ...) of the file's `quantlab` header entry.
fn edit_meta(bytes: &[u8], key: &str, f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let (mut h, _) = header(bytes);
    let meta = &mut h["__metadata__"];
    let mut v: Value = serde_json::from_str(meta["quantlab"].as_str().unwrap()).unwrap();
    f(&mut v[key]);
    meta["quantlab"] = Value::String(v.to_string());
    with_header(bytes, &h)
}

fn load_err(bytes: Vec<u8>) -> String {
    match Session::load_file_on("bad.qlab", bytes, &Device::Cpu) {
        Ok(_) => panic!("a damaged file loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn damaged_files_are_refused_with_the_file_and_field_named() {
    let mut s = llama();
    s.set_quant(&QuantConfig {
        method: Method::Rtn,
        default: layer(4, Granularity::Group(32), true),
        ..QuantConfig::default()
    })
    .unwrap();
    let good = s.save_qlab(Value::Null).unwrap();
    let name = "blk.0.attn_q.weight";

    // Truncated anywhere: the header, or the data.
    for cut in [4, 40, good.len() / 2, good.len() - 1] {
        let e = load_err(good[..cut].to_vec());
        assert!(e.contains("bad.qlab"), "cut at {cut}: {e}");
    }
    // A format whose bytes do not match the tensor's.
    let e = load_err(edit_meta(&good, "tensors", |t| {
        t[name]["format"] = serde_json::json!({"int": {"bits": 8, "gran": "per_row", "sym": true}});
    }));
    assert!(e.contains(name) && e.contains("bytes"), "{e}");
    // A shape that disagrees with the config.
    let e = load_err(edit_meta(&good, "tensors", |t| {
        t[name]["rows"] = serde_json::json!(32);
    }));
    assert!(e.contains(name), "{e}");
    // An unknown format.
    let e = load_err(edit_meta(&good, "tensors", |t| {
        t[name]["format"] = serde_json::json!("int99");
    }));
    assert!(e.contains("quantlab.tensors"), "{e}");
    // A described tensor that is not there.
    let e = load_err(edit_meta(&good, "tensors", |t| {
        t["blk.9.attn_q.weight"] = t[name].clone();
    }));
    assert!(e.contains("blk.9.attn_q.weight"), "{e}");
    // A config asking for more layers than the file holds.
    let e = load_err(edit_meta(&good, "config", |c| {
        c["n_layer"] = serde_json::json!(5);
    }));
    assert!(e.contains("blk.2.") && e.contains("missing"), "{e}");
    // A newer file version.
    let e = load_err(edit_meta(&good, "version", |v| *v = serde_json::json!(2)));
    assert!(e.contains("version 2"), "{e}");
    // The same model saved twice is the same bytes.
    assert_eq!(s.save_qlab(Value::Null).unwrap(), good);
    // An activation plan for another model.
    let mut a8 = s.quant().clone();
    a8.act = Some(ActConfig {
        bits: 8,
        gran: ActGranularity::PerTensor,
        scale: ActScaleKind::Static,
        percentile: None,
        tender: None,
    });
    let ids = s.tokenize(TEXT).unwrap();
    s.calibrate(&ids, &calib(), &mut |_, _| true).unwrap();
    s.set_quant(&a8).unwrap();
    let with_act = s.save_qlab(Value::Null).unwrap();
    let e = load_err(edit_meta(&with_act, "act", |a| {
        a["scales"].as_array_mut().unwrap().pop();
    }));
    assert!(e.contains("quantlab.act"), "{e}");
    let e = load_err(edit_meta(&with_act, "act", |a| {
        a["scales"][0][0] = serde_json::json!(-1.0);
    }));
    assert!(
        e.contains("quantlab.act") && e.contains("layer 0 site 0"),
        "{e}"
    );
    // A NaN scale inside a tensor's bytes: the first f16 scale of the tensor.
    let (h, data) = header(&good);
    let off = h[name]["data_offsets"][0].as_u64().unwrap() as usize;
    let t = &s.quantized_weights().unwrap().unwrap().layers[0].linears[0].w;
    let scale_at = data + off + t.format.storage(t.rows, t.cols).unwrap().codes;
    let mut nan = good.clone();
    nan[scale_at..scale_at + 2].copy_from_slice(&half::f16::NAN.to_le_bytes());
    let e = load_err(nan);
    assert!(e.contains(name) && e.contains("finite"), "{e}");
    // Not a QuantLab file at all: a plain checkpoint is refused by name, not mistaken for one.
    let plain = read("llama", "model.safetensors");
    assert!(!qlab::sniff(&plain));
    let e = qlab::read("model.safetensors", &plain)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("quantlab"),
        "{e}"
    );
}
