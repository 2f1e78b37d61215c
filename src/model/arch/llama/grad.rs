//! Training's pass through the Llama family (issue 15, full BinaryMoS distillation, arXiv
//! 2406.12311): the forward pass of `llama::forward`, step for step and with the CPU backend's
//! own operations, keeping what the backward pass needs; and that backward pass, written out by
//! hand for every piece of the block:
//!   RMSNorm   `y = x·r·w`, `r = 1/√(mean x² + eps)`:  `dx = r·(w⊙dy) − x·r³·mean(x⊙w⊙dy)`
//!   linear    BinaryMoS (`format::binarymos::grad`) or dense `dx = dy·W` (frozen)
//!   RoPE      a rotation per pair: `dx` is `dy` turned back by the same angle
//!   attention causal softmax with grouped KV heads, per head (`P = softmax(QKᵀ/√hd)`):
//!             `dV += Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))`,
//!             `dQ = dS·K/√hd`, `dK += dSᵀ·Q/√hd` (the query heads of one KV head add up)
//!   SwiGLU    `a = silu(g)·u`: `dg = da·u·σ(g)·(1 + g·(1 − σ(g)))`, `du = da·silu(g)`
//!   residuals add their gradients.
//! The norms, the embedding, the head and dense linears stay frozen (the student trains only its
//! BinaryMoS linears), so the backward pass returns gradients for those alone.
//!
//! Memory: `forward_taped` keeps every block's intermediate values (its tape) when they fit
//! `TAPE_BUDGET`; otherwise, as after `forward`, `backward` runs each block's forward again
//! before going back through it (activation checkpointing, one block at a time). The same
//! operations either way, so the gradients are bit for bit the same (checked in
//! `model_backward_matches_central_differences_for_every_trained_tensor`).
//!
//! One model implementation: `forward(..).out` equals `Model::forward` bit for bit
//! (`training_forward_is_the_model_forward`), and every piece is checked against central
//! differences (`grad::tests`).

use super::{ATTN_NORM, DOWN, FFN_NORM, GATE, K, O, Q, UP, V};
use crate::format::binarymos::{MosGrads, MosTrace};
use crate::linalg::{gemm, sgemm, CpuGemm, Gemm};
use crate::model::arch::Arch;
use crate::model::backend::Backend;
use crate::model::config::ModelConfig;
use crate::model::cpu::{causal_probs, rotate, Act, Cpu, Mat};
use crate::model::net::{Block, Model};
use crate::{Error, Result};

/// The forward pass as training keeps it.
pub struct Forward {
    /// The input of every block, then the last block's output (`n_layer + 1` entries, T × d).
    pub inputs: Vec<Act>,
    /// The output norm's result (what the head reads), T × d.
    pub out: Act,
    /// Each block's tape, when `forward_taped` kept them (else the backward pass recomputes
    /// them; the numbers are the same either way).
    tapes: Vec<Option<Tape>>,
}

/// Most bytes of tapes `forward_taped` keeps; past this it keeps none and the backward pass
/// recomputes each block (about a sixth more work). 4 GiB holds 1 400 tokens of the default
/// model (30 blocks, ~94 kB a token and block).
pub const TAPE_BUDGET: u64 = 4 << 30;

/// Whether `m` can train here: the Llama family, no activation quantization.
pub fn check(m: &Model<Cpu>) -> Result<()> {
    if m.arch != Arch::Llama {
        return Err(Error::config(
            "binarize --mode full",
            format!(
                "{} is not in the Llama family; full distillation has a backward pass for \
                 Llama/Mistral/Qwen2 blocks only (OPT and GPT-2: use --mode lite)",
                m.config.arch
            ),
        ));
    }
    if m.act.is_some() {
        return Err(Error::config(
            "binarize --mode full",
            "the model quantizes its activations; full distillation trains on f32 activations",
        ));
    }
    Ok(())
}

/// The Llama forward pass of `tokens` (independent sequences of `seq`), keeping each block's
/// input. The same operations in the same order as `llama::forward`.
pub fn forward(m: &Model<Cpu>, tokens: &[u32], seq: usize) -> Result<Forward> {
    forward_on(m, tokens, seq, false, &CpuGemm)
}

