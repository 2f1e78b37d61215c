//! Every piece of the Llama backward pass against central differences of the forward pass, and
//! the training forward against the model's own forward pass.

use super::*;
use crate::format::binarymos::MosParts;
use crate::model::weights::ModelWeights;
use crate::testkit::{tiny_config, tiny_model, tokens, Rng};

/// Central differences in f32, losses summed in f64. Each step is 1 % of the perturbed
/// tensor's mean magnitude: large enough that the f32 rounding of the forward pass (≈ 1e-7 of
/// the loss, divided by the step) stays near 1e-4 of the derivative, small enough that the
/// truncation error (second order in the step) stays there too.
const FD_REL_STEP: f32 = 1e-2;
/// A derivative may differ from its central difference by this fraction of the largest
/// |gradient| among the entries checked: a few times the errors above, far below any wrong
/// term (a missing factor or a transposed index moves entries by their own size).
const FD_REL_TOL: f64 = 2e-2;
/// A directional derivative (every entry of a tensor moved at once, `Σ g·d`) may differ from
/// its central difference by this fraction of `Σ |g·d|`: summing over the tensor lifts the
/// signal far above f32 rounding (measured at most 6e-4 on the tiny model), and a wrong term in
/// any entry moves the sum by that entry's own share.
const DIR_REL_TOL: f64 = 5e-3;

fn dot(a: &[f32], r: &[f32]) -> f64 {
    a.iter()
        .zip(r)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum()
}

fn mean_abs(v: &[f32]) -> f32 {
    v.iter().map(|x| x.abs()).sum::<f32>() / v.len().max(1) as f32
}

