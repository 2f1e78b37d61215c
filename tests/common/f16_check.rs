//! Shared by the f16 product tests (tests/gpu_coop.rs: tensor cores; tests/gpu_f16.rs: packed
//! f16): one product against the CPU reference under both tilings, and a ggml-quantized tensor.
//! Each test keeps its own tolerance, next to the reason for it.

#![allow(dead_code)] // not every test file uses every helper

use crate::gpu_check::{act, close, read};
use crate::rng::Rng;

use quantlab::format::ggml::quantize::quantize;
use quantlab::format::ggml::GgmlType;
use quantlab::format::{Format, QTensor};
use quantlab::gpu::{Gpu, MatmulVariant};
use quantlab::model::backend::Backend;
use quantlab::model::cpu::Cpu;

/// `g`'s product of `m` seeded tokens with `w` (and a seeded bias) against the CPU's, whole-k
/// tiles and split-K, 64×64 and wide (the packed-f16 kernel runs a wide variant as 64×64),
/// within `tol` of the output's largest magnitude.
pub fn check(g: &Gpu, w: &QTensor, m: usize, bias: bool, seed: u64, tol: f32) {
    let mut r = Rng(seed);
    let x = r.vec(m * w.cols);
    let b = bias.then(|| r.vec(w.rows));
    let want = Cpu.linear(
        &act(m, w.cols, x.clone()),
        &Cpu.load_matrix(w, b.as_deref()).unwrap(),
    );
    let gm = g.load_matrix(w, b.as_deref()).unwrap();
    let gx = g.upload_act(m, w.cols, &x).unwrap();
    for tile in [
        MatmulVariant::Tiled,
        MatmulVariant::SplitK,
        MatmulVariant::Wide,
        MatmulVariant::WideSplitK,
    ] {
        g.force_matmul(Some(tile));
        let got = g.linear(&gx, &gm);
        let what = format!(
            "{} {} {m}×{}→{} {}",
            g.precision().name(),
            w.format.name(),
            w.cols,
            w.rows,
            tile.name()
        );
        close(&read(g, &got), &want.data, tol, &what);
    }
    g.force_matmul(None);
}

/// `w` (`rows × cols`) quantized to ggml type `t`.
pub fn ggml(t: GgmlType, rows: usize, cols: usize, w: &[f32]) -> QTensor {
    let bytes = quantize(t, w, rows, cols).unwrap();
    QTensor::new(Format::Ggml(t), rows, cols, bytes).unwrap()
}
