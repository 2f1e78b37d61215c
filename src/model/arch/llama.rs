//! The Llama family (Llama, SmolLM, Mistral without sliding window, Qwen2 with q/k/v biases):
//! topology, tensor names and THE forward pass, generic over a `Backend`. Pre-norm decoder
//! blocks (Touvron et al. 2023, arXiv 2302.13971):
//!   x = embed(tokens)
//!   per block:  x += Wo · attn(rope(Wq·n(x)), rope(Wk·n(x)), Wv·n(x));  x += Wd · (silu(Wg·n(x)) ⊙ Wu·n(x))
//!   logits = head(norm(x))
//! Shapes below: T tokens in the window, d = dim, hd = head_dim, H/KV = query/KV heads, F = ffn.

use crate::model::arch::{Arch, BiasRule, HfNames, LinearSpec, NormSpec, SiteSpec, Topology};
use crate::model::backend::Backend;
use crate::model::config::{ModelConfig, RopeStyle};
use crate::model::hf::{
    json_f32, opt_bool, opt_f32, opt_size, size, string, HfConfig, MAX_CONTEXT,
};
use crate::model::net::{Model, Observer};
use crate::{Error, Result};
use serde_json::{Map, Value};

pub mod grad;

/// The names files use for this family.
pub const NAMES: &[&str] = &["llama", "mistral", "qwen2"];

/// The file `from_hf` reads, for messages.
const FILE: &str = "config.json";

// Norms, linears and sites of a block, in topology order.
const ATTN_NORM: usize = 0;
const FFN_NORM: usize = 1;
const Q: usize = 0;
const K: usize = 1;
const V: usize = 2;
const O: usize = 3;
const GATE: usize = 4;
const UP: usize = 5;
const DOWN: usize = 6;
const ATTN_IN: usize = 0;
const ATTN_OUT: usize = 1;
const FFN_IN: usize = 2;
const DOWN_IN: usize = 3;

pub fn topology(c: &ModelConfig) -> Topology {
    let (d, f) = (c.dim, c.ffn_dim);
    let (q, kv) = (c.n_head * c.head_dim, c.n_kv_head * c.head_dim);
    // Biases: Qwen2 has q/k/v biases, Llama with `attention_bias`/`mlp_bias` has more; the
    // loader checks them against config.json, so here every bias is as the file says.
    let lin = |name, rows, cols, site| LinearSpec::new(name, rows, cols, site, BiasRule::Optional);
    let norm = |name| NormSpec { name, bias: false };
    Topology {
        arch: Arch::Llama,
        norms: vec![norm("attn_norm"), norm("ffn_norm")],
        linears: vec![
            lin("attn_q", q, d, ATTN_IN),
            lin("attn_k", kv, d, ATTN_IN),
            lin("attn_v", kv, d, ATTN_IN),
            lin("attn_output", d, q, ATTN_OUT),
            lin("ffn_gate", f, d, FFN_IN),
            lin("ffn_up", f, d, FFN_IN),
            lin("ffn_down", d, f, DOWN_IN),
        ],
        sites: vec![
            SiteSpec::norm("attn_in", d, ATTN_NORM),
            SiteSpec::rows_of("attn_out", q, V, 0, "attention").heads((
                c.n_head,
                c.n_kv_head,
                c.head_dim,
            )),
            SiteSpec::norm("ffn_in", d, FFN_NORM),
            SiteSpec::rows_of("down_in", f, UP, 0, "silu(gate) ⊙ up"),
        ],
        output_norm: Some(norm("output_norm")),
        globals: vec![],
        embed_dim: d,
        hf_transposed: false,
    }
}

pub fn validate(c: &ModelConfig, file: &str) -> Result<()> {
    if !c.head_dim.is_multiple_of(2) {
        return Err(Error::format(
            file,
            "head_dim",
            format!("{} is odd; RoPE needs pairs", c.head_dim),
        ));
    }
    if !(c.rope_theta.is_finite() && c.rope_theta > 0.0) {
        return Err(Error::format(
            file,
            "rope_theta",
            format!("{} is not a positive number", c.rope_theta),
        ));
    }
    if c.proj_dim.is_some() || c.post_norm {
        return Err(Error::format(
            file,
            "proj_dim",
            "the Llama family has no embedding projection or post-norm blocks",
        ));
    }
    Ok(())
}

