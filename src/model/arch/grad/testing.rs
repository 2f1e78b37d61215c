//! What the training-pass tests of every architecture share: central differences with named
//! tolerances, the tiny BinaryMoS students, and the two whole-model checks (the training
//! forward is the model's forward; the backward pass matches central differences for every
//! trained tensor). Each architecture's tests call these on its own tiny model.

use super::{backward, forward, forward_taped, BlockGrads};
use crate::format::binarymos::MosParts;
use crate::linalg::CpuGemm;
use crate::model::arch::Arch;
use crate::model::cpu::{Act, Cpu};
use crate::model::net::Model;
use crate::model::weights::ModelWeights;
use crate::testkit::{tiny_config, tiny_model, tokens, Rng};

/// Central differences in f32, losses summed in f64. Each step is 1 % of the perturbed
/// tensor's mean magnitude: large enough that the f32 rounding of the forward pass (≈ 1e-7 of
/// the loss, divided by the step) stays near 1e-4 of the derivative, small enough that the
/// truncation error (second order in the step) stays there too.
pub(crate) const FD_REL_STEP: f32 = 1e-2;
/// A derivative may differ from its central difference by this fraction of the largest
/// |gradient| among the entries checked: a few times the errors above, far below any wrong
/// term (a missing factor or a transposed index moves entries by their own size).
pub(crate) const FD_REL_TOL: f64 = 2e-2;
/// A directional derivative (every entry of a tensor moved at once, `Σ g·d`) may differ from
/// its central difference by this fraction of `Σ |g·d|`: summing over the tensor lifts the
/// signal far above f32 rounding (measured at most 6e-4 on the tiny Llama), and a wrong term in
/// any entry moves the sum by that entry's own share.
pub(crate) const DIR_REL_TOL: f64 = 5e-3;
/// Where a tensor barely moves the loss (post-LN OPT's routers: `Σ|g·d|` ≈ 2e-4), the f32
/// rounding of the loss itself is the floor of what a central difference resolves: each term
/// `r ⊙ activation` of the loss is rounded to f32's unit roundoff 2^-24 ≈ 6e-8, so the loss
/// carries an error of about `6e-8 · Σ|r ⊙ activation|`. Allowed on top of `DIR_REL_TOL` where
/// a test asks for it.
pub(crate) const FD_LOSS_ROUNDING: f64 = 6e-8;

pub(crate) fn dot(a: &[f32], r: &[f32]) -> f64 {
    a.iter()
        .zip(r)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum()
}

pub(crate) fn mean_abs(v: &[f32]) -> f32 {
    v.iter().map(|x| x.abs()).sum::<f32>() / v.len().max(1) as f32
}

/// Compare `grad[i]` with the central difference of `loss` along entry `i`, for `picks`.
pub(crate) fn check(
    what: &str,
    grad: &[f32],
    picks: &[usize],
    step: f32,
    loss: &mut dyn FnMut(usize, f32) -> f64,
) {
    let scale = picks
        .iter()
        .map(|&i| grad[i].abs() as f64)
        .fold(0.0, f64::max);
    assert!(scale > 0.0, "{what}: every checked gradient is zero");
    for &i in picks {
        let fd = (loss(i, step) - loss(i, -step)) / (2.0 * step as f64);
        assert!(
            (fd - grad[i] as f64).abs() <= FD_REL_TOL * scale,
            "{what}[{i}]: backward {}, central difference {fd} (largest {scale})",
            grad[i]
        );
    }
}

/// The tiny model of `arch` (`testkit::tiny_config`'s `flavour`) with every block linear
/// BinaryMoS of 3 experts whose signs are real values (so their gradient has a derivative to
/// compare with) and routers in ±1 (gates far from uniform).
pub(crate) fn student(arch: Arch, flavour: usize) -> (ModelWeights, Model<Cpu>) {
    let w = tiny_model(tiny_config(arch, flavour), 5);
    let mut m = Model::load(&Cpu, &w).unwrap();
    let mut r = Rng(9);
    for blk in &mut m.blocks {
        for mat in &mut blk.mats {
            let (rows, cols) = (mat.rows, mat.cols);
            let mut p = MosParts {
                rows,
                cols,
                experts: 3,
                signs: mat.data.iter().map(|v| v * 5.0).collect(),
                s_in: (0..3 * cols).map(|_| 1.0 + 0.3 * r.next()).collect(),
                s_out: (0..3 * rows).map(|_| 0.1 + 0.03 * r.next()).collect(),
                router: r.vec(cols * 3),
            };
            p.signs.iter_mut().for_each(|s| *s += 0.2 * r.next());
            mat.mos = Some(p);
            mat.data.clear();
        }
    }
    (w, m)
}

/// `forward(..).out` of the tiny model of `arch`, dense and as `student`, is bit for bit
/// `Model::forward_batch`'s, for one and three sequences.
pub(crate) fn training_forward_is_the_model_forward(arch: Arch, flavour: usize) {
    let w = tiny_model(tiny_config(arch, flavour), 5);
    let dense = Model::load(&Cpu, &w).unwrap();
    let (_, mos) = student(arch, flavour);
    let toks = tokens(24, w.config.vocab, 3);
    for (what, m) in [("dense", &dense), ("BinaryMoS", &mos)] {
        for seq in [24, 8] {
            let f = forward(m, &toks, seq).unwrap();
            let want = m.forward_batch(&Cpu, &toks, seq).unwrap();
            assert!(
                f.out
                    .data
                    .iter()
                    .zip(&want.data)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{what}, sequences of {seq}"
            );
        }
    }
}

