//! Calibration on the GPU (`quantlab::gpu::calib`, shaders/gram.wgsl + gram_reduce.wgsl, and
//! tender_stats.wgsl's `pos_range` for Tender's per-position ranges) against the CPU reference
//! (`quant::calib`): the Gram kernel against `gram_rows` and the per-position maxima and minima
//! against the CPU's rule on seeded data of odd sizes (rows and widths not multiples of the
//! 64-wide tile or the 16-row slice, one range and several, several sequences per batch,
//! sequences of different lengths into one accumulator), the whole `Calibration` of a tiny
//! model and of the real default model, and a GPU session's calibrations (the tiny Llama). Natively on whatever adapter wgpu finds (Mesa lavapipe
//! without a GPU).

use crate::gpu_check;
use crate::rng;
use crate::synthetic;
use crate::tiny_llama;
use gpu_check::{close, gpu, read};
use rng::Rng;
use std::rc::Rc;

use quantlab::gpu::calib;
use quantlab::io::gguf::Gguf;
use quantlab::model::backend::Backend;
use quantlab::model::cpu::Cpu;
use quantlab::model::net::Model;
use quantlab::model::weights::ModelWeights;
use quantlab::playground::engine::Device;
use quantlab::playground::session::Session;
use quantlab::quant::calib::{calibrate, gram_rows, CalibFrom, CalibOptions};

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
);

/// Kernel against `gram_rows` on the same inputs, relative to the largest entry: f32 sums of a
/// few hundred products in another order.
const GRAM_TOL: f32 = 1e-5;
/// Whole calibration of the real model, GPU against CPU, relative to each statistic's largest
/// entry: the activations themselves differ by the two backends' f32 rounding over 30 layers
/// (NLL differs by 2e-5, tests/gpu_model.rs); measured 3.4e-6 (6.8e-6 with BOS 1) on lavapipe.
const CALIB_TOL: f32 = 1e-4;

/// `Σ|x|/rows`, `max|x|`, `√Σx²` per channel of row-major `rows × d` data, in f64.
fn channel_stats(x: &[f32], rows: usize, d: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut mean = vec![0f64; d];
    let mut max = vec![0f32; d];
    let mut sq = vec![0f64; d];
    for r in x.chunks_exact(d) {
        for (j, &v) in r.iter().enumerate() {
            mean[j] += v.abs() as f64;
            max[j] = max[j].max(v.abs());
            sq[j] += v as f64 * v as f64;
        }
    }
    (
        mean.iter().map(|s| (s / rows as f64) as f32).collect(),
        max,
        sq.iter().map(|s| s.sqrt() as f32).collect(),
    )
}

/// `SiteStats::pos_max/pos_min` by the CPU's rule (`quant::calib`, `Acc::add`): for every
/// batch `(rows, seq)` of row-major data `d` wide, position `row % seq` in block `position /
/// 64`; per block and channel the largest and smallest value over all sequences, the blocks
/// grown to the longest sequence (−∞ / +∞ where a block has seen no row).
fn pos_stats(batches: &[(&[f32], usize)], d: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut hi, mut lo) = (Vec::new(), Vec::new());
    for &(x, seq) in batches {
        let blocks = seq.div_ceil(64);
        if hi.len() < blocks * d {
            hi.resize(blocks * d, f32::NEG_INFINITY);
            lo.resize(blocks * d, f32::INFINITY);
        }
        for (r, row) in x.chunks_exact(d).enumerate() {
            let b = (r % seq) / 64 * d;
            for (j, &v) in row.iter().enumerate() {
                hi[b + j] = hi[b + j].max(v);
                lo[b + j] = lo[b + j].min(v);
            }
        }
    }
    (hi, lo)
}

/// Max |a − b| relative to the largest |b| (what `close` checks), to report the margin.
fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() / scale)
        .fold(0f32, f32::max)
}

