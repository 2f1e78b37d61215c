//! Real-model equivalence: convert the default GGUF model into a Hugging Face checkpoint in
//! memory (f32 weights, q/k rows put back into Hugging Face order, config.json), load it with
//! `load_hf`, and require every weight to equal the GGUF weight exactly.
//!
//! ## Why q and k rows are permuted
//!
//! Hugging Face Llama applies RoPE to pairs `(r, r + d/2)` of each head (`d` = head_dim).
//! llama.cpp's `llama` architecture rotates adjacent pairs `(2j, 2j + 1)`, so its HF→GGUF
//! converter reorders the rows of `q_proj` and `k_proj` within every head: it views a head's `d`
//! rows as a 2 × (d/2) grid (row `r = a·d/2 + j`, `a ∈ {0, 1}`, `j < d/2`), transposes it to
//! (d/2) × 2, and reads it back row-major, so HF row `a·d/2 + j` lands on GGUF row `2j + a`.
//! The pair `(j, j + d/2)` thus becomes the adjacent pair `(2j, 2j + 1)`.
//!
//! The inverse, used here: HF row `r` of head `h` is GGUF row `h·d + 2·(r mod d/2) + ⌊r / (d/2)⌋`.
//! For `q` the heads are the `n_head` query heads; for `k` they are the `n_kv_head` KV heads
//! (each KV head is permuted on its own). `v`, `o` and the MLP are not touched.

use super::hf_fixture::serialize_raw;
use quantlab::format::{Format, QTensor};
use quantlab::io::gguf::Gguf;
use quantlab::model::config::{ModelConfig, RopeStyle};
use quantlab::model::hf::load_hf;
use quantlab::model::weights::ModelWeights;
use safetensors::Dtype;

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
);

/// The converted checkpoint stores f32, so the loaded weights must equal the dequantized GGUF
/// weights bit for bit.
const EXACT_BITS: bool = true;

/// GGUF row that holds Hugging Face row `r` of a head of `d` rows (see the module comment).
fn gguf_row_of_hf_row(r: usize, d: usize) -> usize {
    let half = d / 2;
    2 * (r % half) + r / half
}

/// Put the rows of a `[heads·d, cols]` matrix from llama.cpp's interleaved order back into
/// Hugging Face half order.
fn unpermute_rows(w: &[f32], heads: usize, d: usize, cols: usize) -> Vec<f32> {
    assert_eq!(w.len(), heads * d * cols, "unpermute: shape");
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for r in 0..d {
            let src = (h * d + gguf_row_of_hf_row(r, d)) * cols;
            let dst = (h * d + r) * cols;
            out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
        }
    }
    out
}

/// The converter's forward direction, written independently from the description (reshape to
/// `[2, d/2]`, swap axes, flatten): GGUF row `i` of a head holds HF row `(i mod 2)·d/2 + i/2`.
fn hf_row_of_gguf_row(i: usize, d: usize) -> usize {
    (i % 2) * (d / 2) + i / 2
}

#[test]
fn unpermute_inverts_the_converter_permutation() {
    // Worked example, d = 4: HF rows (r0 r1 r2 r3) pair as (r0,r2), (r1,r3); llama.cpp stores
    // them as (r0 r2 r1 r3) so that the pairs are adjacent.
    let gguf = [0.0, 2.0, 1.0, 3.0]; // row i holds the value of HF row hf_row_of_gguf_row(i)
    assert_eq!(unpermute_rows(&gguf, 1, 4, 1), vec![0.0, 1.0, 2.0, 3.0]);
    for d in [2, 4, 8, 64] {
        for r in 0..d {
            assert_eq!(hf_row_of_gguf_row(gguf_row_of_hf_row(r, d), d), r, "d {d}");
        }
    }
}

/// Relative tolerance for attention scores computed two ways in f64 from the same f32 weights
/// (only the summation order differs).
const SCORE_RTOL: f64 = 1e-9;

