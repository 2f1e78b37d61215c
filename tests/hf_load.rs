//! Loading Hugging Face checkpoints (`config.json` + safetensors shards) built in code, the
//! malformed inputs the loader must refuse with a useful message, and a real-model check: the
//! default GGUF model converted to a Hugging Face checkpoint loads back to the same weights.

use crate::hf_fixture;
#[path = "hf_load/real_model.rs"]
mod real_model;

use hf_fixture::{serialize, serialize_raw, Tensor, Tiny};
use quantlab::format::{Format, QTensor};
use quantlab::io::safetensors::{shards_from_index, SafetensorsSource, MAX_HEADER_BYTES};
use quantlab::model::config::RopeStyle;
use quantlab::model::hf::{load_hf, parse_config, parse_hf_config};
use quantlab::model::weights::ModelWeights;
use safetensors::Dtype;
use serde_json::json;

/// Values stored as f32/f16/bf16 must come back bit for bit: the loader keeps the stored dtype
/// and expanding f16/bf16 to f32 is exact.
const EXACT: f32 = 0.0;

fn by_name<'a>(ts: &'a [Tensor], name: &str) -> &'a Tensor {
    ts.iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("fixture has no {name}"))
}

fn assert_values(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= EXACT && g.to_bits() == w.to_bits(),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

fn assert_matrix(what: &str, q: &QTensor, format: Format, t: &Tensor) {
    assert_eq!(q.format, format, "{what}: format");
    assert_eq!(vec![q.rows, q.cols], t.shape, "{what}: shape");
    assert_values(what, &q.dequantize().expect("dequantize"), &t.values);
}

/// Load a fixture (split into `n_shards` files) and compare every field with what was written.
fn check_round_trip(tiny: &Tiny, n_shards: usize) -> ModelWeights {
    let ts = tiny.tensors();
    let per = ts.len().div_ceil(n_shards);
    let files: Vec<(String, Vec<u8>)> = ts
        .chunks(per)
        .enumerate()
        .map(|(i, c)| {
            let name = format!("model-{:05}-of-{n_shards:05}.safetensors", i + 1);
            (name, serialize(c))
        })
        .collect();
    let shards: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let w = load_hf(&tiny.config_json(), &shards).expect("load_hf");

    let c = &w.config;
    assert_eq!(c.arch, tiny.model_type);
    assert_eq!(
        (
            c.n_layer,
            c.dim,
            c.ffn_dim,
            c.n_head,
            c.n_kv_head,
            c.head_dim,
            c.vocab
        ),
        (
            tiny.layers,
            tiny.dim,
            tiny.ffn,
            tiny.heads,
            tiny.kv_heads,
            tiny.head_dim(),
            tiny.vocab
        )
    );
    assert_eq!(c.rope_style, RopeStyle::Half);
    assert_eq!(c.rope_theta, 100_000.0);
    assert_eq!(c.norm_eps, 1e-5);
    assert_eq!(c.max_ctx, 2048);
    assert_eq!(c.tied_embeddings, tiny.tied);

    let format = match tiny.dtype {
        Dtype::F32 => Format::F32,
        Dtype::F16 => Format::F16,
        Dtype::BF16 => Format::BF16,
        other => panic!("fixture dtype {other}"),
    };
    let t = |n: &str| by_name(&ts, n);
    assert_matrix(
        "token_embd",
        &w.token_embd,
        format,
        t("model.embed_tokens.weight"),
    );
    assert_values(
        "output_norm",
        &w.output_norm.as_ref().expect("output_norm").weight,
        &t("model.norm.weight").values,
    );
    match (&w.output, tiny.tied) {
        (None, true) => {}
        (Some(o), false) => assert_matrix("output", o, format, t("lm_head.weight")),
        (o, tied) => panic!("output is {:?} but tied = {tied}", o.is_some()),
    }
    assert_eq!(w.layers.len(), tiny.layers);
    for (i, l) in w.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        assert_values(
            "attn_norm",
            &l.norm("attn_norm").expect("attn_norm").weight,
            &t(&format!("{p}.input_layernorm.weight")).values,
        );
        assert_values(
            "ffn_norm",
            &l.norm("ffn_norm").expect("ffn_norm").weight,
            &t(&format!("{p}.post_attention_layernorm.weight")).values,
        );
        let linears = [
            (
                l.linear("attn_q").unwrap(),
                "self_attn.q_proj",
                tiny.qkv_bias,
            ),
            (
                l.linear("attn_k").unwrap(),
                "self_attn.k_proj",
                tiny.qkv_bias,
            ),
            (
                l.linear("attn_v").unwrap(),
                "self_attn.v_proj",
                tiny.qkv_bias,
            ),
            (l.linear("attn_output").unwrap(), "self_attn.o_proj", false),
            (l.linear("ffn_gate").unwrap(), "mlp.gate_proj", false),
            (l.linear("ffn_up").unwrap(), "mlp.up_proj", false),
            (l.linear("ffn_down").unwrap(), "mlp.down_proj", false),
        ];
        for (lin, module, has_bias) in linears {
            let hf = format!("{p}.{module}");
            assert_matrix(&hf, &lin.w, format, t(&format!("{hf}.weight")));
            match (&lin.bias, has_bias) {
                (Some(b), true) => assert_values(&hf, b, &t(&format!("{hf}.bias")).values),
                (None, false) => {}
                (b, want) => panic!("{hf}: bias present = {}, want {want}", b.is_some()),
            }
        }
    }
    w
}