/// `forward`, also keeping every block's tape for `backward` when they fit `TAPE_BUDGET`.
pub fn forward_taped(m: &Model<Cpu>, tokens: &[u32], seq: usize) -> Result<Forward> {
    forward_on(m, tokens, seq, true, &CpuGemm)
}

/// `forward` (`taped`: `forward_taped`) with the linears' products on `gemm` (the trainer's
/// seam, `linalg::Gemm`).
pub fn forward_on(
    m: &Model<Cpu>,
    tokens: &[u32],
    seq: usize,
    taped: bool,
    gemm: &dyn Gemm,
) -> Result<Forward> {
    let keep = taped && tape_bytes(&m.config, m.blocks.len(), tokens.len()) <= TAPE_BUDGET;
    forward_keeping(m, tokens, seq, keep, gemm)
}

/// Bytes of the tapes of `blocks` blocks for `rows` tokens (every linear counted as
/// BinaryMoS: its trace holds gates, `h`, the output scales and the output).
fn tape_bytes(c: &ModelConfig, blocks: usize, rows: usize) -> u64 {
    let (d, f) = (c.dim, c.ffn_dim);
    let (q, kv) = (c.n_head * c.head_dim, c.n_kv_head * c.head_dim);
    let acts = 3 * d + 2 * q + 2 * kv + 3 * f;
    let traces: usize = [q, kv, kv, d, f, f, d]
        .iter()
        .map(|o| 3 * o + crate::format::binarymos::MAX_MOS_EXPERTS)
        .sum();
    4u64.saturating_mul((acts + traces) as u64)
        .saturating_mul(rows as u64)
        .saturating_mul(blocks as u64)
}

fn forward_keeping(
    m: &Model<Cpu>,
    tokens: &[u32],
    seq: usize,
    keep: bool,
    gemm: &dyn Gemm,
) -> Result<Forward> {
    check(m)?;
    if tokens.is_empty() || seq == 0 || !tokens.len().is_multiple_of(seq) {
        return Err(Error::config(
            "tokens",
            format!("{} tokens in sequences of {seq}", tokens.len()),
        ));
    }
    let c = &m.config;
    let mut x = Cpu.embed(&m.embd, tokens)?;
    let mut inputs = Vec::with_capacity(m.blocks.len() + 1);
    let mut tapes = Vec::with_capacity(m.blocks.len());
    for blk in &m.blocks {
        let (y, tape) = block(c, blk, &x, seq, keep, gemm);
        inputs.push(std::mem::replace(&mut x, y));
        tapes.push(tape);
    }
    let out = Cpu.rmsnorm(&x, &out_norm(m)?.w, c.norm_eps);
    inputs.push(x);
    Ok(Forward { inputs, out, tapes })
}

fn out_norm(m: &Model<Cpu>) -> Result<&crate::model::net::LoadedNorm<Cpu>> {
    m.out_norm
        .as_ref()
        .ok_or_else(|| Error::config("model", "the Llama family needs output_norm"))
}

/// What one block's forward keeps for its backward.
struct Tape {
    n1: Act,
    /// After RoPE.
    q: Act,
    k: Act,
    v: Act,
    a: Act,
    x1: Act,
    n2: Act,
    gate: Act,
    up: Act,
    act: Act,
    /// Each BinaryMoS linear's trace, in topology order.
    traces: Vec<Option<MosTrace>>,
}

/// `x Wᵀ + b` as `Cpu::linear` (the same products, on `gemm`), keeping a BinaryMoS product's
/// trace when `keep`.
fn linear(x: &Act, w: &Mat, keep: bool, trace: &mut Option<MosTrace>, gemm: &dyn Gemm) -> Act {
    let data = match &w.mos {
        Some(p) => {
            let t = p.forward_trace_on(&x.data, gemm);
            if keep {
                let y = t.y.clone();
                *trace = Some(t);
                y
            } else {
                t.y
            }
        }
        // y (T×out) = x (T×in) · Wᵀ.
        None => gemm.mul_t_w(&x.data, &w.data, x.rows, x.cols, w.rows),
    };
    let mut y = Act {
        rows: x.rows,
        cols: w.rows,
        data,
    };
    if let Some(b) = &w.bias {
        y.data
            .chunks_mut(w.rows)
            .for_each(|r| r.iter_mut().zip(b).for_each(|(y, b)| *y += b));
    }
    y
}

