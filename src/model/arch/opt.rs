//! OPT (Zhang et al. 2022, "OPT: Open Pre-trained Transformer Language Models", arXiv
//! 2205.01068), as `transformers`' `modeling_opt.py` computes it: topology, tensor names,
//! `config.json` and THE forward pass, generic over a `Backend`.
//!
//!   x = embed(tokens) [· project_inᵀ] + pos[t + 2]        (learned positions, offset 2)
//!   pre-LN (opt-125m, 1.3b, …):  x += Wo·attn(Wq·n₁(x), Wk·n₁(x), Wv·n₁(x));  x += W₂·relu(W₁·n₂(x))
//!   post-LN (opt-350m):          x = n₁(x + Wo·attn(…x…));                   x = n₂(x + W₂·relu(W₁·x))
//!   logits = head(n_f(x) [· project_outᵀ])                 (n_f only in pre-LN models)
//! Every linear has a bias; norms are LayerNorms with bias; the head is tied to the embedding.
//! Shapes: T tokens, d = hidden_size, p = word_embed_proj_dim, H heads of hd, F = ffn_dim.

use crate::model::arch::{
    Arch, BiasRule, GlobalSpec, HfNames, LinearSpec, NormSpec, SiteSpec, Topology,
};
use crate::model::backend::Backend;
use crate::model::config::{ModelConfig, RopeStyle};
use crate::model::hf::{
    head_dim, opt_bool, opt_size, require_bools, require_str, size, string, HfConfig, MAX_CONTEXT,
};
use crate::model::net::{positions, Model, Observer};
use crate::{Error, Result};
use serde_json::{Map, Value};

pub mod grad;

pub const NAMES: &[&str] = &["opt"];

/// OPT's learned positions start at row 2 of the table (rows 0 and 1 were reserved for padding
/// in fairseq), so the table has `max_position_embeddings + 2` rows.
pub const POSITION_OFFSET: usize = 2;
/// `nn.LayerNorm`'s default epsilon, which OPT uses (its config has no field for it).
const LAYER_NORM_EPS: f32 = 1e-5;

const ATTN_NORM: usize = 0;
const FFN_NORM: usize = 1;
const Q: usize = 0;
const K: usize = 1;
const V: usize = 2;
const O: usize = 3;
const UP: usize = 4;
const DOWN: usize = 5;
const ATTN_IN: usize = 0;
const ATTN_OUT: usize = 1;
const FFN_IN: usize = 2;
const DOWN_IN: usize = 3;
const POS: usize = 0;
const PROJECT_IN: usize = 1;
const PROJECT_OUT: usize = 2;

pub fn topology(c: &ModelConfig) -> Topology {
    let (d, f) = (c.dim, c.ffn_dim);
    let lin = |name, rows, cols, site| LinearSpec::new(name, rows, cols, site, BiasRule::Required);
    let norm = |name| NormSpec { name, bias: true };
    // Post-LN: a block's input is the residual stream itself (the previous block's last norm
    // also feeds the residual add), so a scale there would change the residual.
    let residual = "the post-LayerNorm residual stream";
    let (attn_in, ffn_in) = if c.post_norm {
        (
            SiteSpec::opaque("attn_in", d, residual),
            SiteSpec::opaque("ffn_in", d, residual),
        )
    } else {
        (
            SiteSpec::norm("attn_in", d, ATTN_NORM),
            SiteSpec::norm("ffn_in", d, FFN_NORM),
        )
    };
    let global = |name, rows, cols| GlobalSpec { name, rows, cols };
    let mut globals = vec![global("position_embd", c.max_ctx + POSITION_OFFSET, d)];
    if let Some(p) = c.proj_dim {
        globals.push(global("project_in", d, p));
        globals.push(global("project_out", p, d));
    }
    Topology {
        arch: Arch::Opt,
        norms: vec![norm("attn_norm"), norm("ffn_norm")],
        linears: vec![
            lin("attn_q", d, d, ATTN_IN),
            lin("attn_k", d, d, ATTN_IN),
            lin("attn_v", d, d, ATTN_IN),
            lin("attn_output", d, d, ATTN_OUT),
            lin("ffn_up", f, d, FFN_IN),
            lin("ffn_down", d, f, DOWN_IN),
        ],
        sites: vec![
            attn_in,
            SiteSpec::rows_of("attn_out", d, V, 0, "attention").heads((
                c.n_head,
                c.n_kv_head,
                c.head_dim,
            )),
            ffn_in,
            SiteSpec::rows_of("down_in", f, UP, 0, "relu"),
        ],
        output_norm: (!c.post_norm).then_some(norm("output_norm")),
        globals,
        embed_dim: c.proj_dim.unwrap_or(d),
        hf_transposed: false,
    }
}

pub fn validate(c: &ModelConfig, file: &str) -> Result<()> {
    if c.n_kv_head != c.n_head || c.n_head * c.head_dim != c.dim {
        return Err(Error::format(
            file,
            "num_attention_heads",
            format!(
                "OPT needs {} heads of {} to make hidden_size {}",
                c.n_head, c.head_dim, c.dim
            ),
        ));
    }
    Ok(())
}