/// `config.json` of the family (`transformers`' `LlamaConfig`, `MistralConfig` and
/// `Qwen2Config`: field names and defaults; sizes are required, not defaulted to 7B values).
/// Defaults applied as `transformers` does: `num_key_value_heads = num_attention_heads`,
/// `head_dim = hidden_size / num_attention_heads`, `rope_theta = 10000`, `rms_norm_eps = 1e-6`,
/// `tie_word_embeddings = false`. Sliding-window attention (Mistral v0.1, Qwen2 with
/// `use_sliding_window`) over a context no longer than the window is plain causal attention, so
/// `max_ctx` is capped at the window instead of refusing the model.
pub fn from_hf(o: &Map<String, Value>) -> Result<HfConfig> {
    let arch = string(o, "model_type")?.unwrap_or("llama").to_string();

    let act = string(o, "hidden_act")?.unwrap_or("silu");
    if act != "silu" {
        return Err(Error::unsupported(
            FILE,
            "hidden_act",
            format!("{act:?} (only \"silu\", the SwiGLU MLP, is implemented)"),
        ));
    }
    check_rope_scaling(o)?;

    let dim = size(o, "hidden_size", ModelConfig::MAX_DIM)?;
    let ffn_dim = size(o, "intermediate_size", 8 * ModelConfig::MAX_DIM)?;
    let n_layer = size(o, "num_hidden_layers", ModelConfig::MAX_LAYERS)?;
    let n_head = size(o, "num_attention_heads", ModelConfig::MAX_HEADS)?;
    let n_kv_head = opt_size(o, "num_key_value_heads", ModelConfig::MAX_HEADS)?.unwrap_or(n_head);
    let head_dim = match opt_size(o, "head_dim", 1024)? {
        Some(h) => h,
        None => {
            if !dim.is_multiple_of(n_head) {
                return Err(Error::format(
                    FILE,
                    "num_attention_heads",
                    format!(
                        "hidden_size {dim} is not divisible by {n_head} heads (and no head_dim \
                         is given)"
                    ),
                ));
            }
            dim / n_head
        }
    };
    let vocab = size(o, "vocab_size", ModelConfig::MAX_VOCAB)?;
    let mut max_ctx = size(o, "max_position_embeddings", MAX_CONTEXT)?;
    let rope_theta = opt_f32(o, "rope_theta")?
        .or(rope_parameters_theta(o)?)
        .unwrap_or(10_000.0);
    let norm_eps = opt_f32(o, "rms_norm_eps")?.unwrap_or(1e-6);
    let tied_embeddings = opt_bool(o, "tie_word_embeddings")?.unwrap_or(false);

    // Sliding window: see the module comment.
    let window_active = match arch.as_str() {
        "mistral" => true,
        "qwen2" => opt_bool(o, "use_sliding_window")?.unwrap_or(false),
        _ => false,
    };
    if window_active {
        if let Some(w) = opt_size(o, "sliding_window", MAX_CONTEXT)? {
            max_ctx = max_ctx.min(w);
        }
    }

    // Which linears carry biases: Qwen2's q/k/v always; Llama's attention ones with
    // `attention_bias`, its MLP ones with `mlp_bias`; Mistral's none.
    const QKV: [&str; 3] = ["attn_q", "attn_k", "attn_v"];
    const MLP: [&str; 3] = ["ffn_gate", "ffn_up", "ffn_down"];
    let mut biased: Vec<&'static str> = Vec::new();
    match arch.as_str() {
        "qwen2" => biased.extend(QKV),
        "llama" => {
            if opt_bool(o, "attention_bias")?.unwrap_or(false) {
                biased.extend(QKV);
                biased.push("attn_output");
            }
            if opt_bool(o, "mlp_bias")?.unwrap_or(false) {
                biased.extend(MLP);
            }
        }
        _ => {}
    }
    let torch_dtype = match string(o, "torch_dtype")? {
        Some(s) => Some(s.to_string()),
        None => string(o, "dtype")?.map(str::to_string),
    };

    let model = ModelConfig {
        arch,
        n_layer,
        dim,
        ffn_dim,
        n_head,
        n_kv_head,
        head_dim,
        vocab,
        rope_theta,
        rope_style: RopeStyle::Half,
        norm_eps,
        max_ctx,
        tied_embeddings,
        proj_dim: None,
        post_norm: false,
    };
    Ok(HfConfig {
        model,
        biased,
        torch_dtype,
        layers_key: "num_hidden_layers",
    })
}

