//! The CMPQ GPU decoder (shaders/fmt_cmpq.wgsl, fused into every matmul variant and the
//! embedding gather) against the format table's CPU dequantization (`QTensor::dequantize`), on
//! seeded CMPQ tensors from `quant::cmpq::quantize` at several budgets (so `lo` of 1, 2 and 3,
//! with and without f16 columns). Natively on whatever adapter wgpu finds (lavapipe here).

#[path = "common/gpu_check.rs"]
mod gpu_check;
#[path = "common/rng.rs"]
mod rng;
use gpu_check::{act, close, gpu, read};
use rng::Rng;

use quantlab::format::{Format, QTensor};
use quantlab::gpu::MatmulVariant;
use quantlab::model::backend::Backend;
use quantlab::model::cpu::Cpu;
use quantlab::quant::cmpq::{self, CmpqOptions};

/// Matrix products: f32 sums in a different order than SGEMM; error relative to the output's
/// largest magnitude (as tests/gpu_kernels.rs).
const MATMUL_TOL: f32 = 1e-5;
/// Gathered weights: both sides read the same f16 levels; no arithmetic.
const EMBED_TOL: f32 = 0.0;

/// A CMPQ tensor of seeded weights with a heavy-tailed activation profile.
fn tensor(r: &mut Rng, rows: usize, cols: usize, budget: f32, outlier_cols: f32) -> QTensor {
    let w: Vec<f32> = (0..rows * cols).map(|_| r.next() * 0.1).collect();
    let a: Vec<f32> = (0..cols)
        .map(|j| 0.5 + r.next().abs() + if j.is_multiple_of(37) { 20.0 } else { 0.0 })
        .collect();
    let opts = CmpqOptions {
        budget,
        outlier_cols,
        // Sparse outliers are an add-on with their own GPU pass; this tests the base format.
        outlier_sparse: 0.0,
        ..CmpqOptions::default()
    };
    cmpq::quantize(&w, rows, cols, &a, &opts, "t").unwrap()
}

#[test]
fn cmpq_matmul_and_embed_match_the_cpu() {
    let g = gpu();
    let mut r = Rng(21);
    let mut los = Vec::new();
    // 131 rows: packed code sections end mid-word; 262 columns: not a multiple of 4, so the
    // scalar `w_at` path runs as well as `w_load4`. Per-column codebooks cost more per weight
    // in short columns, so lo = 3 needs the taller tensor.
    for (rows, cols, budget, f16_frac) in [
        (131, 260, 2.0, 0.0),
        (131, 260, 2.5, 0.02),
        (131, 262, 3.0, 0.01),
        (131, 260, 3.55, 0.03),
        (515, 132, 4.0, 0.02),
    ] {
        let w = tensor(&mut r, rows, cols, budget, f16_frac);
        let Format::Cmpq { lo, .. } = w.format else {
            panic!("{}", w.format.name())
        };
        los.push(lo);
        let what = format!("{} at {budget}", w.format.name());
        let m = 37;
        let x = r.vec(m * cols);
        let bias = r.vec(rows);
        let want = Cpu.linear(
            &act(m, cols, x.clone()),
            &Cpu.load_matrix(&w, Some(&bias)).unwrap(),
        );
        let gm = g.load_matrix(&w, Some(&bias)).unwrap();
        let gx = g.upload_act(m, cols, &x).unwrap();
        for v in MatmulVariant::ALL {
            g.force_matmul(Some(v));
            let got = read(&g, &g.linear(&gx, &gm));
            close(
                &got,
                &want.data,
                MATMUL_TOL,
                &format!("{what} {}", v.name()),
            );
        }
        g.force_matmul(None);
        // The embedding gather decodes whole rows through `w_at`.
        let tokens: Vec<u32> = (0..20).map(|_| r.next_u32() % rows as u32).collect();
        let want = Cpu
            .embed(&Cpu.load_matrix(&w, None).unwrap(), &tokens)
            .unwrap();
        let got = g.embed(&g.load_matrix(&w, None).unwrap(), &tokens).unwrap();
        let got = read(&g, &got);
        close(&got, &want.data, EMBED_TOL, &format!("{what} embed"));
    }
    los.sort_unstable();
    los.dedup();
    assert_eq!(los, vec![1, 2, 3], "the budgets cover lo = 1, 2 and 3");
}