/// Compare `grad[i]` with the central difference of `loss` along entry `i`, for `picks`.
fn check(
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

#[test]
fn rmsnorm_backward_matches_central_differences() {
    let (rows, cols) = (3, 10);
    let mut r = Rng(2);
    let x = Act {
        rows,
        cols,
        data: r.vec(rows * cols),
    };
    let w: Vec<f32> = (0..cols).map(|_| 1.0 + 0.5 * r.next()).collect();
    let readout = r.vec(rows * cols);
    let dy = Act {
        rows,
        cols,
        data: readout.clone(),
    };
    let dx = rmsnorm_backward(&x, &w, 1e-5, &dy);
    let step = FD_REL_STEP * mean_abs(&x.data);
    check(
        "rmsnorm x",
        &dx.data,
        &(0..rows * cols).collect::<Vec<_>>(),
        step,
        &mut |i, h| {
            let mut x2 = x.clone();
            x2.data[i] += h;
            dot(&Cpu.rmsnorm(&x2, &w, 1e-5).data, &readout)
        },
    );
}

#[test]
fn attention_and_rope_backward_match_central_differences() {
    // Two sequences of 5, 4 query heads on 2 KV heads (GQA), head_dim 6, both RoPE styles.
    let (seq, seqs, h, kv, hd) = (5, 2, 4, 2, 6);
    let rows = seq * seqs;
    let mut r = Rng(4);
    let q = Act {
        rows,
        cols: h * hd,
        data: r.vec(rows * h * hd),
    };
    let k = Act {
        rows,
        cols: kv * hd,
        data: r.vec(rows * kv * hd),
    };
    let v = Act {
        rows,
        cols: kv * hd,
        data: r.vec(rows * kv * hd),
    };
    let readout = r.vec(rows * h * hd);
    for style in [
        crate::model::config::RopeStyle::Half,
        crate::model::config::RopeStyle::Interleaved,
    ] {
        // L = Σ readout ⊙ attention(rope(q), rope(k), v)
        let loss = |q: &Act, k: &Act, v: &Act| {
            let (mut q, mut k) = (q.clone(), k.clone());
            Cpu.rope(&mut q, h, hd, 0, 10_000.0, style, seq);
            Cpu.rope(&mut k, kv, hd, 0, 10_000.0, style, seq);
            dot(&Cpu.attention(&q, &k, v, h, kv, hd, seq).data, &readout)
        };
        let (mut qr, mut kr) = (q.clone(), k.clone());
        Cpu.rope(&mut qr, h, hd, 0, 10_000.0, style, seq);
        Cpu.rope(&mut kr, kv, hd, 0, 10_000.0, style, seq);
        let d_out = Act {
            rows,
            cols: h * hd,
            data: readout.clone(),
        };
        let (mut dq, mut dk, dv) = attention_backward(&qr, &kr, &v, &d_out, h, kv, hd, seq);
        rotate(&mut dq, h, hd, 0, 10_000.0, style, seq, true);
        rotate(&mut dk, kv, hd, 0, 10_000.0, style, seq, true);
        let step = FD_REL_STEP * mean_abs(&q.data);
        for (which, grad) in [("q", &dq), ("k", &dk), ("v", &dv)] {
            let all: Vec<usize> = (0..grad.data.len()).collect();
            check(
                &format!("{style:?} {which}"),
                &grad.data,
                &all,
                step,
                &mut |i, d| {
                    let mut x = [q.clone(), k.clone(), v.clone()];
                    x[["q", "k", "v"]
                        .iter()
                        .position(|w| *w == which)
                        .unwrap_or(0)]
                    .data[i] += d;
                    loss(&x[0], &x[1], &x[2])
                },
            );
        }
    }
}

/// The tiny GQA Llama with every block linear BinaryMoS of 3 experts whose signs are real
/// values (so their gradient has a derivative to compare with) and routers in ±1 (gates far
/// from uniform).
fn student() -> (ModelWeights, Model<Cpu>) {
    let w = tiny_model(tiny_config(Arch::Llama, 0), 5);
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

#[test]
fn training_forward_is_the_model_forward() {
    let w = tiny_model(tiny_config(Arch::Llama, 0), 5);
    let dense = Model::load(&Cpu, &w).unwrap();
    let (_, mos) = student();
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

#[test]
fn model_backward_matches_central_differences_for_every_trained_tensor() {
    let (_, mut m) = student();
    let n = m.blocks.len();
    let (seq, toks) = (6, tokens(12, m.config.vocab, 8));
    let mut f0 = forward(&m, &toks, seq).unwrap();
    let mut r = Rng(12);
    let d = m.config.dim;
    // L = Σ r_out ⊙ out + Σ_l r_l ⊙ (output of block l): both kinds of gradient the loss feeds in.
    let r_out = r.vec(toks.len() * d);
    let r_hidden: Vec<Vec<f32>> = (0..n).map(|_| r.vec(toks.len() * d)).collect();
    let loss = |m: &Model<Cpu>| {
        let f = forward(m, &toks, seq).unwrap();
        dot(&f.out.data, &r_out)
            + (0..n)
                .map(|l| dot(&f.inputs[l + 1].data, &r_hidden[l]))
                .sum::<f64>()
    };
    let act = |data: &[f32]| Act {
        rows: toks.len(),
        cols: d,
        data: data.to_vec(),
    };
    let d_hidden: Vec<Act> = r_hidden.iter().map(|v| act(v)).collect();
    let mut grads: Vec<BlockGrads> = vec![Vec::new(); n];
    backward(
        &m,
        &mut f0,
        seq,
        &d_hidden,
        &act(&r_out),
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
        &act(&r_out),
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
                let size = FD_REL_STEP * mean_abs(&base);
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
                assert!(
                    (fd - want).abs() <= DIR_REL_TOL * scale,
                    "blk.{l} linear {j} tensor {k}: backward {want}, central difference {fd} (Σ|g·d| {scale})"
                );
            }
        }
    }
}

#[test]
fn opt_and_gpt2_are_refused_by_name() {
    for arch in [Arch::Opt, Arch::Gpt2] {
        let w = tiny_model(tiny_config(arch, 0), 5);
        let m = Model::load(&Cpu, &w).unwrap();
        let e = forward(&m, &tokens(8, w.config.vocab, 1), 8)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("not in the Llama family") && e.contains("--mode lite"),
            "{e}"
        );
    }
}
