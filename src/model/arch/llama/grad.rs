//! Training's pass through a Llama-family block (issue 15, full BinaryMoS distillation, arXiv
//! 2406.12311): the block of `llama::forward`, step for step and with the CPU backend's own
//! operations, keeping what the backward pass needs; and that backward pass, written out by
//! hand for every piece of the block:
//!   RMSNorm   `y = x·r·w`, `r = 1/√(mean x² + eps)`:  `dx = r·(w⊙dy) − x·r³·mean(x⊙w⊙dy)`
//!   linear    BinaryMoS or dense, frozen (`arch::grad::pieces`)
//!   RoPE      a rotation per pair: `dx` is `dy` turned back by the same angle
//!   attention causal softmax with grouped KV heads (`arch::grad::pieces`)
//!   SwiGLU    `a = silu(g)·u`: `dg = da·u·σ(g)·(1 + g·(1 − σ(g)))`, `du = da·silu(g)`
//!   residuals add their gradients.
//! The model-level loop (embedding, blocks, output norm, tapes) is `arch::grad`'s. Every piece
//! is checked against central differences (`grad::tests`), and the training forward equals
//! `Model::forward` bit for bit (`training_forward_is_the_model_forward`).

use super::{ATTN_NORM, DOWN, FFN_NORM, GATE, K, O, Q, UP, V};
use crate::format::binarymos::MosTrace;
use crate::linalg::Gemm;
use crate::model::arch::grad::pieces::{self, add, attention_backward, linear, linear_backward};
use crate::model::arch::grad::BlockGrads;
use crate::model::backend::Backend;
use crate::model::config::ModelConfig;
use crate::model::cpu::{rotate, Act, Cpu};
use crate::model::net::{Block, Model};
use crate::{Error, Result};

/// Bytes of the tapes of `blocks` blocks for `rows` tokens.
pub(crate) fn tape_bytes(c: &ModelConfig, blocks: usize, rows: usize) -> u64 {
    let (d, f) = (c.dim, c.ffn_dim);
    let (q, kv) = (c.n_head * c.head_dim, c.n_kv_head * c.head_dim);
    let acts = 3 * d + 2 * q + 2 * kv + 3 * f;
    pieces::tape_bytes(acts, &[q, kv, kv, d, f, f, d], blocks, rows)
}

/// The output norm of the last block's output `x` (what the head reads).
pub(crate) fn finish(m: &Model<Cpu>, x: &Act) -> Result<Act> {
    Ok(Cpu.rmsnorm(x, &out_norm(m)?.w, m.config.norm_eps))
}

/// Back through `finish`: the gradient with respect to the last block's output `x`.
pub(crate) fn finish_backward(m: &Model<Cpu>, x: &Act, d_out: &Act) -> Result<Act> {
    Ok(rmsnorm_backward(
        x,
        &out_norm(m)?.w,
        m.config.norm_eps,
        d_out,
    ))
}

fn out_norm(m: &Model<Cpu>) -> Result<&crate::model::net::LoadedNorm<Cpu>> {
    m.out_norm
        .as_ref()
        .ok_or_else(|| Error::config("model", "the Llama family needs output_norm"))
}

/// What one block's forward keeps for its backward.
pub(crate) struct Tape {
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

/// One block, as `llama::forward`'s loop body (T × d in, T × d out).
pub(crate) fn block(
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

/// Back through one block: the gradient with respect to its input, and its linears' gradients.
pub(crate) fn block_backward(
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

#[cfg(test)]
mod tests;
