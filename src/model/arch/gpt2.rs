//! GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners"), as
//! `transformers`' `modeling_gpt2.py` computes it and llama.cpp's `gpt2` GGUF architecture
//! names it: topology, tensor names, `config.json` and THE forward pass, generic over a
//! `Backend`.
//!
//!   x = wte[tokens] + wpe[t]                                  (learned positions from 0)
//!   per block:  [q k v] = W_qkv·n₁(x);  x += W_o·attn(q, k, v);  x += W_down·gelu(W_up·n₂(x))
//!   logits = head(n_f(x))                                      (head tied to wte)
//! Norms are LayerNorms with bias; every linear has a bias; GELU is the tanh approximation
//! (`gelu_new`). Hugging Face stores the linears as `Conv1D`, `[in, out]`; they are transposed
//! on load. The fused `c_attn` stays one tensor (`attn_qkv`, as in llama.cpp's GGUF), so it is
//! quantized as one matrix of `3d` rows; its output is split into q, k and v by columns.
//! Shapes: T tokens, d = n_embd, H heads of hd = d/H, F = n_inner (4d by default).

use crate::model::arch::{
    Arch, BiasRule, GlobalSpec, HfNames, LinearSpec, NormSpec, SiteSpec, Topology,
};
use crate::model::backend::Backend;
use crate::model::config::{ModelConfig, RopeStyle};
use crate::model::hf::{
    head_dim, json_f32, opt_bool, opt_f32, opt_size, require_bools, require_str, size, string,
    HfConfig, MAX_CONTEXT,
};
use crate::model::net::{positions, Model, Observer};
use crate::{Error, Result};
use serde_json::{Map, Value};

pub mod grad;

pub const NAMES: &[&str] = &["gpt2"];

const ATTN_NORM: usize = 0;
const FFN_NORM: usize = 1;
const QKV: usize = 0;
const O: usize = 1;
const UP: usize = 2;
const DOWN: usize = 3;
const ATTN_IN: usize = 0;
const ATTN_OUT: usize = 1;
const FFN_IN: usize = 2;
const DOWN_IN: usize = 3;
const POS: usize = 0;

pub fn topology(c: &ModelConfig) -> Topology {
    let (d, f) = (c.dim, c.ffn_dim);
    let lin = |name, rows, cols, site| LinearSpec::new(name, rows, cols, site, BiasRule::Required);
    let norm = |name| NormSpec { name, bias: true };
    Topology {
        arch: Arch::Gpt2,
        norms: vec![norm("attn_norm"), norm("ffn_norm")],
        linears: vec![
            lin("attn_qkv", 3 * d, d, ATTN_IN),
            lin("attn_output", d, d, ATTN_OUT),
            lin("ffn_up", f, d, FFN_IN),
            lin("ffn_down", d, f, DOWN_IN),
        ],
        sites: vec![
            SiteSpec::norm("attn_in", d, ATTN_NORM),
            // The v part of the fused projection: rows 2d..3d.
            SiteSpec::rows_of("attn_out", d, QKV, 2 * d, "attention")
                .heads((c.n_head, c.n_head, c.head_dim)),
            SiteSpec::norm("ffn_in", d, FFN_NORM),
            SiteSpec::opaque("down_in", f, "gelu(up)"),
        ],
        output_norm: Some(norm("output_norm")),
        globals: vec![GlobalSpec {
            name: "position_embd",
            rows: c.max_ctx,
            cols: d,
        }],
        embed_dim: d,
        hf_transposed: true,
    }
}

pub fn validate(c: &ModelConfig, file: &str) -> Result<()> {
    if c.n_kv_head != c.n_head || c.n_head * c.head_dim != c.dim {
        return Err(Error::format(
            file,
            "n_head",
            format!(
                "GPT-2 needs {} heads of {} to make n_embd {}",
                c.n_head, c.head_dim, c.dim
            ),
        ));
    }
    if c.proj_dim.is_some() || c.post_norm {
        return Err(Error::format(
            file,
            "proj_dim",
            "GPT-2 has no embedding projection or post-norm blocks",
        ));
    }
    Ok(())
}