/// Rotate `v` (one head, `d` values) by position `pos`: RoPE with frequency
/// `theta^(-2j/d)` for pair `j`, the pair being `(2j, 2j+1)` (interleaved, llama.cpp `llama`) or
/// `(j, j + d/2)` (half, Hugging Face).
fn rope(v: &mut [f64], pos: usize, theta: f64, interleaved: bool) {
    let d = v.len();
    for j in 0..d / 2 {
        let angle = pos as f64 * theta.powf(-2.0 * j as f64 / d as f64);
        let (a, b) = if interleaved {
            (2 * j, 2 * j + 1)
        } else {
            (j, j + d / 2)
        };
        let (x, y) = (v[a], v[b]);
        v[a] = x * angle.cos() - y * angle.sin();
        v[b] = x * angle.sin() + y * angle.cos();
    }
}

/// Attention scores `q_h(pos_q) · k_{h/g}(pos_k)` of every query head for input `x`.
fn scores(
    c: &ModelConfig,
    wq: &[f32],
    wk: &[f32],
    x: &[f64],
    (pos_q, pos_k): (usize, usize),
    interleaved: bool,
) -> Vec<f64> {
    let d = c.head_dim;
    let project = |w: &[f32], heads: usize, pos: usize| -> Vec<Vec<f64>> {
        (0..heads)
            .map(|h| {
                let mut v: Vec<f64> = (0..d)
                    .map(|r| {
                        let row = &w[(h * d + r) * c.dim..(h * d + r + 1) * c.dim];
                        row.iter().zip(x).map(|(a, b)| *a as f64 * b).sum()
                    })
                    .collect();
                rope(&mut v, pos, c.rope_theta as f64, interleaved);
                v
            })
            .collect()
    };
    let q = project(wq, c.n_head, pos_q);
    let k = project(wk, c.n_kv_head, pos_k);
    let group = c.n_head / c.n_kv_head;
    q.iter()
        .enumerate()
        .map(|(h, qh)| qh.iter().zip(&k[h / group]).map(|(a, b)| a * b).sum())
        .collect()
}

/// The permutation is right exactly when interleaved RoPE on the GGUF rows and half RoPE on
/// the Hugging Face rows give the same attention scores (what the forward pass will rely on).
/// Without the permutation they must differ, or this check could not fail.
fn assert_rope_scores_agree(c: &ModelConfig, g: &ModelWeights, h: &ModelWeights, layer: usize) {
    let x: Vec<f64> = (0..c.dim)
        .map(|i| ((i * 37 % 101) as f64 - 50.0) / 50.0)
        .collect();
    let (gl, hl) = (&g.layers[layer], &h.layers[layer]);
    let (gq, gk) = (
        f32_matrix(&gl.linear("attn_q").unwrap().w),
        f32_matrix(&gl.linear("attn_k").unwrap().w),
    );
    let (hq, hk) = (
        f32_matrix(&hl.linear("attn_q").unwrap().w),
        f32_matrix(&hl.linear("attn_k").unwrap().w),
    );
    for pos in [(5, 2), (40, 17)] {
        let want = scores(c, &gq, &gk, &x, pos, true);
        let got = scores(c, &hq, &hk, &x, pos, false);
        let unpermuted = scores(c, &gq, &gk, &x, pos, false);
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "layer {layer}: all scores are zero");
        let mut differs = false;
        for (i, (w, gt)) in want.iter().zip(&got).enumerate() {
            assert!(
                (w - gt).abs() <= SCORE_RTOL * scale,
                "layer {layer} head {i} pos {pos:?}: HF score {gt} vs GGUF {w}"
            );
            differs |= (w - unpermuted[i]).abs() > 1e-3 * scale;
        }
        assert!(
            differs,
            "layer {layer}: the check cannot tell the row orders apart"
        );
    }
}

fn f32_matrix(q: &QTensor) -> Vec<f32> {
    q.dequantize().expect("dequantize GGUF tensor")
}

