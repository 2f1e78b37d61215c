//! Every piece of the Llama backward pass against central differences of the forward pass, and
//! the training forward against the model's own forward pass.

use super::*;
use crate::model::arch::grad::pieces::attention_backward;
use crate::model::arch::grad::testing::{
    check, dot, mean_abs, model_backward_matches_central_differences,
    training_forward_is_the_model_forward as forward_is_the_model_forward, FD_REL_STEP,
};
use crate::model::arch::Arch;
use crate::testkit::Rng;

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

#[test]
fn training_forward_is_the_model_forward() {
    forward_is_the_model_forward(Arch::Llama, 0);
}

#[test]
fn model_backward_matches_central_differences_for_every_trained_tensor() {
    model_backward_matches_central_differences(Arch::Llama, 0, FD_REL_STEP, false);
}