#[test]
fn gram_kernel_matches_cpu_reference() {
    let g = gpu();
    let mut rng = Rng(0x5eed_ca1b);
    // ((rows, sequence length) of each batch, width): one 16-row slice and a partial tile;
    // several ranges of rows; many ranges with a width over two tiles and not a multiple of 4,
    // three sequences of 100 in one batch (two blocks of positions, the second partial); five
    // sequences per batch; batches of different lengths into the same accumulator, the second
    // with more blocks of positions than the first (the accumulator grows).
    for (batches, d) in [
        (&[(5usize, 5usize)][..], 3usize),
        (&[(37, 37), (11, 11)], 19),
        (&[(300, 100), (77, 77)], 150),
        (&[(1000, 200)], 70),
        (&[(129, 129)], 129),
        (&[(64, 32), (130, 130)], 40),
    ] {
        let mut acc = g.gram_acc(d).unwrap();
        let mut all = Vec::new();
        let mut xs = Vec::new();
        for &(rows, seq) in batches {
            // Uneven channel scales and offsets, as activations have.
            let x: Vec<f32> = (0..rows * d)
                .map(|i| rng.next() * (1.0 + (i % d % 7) as f32) + (i % d % 3) as f32)
                .collect();
            let a = g.upload_act(rows, d, &x).unwrap();
            g.gram_add(&mut acc, &a, seq, &[]).unwrap();
            all.extend_from_slice(&x);
            xs.push((x, seq));
        }
        let rows: usize = batches.iter().map(|b| b.0).sum();
        let st = pollster::block_on(g.gram_read(&[&acc])).unwrap().remove(0);
        assert_eq!((st.dim, st.rows), (d, rows));
        let mut want = vec![0f32; d * d];
        gram_rows(&all, rows, d, &mut want);
        let what = format!("{rows}×{d}");
        close(&st.gram, &want, GRAM_TOL, &format!("gram {what}"));
        let (mean, max, l2) = channel_stats(&all, rows, d);
        close(&st.mean_abs, &mean, GRAM_TOL, &format!("mean|x| {what}"));
        assert_eq!(st.max_abs, max, "max|x| {what}");
        // Max and min in any order are exact: the per-position ranges equal the CPU's.
        let views: Vec<(&[f32], usize)> = xs.iter().map(|(x, s)| (&x[..], *s)).collect();
        let (hi, lo) = pos_stats(&views, d);
        assert_eq!(st.pos_max, hi, "pos_max {what}");
        assert_eq!(st.pos_min, lo, "pos_min {what}");
        close(&st.l2, &l2, GRAM_TOL, &format!("l2 {what}"));
        for i in 0..d {
            for j in 0..i {
                assert_eq!(st.gram[i * d + j], st.gram[j * d + i], "symmetric {what}");
            }
        }
    }
    assert!(g.gram_acc(0).is_err());
    let mut acc = g.gram_acc(4).unwrap();
    let wrong = g.upload_act(2, 3, &[0.0; 6]).unwrap();
    assert!(g.gram_add(&mut acc, &wrong, 2, &[]).is_err());
    let right = g.upload_act(3, 4, &[0.0; 12]).unwrap();
    assert!(
        g.gram_add(&mut acc, &right, 2, &[]).is_err(),
        "3 rows in sequences of 2"
    );
}