#[test]
fn llama_f32_untied_round_trips_exactly() {
    let w = check_round_trip(&Tiny::llama(Dtype::F32, false), 1);
    assert_eq!(
        w.layers[1].linear("attn_k").unwrap().name,
        "blk.1.attn_k.weight"
    );
}

#[test]
fn llama_f16_tied_round_trips_f16_exact() {
    check_round_trip(&Tiny::llama(Dtype::F16, true), 1);
}

#[test]
fn llama_bf16_untied_two_shards() {
    check_round_trip(&Tiny::llama(Dtype::BF16, false), 2);
}

#[test]
fn qwen2_with_qkv_biases_across_two_shards() {
    let tiny = Tiny::qwen2(Dtype::F32);
    let w = check_round_trip(&tiny, 2);
    assert!(w.layers[0].linear("attn_output").unwrap().bias.is_none());
    let cfg = parse_hf_config(&tiny.config_json()).expect("config");
    assert_eq!(cfg.biased, ["attn_q", "attn_k", "attn_v"]);
    assert_eq!(cfg.torch_dtype.as_deref(), Some("float32"));
}

/// Defaults follow `transformers`: kv heads = heads, head_dim = dim / heads, rope_theta 10000,
/// rms_norm_eps 1e-6, untied.
#[test]
fn config_defaults() {
    let mut v = Tiny::llama(Dtype::F32, false).config_value();
    let o = v.as_object_mut().expect("object");
    for k in [
        "num_key_value_heads",
        "rope_theta",
        "rms_norm_eps",
        "tie_word_embeddings",
        "hidden_act",
    ] {
        o.remove(k);
    }
    let c = parse_config(&serde_json::to_vec(&v).expect("json")).expect("parse");
    assert_eq!((c.n_kv_head, c.head_dim), (4, 16));
    assert_eq!((c.rope_theta, c.norm_eps), (10_000.0, 1e-6));
    assert!(!c.tied_embeddings);
}

#[test]
fn mistral_sliding_window_caps_context() {
    let mut v = Tiny::llama(Dtype::F32, false).config_value();
    v["model_type"] = json!("mistral");
    v["sliding_window"] = json!(1024);
    let c = parse_config(&serde_json::to_vec(&v).expect("json")).expect("parse");
    assert_eq!(c.max_ctx, 1024, "attention is exact only within the window");
    v["sliding_window"] = json!(null);
    let c = parse_config(&serde_json::to_vec(&v).expect("json")).expect("parse");
    assert_eq!(c.max_ctx, 2048);
}

