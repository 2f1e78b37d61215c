//! Training's pass through the LayerNorm family, OPT (arXiv 2205.01068) and GPT-2 (Radford et
//! al. 2019), for full BinaryMoS distillation (issue 15, arXiv 2406.12311): the steps of
//! `opt::forward` and `gpt2::forward` with the CPU backend's own operations, keeping what the
//! backward pass needs, and that backward pass. Their blocks differ only in what `Layout` says:
//!   pre-LN   x1 = x + O·attn(qkv(n₁(x)));   x2 = x1 + DOWN·act(UP·n₂(x1))   (GPT-2, most OPT)
//!   post-LN  x1 = n₁(x + O·attn(qkv(x)));   x2 = n₂(x1 + DOWN·act(UP·x1))   (opt-350m)
//! with q, k, v three linears (OPT) or one fused `[q k v]` split by columns (GPT-2), and
//! `act` ReLU (OPT: `du = da·[u > 0]`) or the tanh GELU (GPT-2: `du = da·gelu'(u)`,
//! `cpu::gelu_tanh_grad`). Attention is multi-head without RoPE. The embedding adds learned
//! positions (frozen); OPT may project the embedding in and the output out (frozen dense
//! linears: only their input gradient is needed). LayerNorms, linears and the residuals go
//! back through `grad::pieces`.

use super::pieces::{add, attention_backward, layernorm_backward, linear, linear_backward};
use super::BlockGrads;
use crate::format::binarymos::MosTrace;
use crate::linalg::{CpuGemm, Gemm};
use crate::model::backend::Backend;
use crate::model::config::ModelConfig;
use crate::model::cpu::{gelu_tanh_grad, Act, Cpu, Mat};
use crate::model::net::{positions, Block, LoadedNorm, Model};
use crate::{Error, Result};

/// How q, k and v come out of the attention input.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Qkv {
    /// Three linears (their indices in the block).
    Separate([usize; 3]),
    /// One linear of `3d` rows whose output columns are `[q k v]`.
    Fused(usize),
}

/// The feed-forward activation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum FfnAct {
    Relu,
    /// The tanh approximation (`gelu_new`).
    Gelu,
}

/// One architecture's block and whole-model steps, as indices into its topology.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    /// The attention and feed-forward norms (`Block::norms`).
    pub norms: [usize; 2],
    pub qkv: Qkv,
    /// Attention's output, the feed-forward's up and down linears.
    pub o: usize,
    pub up: usize,
    pub down: usize,
    pub act: FfnAct,
    /// Norms after the residual adds (OPT's `do_layer_norm_before = false`).
    pub post_norm: bool,
    /// The learned positions (`Model::globals`) and the row of position 0.
    pub pos: usize,
    pub pos_offset: usize,
    /// OPT's `project_in` and `project_out` (`Model::globals`), when the model has them.
    pub project: Option<[usize; 2]>,
}

/// What one block's forward keeps for its backward.
pub(crate) struct Tape {
    /// What q, k, v read: `n₁(x)` (pre-LN) or `x` (post-LN).
    a_in: Act,
    q: Act,
    k: Act,
    v: Act,
    /// Attention's output (what `O` reads).
    a: Act,
    /// `x + O·a`, before the post-LN norm (pre-LN: the block's `x1`).
    s1: Act,
    /// What `UP` reads: `n₂(x1)` (pre-LN) or `x1` (post-LN).
    f_in: Act,
    /// `UP`'s output before the activation, and after it (what `DOWN` reads).
    u: Act,
    r: Act,
    /// `x1 + DOWN·r` before the post-LN norm (post-LN only).
    s2: Option<Act>,
    /// Each BinaryMoS linear's trace, in topology order.
    traces: Vec<Option<MosTrace>>,
}