/// One block, as `llama::forward`'s loop body (T × d in, T × d out).
fn block(
    c: &ModelConfig,
    blk: &Block<Cpu>,
    x: &Act,
    seq: usize,
    keep: bool,
    gemm: &dyn Gemm,
) -> (Act, Option<Tape>) {
    let b = Cpu;
    let (h, kv, hd) = (c.n_head, c.n_kv_head, c.head_dim);
    let mut traces: Vec<Option<MosTrace>> = (0..blk.mats.len()).map(|_| None).collect();
    let n1 = b.rmsnorm(x, &blk.norms[ATTN_NORM].w, c.norm_eps);
    let mut q = linear(&n1, &blk.mats[Q], keep, &mut traces[Q], gemm);
    let mut k = linear(&n1, &blk.mats[K], keep, &mut traces[K], gemm);
    let v = linear(&n1, &blk.mats[V], keep, &mut traces[V], gemm);
    b.rope(&mut q, h, hd, 0, c.rope_theta, c.rope_style, seq);
    b.rope(&mut k, kv, hd, 0, c.rope_theta, c.rope_style, seq);
    let a = b.attention(&q, &k, &v, h, kv, hd, seq);
    let mut x1 = x.clone();
    b.add(
        &mut x1,
        &linear(&a, &blk.mats[O], keep, &mut traces[O], gemm),
    );
    let n2 = b.rmsnorm(&x1, &blk.norms[FFN_NORM].w, c.norm_eps);
    let gate = linear(&n2, &blk.mats[GATE], keep, &mut traces[GATE], gemm);
    let up = linear(&n2, &blk.mats[UP], keep, &mut traces[UP], gemm);
    let mut act = gate.clone();
    b.silu_mul(&mut act, &up);
    let mut x2 = x1.clone();
    b.add(
        &mut x2,
        &linear(&act, &blk.mats[DOWN], keep, &mut traces[DOWN], gemm),
    );
    let tape = keep.then_some(Tape {
        n1,
        q,
        k,
        v,
        a,
        x1,
        n2,
        gate,
        up,
        act,
        traces,
    });
    (x2, tape)
}

/// The gradients of one block's BinaryMoS linears (topology order; `None` for a dense one).
pub type BlockGrads = Vec<Option<MosGrads>>;

/// Back through the whole model. `d_hidden[l]` is the loss's gradient with respect to block
/// `l`'s output (`n_layer` entries), `d_out` with respect to the output norm's result. Calls
/// `sink(l, grads)` for every block from the last to the first. Uses up `f`'s tapes.
pub fn backward(
    m: &Model<Cpu>,
    f: &mut Forward,
    seq: usize,
    d_hidden: &[Act],
    d_out: &Act,
    gemm: &dyn Gemm,
    sink: &mut dyn FnMut(usize, BlockGrads) -> Result<()>,
) -> Result<()> {
    let c = &m.config;
    let n = m.blocks.len();
    if d_hidden.len() != n || f.inputs.len() != n + 1 {
        return Err(Error::config(
            "backward",
            format!("{} hidden gradients for {n} blocks", d_hidden.len()),
        ));
    }
    let mut dx = rmsnorm_backward(&f.inputs[n], &out_norm(m)?.w, c.norm_eps, d_out);
    for l in (0..n).rev() {
        add(&mut dx, &d_hidden[l]);
        let tape = f.tapes.get_mut(l).and_then(Option::take);
        let (d_in, grads) = block_backward(c, &m.blocks[l], &f.inputs[l], seq, &dx, tape, gemm);
        sink(l, grads)?;
        dx = d_in;
    }
    Ok(())
}

fn add(x: &mut Act, y: &Act) {
    x.data.iter_mut().zip(&y.data).for_each(|(a, b)| *a += b);
}

/// `dx` of a linear, and its trained gradients when it is BinaryMoS.
fn linear_backward(
    x: &Act,
    w: &Mat,
    trace: Option<&MosTrace>,
    dy: &Act,
    gemm: &dyn Gemm,
) -> (Act, Option<MosGrads>) {
    match (&w.mos, trace) {
        (Some(p), Some(t)) => {
            let mut g = p.backward_on(&x.data, t, &dy.data, true, true, gemm);
            let data = g.x.take().unwrap_or_default();
            (
                Act {
                    rows: x.rows,
                    cols: x.cols,
                    data,
                },
                Some(g),
            )
        }
        // Dense (frozen): dX (T×in) = dY (T×out) · W (out×in).
        _ => (
            Act {
                rows: x.rows,
                cols: x.cols,
                data: gemm.mul_w(&dy.data, &w.data, x.rows, w.rows, w.cols),
            },
            None,
        ),
    }
}