/// HF f32 tensors for one linear weight of the GGUF model, q/k rows reordered.
fn hf_values(c: &ModelConfig, canonical: &str, q: &QTensor) -> Vec<f32> {
    let w = f32_matrix(q);
    if c.rope_style != RopeStyle::Interleaved {
        return w;
    }
    if canonical.ends_with(".attn_q.weight") {
        unpermute_rows(&w, c.n_head, c.head_dim, q.cols)
    } else if canonical.ends_with(".attn_k.weight") {
        unpermute_rows(&w, c.n_kv_head, c.head_dim, q.cols)
    } else {
        w
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

type Entry = (String, Dtype, Vec<usize>, Vec<u8>);

fn matrix_entry(name: String, q: &QTensor, values: Vec<f32>) -> Entry {
    (name, Dtype::F32, vec![q.rows, q.cols], f32_bytes(&values))
}

fn vector_entry(name: String, v: &[f32]) -> Entry {
    (name, Dtype::F32, vec![v.len()], f32_bytes(v))
}

fn config_json(c: &ModelConfig) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": c.arch,
        "hidden_size": c.dim,
        "intermediate_size": c.ffn_dim,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head,
        "head_dim": c.head_dim,
        "vocab_size": c.vocab,
        "max_position_embeddings": c.max_ctx,
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": null,
        "hidden_act": "silu",
        "tie_word_embeddings": c.tied_embeddings,
        "torch_dtype": "float32",
    }))
    .expect("config json")
}