/// Bytes of the tapes of `blocks` blocks for `rows` tokens.
pub(crate) fn tape_bytes(c: &ModelConfig, blocks: usize, rows: usize) -> u64 {
    let (d, f) = (c.dim, c.ffn_dim);
    super::pieces::tape_bytes(7 * d + 2 * f, &[3 * d, d, f, d], blocks, rows)
}

fn global(m: &Model<Cpu>, i: usize) -> Result<&Mat> {
    m.globals
        .get(i)
        .ok_or_else(|| Error::config("model", format!("global tensor {i} is missing")))
}

/// The first block's input: the token embedding [projected in] plus the learned positions.
pub(crate) fn embed(m: &Model<Cpu>, l: &Layout, tokens: &[u32], seq: usize) -> Result<Act> {
    let b = Cpu;
    let mut x = b.embed(&m.embd, tokens)?;
    if let Some([p_in, _]) = l.project {
        x = b.linear(&x, global(m, p_in)?);
    }
    let pos = positions(tokens.len(), seq, l.pos_offset);
    b.add(&mut x, &b.embed(global(m, l.pos)?, &pos)?);
    Ok(x)
}

/// What the head reads from the last block's output: the output norm (pre-LN), then OPT's
/// `project_out`.
pub(crate) fn finish(m: &Model<Cpu>, l: &Layout, x: &Act) -> Result<Act> {
    let mut y = match &m.out_norm {
        Some(n) => ln(x, n, m.config.norm_eps),
        None => x.clone(),
    };
    if let Some([_, p_out]) = l.project {
        y = Cpu.linear(&y, global(m, p_out)?);
    }
    Ok(y)
}

/// Back through `finish`: the gradient with respect to the last block's output `x`.
pub(crate) fn finish_backward(m: &Model<Cpu>, l: &Layout, x: &Act, d_out: &Act) -> Result<Act> {
    let mut d = d_out.clone();
    if let Some([_, p_out]) = l.project {
        // Dense and frozen; its input (the normed `x`) has `x`'s shape, all the dense
        // backward reads of it.
        d = linear_backward(x, global(m, p_out)?, None, &d, &CpuGemm).0;
    }
    Ok(match &m.out_norm {
        Some(n) => layernorm_backward(x, &n.w, m.config.norm_eps, &d),
        None => d,
    })
}

fn ln(x: &Act, n: &LoadedNorm<Cpu>, eps: f32) -> Act {
    Cpu.layernorm(x, &n.w, n.b.as_ref(), eps)
}

/// One block, as the architecture's `forward` loop body (T × d in, T × d out).
pub(crate) fn block(
    c: &ModelConfig,
    l: &Layout,
    blk: &Block<Cpu>,
    x: &Act,
    seq: usize,
    keep: bool,
    gemm: &dyn Gemm,
) -> (Act, Option<Tape>) {
    let b = Cpu;
    let (d, h, hd, eps) = (c.dim, c.n_head, c.head_dim, c.norm_eps);
    let [n1, n2] = l.norms.map(|i| &blk.norms[i]);
    let mut traces: Vec<Option<MosTrace>> = (0..blk.mats.len()).map(|_| None).collect();
    let a_in = if l.post_norm {
        x.clone()
    } else {
        ln(x, n1, eps)
    };
    let (q, k, v) = match l.qkv {
        Qkv::Separate([iq, ik, iv]) => (
            linear(&a_in, &blk.mats[iq], keep, &mut traces[iq], gemm),
            linear(&a_in, &blk.mats[ik], keep, &mut traces[ik], gemm),
            linear(&a_in, &blk.mats[iv], keep, &mut traces[iv], gemm),
        ),
        Qkv::Fused(i) => {
            let qkv = linear(&a_in, &blk.mats[i], keep, &mut traces[i], gemm);
            (
                b.slice_cols(&qkv, 0, d),
                b.slice_cols(&qkv, d, d),
                b.slice_cols(&qkv, 2 * d, d),
            )
        }
    };
    let a = b.attention(&q, &k, &v, h, h, hd, seq);
    let mut s1 = x.clone();
    b.add(
        &mut s1,
        &linear(&a, &blk.mats[l.o], keep, &mut traces[l.o], gemm),
    );
    // Pre-LN: `s1` is `x1` itself (kept for the feed-forward norm's backward).
    let x1 = if l.post_norm {
        ln(&s1, n1, eps)
    } else {
        s1.clone()
    };
    let f_in = if l.post_norm {
        x1.clone()
    } else {
        ln(&x1, n2, eps)
    };
    let u = linear(&f_in, &blk.mats[l.up], keep, &mut traces[l.up], gemm);
    let mut r = u.clone();
    match l.act {
        FfnAct::Relu => b.relu(&mut r),
        FfnAct::Gelu => b.gelu(&mut r),
    }
    let mut s2 = x1.clone();
    b.add(
        &mut s2,
        &linear(&r, &blk.mats[l.down], keep, &mut traces[l.down], gemm),
    );
    let (x2, s2) = if l.post_norm {
        (ln(&s2, n2, eps), Some(s2))
    } else {
        (s2, None)
    };
    let tape = keep.then_some(Tape {
        a_in,
        q,
        k,
        v,
        a,
        s1,
        f_in,
        u,
        r,
        s2,
        traces,
    });
    (x2, tape)
}