/// `config.json` of `OPTConfig` (defaults as `transformers` has them; sizes required).
pub fn from_hf(o: &Map<String, Value>) -> Result<HfConfig> {
    require_str(
        o,
        "activation_function",
        "relu",
        &["relu"],
        "OPT is implemented with \"relu\"",
    )?;
    require_bools(
        o,
        &[
            ("enable_bias", true),
            ("layer_norm_elementwise_affine", true),
            ("_remove_final_layer_norm", false),
        ],
    )?;
    let dim = size(o, "hidden_size", ModelConfig::MAX_DIM)?;
    let n_head = size(o, "num_attention_heads", ModelConfig::MAX_HEADS)?;
    let proj = opt_size(o, "word_embed_proj_dim", ModelConfig::MAX_DIM)?.unwrap_or(dim);
    let model = ModelConfig {
        arch: "opt".into(),
        n_layer: size(o, "num_hidden_layers", ModelConfig::MAX_LAYERS)?,
        dim,
        ffn_dim: size(o, "ffn_dim", 8 * ModelConfig::MAX_DIM)?,
        n_head,
        n_kv_head: n_head,
        head_dim: head_dim(dim, n_head, "hidden_size", "num_attention_heads")?,
        vocab: size(o, "vocab_size", ModelConfig::MAX_VOCAB)?,
        // No RoPE: neutral values, unused by the forward pass.
        rope_theta: 10_000.0,
        rope_style: RopeStyle::Half,
        norm_eps: LAYER_NORM_EPS,
        max_ctx: size(o, "max_position_embeddings", MAX_CONTEXT)?,
        tied_embeddings: opt_bool(o, "tie_word_embeddings")?.unwrap_or(true),
        proj_dim: (proj != dim).then_some(proj),
        post_norm: !opt_bool(o, "do_layer_norm_before")?.unwrap_or(true),
    };
    Ok(HfConfig {
        model,
        biased: Vec::new(),
        torch_dtype: string(o, "torch_dtype")?.map(str::to_string),
        layers_key: "num_hidden_layers",
    })
}

/// `config.json` of `OPTConfig` for `c` (the Hugging Face export of a model that came without
/// one): every field `from_hf` reads, so the two are inverses. `word_embed_proj_dim` is written
/// even when it equals `hidden_size`, and `do_layer_norm_before` says pre- or post-LN (the
/// decoder's `final_layer_norm` exists only for pre-LN, as transformers builds it).
pub fn to_hf(c: &ModelConfig, _biased: bool) -> Map<String, Value> {
    let v = serde_json::json!({
        "architectures": ["OPTForCausalLM"],
        "model_type": "opt",
        "hidden_size": c.dim,
        "ffn_dim": c.ffn_dim,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "vocab_size": c.vocab,
        "max_position_embeddings": c.max_ctx,
        "word_embed_proj_dim": c.proj_dim.unwrap_or(c.dim),
        "do_layer_norm_before": !c.post_norm,
        "activation_function": "relu",
        "enable_bias": true,
        "layer_norm_elementwise_affine": true,
        "_remove_final_layer_norm": false,
        "tie_word_embeddings": c.tied_embeddings,
    });
    match v {
        Value::Object(o) => o,
        _ => Map::new(),
    }
}

/// Hugging Face names. Checkpoints saved from `OPTForCausalLM` prefix `model.decoder.`; the
/// original `facebook/opt-*` ones, saved from `OPTModel`, `decoder.`.
pub const HF: HfNames = HfNames {
    prefixes: &["model.decoder.", "decoder."],
    hf_prefix: "model.decoder.",
    saved_prefix: "model.decoder.",
    blocks: "layers",
    modules: &[
        ("attn_norm", "self_attn_layer_norm"),
        ("ffn_norm", "final_layer_norm"),
        ("attn_q", "self_attn.q_proj"),
        ("attn_k", "self_attn.k_proj"),
        ("attn_v", "self_attn.v_proj"),
        ("attn_output", "self_attn.out_proj"),
        ("ffn_up", "fc1"),
        ("ffn_down", "fc2"),
    ],
    globals: &[
        ("token_embd", "embed_tokens"),
        ("position_embd", "embed_positions"),
        ("output_norm", "final_layer_norm"),
        ("project_in", "project_in"),
        ("project_out", "project_out"),
    ],
    // Linears and norms have biases; embeddings and the projections do not.
    with_bias: |base| !(base.ends_with("_embd") || base.starts_with("project_")),
    ignored: &[],
};