/// The HF module path of each linear of a block, with the GGUF weight it comes from.
fn block_linears(l: &quantlab::model::weights::LayerWeights) -> [(&'static str, &QTensor); 7] {
    [
        ("self_attn.q_proj", &l.linear("attn_q").unwrap().w),
        ("self_attn.k_proj", &l.linear("attn_k").unwrap().w),
        ("self_attn.v_proj", &l.linear("attn_v").unwrap().w),
        ("self_attn.o_proj", &l.linear("attn_output").unwrap().w),
        ("mlp.gate_proj", &l.linear("ffn_gate").unwrap().w),
        ("mlp.up_proj", &l.linear("ffn_up").unwrap().w),
        ("mlp.down_proj", &l.linear("ffn_down").unwrap().w),
    ]
}

fn assert_same(what: &str, got: &QTensor, want: &[f32]) {
    assert_eq!(got.format, Format::F32, "{what}: stored format");
    let got = got.dequantize().expect("dequantize loaded tensor");
    assert_eq!(got.len(), want.len(), "{what}: length");
    let bad = got.iter().zip(want).position(|(g, w)| {
        if EXACT_BITS {
            g.to_bits() != w.to_bits()
        } else {
            g != w
        }
    });
    if let Some(i) = bad {
        panic!("{what}[{i}]: loaded {} but GGUF has {}", got[i], want[i]);
    }
}

#[test]
fn gguf_converted_to_hf_loads_to_the_same_weights() {
    let bytes = std::fs::read(MODEL).unwrap_or_else(|e| {
        panic!("{MODEL}: {e}; run scripts/fetch-model.sh to download the default model")
    });
    let gguf = Gguf::parse("SmolLM2-135M-Instruct.Q4_1.gguf", &bytes).expect("parse GGUF");
    let gcfg = gguf.model_config().expect("GGUF config");
    let g = ModelWeights::from_source(gcfg.clone(), &gguf).expect("GGUF weights");
    assert_eq!(
        gcfg.rope_style,
        RopeStyle::Interleaved,
        "default model is GGUF llama"
    );

    // Two shards, split after the middle block, to exercise sharding at full size.
    let split = g.config.n_layer / 2;
    let mut shards: [Vec<Entry>; 2] = [Vec::new(), Vec::new()];
    shards[0].push(matrix_entry(
        "model.embed_tokens.weight".into(),
        &g.token_embd,
        f32_matrix(&g.token_embd),
    ));
    if let Some(o) = &g.output {
        shards[1].push(matrix_entry("lm_head.weight".into(), o, f32_matrix(o)));
    }
    shards[1].push(vector_entry(
        "model.norm.weight".into(),
        &g.output_norm.as_ref().expect("output_norm").weight,
    ));
    for (i, l) in g.layers.iter().enumerate() {
        let s = &mut shards[usize::from(i >= split)];
        let p = format!("model.layers.{i}");
        s.push(vector_entry(
            format!("{p}.input_layernorm.weight"),
            &l.norm("attn_norm").unwrap().weight,
        ));
        s.push(vector_entry(
            format!("{p}.post_attention_layernorm.weight"),
            &l.norm("ffn_norm").unwrap().weight,
        ));
        for ((module, q), lin) in block_linears(l).into_iter().zip(l.linears()) {
            assert!(lin.bias.is_none(), "SmolLM2 has no biases");
            let v = hf_values(&g.config, &lin.name, q);
            s.push(matrix_entry(format!("{p}.{module}.weight"), q, v));
        }
    }
    let files: Vec<Vec<u8>> = shards.iter().map(|s| serialize_raw(s)).collect();
    drop(shards);
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let h = load_hf(
        &config_json(&g.config),
        &[(names[0], &files[0]), (names[1], &files[1])],
    )
    .expect("load_hf");
    drop(files);

    let want_cfg = ModelConfig {
        rope_style: RopeStyle::Half,
        ..g.config.clone()
    };
    assert_eq!(h.config, want_cfg);
    assert_eq!(h.output.is_none(), g.output.is_none(), "tied embeddings");
    assert_same("token_embd", &h.token_embd, &f32_matrix(&g.token_embd));
    if let (Some(ho), Some(go)) = (&h.output, &g.output) {
        assert_same("output", ho, &f32_matrix(go));
    }
    assert_eq!(h.output_norm, g.output_norm, "output_norm");
    let mut compared = 0usize;
    for (hl, gl) in h.layers.iter().zip(&g.layers) {
        assert_eq!(
            hl.norm("attn_norm").unwrap().weight,
            gl.norm("attn_norm").unwrap().weight,
            "{}: attn_norm",
            hl.linear("attn_q").unwrap().name
        );
        assert_eq!(
            hl.norm("ffn_norm").unwrap().weight,
            gl.norm("ffn_norm").unwrap().weight,
            "{}: ffn_norm",
            hl.linear("attn_q").unwrap().name
        );
        for (hlin, glin) in hl.linears().iter().zip(gl.linears()) {
            assert_eq!(hlin.name, glin.name);
            assert_same(
                &hlin.name,
                &hlin.w,
                &hf_values(&g.config, &glin.name, &glin.w),
            );
            compared += 1;
        }
    }
    assert_eq!(h.layers.len(), g.layers.len());
    assert_eq!(compared, 7 * g.config.n_layer);
    for layer in [0, g.config.n_layer - 1] {
        assert_rope_scores_agree(&g.config, &g, &h, layer);
    }

    // The whole forward pass: the HF checkpoint (half-rotation RoPE on un-permuted rows) must
    // give the GGUF model's (interleaved RoPE on permuted rows) log-likelihoods.
    forward_nll_agrees(&g, &h);
}

/// Per-token NLL of the two models on the same tokens agree to this relative tolerance (the two
/// RoPE layouts sum the same products in another order, so only f32 rounding differs).
const FORWARD_REL_TOL: f64 = 1e-4;

fn forward_nll_agrees(g: &ModelWeights, h: &ModelWeights) {
    use quantlab::model::backend::Backend;
    use quantlab::model::cpu::Cpu;
    use quantlab::model::eval::ready;
    use quantlab::model::net::Model;
    let tokens: Vec<u32> = (0..48u32)
        .map(|i| (i * 7919 + 17) % g.config.vocab as u32)
        .collect();
    let nll = |w: &ModelWeights| -> Vec<f64> {
        let m = Model::load(&Cpu, w).expect("load into CPU backend");
        let x = m.forward(&Cpu, &tokens).expect("forward");
        let (p, _) = Cpu
            .score(&x, m.head(), 0, &tokens[1..], None, false)
            .expect("score");
        ready(Cpu.read_scores(p))
            .expect("scores")
            .iter()
            .map(|s| s.nll)
            .collect()
    };
    let (a, b) = (nll(g), nll(h));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= FORWARD_REL_TOL * x.abs().max(1.0),
            "token {i}: GGUF NLL {x} vs HF NLL {y}"
        );
    }
}