/// Back through the feed-forward activation at `u` (its input): `d` becomes `d·act'(u)`.
/// ReLU's derivative at 0 is 0, as torch's.
fn activation_backward(act: FfnAct, u: &Act, d: &mut Act) {
    let slope = match act {
        FfnAct::Relu => |u: f32| if u > 0.0 { 1.0 } else { 0.0 },
        FfnAct::Gelu => gelu_tanh_grad,
    };
    d.data
        .iter_mut()
        .zip(&u.data)
        .for_each(|(d, &u)| *d *= slope(u));
}

/// Back through one block: the gradient with respect to its input `x`, and its linears'
/// gradients. Without a tape, the block's forward runs again first (the same numbers).
// The block's inputs, its layout, the gradient from above, the tape and where products run:
// each is needed, and a struct for them would only be unpacked again.
#[allow(clippy::too_many_arguments)]
pub(crate) fn block_backward(
    c: &ModelConfig,
    l: &Layout,
    blk: &Block<Cpu>,
    x: &Act,
    seq: usize,
    dx2: &Act,
    tape: Option<Tape>,
    gemm: &dyn Gemm,
) -> (Act, BlockGrads) {
    let (h, hd, eps) = (c.n_head, c.head_dim, c.norm_eps);
    let [n1, n2] = l.norms.map(|i| &blk.norms[i]);
    let tape = tape.or_else(|| block(c, l, blk, x, seq, true, gemm).1);
    let Some(mut t) = tape else {
        unreachable!("block keeps its tape when asked")
    };
    let mut grads: BlockGrads = vec![None; blk.mats.len()];
    let mut traces = std::mem::take(&mut t.traces);
    let mut back = |i: usize, input: &Act, dy: &Act| {
        let (dx, g) = linear_backward(input, &blk.mats[i], traces[i].take().as_ref(), dy, gemm);
        grads[i] = g;
        dx
    };
    // x2 = [n₂](x1 + DOWN·act(UP·f_in))
    let ds2 = match &t.s2 {
        Some(s2) => layernorm_backward(s2, &n2.w, eps, dx2),
        None => dx2.clone(),
    };
    let mut du = back(l.down, &t.r, &ds2);
    activation_backward(l.act, &t.u, &mut du);
    let d_fin = back(l.up, &t.f_in, &du);
    let mut dx1 = ds2;
    if l.post_norm {
        add(&mut dx1, &d_fin);
    } else {
        add(&mut dx1, &layernorm_backward(&t.s1, &n2.w, eps, &d_fin));
    }
    // x1 = [n₁](x + O·attn(q, k, v)), q k v from a_in
    let ds1 = if l.post_norm {
        layernorm_backward(&t.s1, &n1.w, eps, &dx1)
    } else {
        dx1
    };
    let da = back(l.o, &t.a, &ds1);
    let (dq, dk, dv) = attention_backward(&t.q, &t.k, &t.v, &da, h, h, hd, seq);
    let d_ain = match l.qkv {
        Qkv::Separate(ids) => {
            let mut d = Act::zeros(x.rows, x.cols);
            for (i, dy) in ids.into_iter().zip([&dq, &dk, &dv]) {
                add(&mut d, &back(i, &t.a_in, dy));
            }
            d
        }
        Qkv::Fused(i) => {
            // The fused output's columns are [q k v]: its gradient is theirs side by side.
            let w = dq.cols;
            let mut dqkv = Act::zeros(x.rows, 3 * w);
            for (r, row) in dqkv.data.chunks_mut(3 * w).enumerate() {
                for (j, part) in [&dq, &dk, &dv].into_iter().enumerate() {
                    row[j * w..(j + 1) * w].copy_from_slice(part.row(r));
                }
            }
            back(i, &t.a_in, &dqkv)
        }
    };
    let mut dx = ds1;
    if l.post_norm {
        add(&mut dx, &d_ain);
    } else {
        add(&mut dx, &layernorm_backward(x, &n1.w, eps, &d_ain));
    }
    (dx, grads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::grad::testing::{check, dot, mean_abs, FD_REL_STEP};
    use crate::testkit::Rng;

    fn random(rows: usize, cols: usize, seed: u64) -> Act {
        Act {
            rows,
            cols,
            data: Rng(seed).vec(rows * cols),
        }
    }

    #[test]
    fn layernorm_backward_matches_central_differences() {
        let (rows, cols) = (3, 10);
        let mut r = Rng(3);
        // Rows off zero (the mean matters) with a weight and bias far from 1 and 0.
        let mut x = random(rows, cols, 5);
        x.data.iter_mut().for_each(|v| *v = 2.0 + 3.0 * *v);
        let w: Vec<f32> = (0..cols).map(|_| 1.0 + 0.5 * r.next()).collect();
        let bias = r.vec(cols);
        let dy = random(rows, cols, 6);
        let dx = layernorm_backward(&x, &w, 1e-5, &dy);
        let step = FD_REL_STEP * mean_abs(&x.data);
        let all: Vec<usize> = (0..rows * cols).collect();
        check("layernorm x", &dx.data, &all, step, &mut |i, h| {
            let mut x2 = x.clone();
            x2.data[i] += h;
            dot(&Cpu.layernorm(&x2, &w, Some(&bias), 1e-5).data, &dy.data)
        });
    }

    #[test]
    fn relu_and_gelu_backward_match_central_differences() {
        let (rows, cols) = (4, 8);
        // Inputs spread over ±4 (GELU's curved part and both tails), none within a step of
        // ReLU's kink at 0.
        let mut u = random(rows, cols, 7);
        u.data.iter_mut().for_each(|v| {
            *v *= 4.0;
            if v.abs() < 0.1 {
                *v += 0.2_f32.copysign(*v)
            }
        });
        let readout = random(rows, cols, 8);
        let step = FD_REL_STEP * mean_abs(&u.data);
        let all: Vec<usize> = (0..rows * cols).collect();
        for act in [FfnAct::Relu, FfnAct::Gelu] {
            let mut d = readout.clone();
            activation_backward(act, &u, &mut d);
            check(&format!("{act:?}"), &d.data, &all, step, &mut |i, h| {
                let mut y = u.clone();
                y.data[i] += h;
                match act {
                    FfnAct::Relu => Cpu.relu(&mut y),
                    FfnAct::Gelu => Cpu.gelu(&mut y),
                }
                dot(&y.data, &readout.data)
            });
        }
    }
}