/// Back through one block: the gradient with respect to its input, and its linears' gradients.
fn block_backward(
    c: &ModelConfig,
    blk: &Block<Cpu>,
    x: &Act,
    seq: usize,
    dx2: &Act,
    tape: Option<Tape>,
    gemm: &dyn Gemm,
) -> (Act, BlockGrads) {
    let (h, kv, hd) = (c.n_head, c.n_kv_head, c.head_dim);
    let tape = tape.or_else(|| block(c, blk, x, seq, true, gemm).1);
    let Some(mut t) = tape else {
        unreachable!("block keeps its tape when asked")
    };
    let mut grads: BlockGrads = vec![None; blk.mats.len()];
    let mut traces = std::mem::take(&mut t.traces);
    let mut tr = |i: usize| traces[i].take();
    // x2 = x1 + down(act)
    let (d_act, g) = linear_backward(&t.act, &blk.mats[DOWN], tr(DOWN).as_ref(), dx2, gemm);
    grads[DOWN] = g;
    let (mut d_gate, mut d_up) = (d_act.clone(), d_act);
    for i in 0..d_gate.data.len() {
        let (g, u) = (t.gate.data[i], t.up.data[i]);
        let s = 1.0 / (1.0 + (-g).exp());
        let da = d_gate.data[i];
        d_gate.data[i] = da * u * s * (1.0 + g * (1.0 - s));
        d_up.data[i] = da * g * s;
    }
    let (mut dn2, g) = linear_backward(&t.n2, &blk.mats[GATE], tr(GATE).as_ref(), &d_gate, gemm);
    grads[GATE] = g;
    let (dn2u, g) = linear_backward(&t.n2, &blk.mats[UP], tr(UP).as_ref(), &d_up, gemm);
    grads[UP] = g;
    add(&mut dn2, &dn2u);
    let mut dx1 = dx2.clone();
    add(
        &mut dx1,
        &rmsnorm_backward(&t.x1, &blk.norms[FFN_NORM].w, c.norm_eps, &dn2),
    );
    // x1 = x + o(attention(rope(q), rope(k), v))
    let (da, g) = linear_backward(&t.a, &blk.mats[O], tr(O).as_ref(), &dx1, gemm);
    grads[O] = g;
    let (mut dq, mut dk, dv) = attention_backward(&t.q, &t.k, &t.v, &da, h, kv, hd, seq);
    rotate(&mut dq, h, hd, 0, c.rope_theta, c.rope_style, seq, true);
    rotate(&mut dk, kv, hd, 0, c.rope_theta, c.rope_style, seq, true);
    let mut dn1 = Act::zeros(x.rows, x.cols);
    for (i, d) in [(Q, &dq), (K, &dk), (V, &dv)] {
        let (dn, g) = linear_backward(&t.n1, &blk.mats[i], tr(i).as_ref(), d, gemm);
        grads[i] = g;
        add(&mut dn1, &dn);
    }
    let mut dx = dx1;
    add(
        &mut dx,
        &rmsnorm_backward(x, &blk.norms[ATTN_NORM].w, c.norm_eps, &dn1),
    );
    (dx, grads)
}

/// Back through `Cpu::rmsnorm` (the same `r`, from a mean square summed in f64).
pub(crate) fn rmsnorm_backward(x: &Act, w: &[f32], eps: f32, dy: &Act) -> Act {
    let mut dx = Act::zeros(x.rows, x.cols);
    let n = x.cols;
    for ((o, r), d) in dx
        .data
        .chunks_mut(n)
        .zip(x.data.chunks(n))
        .zip(dy.data.chunks(n))
    {
        let ms = r.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / n as f64;
        let s = 1.0 / (ms + eps as f64).sqrt();
        let dot = (0..n)
            .map(|j| (w[j] * d[j]) as f64 * r[j] as f64)
            .sum::<f64>()
            / n as f64;
        for j in 0..n {
            o[j] = (s * (w[j] * d[j]) as f64 - r[j] as f64 * s * s * s * dot) as f32;
        }
    }
    dx
}