#[test]
fn gpu_calibration_matches_cpu_on_the_default_model() {
    let bytes = std::fs::read(MODEL).unwrap_or_else(|e| {
        panic!("{MODEL}: {e}; run scripts/fetch-model.sh to fetch the default model")
    });
    let gg = Gguf::parse("SmolLM2-135M-Instruct.Q4_1.gguf", &bytes).expect("parse");
    let w = ModelWeights::from_source(gg.model_config().expect("config"), &gg).expect("weights");
    let mut rng = Rng(0x0ca1_1b8a);
    let vocab = w.config.vocab as u32;
    let tokens: Vec<u32> = (0..300).map(|_| rng.next_u32() % vocab).collect();
    // Three short sequences, one GPU batch of 63 rows: lavapipe, CI's GPU, takes about 20 s
    // per forward pass of this model up to 64 rows (one tile of rows per product), twice that
    // up to 128. So the GPU calibrates the default model once here; what a session does with a
    // calibration (backend, reuse, text) is `a_session_calibrates_on_the_gpu_and_keeps_it`, on
    // the tiny Llama.
    let opts = CalibOptions {
        n_seq: 3,
        seq_len: 21,
        from: CalibFrom::Offset(17),
    };
    // The model's own BOS rule, as a session applies it (a CPU session: only its rule is used).
    let bos = Session::load_gguf("smollm2", bytes.clone())
        .expect("session")
        .bos();
    let cpu_model = Model::load(&Cpu, &w).expect("cpu load");
    let want = calibrate(&cpu_model, &tokens, bos, &opts, &mut |_, _| true).unwrap();
    let g = gpu();
    let gpu_model = Model::load(&g, &w).expect("gpu load");
    let mut calls = Vec::new();
    let got = pollster::block_on(calib::calibrate(
        &g,
        &gpu_model,
        &tokens,
        bos,
        &opts,
        &mut |d, n| {
            calls.push((d, n));
            true
        },
    ))
    .unwrap();
    assert_eq!(calls.last(), Some(&(3, 3)), "progress ends at n/n");
    assert_eq!(got.range, want.range);
    assert_eq!(got.layers.len(), want.layers.len());
    let mut worst = 0f32;
    for (li, (a, b)) in got.layers.iter().zip(&want.layers).enumerate() {
        for (s, (x, y)) in a.iter().zip(b).enumerate() {
            let what = format!("layer {li} site {s}");
            assert_eq!((x.dim, x.rows), (y.dim, y.rows), "{what}");
            for (name, p, q) in [
                ("gram", &x.gram, &y.gram),
                ("mean", &x.mean_abs, &y.mean_abs),
                ("max", &x.max_abs, &y.max_abs),
                ("l2", &x.l2, &y.l2),
                ("pos_max", &x.pos_max, &y.pos_max),
                ("pos_min", &x.pos_min, &y.pos_min),
            ] {
                assert_eq!(p.len(), q.len(), "{what} {name}");
                worst = worst.max(rel_err(p, q));
                close(p, q, CALIB_TOL, &format!("{what} {name}"));
            }
        }
    }
    eprintln!("worst relative difference GPU vs CPU: {worst:e}");
    // Cancelling stops before any work.
    let r = pollster::block_on(calib::calibrate(
        &g,
        &gpu_model,
        &tokens,
        None,
        &opts,
        &mut |_, _| false,
    ));
    assert!(matches!(r, Err(quantlab::Error::Cancelled)));
}

/// A session on the GPU (the tiny Llama checkpoint, with its tokenizer) calibrates on the GPU
/// with `gpu::calib::calibrate`'s numbers, under its own BOS rule; forcing the CPU recomputes
/// with `quant::calib::calibrate`'s; a kept calibration serves a later call with the same key;
/// and a text calibration says which backend ran and when it reused.
#[test]
fn a_session_calibrates_on_the_gpu_and_keeps_it() {
    let g = Rc::new(gpu());
    let mut session = tiny_llama::load(&Device::Gpu(g.clone()));
    let w = session.source().clone();
    let bos = session.bos();
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(8);
    let tokens = session.tokenize(&text.repeat(4)).expect("tokenizes");
    let opts = CalibOptions {
        n_seq: 3,
        seq_len: 21,
        from: CalibFrom::Offset(17),
    };
    let want = calibrate(
        &Model::load(&Cpu, &w).expect("cpu load"),
        &tokens,
        bos,
        &opts,
        &mut |_, _| true,
    )
    .unwrap();
    let got = pollster::block_on(calib::calibrate(
        &g,
        &Model::load(g.as_ref(), &w).expect("gpu load"),
        &tokens,
        bos,
        &opts,
        &mut |_, _| true,
    ))
    .unwrap();
    let via = session.calibrate(&tokens, &opts, &mut |_, _| true).unwrap();
    assert!(
        via.layers == got.layers,
        "the GPU session's calibration differs from gpu::calib::calibrate"
    );
    assert_eq!(session.calibration_backend(), Some("gpu"));
    // Forcing the CPU path recomputes (a GPU calibration is not reused for it) and gives the
    // CPU reference's numbers: the same model copy and loops as `calibrate` above.
    let forced =
        pollster::block_on(session.calibrate_async(&tokens, &opts, true, &mut |_, _| true))
            .unwrap();
    assert!(
        forced.layers == want.layers,
        "the forced CPU calibration differs from quant::calib::calibrate"
    );
    assert_eq!(session.calibration_backend(), Some("cpu"));
    // A CPU calibration serves a later GPU-allowed call with the same key: no new work.
    let mut called = false;
    session
        .calibrate(&tokens, &opts, &mut |_, _| {
            called = true;
            true
        })
        .unwrap();
    assert!(
        !called,
        "same tokens and options: the kept calibration is reused"
    );
    assert_eq!(session.calibration_backend(), Some("cpu"));
    // Text calibration says which backend ran, and when it reused.
    let used =
        pollster::block_on(session.calibrate_text_async(&text, 2, 16, false, &mut |_, _| true))
            .unwrap();
    assert_eq!((used.n_seq, used.seq_len), (2, 16));
    assert_eq!((used.backend.as_str(), used.reused), ("gpu", false));
    assert!(used.seconds > 0.0, "seconds {}", used.seconds);
    let again = session
        .calibrate_text(&text, 2, 16, &mut |_, _| true)
        .unwrap();
    assert_eq!((again.backend.as_str(), again.reused), ("gpu", true));
    let cpu =
        pollster::block_on(session.calibrate_text_async(&text, 2, 16, true, &mut |_, _| true))
            .unwrap();
    assert_eq!((cpu.backend.as_str(), cpu.reused), ("cpu", false));
}