/// The backward pass of `student(arch, flavour)` against central differences, along a random
/// direction of every trained tensor (each entry moved by `rel_step` of its mean magnitude), for a loss on both `out` and every block's output; and
/// bit for bit the same with and without kept tapes. `rounding_floor` adds `FD_LOSS_ROUNDING`
/// of the loss's terms to the tolerance. Returns the largest fraction of its tolerance a tensor
/// used.
pub(crate) fn model_backward_matches_central_differences(
    arch: Arch,
    flavour: usize,
    rel_step: f32,
    rounding_floor: bool,
) -> f64 {
    let (_, mut m) = student(arch, flavour);
    let n = m.blocks.len();
    let (seq, toks) = (6, tokens(12, m.config.vocab, 8));
    let mut f0 = forward(&m, &toks, seq).unwrap();
    let mut r = Rng(12);
    // `out` is `embed_dim` wide (OPT's projection), the hidden states `dim`.
    let (d, e) = (m.config.dim, m.config.proj_dim.unwrap_or(m.config.dim));
    // L = Σ r_out ⊙ out + Σ_l r_l ⊙ (output of block l): both kinds of gradient the loss feeds in.
    let r_out = r.vec(toks.len() * e);
    let r_hidden: Vec<Vec<f32>> = (0..n).map(|_| r.vec(toks.len() * d)).collect();
    let abs_dot = |a: &[f32], r: &[f32]| {
        a.iter()
            .zip(r)
            .map(|(x, y)| (x * y).abs() as f64)
            .sum::<f64>()
    };
    let floor = if rounding_floor {
        FD_LOSS_ROUNDING
            * (abs_dot(&f0.out.data, &r_out)
                + (0..n)
                    .map(|l| abs_dot(&f0.inputs[l + 1].data, &r_hidden[l]))
                    .sum::<f64>())
    } else {
        0.0
    };
    let loss = |m: &Model<Cpu>| {
        let f = forward(m, &toks, seq).unwrap();
        dot(&f.out.data, &r_out)
            + (0..n)
                .map(|l| dot(&f.inputs[l + 1].data, &r_hidden[l]))
                .sum::<f64>()
    };
    let act = |data: &[f32], cols: usize| Act {
        rows: toks.len(),
        cols,
        data: data.to_vec(),
    };
    let d_hidden: Vec<Act> = r_hidden.iter().map(|v| act(v, d)).collect();
    let mut grads: Vec<BlockGrads> = vec![Vec::new(); n];
    backward(
        &m,
        &mut f0,
        seq,
        &d_hidden,
        &act(&r_out, e),
        &CpuGemm,
        &mut |l, g| {
            grads[l] = g;
            Ok(())
        },
    )
    .unwrap();
    // The same gradients, bit for bit, from the tapes the forward pass kept: recomputing a
    // block is only a way to save memory.
    let mut taped = forward_taped(&m, &toks, seq).unwrap();
    assert!(taped.tapes.iter().all(Option::is_some));
    let mut same = true;
    backward(
        &m,
        &mut taped,
        seq,
        &d_hidden,
        &act(&r_out, e),
        &CpuGemm,
        &mut |l, g| {
            same &= g == grads[l];
            Ok(())
        },
    )
    .unwrap();
    assert!(same, "gradients differ with kept tapes");
    // Per tensor, the derivative along a random direction (each entry moved by ±1 % of the
    // tensor's mean magnitude): one entry's effect on the loss is too small for f32 central
    // differences of a whole model, the sum over a tensor is not.
    let mut worst = 0f64;
    for (l, block) in grads.iter().enumerate() {
        for (j, g) in block.iter().enumerate() {
            let g = g.clone().expect("every linear is BinaryMoS");
            let grads_of: [&[f32]; 4] = [&g.s_in, &g.s_out, &g.router, g.signs.as_deref().unwrap()];
            for (k, grad) in grads_of.into_iter().enumerate() {
                fn tensor(m: &mut Model<Cpu>, l: usize, j: usize, k: usize) -> &mut Vec<f32> {
                    let p = m.blocks[l].mats[j].mos.as_mut().unwrap();
                    match k {
                        0 => &mut p.s_in,
                        1 => &mut p.s_out,
                        2 => &mut p.router,
                        _ => &mut p.signs,
                    }
                }
                let base = tensor(&mut m, l, j, k).clone();
                let size = rel_step * mean_abs(&base);
                let mut r = Rng((l * 100 + j * 10 + k) as u64 + 1);
                let dir: Vec<f32> = base
                    .iter()
                    .map(|_| if r.next() < 0.0 { -size } else { size })
                    .collect();
                let mut at = |sign: f32| {
                    let t = tensor(&mut m, l, j, k);
                    t.iter_mut()
                        .zip(&base)
                        .zip(&dir)
                        .for_each(|((t, b), d)| *t = b + sign * d);
                    let v = loss(&m);
                    tensor(&mut m, l, j, k).copy_from_slice(&base);
                    v
                };
                let fd = (at(1.0) - at(-1.0)) / 2.0;
                let want: f64 = grad
                    .iter()
                    .zip(&dir)
                    .map(|(g, d)| (*g as f64) * (*d as f64))
                    .sum();
                let scale: f64 = grad
                    .iter()
                    .zip(&dir)
                    .map(|(g, d)| ((*g as f64) * (*d as f64)).abs())
                    .sum();
                let tol = DIR_REL_TOL * scale + floor;
                assert!(
                    (fd - want).abs() <= tol,
                    "{arch:?} blk.{l} linear {j} tensor {k}: backward {want}, central difference {fd} (Σ|g·d| {scale}, rounding floor {floor})"
                );
                worst = worst.max((fd - want).abs() / tol);
            }
        }
    }
    worst
}