/// `config.json` of `GPT2Config` (defaults as `transformers` has them; sizes required).
pub fn from_hf(o: &Map<String, Value>) -> Result<HfConfig> {
    require_str(
        o,
        "activation_function",
        "gelu_new",
        &["gelu_new", "gelu_pytorch_tanh"],
        "GPT-2 is implemented with the tanh GELU, \"gelu_new\"",
    )?;
    require_bools(
        o,
        &[
            ("scale_attn_weights", true),
            ("scale_attn_by_inverse_layer_idx", false),
        ],
    )?;
    let dim = size(o, "n_embd", ModelConfig::MAX_DIM)?;
    let n_head = size(o, "n_head", ModelConfig::MAX_HEADS)?;
    let ctx = match opt_size(o, "n_positions", MAX_CONTEXT)? {
        Some(n) => n,
        None => size(o, "n_ctx", MAX_CONTEXT)?,
    };
    let model = ModelConfig {
        arch: "gpt2".into(),
        n_layer: size(o, "n_layer", ModelConfig::MAX_LAYERS)?,
        dim,
        ffn_dim: opt_size(o, "n_inner", 8 * ModelConfig::MAX_DIM)?.unwrap_or(4 * dim),
        n_head,
        n_kv_head: n_head,
        head_dim: head_dim(dim, n_head, "n_embd", "n_head")?,
        vocab: size(o, "vocab_size", ModelConfig::MAX_VOCAB)?,
        // No RoPE: neutral values, unused by the forward pass.
        rope_theta: 10_000.0,
        rope_style: RopeStyle::Half,
        norm_eps: opt_f32(o, "layer_norm_epsilon")?.unwrap_or(1e-5),
        max_ctx: ctx,
        tied_embeddings: opt_bool(o, "tie_word_embeddings")?.unwrap_or(true),
        proj_dim: None,
        post_norm: false,
    };
    Ok(HfConfig {
        model,
        biased: Vec::new(),
        torch_dtype: string(o, "torch_dtype")?.map(str::to_string),
        layers_key: "n_layer",
    })
}

/// `config.json` of `GPT2Config` for `c` (the Hugging Face export of a model that came without
/// one, e.g. llama.cpp's GGUF): every field `from_hf` reads, so the two are inverses. `n_ctx`
/// is written beside `n_positions` as older configs have it; `n_inner` always (transformers'
/// default is the same 4·n_embd, but the file should not depend on that).
pub fn to_hf(c: &ModelConfig, _biased: bool) -> Map<String, Value> {
    let v = serde_json::json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_embd": c.dim,
        "n_inner": c.ffn_dim,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "vocab_size": c.vocab,
        "n_positions": c.max_ctx,
        "n_ctx": c.max_ctx,
        "layer_norm_epsilon": json_f32(c.norm_eps),
        "activation_function": "gelu_new",
        "scale_attn_weights": true,
        "scale_attn_by_inverse_layer_idx": false,
        "reorder_and_upcast_attn": false,
        "tie_word_embeddings": c.tied_embeddings,
    });
    match v {
        Value::Object(o) => o,
        _ => Map::new(),
    }
}

/// Hugging Face names. `openai-community/gpt2` stores them without a prefix (saved from
/// `GPT2Model`); checkpoints saved from `GPT2LMHeadModel` prefix `transformer.`. Older ones
/// store attention's causal mask as buffers (`attn.bias`, `attn.masked_bias`): not weights.
pub const HF: HfNames = HfNames {
    prefixes: &["transformer.", ""],
    hf_prefix: "",
    // `GPT2LMHeadModel.save_pretrained` writes `transformer.h.0.…`.
    saved_prefix: "transformer.",
    blocks: "h",
    modules: &[
        ("attn_norm", "ln_1"),
        ("ffn_norm", "ln_2"),
        ("attn_qkv", "attn.c_attn"),
        ("attn_output", "attn.c_proj"),
        ("ffn_up", "mlp.c_fc"),
        ("ffn_down", "mlp.c_proj"),
    ],
    globals: &[
        ("token_embd", "wte"),
        ("position_embd", "wpe"),
        ("output_norm", "ln_f"),
    ],
    // Every linear and norm has a bias; the embeddings have none.
    with_bias: |base| !base.ends_with("_embd"),
    ignored: &[".attn.bias", ".attn.masked_bias"],
};