/// Tender's per-position ranges of a whole calibration of the tiny synthetic model (2 layers,
/// d 64, FFN 128), three sequences of 100 positions in one GPU batch (two blocks of 64, the
/// second partial): exactly the CPU's rule applied to the activations the GPU model produces
/// (shown to the same observer), and the CPU calibration's within `CALIB_TOL` (the two
/// backends' activations differ by f32 rounding; max and min add no error of their own).
#[test]
fn gpu_calibration_positions_on_a_tiny_model() {
    let ones = vec![1.0f32; 64];
    let w = synthetic::synthetic(&synthetic::Norms {
        attn: ones.clone(),
        ffn: ones.clone(),
        output: ones,
    });
    let mut rng = Rng(0x7e4d_e5a1);
    let tokens: Vec<u32> = (0..400).map(|_| rng.next_u32() % 32).collect();
    let (n, l) = (3, 100);
    let opts = CalibOptions {
        n_seq: n,
        seq_len: l,
        from: CalibFrom::Offset(5),
    };
    let g = gpu();
    let gm = Model::load(&g, &w).expect("gpu load");
    assert!(g.eval_batch(l, 128) >= n, "one batch of all sequences");
    let got = pollster::block_on(calib::calibrate(
        &g,
        &gm,
        &tokens,
        None,
        &opts,
        &mut |_, _| true,
    ))
    .unwrap();
    let cm = Model::load(&Cpu, &w).expect("cpu load");
    let want = calibrate(&cm, &tokens, None, &opts, &mut |_, _| true).unwrap();
    // The activations the GPU model shows its observer for the same batch.
    let range = opts.range(tokens.len()).unwrap();
    let mut batch = Vec::new();
    for s in 0..n {
        batch.extend(quantlab::quant::calib::sequence(&tokens, &range, s, l, None).unwrap());
    }
    let mut seen = Vec::new();
    gm.forward_batch_observed(&g, &batch, l, &mut |layer, site, x| {
        seen.push((layer, site, x.cols, read(&g, x)));
        Ok(())
    })
    .unwrap();
    assert_eq!(seen.len(), 2 * 4, "2 layers × 4 sites");
    let (mut equal, mut total) = (0, 0);
    for (layer, site, d, x) in &seen {
        let st = &got.layers[*layer][*site];
        let cpu = &want.layers[*layer][*site];
        let what = format!("layer {layer} site {site}");
        let (hi, lo) = pos_stats(&[(x, l)], *d);
        assert_eq!(st.pos_max.len(), 2 * d, "{what}");
        assert_eq!(st.pos_max, hi, "{what}: pos_max vs the GPU activations");
        assert_eq!(st.pos_min, lo, "{what}: pos_min vs the GPU activations");
        close(
            &st.pos_max,
            &cpu.pos_max,
            CALIB_TOL,
            &format!("{what} pos_max"),
        );
        close(
            &st.pos_min,
            &cpu.pos_min,
            CALIB_TOL,
            &format!("{what} pos_min"),
        );
        for (p, q) in st
            .pos_max
            .iter()
            .chain(&st.pos_min)
            .zip(cpu.pos_max.iter().chain(&cpu.pos_min))
        {
            equal += (p == q) as usize;
            total += 1;
        }
    }
    eprintln!("per-position ranges equal to the CPU calibration's bit for bit: {equal} of {total}");
}