#[test]
fn index_json_lists_and_verifies_shards() {
    let ts = Tiny::llama(Dtype::F32, true).tensors();
    let (a, b) = ts.split_at(5);
    let (fa, fb) = ("m-00001.safetensors", "m-00002.safetensors");
    let (ba, bb) = (serialize(a), serialize(b));
    let mut map = serde_json::Map::new();
    for (part, file) in [(a, fa), (b, fb)] {
        for t in part {
            map.insert(t.name.clone(), json!(file));
        }
    }
    let index = serde_json::to_vec(&json!({"metadata": {}, "weight_map": map})).expect("json");
    assert_eq!(shards_from_index(&index).expect("index"), vec![fa, fb]);
    let arch = quantlab::model::arch::Arch::Llama;
    let (canonical, ignored) = (|h: &str| arch.canonical_name(h), |h: &str| arch.ignored(h));
    let naming = quantlab::io::safetensors::Naming {
        canonical: &canonical,
        ignored: &ignored,
        family: "llama",
    };
    let src = SafetensorsSource::new(&[(fa, &ba), (fb, &bb)], naming).expect("source");
    src.verify_index(&index).expect("verify");
    // An index that puts a tensor in the wrong shard is caught.
    map.insert(a[0].name.clone(), json!(fb));
    let bad = serde_json::to_vec(&json!({"weight_map": map})).expect("json");
    let e = src.verify_index(&bad).expect_err("wrong shard").to_string();
    assert!(e.contains(&a[0].name) && e.contains(fb), "{e}");
}

// ---- malformed inputs: each must fail with a message naming the file, the field and the limit.

fn llama_file() -> (Tiny, Vec<Tensor>, Vec<u8>) {
    let tiny = Tiny::llama(Dtype::F32, true);
    let ts = tiny.tensors();
    let bytes = serialize(&ts);
    (tiny, ts, bytes)
}

fn load_err(config: &[u8], shards: &[(&str, &[u8])]) -> String {
    load_hf(config, shards).expect_err("must fail").to_string()
}

#[test]
fn truncated_safetensors() {
    let (tiny, _, bytes) = llama_file();
    let cut = &bytes[..bytes.len() - 100];
    let e = load_err(&tiny.config_json(), &[("model.safetensors", cut)]);
    assert!(
        e.starts_with("model.safetensors:") && e.contains("truncated"),
        "{e}"
    );
    // Cut inside the header.
    let e = load_err(&tiny.config_json(), &[("model.safetensors", &bytes[..40])]);
    assert!(e.contains("model.safetensors: header length"), "{e}");
    let e = load_err(&tiny.config_json(), &[("model.safetensors", &bytes[..3])]);
    assert!(e.contains("shorter than the 8-byte header length"), "{e}");
}

#[test]
fn absurd_header_length() {
    let (tiny, _, mut bytes) = llama_file();
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = load_err(&tiny.config_json(), &[("model.safetensors", &bytes)]);
    assert!(
        e.contains("model.safetensors: header length") && e.contains(&MAX_HEADER_BYTES.to_string()),
        "{e}"
    );
}

#[test]
fn missing_tensor() {
    let (tiny, mut ts, _) = llama_file();
    ts.retain(|t| t.name != "model.layers.1.mlp.up_proj.weight");
    let e = load_err(
        &tiny.config_json(),
        &[("model.safetensors", &serialize(&ts))],
    );
    assert!(
        e.contains("model.safetensors: model.layers.1.mlp.up_proj.weight: tensor is missing"),
        "{e}"
    );
}

#[test]
fn untied_config_without_lm_head() {
    let (_, _, bytes) = llama_file();
    let untied = Tiny::llama(Dtype::F32, false);
    let e = load_err(&untied.config_json(), &[("model.safetensors", &bytes)]);
    assert!(e.contains("lm_head.weight: tensor is missing"), "{e}");
}

#[test]
fn mismatched_config_vs_weights() {
    let (tiny, _, bytes) = llama_file();
    let wider = Tiny { ffn: 128, ..tiny };
    let e = load_err(&wider.config_json(), &[("model.safetensors", &bytes)]);
    assert!(
        e.contains("model.layers.0.mlp.gate_proj.weight")
            && e.contains("[96, 64]")
            && e.contains("[128, 64]"),
        "{e}"
    );
    // A checkpoint with more layers than the config.
    let one = Tiny {
        layers: 1,
        ffn: 96,
        ..wider
    };
    let e = load_err(&one.config_json(), &[("model.safetensors", &bytes)]);
    assert!(
        e.contains("model.layers.1.") && e.contains("num_hidden_layers = 1"),
        "{e}"
    );
}

#[test]
fn unexpected_bias_for_llama() {
    let (tiny, mut ts, _) = llama_file();
    ts.push(Tensor::seeded(
        "model.layers.0.self_attn.q_proj.bias".into(),
        vec![64],
        9,
        Dtype::F32,
    ));
    let e = load_err(
        &tiny.config_json(),
        &[("model.safetensors", &serialize(&ts))],
    );
    assert!(
        e.contains("model.layers.0.self_attn.q_proj.bias: unexpected bias"),
        "{e}"
    );
}