/// Only unscaled RoPE is implemented. `{"rope_type": "default"}` is the explicit spelling of
/// "no scaling" and is accepted; anything else (linear, dynamic, yarn, llama3, ...) is refused.
fn check_rope_scaling(o: &Map<String, Value>) -> Result<()> {
    for field in ["rope_scaling", "rope_parameters"] {
        match o.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(s)) => {
                let ty = s
                    .get("rope_type")
                    .or_else(|| s.get("type"))
                    .and_then(Value::as_str);
                if ty != Some("default") {
                    return Err(Error::unsupported(
                        FILE,
                        field,
                        format!(
                            "RoPE scaling {} (only unscaled RoPE is implemented)",
                            ty.unwrap_or("of unknown type")
                        ),
                    ));
                }
            }
            Some(other) => {
                return Err(Error::unsupported(
                    FILE,
                    field,
                    format!("{other} (only null or absent is supported)"),
                ))
            }
        }
    }
    Ok(())
}

/// `config.json` of `LlamaConfig` / `Qwen2Config` / `MistralConfig` for `c` (the Hugging Face
/// export of a model that came without one). RoPE is written in Hugging Face's half-split order
/// (the export puts a GGUF file's interleaved q/k rows back); `biased`: the q/k/v/o linears
/// carry biases (Llama's `attention_bias`; Qwen2 always has q/k/v biases).
pub fn to_hf(c: &ModelConfig, biased: bool) -> Map<String, Value> {
    let (class, model_type) = match c.arch.as_str() {
        "qwen2" => ("Qwen2ForCausalLM", "qwen2"),
        "mistral" => ("MistralForCausalLM", "mistral"),
        _ => ("LlamaForCausalLM", "llama"),
    };
    let mut v = serde_json::json!({
        "architectures": [class],
        "model_type": model_type,
        "hidden_size": c.dim,
        "intermediate_size": c.ffn_dim,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head,
        "head_dim": c.head_dim,
        "vocab_size": c.vocab,
        "rms_norm_eps": json_f32(c.norm_eps),
        "rope_theta": json_f32(c.rope_theta),
        "max_position_embeddings": c.max_ctx,
        "tie_word_embeddings": c.tied_embeddings,
        "hidden_act": "silu",
    });
    if model_type == "llama" {
        // Which linears carry biases (QuantLab keeps the loaded model's).
        v["attention_bias"] = Value::Bool(biased);
        v["mlp_bias"] = Value::Bool(false);
    }
    match v {
        Value::Object(o) => o,
        _ => Map::new(),
    }
}

/// `rope_parameters.rope_theta` (the newer `transformers` layout), when present.
fn rope_parameters_theta(o: &Map<String, Value>) -> Result<Option<f32>> {
    match o.get("rope_parameters").and_then(Value::as_object) {
        Some(p) => opt_f32(p, "rope_theta"),
        None => Ok(None),
    }
}

/// Hugging Face names (`model.layers.{i}.self_attn.q_proj.weight` ↔ `blk.{i}.attn_q.weight`).
/// Norms are RMSNorms (no bias); linears may carry biases (Qwen2's q/k/v; config.json says
/// which). Older checkpoints store the RoPE inverse frequencies, recomputed from `rope_theta`.
pub const HF: HfNames = HfNames {
    prefixes: &["model."],
    hf_prefix: "model.",
    saved_prefix: "model.",
    blocks: "layers",
    modules: &[
        ("attn_norm", "input_layernorm"),
        ("ffn_norm", "post_attention_layernorm"),
        ("attn_q", "self_attn.q_proj"),
        ("attn_k", "self_attn.k_proj"),
        ("attn_v", "self_attn.v_proj"),
        ("attn_output", "self_attn.o_proj"),
        ("ffn_gate", "mlp.gate_proj"),
        ("ffn_up", "mlp.up_proj"),
        ("ffn_down", "mlp.down_proj"),
    ],
    globals: &[("token_embd", "embed_tokens"), ("output_norm", "norm")],
    with_bias: |base| {
        base.starts_with("attn_") && base != "attn_norm"
            || base.starts_with("ffn_") && base != "ffn_norm"
    },
    ignored: &[".self_attn.rotary_emb.inv_freq"],
};