/// Decode first (src/gpu/matmul.rs): a CMPQ product over more than one 64-row tile decodes the
/// weight to f16 once and multiplies the halves; CMPQ's values are all f16, so it equals the
/// fused decoder's product bit for bit, in every kernel variant, and the CPU within MATMUL_TOL.
/// One tile of rows, or a row length not a multiple of 4, keeps the fused decoder.
#[test]
fn decoded_first_equals_the_fused_decoder() {
    let g = gpu();
    let mut r = Rng(33);
    let (rows, cols) = (131, 260);
    let w = tensor(&mut r, rows, cols, 3.0, 0.02);
    let bias = r.vec(rows);
    let gm = g.load_matrix(&w, Some(&bias)).unwrap();
    let cm = Cpu.load_matrix(&w, Some(&bias)).unwrap();
    for m in [65, 300] {
        let x = r.vec(m * cols);
        let want = Cpu.linear(&act(m, cols, x.clone()), &cm);
        let gx = g.upload_act(m, cols, &x).unwrap();
        for v in MatmulVariant::ALL {
            g.force_matmul(Some(v));
            g.set_decode_first(false);
            let before = g.decoded_first();
            let fused = read(&g, &g.linear(&gx, &gm));
            assert_eq!(g.decoded_first(), before, "{} m {m}: fused", v.name());
            g.set_decode_first(true);
            let decoded = read(&g, &g.linear(&gx, &gm));
            assert_eq!(
                g.decoded_first(),
                before + 1,
                "{} m {m}: decoded first",
                v.name()
            );
            let bits = |a: &[f32]| a.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&decoded), bits(&fused), "{} m {m}", v.name());
            close(
                &decoded,
                &want.data,
                MATMUL_TOL,
                &format!("{} m {m}", v.name()),
            );
        }
    }
    g.force_matmul(None);
    // One tile of rows: nothing to share, the fused decoder runs.
    let x = r.vec(64 * cols);
    let before = g.decoded_first();
    read(&g, &g.linear(&g.upload_act(64, cols, &x).unwrap(), &gm));
    assert_eq!(g.decoded_first(), before);
    // A row length not a multiple of 4.
    let w = tensor(&mut r, rows, 262, 3.0, 0.02);
    let gm = g.load_matrix(&w, None).unwrap();
    let x = r.vec(300 * 262);
    read(&g, &g.linear(&g.upload_act(300, 262, &x).unwrap(), &gm));
    assert_eq!(g.decoded_first(), before);
}

/// CMPQ with sparse outliers (`outlier_sparse`), decoded first at f32: the product reads the
/// weight's f16 copy with the outliers written in (shaders/outliers_f16.wgsl) instead of the
/// outlier pass after it. It matches the CPU, and the fused decoder with the outlier pass
/// (`set_decode_first(false)`), within MATMUL_TOL; the copy is kept, so a second product decodes
/// nothing and gives the same bits.
#[test]
fn sparse_outliers_in_the_decoded_copy_match_cpu() {
    let g = gpu();
    let mut r = Rng(41);
    let (rows, cols, m) = (131, 260, 300);
    let w: Vec<f32> = (0..rows * cols).map(|_| r.next() * 0.1).collect();
    let a: Vec<f32> = (0..cols).map(|_| 0.5 + r.next().abs()).collect();
    let opts = CmpqOptions {
        budget: 3.0,
        outlier_sparse: 0.01,
        ..CmpqOptions::default()
    };
    let t = cmpq::quantize(&w, rows, cols, &a, &opts, "t").unwrap();
    let outliers = t.addons.outliers;
    assert!(outliers > 0, "the tensor has sparse outliers");
    let bias = r.vec(rows);
    let x = r.vec(m * cols);
    let want = Cpu.linear(
        &act(m, cols, x.clone()),
        &Cpu.load_matrix(&t, Some(&bias)).unwrap(),
    );
    let gm = g.load_matrix(&t, Some(&bias)).unwrap();
    let gx = g.upload_act(m, cols, &x).unwrap();
    g.set_decode_first(false);
    let fused = read(&g, &g.linear(&gx, &gm));
    g.set_decode_first(true);
    let (before, kept) = (g.decoded_first(), g.h16_decoded());
    let decoded = read(&g, &g.linear(&gx, &gm));
    assert_eq!(g.decoded_first(), before + 1, "decoded first");
    assert_eq!(g.h16_decoded(), kept + 1, "the f16 copy is kept");
    let what = format!("{} with {outliers} outliers", t.format.name());
    close(&decoded, &want.data, MATMUL_TOL, &what);
    close(&fused, &want.data, MATMUL_TOL, &format!("{what}, fused"));
    let again = read(&g, &g.linear(&gx, &gm));
    assert_eq!(g.h16_decoded(), kept + 1, "{what}: decoded twice");
    assert_eq!(again, decoded, "{what}: the kept copy gave other results");
}
