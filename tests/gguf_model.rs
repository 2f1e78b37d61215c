//! The GGUF reader on the real default model: counts, metadata, config, tokenizer fields and
//! the whole load path into `ModelWeights`.

use quantlab::format::ggml::GgmlType;
use quantlab::format::Format;
use quantlab::io::gguf::{Gguf, MetaValue};
use quantlab::model::config::RopeStyle;
use quantlab::model::weights::ModelWeights;
use quantlab::tensor::{DType, TensorSource};

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
);
const LABEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn model_bytes() -> Vec<u8> {
    std::fs::read(MODEL).unwrap_or_else(|e| {
        panic!("{MODEL}: {e}; run scripts/fetch-model.sh to fetch the default model")
    })
}

#[test]
fn header_metadata_and_tensor_table() {
    let bytes = model_bytes();
    let g = Gguf::parse(LABEL, &bytes).expect("parse");
    assert_eq!(g.version(), 3);
    assert_eq!(g.metadata().len(), 33);
    assert_eq!(g.tensors().len(), 272);
    assert_eq!(g.alignment(), 32);
    assert_eq!(g.data_offset() % 32, 0);
    assert_eq!(g.get_str("general.architecture").unwrap(), Some("llama"));
    assert_eq!(g.get_u32("llama.block_count").unwrap(), Some(30));
    assert_eq!(g.get_u32("general.quantization_version").unwrap(), Some(2));
    assert_eq!(g.get_f32("llama.rope.freq_base").unwrap(), Some(100_000.0));
    assert_eq!(
        g.get_bool("tokenizer.ggml.add_bos_token").unwrap(),
        Some(false)
    );
    assert!(matches!(g.get("general.languages"), Some(MetaValue::Array(a)) if a.len() == 1));
    assert_eq!(
        g.get_str_array("general.languages")
            .unwrap()
            .map(|a| a.to_vec()),
        Some(vec!["en".to_string()])
    );
    assert!(g.get("no.such.key").is_none());
    // Type errors name the key.
    let e = g.get_u32("general.architecture").unwrap_err().to_string();
    assert!(
        e.contains("general.architecture") && e.contains(LABEL),
        "{e}"
    );
    let e = g.get_str("llama.block_count").unwrap_err().to_string();
    assert!(e.contains("llama.block_count"), "{e}");

    let mut counts = std::collections::HashMap::new();
    for t in g.summary() {
        *counts.entry(t.dtype.name()).or_insert(0) += 1;
    }
    assert_eq!(counts.get("Q4_1"), Some(&210));
    assert_eq!(counts.get("F32"), Some(&61));
    assert_eq!(counts.get("Q8_0"), Some(&1));

    // Dims come back outermost first: token_embd is [vocab, dim].
    let e = TensorSource::get(&g, "token_embd.weight").expect("token_embd");
    assert_eq!(e.dims, vec![49152, 576]);
    assert_eq!(e.dtype, DType::Ggml(GgmlType::Q8_0));
    assert_eq!(e.data.len(), 49152 * 576 / 32 * 34);
    let down = g.tensor("blk.0.ffn_down.weight").expect("ffn_down");
    assert_eq!(down.dims, vec![576, 1536]);
    assert_eq!(down.dtype, DType::Ggml(GgmlType::Q4_1));
    assert!(g.tensor("output.weight").is_none());
    assert_eq!(g.names().len(), 272);
    // Tensor data is borrowed from the buffer, not copied.
    let base = bytes.as_ptr() as usize;
    let p = down.data.as_ptr() as usize;
    assert!(p >= base && p + down.data.len() <= base + bytes.len());
}

#[test]
fn model_config_from_metadata() {
    let bytes = model_bytes();
    let g = Gguf::parse(LABEL, &bytes).expect("parse");
    let c = g.model_config().expect("config");
    assert_eq!(c.arch, "llama");
    assert_eq!(c.n_layer, 30);
    assert_eq!(c.dim, 576);
    assert_eq!(c.ffn_dim, 1536);
    assert_eq!(c.n_head, 9);
    assert_eq!(c.n_kv_head, 3);
    assert_eq!(c.head_dim, 64);
    assert_eq!(c.vocab, 49152);
    assert_eq!(c.rope_theta, 100_000.0);
    assert_eq!(c.rope_style, RopeStyle::Interleaved);
    assert_eq!(c.norm_eps, 1e-5);
    assert_eq!(c.max_ctx, 8192);
    assert!(c.tied_embeddings);
}

#[test]
fn tokenizer_fields() {
    let bytes = model_bytes();
    let g = Gguf::parse(LABEL, &bytes).expect("parse");
    let t = g.tokenizer_meta().expect("tokenizer meta");
    assert_eq!(t.model, "gpt2");
    assert_eq!(t.pre.as_deref(), Some("smollm"));
    assert_eq!(t.tokens.len(), 49152);
    assert_eq!(t.token_types.len(), 49152);
    assert!(t.scores.is_empty());
    assert_eq!(t.merges.len(), 48900);
    assert_eq!(t.tokens[1], "<|im_start|>");
    assert_eq!(t.tokens[2], "<|im_end|>");
    assert_eq!((t.bos, t.eos, t.unk), (Some(1), Some(2), Some(0)));
    assert_eq!(t.add_bos, Some(false));
    assert_eq!(t.add_eos, None);
    assert_eq!(t.add_space_prefix, Some(false));
}

#[test]
fn loads_into_model_weights() {
    let bytes = model_bytes();
    let g = Gguf::parse(LABEL, &bytes).expect("parse");
    let cfg = g.model_config().expect("config");
    let w = ModelWeights::from_source(cfg, &g).expect("from_source");
    assert_eq!(w.layers.len(), 30);
    assert!(w.output.is_none() && w.config.tied_embeddings);
    assert_eq!(w.token_embd.format, Format::Ggml(GgmlType::Q8_0));
    for l in w.linears() {
        assert_eq!(l.w.format, Format::Ggml(GgmlType::Q4_1), "{}", l.name);
    }
    let m = w.memory();
    assert_eq!(m.bits_per_weight, 5.0);
    assert_eq!(m.linear_params, w.config.block_linear_params());
    assert_eq!(w.output_norm.as_ref().map(|n| n.weight.len()), Some(576));
}
