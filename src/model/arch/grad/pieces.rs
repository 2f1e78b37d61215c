//! The pieces of training's backward pass that every architecture shares (issue 15, full
//! BinaryMoS distillation, arXiv 2406.12311), each next to the forward step it inverts:
//!   linear     BinaryMoS (`format::binarymos::grad`) or dense `dx = dy·W` (frozen); the bias
//!              is frozen too, so it only adds in the forward
//!   attention  causal softmax with grouped KV heads, per head (`P = softmax(QKᵀ/√hd)`):
//!              `dV += Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))`,
//!              `dQ = dS·K/√hd`, `dK += dSᵀ·Q/√hd` (the query heads of one KV head add up);
//!              multi-head attention (OPT, GPT-2) is the case of one query head per KV head
//!   LayerNorm  `y = x̂·w + b`, `x̂ = (x − μ)·r`, `r = 1/√(var x + eps)`:
//!              `dx = r·(g − mean g − x̂·mean(g ⊙ x̂))`, `g = w ⊙ dy` (weight and bias frozen)
//!   residuals  add their gradients.

use crate::format::binarymos::{MosGrads, MosTrace};
use crate::linalg::{gemm, sgemm, Gemm};
use crate::model::cpu::{causal_probs, Act, Mat};

/// Bytes of the tapes of `blocks` blocks for `rows` tokens, each token keeping `acts` floats
/// of activations in a block and, per linear of `linear_rows` output rows, a BinaryMoS trace
/// (gates, `h`, the output scales and the output: every linear counted as BinaryMoS).
pub(crate) fn tape_bytes(acts: usize, linear_rows: &[usize], blocks: usize, rows: usize) -> u64 {
    let traces: usize = linear_rows
        .iter()
        .map(|o| 3 * o + crate::format::binarymos::MAX_MOS_EXPERTS)
        .sum();
    4u64.saturating_mul((acts + traces) as u64)
        .saturating_mul(rows as u64)
        .saturating_mul(blocks as u64)
}

/// `x Wᵀ + b` as `Cpu::linear` (the same products, on `gemm`), keeping a BinaryMoS product's
/// trace when `keep`.
pub(crate) fn linear(
    x: &Act,
    w: &Mat,
    keep: bool,
    trace: &mut Option<MosTrace>,
    gemm: &dyn Gemm,
) -> Act {
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

pub(crate) fn add(x: &mut Act, y: &Act) {
    x.data.iter_mut().zip(&y.data).for_each(|(a, b)| *a += b);
}

/// `dx` of a linear, and its trained gradients when it is BinaryMoS.
pub(crate) fn linear_backward(
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

/// Rows `s·seq ..` of `a` as their own activation.
fn rows_of(a: &Act, s: usize, seq: usize) -> Act {
    Act {
        rows: seq,
        cols: a.cols,
        data: a.data[s * seq * a.cols..(s + 1) * seq * a.cols].to_vec(),
    }
}

/// Back through `Cpu::attention` (causal, grouped KV heads, sequences of `seq` rows): the
/// gradients with respect to `q`, `k` (after RoPE, where there is one) and `v`, given `d_out`. Work is split
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

/// Back through `Cpu::layernorm` (the same two-pass mean and variance in f64): the gradient
/// with respect to `x` given `dy`; the weight and bias are frozen.
pub(crate) fn layernorm_backward(x: &Act, w: &[f32], eps: f32, dy: &Act) -> Act {
    let mut dx = Act::zeros(x.rows, x.cols);
    let n = x.cols;
    for ((o, r), d) in dx
        .data
        .chunks_mut(n.max(1))
        .zip(x.data.chunks(n.max(1)))
        .zip(dy.data.chunks(n.max(1)))
    {
        let mean = r.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = r.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        let g = |j: usize| w[j] as f64 * d[j] as f64;
        let xhat = |j: usize| (r[j] as f64 - mean) * rstd;
        let mean_g = (0..n).map(g).sum::<f64>() / n as f64;
        let mean_gx = (0..n).map(|j| g(j) * xhat(j)).sum::<f64>() / n as f64;
        for (j, o) in o.iter_mut().enumerate() {
            *o = (rstd * (g(j) - mean_g - xhat(j) * mean_gx)) as f32;
        }
    }
    dx
}