#[test]
fn unsupported_dtype() {
    let (tiny, ts, _) = llama_file();
    let mut entries: Vec<_> = ts
        .iter()
        .map(|t| (t.name.clone(), t.dtype, t.shape.clone(), t.bytes()))
        .collect();
    let e0 = entries
        .iter_mut()
        .find(|e| e.0 == "model.layers.0.self_attn.q_proj.weight")
        .expect("q_proj");
    e0.1 = Dtype::I64;
    e0.3 = vec![0u8; 64 * 64 * 8];
    let bytes = serialize_raw(&entries);
    let e = load_err(&tiny.config_json(), &[("model.safetensors", &bytes)]);
    assert!(
        e.contains("model.safetensors: model.layers.0.self_attn.q_proj.weight: unsupported")
            && e.contains("I64"),
        "{e}"
    );
}

#[test]
fn unknown_tensor_name_is_refused() {
    let (tiny, mut ts, _) = llama_file();
    ts.push(Tensor::seeded(
        "model.layers.0.self_attn.q_norm.weight".into(),
        vec![16],
        9,
        Dtype::F32,
    ));
    let e = load_err(
        &tiny.config_json(),
        &[("model.safetensors", &serialize(&ts))],
    );
    assert!(e.contains("q_norm.weight: unsupported"), "{e}");
}

#[test]
fn duplicate_tensor_across_shards() {
    let (tiny, ts, _) = llama_file();
    let (a, b) = ts.split_at(4);
    let mut b = b.to_vec();
    b.push(a[1].clone());
    let (ba, bb) = (serialize(a), serialize(&b));
    let e = load_err(
        &tiny.config_json(),
        &[("shard-1.safetensors", &ba), ("shard-2.safetensors", &bb)],
    );
    assert!(
        e.contains("shard-2.safetensors")
            && e.contains(&a[1].name)
            && e.contains("also present in shard-1.safetensors"),
        "{e}"
    );
}

/// A bad `config.json` must be refused before any tensor is looked at; the message names
/// config.json and the field.
fn config_err(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v = Tiny::llama(Dtype::F32, true).config_value();
    edit(&mut v);
    parse_config(&serde_json::to_vec(&v).expect("json"))
        .expect_err("must fail")
        .to_string()
}

#[test]
fn config_not_json() {
    let e = parse_config(b"{\"model_type\": \"llama\",").expect_err("must fail");
    assert!(e.to_string().starts_with("config.json: json:"), "{e}");
}

#[test]
fn config_missing_field() {
    let e = config_err(|v| {
        v.as_object_mut().expect("obj").remove("hidden_size");
    });
    assert_eq!(e, "config.json: hidden_size: missing");
}

#[test]
fn config_negative_size() {
    let e = config_err(|v| v["num_hidden_layers"] = json!(-2));
    assert!(
        e.contains("config.json: num_hidden_layers: -2 is not an integer in 1..=256"),
        "{e}"
    );
}

#[test]
fn config_huge_size() {
    let e = config_err(|v| v["vocab_size"] = json!(1u64 << 40));
    assert!(
        e.contains("config.json: vocab_size") && e.contains("1..=1048576"),
        "{e}"
    );
}

#[test]
fn config_heads_not_dividing() {
    let e = config_err(|v| v["num_attention_heads"] = json!(5));
    assert!(
        e.contains("config.json: num_attention_heads: hidden_size 64 is not divisible by 5"),
        "{e}"
    );
    let e = config_err(|v| v["num_key_value_heads"] = json!(3));
    assert!(
        e.contains("config.json: num_key_value_heads: 4 query heads are not a multiple of 3"),
        "{e}"
    );
}

#[test]
fn config_rope_scaling_refused() {
    let e = config_err(|v| v["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0}));
    assert!(
        e.contains("config.json: rope_scaling: unsupported: RoPE scaling llama3"),
        "{e}"
    );
}

#[test]
fn config_unknown_model_type() {
    let e = config_err(|v| v["model_type"] = json!("falcon"));
    assert!(
        e.contains("config.json: model_type: unsupported: \"falcon\""),
        "{e}"
    );
}

#[test]
fn config_other_activation_refused() {
    let e = config_err(|v| v["hidden_act"] = json!("gelu"));
    assert!(e.contains("config.json: hidden_act: unsupported"), "{e}");
}