pub(super) fn forward<B: Backend>(
    m: &Model<B>,
    b: &B,
    tokens: &[u32],
    seq: usize,
    observer: &mut Observer<'_, B>,
) -> Result<B::Act> {
    let c = &m.config;
    let (h, hd, eps) = (c.n_head, c.head_dim, c.norm_eps);
    let mut x = b.embed(&m.embd, tokens)?; // T × p
    if c.proj_dim.is_some() {
        x = b.linear(&x, &m.globals[PROJECT_IN]); // T × d
    }
    let pos = positions(tokens.len(), seq, POSITION_OFFSET);
    b.add(&mut x, &b.embed(&m.globals[POS], &pos)?); // T × d
    for (i, blk) in m.blocks.iter().enumerate() {
        let [n1, n2] = [&blk.norms[ATTN_NORM], &blk.norms[FFN_NORM]];
        let ln = |x: &B::Act, n: &crate::model::net::LoadedNorm<B>| {
            b.layernorm(x, &n.w, n.b.as_ref(), eps)
        };
        // Attention.
        // Post-LN: the site is the residual stream itself, which must stay unquantized, so the
        // linears read a copy.
        let a_in = if c.post_norm {
            b.slice_cols(&x, 0, c.dim)
        } else {
            ln(&x, n1)
        }; // T × d
        let a_in = m.site(b, i, ATTN_IN, a_in, seq, observer)?;
        let q = b.linear(&a_in, &blk.mats[Q]); // T × d
        let k = b.linear(&a_in, &blk.mats[K]); // T × d
        let v = b.linear(&a_in, &blk.mats[V]); // T × d
        let a = b.attention(&q, &k, &v, h, h, hd, seq); // T × d
        let a = m.site(b, i, ATTN_OUT, a, seq, observer)?;
        b.add(&mut x, &b.linear(&a, &blk.mats[O]));
        if c.post_norm {
            x = ln(&x, n1);
        }
        // Feed-forward.
        let f_in = if c.post_norm {
            b.slice_cols(&x, 0, c.dim)
        } else {
            ln(&x, n2)
        }; // T × d
        let f_in = m.site(b, i, FFN_IN, f_in, seq, observer)?;
        let mut u = b.linear(&f_in, &blk.mats[UP]); // T × F
        b.relu(&mut u);
        let u = m.site(b, i, DOWN_IN, u, seq, observer)?;
        b.add(&mut x, &b.linear(&u, &blk.mats[DOWN])); // T × d
        if c.post_norm {
            x = ln(&x, n2);
        }
    }
    if let Some(n) = &m.out_norm {
        x = b.layernorm(&x, &n.w, n.b.as_ref(), eps);
    }
    if c.proj_dim.is_some() {
        x = b.linear(&x, &m.globals[PROJECT_OUT]); // T × p
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let (canonical_name, hf_name) = (|h: &str| HF.canonical(h), |c: &str| HF.hf(c));
        for (hf, want) in [
            ("model.decoder.embed_tokens.weight", "token_embd.weight"),
            ("decoder.embed_positions.weight", "position_embd.weight"),
            ("model.decoder.final_layer_norm.bias", "output_norm.bias"),
            ("model.decoder.project_in.weight", "project_in.weight"),
            (
                "model.decoder.layers.3.self_attn.out_proj.bias",
                "blk.3.attn_output.bias",
            ),
            (
                "model.decoder.layers.0.self_attn_layer_norm.weight",
                "blk.0.attn_norm.weight",
            ),
            (
                "model.decoder.layers.11.fc2.weight",
                "blk.11.ffn_down.weight",
            ),
            (
                "model.decoder.layers.1.final_layer_norm.bias",
                "blk.1.ffn_norm.bias",
            ),
            ("lm_head.weight", "output.weight"),
        ] {
            assert_eq!(canonical_name(hf).as_deref(), Some(want), "{hf}");
        }
        assert_eq!(
            hf_name("blk.3.attn_output.bias"),
            "model.decoder.layers.3.self_attn.out_proj.bias"
        );
        assert_eq!(
            hf_name("position_embd.weight"),
            "model.decoder.embed_positions.weight"
        );
        for bad in [
            "model.decoder.layers.01.fc1.weight",
            "model.decoder.layers.0.fc3.weight",
            "model.decoder.embed_tokens.bias",
            "model.encoder.layers.0.fc1.weight",
        ] {
            assert_eq!(canonical_name(bad), None, "{bad}");
        }
    }

    /// `to_hf` writes what `from_hf` reads: pre- and post-LN, with and without a projection.
    #[test]
    fn config_round_trips() {
        for (post_norm, proj_dim) in [(false, None), (true, Some(32)), (false, Some(16))] {
            let c = ModelConfig {
                arch: "opt".into(),
                n_layer: 2,
                dim: 64,
                ffn_dim: 256,
                n_head: 4,
                n_kv_head: 4,
                head_dim: 16,
                vocab: 512,
                rope_theta: 10_000.0,
                rope_style: RopeStyle::Half,
                norm_eps: LAYER_NORM_EPS,
                max_ctx: 128,
                tied_embeddings: !post_norm,
                proj_dim,
                post_norm,
            };
            assert_eq!(from_hf(&to_hf(&c, true)).unwrap().model, c, "{c:?}");
        }
    }
}