pub(super) fn forward<B: Backend>(
    m: &Model<B>,
    b: &B,
    tokens: &[u32],
    seq: usize,
    observer: &mut Observer<'_, B>,
) -> Result<B::Act> {
    let c = &m.config;
    let (h, kv, hd) = (c.n_head, c.n_kv_head, c.head_dim);
    let mut x = b.embed(&m.embd, tokens)?; // T × d
    let out = m
        .out_norm
        .as_ref()
        .ok_or_else(|| Error::config("model", "the Llama family needs output_norm"))?;
    let Some(first) = m.blocks.first() else {
        return Ok(b.rmsnorm(&x, &out.w, c.norm_eps));
    };
    // Each residual add is fused with the norm after it (the next block's, or the output norm).
    let mut n = b.rmsnorm(&x, &first.norms[ATTN_NORM].w, c.norm_eps); // T × d
    for (i, blk) in m.blocks.iter().enumerate() {
        let a_in = m.site(b, i, ATTN_IN, n, seq, observer)?;
        let mut q = b.linear(&a_in, &blk.mats[Q]); // T × H·hd
        let mut k = b.linear(&a_in, &blk.mats[K]); // T × KV·hd
        let v = b.linear(&a_in, &blk.mats[V]); // T × KV·hd
        b.rope(&mut q, h, hd, 0, c.rope_theta, c.rope_style, seq);
        b.rope(&mut k, kv, hd, 0, c.rope_theta, c.rope_style, seq);
        let a = b.attention(&q, &k, &v, h, kv, hd, seq); // T × H·hd
        let a = m.site(b, i, ATTN_OUT, a, seq, observer)?;
        let f = b.add_rmsnorm(
            &mut x,
            &b.linear(&a, &blk.mats[O]),
            &blk.norms[FFN_NORM].w,
            c.norm_eps,
        ); // T × d
        let f = m.site(b, i, FFN_IN, f, seq, observer)?;
        let mut g = b.linear(&f, &blk.mats[GATE]); // T × F
        b.silu_mul(&mut g, &b.linear(&f, &blk.mats[UP]));
        let g = m.site(b, i, DOWN_IN, g, seq, observer)?;
        let next = match m.blocks.get(i + 1) {
            Some(nb) => &nb.norms[ATTN_NORM].w,
            None => &out.w,
        };
        n = b.add_rmsnorm(&mut x, &b.linear(&g, &blk.mats[DOWN]), next, c.norm_eps);
        // T × d
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical_name(hf: &str) -> Option<String> {
        HF.canonical(hf)
    }
    fn hf_name(canonical: &str) -> String {
        HF.hf(canonical)
    }

    #[test]
    fn maps_every_llama_name() {
        let cases = [
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("model.norm.weight", "output_norm.weight"),
            ("lm_head.weight", "output.weight"),
            (
                "model.layers.0.input_layernorm.weight",
                "blk.0.attn_norm.weight",
            ),
            (
                "model.layers.12.post_attention_layernorm.weight",
                "blk.12.ffn_norm.weight",
            ),
            (
                "model.layers.3.self_attn.q_proj.weight",
                "blk.3.attn_q.weight",
            ),
            ("model.layers.3.self_attn.k_proj.bias", "blk.3.attn_k.bias"),
            ("model.layers.3.self_attn.v_proj.bias", "blk.3.attn_v.bias"),
            (
                "model.layers.3.self_attn.o_proj.weight",
                "blk.3.attn_output.weight",
            ),
            (
                "model.layers.7.mlp.gate_proj.weight",
                "blk.7.ffn_gate.weight",
            ),
            ("model.layers.7.mlp.up_proj.weight", "blk.7.ffn_up.weight"),
            (
                "model.layers.7.mlp.down_proj.weight",
                "blk.7.ffn_down.weight",
            ),
        ];
        for (hf, want) in cases {
            assert_eq!(canonical_name(hf).as_deref(), Some(want), "{hf}");
            assert_eq!(hf_name(want), hf, "inverse of {want}");
        }
    }

    #[test]
    fn refuses_foreign_and_aliasing_names() {
        for hf in [
            "model.layers.01.input_layernorm.weight",
            "model.layers.-1.input_layernorm.weight",
            "model.layers.99999.input_layernorm.weight",
            "model.layers.0.self_attn.q_norm.weight",
            "model.layers.0.self_attn.q_proj.scales",
            "model.layers.0.input_layernorm.bias",
            "vision_tower.weight",
        ] {
            assert_eq!(canonical_name(hf), None, "{hf}");
        }
    }
}