/// Rows `s·seq ..` of `a` as their own activation.
fn rows_of(a: &Act, s: usize, seq: usize) -> Act {
    Act {
        rows: seq,
        cols: a.cols,
        data: a.data[s * seq * a.cols..(s + 1) * seq * a.cols].to_vec(),
    }
}

/// Back through `Cpu::attention` (causal, grouped KV heads, sequences of `seq` rows): the
/// gradients with respect to `q`, `k` (both after RoPE) and `v`, given `d_out`. Work is split
/// by (sequence, KV head): each part owns its KV head's `dk`, `dv` and its query heads' `dq`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    q: &Act,
    k: &Act,
    v: &Act,
    d_out: &Act,
    n_head: usize,
    n_kv: usize,
    hd: usize,
    seq: usize,
) -> (Act, Act, Act) {
    let t = seq;
    let seqs = q.rows / seq.max(1);
    let per = n_head / n_kv;
    let (qs, kvs) = (n_head * hd, n_kv * hd);
    let scale = 1.0 / (hd as f32).sqrt();
    let parts = crate::par::map(0..seqs * n_kv, |job| {
        let (s, g) = (job / n_kv, job % n_kv);
        let (qq, kk, vv, dd) = (
            rows_of(q, s, t),
            rows_of(k, s, t),
            rows_of(v, s, t),
            rows_of(d_out, s, t),
        );
        let (mut p, mut dp) = (vec![0f32; t * t], vec![0f32; t * t]);
        let mut dq = vec![0f32; per * t * hd];
        let (mut dk, mut dv) = (vec![0f32; t * hd], vec![0f32; t * hd]);
        for (j, dqh) in dq.chunks_mut(t * hd).enumerate() {
            let h = g * per + j;
            causal_probs(&qq, &kk, h, n_head, n_kv, hd, &mut p);
            // dV_g += Pᵀ · dO_h
            gemm(
                t,
                t,
                hd,
                1.0,
                &p,
                1,
                t,
                &dd.data[h * hd..],
                qs,
                1,
                1.0,
                &mut dv,
                hd,
            );
            // dP = dO_h · V_gᵀ
            sgemm(
                t,
                hd,
                t,
                &dd.data[h * hd..],
                qs,
                1,
                &vv.data[g * hd..],
                1,
                kvs,
                &mut dp,
                t,
            );
            for i in 0..t {
                let (pr, dr) = (&p[i * t..(i + 1) * t], &mut dp[i * t..(i + 1) * t]);
                let inner: f32 = pr[..=i].iter().zip(&dr[..=i]).map(|(a, b)| a * b).sum();
                for c in 0..t {
                    dr[c] = pr[c] * (dr[c] - inner);
                }
            }
            // dQ_h = dS · K_g / √hd;  dK_g += dSᵀ · Q_h / √hd
            gemm(
                t,
                t,
                hd,
                scale,
                &dp,
                t,
                1,
                &kk.data[g * hd..],
                kvs,
                1,
                0.0,
                dqh,
                hd,
            );
            gemm(
                t,
                t,
                hd,
                scale,
                &dp,
                1,
                t,
                &qq.data[h * hd..],
                qs,
                1,
                1.0,
                &mut dk,
                hd,
            );
        }
        (dq, dk, dv)
    });
    let (mut dq, mut dk, mut dv) = (
        Act::zeros(q.rows, qs),
        Act::zeros(k.rows, kvs),
        Act::zeros(v.rows, kvs),
    );
    for (job, (pq, pk, pv)) in parts.into_iter().enumerate() {
        let (s, g) = (job / n_kv, job % n_kv);
        for i in 0..t {
            let r = s * t + i;
            for j in 0..per {
                let h = g * per + j;
                dq.data[r * qs + h * hd..r * qs + (h + 1) * hd]
                    .copy_from_slice(&pq[j * t * hd + i * hd..j * t * hd + (i + 1) * hd]);
            }
            dk.data[r * kvs + g * hd..r * kvs + (g + 1) * hd]
                .copy_from_slice(&pk[i * hd..(i + 1) * hd]);
            dv.data[r * kvs + g * hd..r * kvs + (g + 1) * hd]
                .copy_from_slice(&pv[i * hd..(i + 1) * hd]);
        }
    }
    (dq, dk, dv)
}

#[cfg(test)]
mod tests;