pub(super) fn forward<B: Backend>(
    m: &Model<B>,
    b: &B,
    tokens: &[u32],
    seq: usize,
    observer: &mut Observer<'_, B>,
) -> Result<B::Act> {
    let c = &m.config;
    let (d, h, hd, eps) = (c.dim, c.n_head, c.head_dim, c.norm_eps);
    let mut x = b.embed(&m.embd, tokens)?; // T × d
    let pos = positions(tokens.len(), seq, 0);
    b.add(&mut x, &b.embed(&m.globals[POS], &pos)?);
    for (i, blk) in m.blocks.iter().enumerate() {
        let (n1, n2) = (&blk.norms[ATTN_NORM], &blk.norms[FFN_NORM]);
        let n = b.layernorm(&x, &n1.w, n1.b.as_ref(), eps); // T × d
        let n = m.site(b, i, ATTN_IN, n, seq, observer)?;
        let qkv = b.linear(&n, &blk.mats[QKV]); // T × 3d
        let q = b.slice_cols(&qkv, 0, d); // T × d
        let k = b.slice_cols(&qkv, d, d); // T × d
        let v = b.slice_cols(&qkv, 2 * d, d); // T × d
        let a = b.attention(&q, &k, &v, h, h, hd, seq); // T × d
        let a = m.site(b, i, ATTN_OUT, a, seq, observer)?;
        b.add(&mut x, &b.linear(&a, &blk.mats[O]));

        let n = b.layernorm(&x, &n2.w, n2.b.as_ref(), eps); // T × d
        let n = m.site(b, i, FFN_IN, n, seq, observer)?;
        let mut u = b.linear(&n, &blk.mats[UP]); // T × F
        b.gelu(&mut u);
        let u = m.site(b, i, DOWN_IN, u, seq, observer)?;
        b.add(&mut x, &b.linear(&u, &blk.mats[DOWN])); // T × d
    }
    let out = m
        .out_norm
        .as_ref()
        .ok_or_else(|| Error::config("model", "GPT-2 needs output_norm"))?;
    Ok(b.layernorm(&x, &out.w, out.b.as_ref(), eps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let (canonical_name, hf_name, ignored) = (
            |h: &str| HF.canonical(h),
            |c: &str| HF.hf(c),
            |h: &str| HF.is_ignored(h),
        );
        for (hf, want) in [
            ("wte.weight", "token_embd.weight"),
            ("transformer.wpe.weight", "position_embd.weight"),
            ("ln_f.bias", "output_norm.bias"),
            ("h.0.attn.c_attn.weight", "blk.0.attn_qkv.weight"),
            ("transformer.h.11.mlp.c_proj.bias", "blk.11.ffn_down.bias"),
            ("h.2.ln_2.weight", "blk.2.ffn_norm.weight"),
        ] {
            assert_eq!(canonical_name(hf).as_deref(), Some(want), "{hf}");
        }
        assert_eq!(hf_name("blk.0.attn_qkv.weight"), "h.0.attn.c_attn.weight");
        assert_eq!(hf_name("position_embd.weight"), "wpe.weight");
        // The export writes what GPT2LMHeadModel.save_pretrained writes.
        assert_eq!(
            HF.saved("blk.0.attn_qkv.weight"),
            "transformer.h.0.attn.c_attn.weight"
        );
        assert_eq!(HF.saved("output_norm.bias"), "transformer.ln_f.bias");
        assert_eq!(HF.saved("output.weight"), "lm_head.weight");
        assert!(ignored("h.3.attn.masked_bias") && ignored("transformer.h.0.attn.bias"));
        for bad in ["h.01.ln_1.weight", "h.0.attn.c_attn.scales", "wte.bias"] {
            assert_eq!(canonical_name(bad), None, "{bad}");
        }
    }

    /// `to_hf` writes what `from_hf` reads, the epsilon as the decimal a config.json has.
    #[test]
    fn config_round_trips() {
        for (eps, decimal, ffn, tied) in [(1e-5, 1e-5, 256, true), (1e-6, 1e-6, 96, false)] {
            let c = ModelConfig {
                arch: "gpt2".into(),
                n_layer: 3,
                dim: 64,
                ffn_dim: ffn,
                n_head: 4,
                n_kv_head: 4,
                head_dim: 16,
                vocab: 512,
                rope_theta: 10_000.0,
                rope_style: RopeStyle::Half,
                norm_eps: eps,
                max_ctx: 128,
                tied_embeddings: tied,
                proj_dim: None,
                post_norm: false,
            };
            let o = to_hf(&c, true);
            assert_eq!(o["layer_norm_epsilon"].as_f64(), Some(decimal));
            assert_eq!(from_hf(&o).unwrap().model, c, "{c:?}");
        }
    }
}
