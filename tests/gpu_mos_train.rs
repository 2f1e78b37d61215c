//! BinaryMoS lite training on the GPU (src/gpu/mos_train.rs, shaders/mos_train_*.wgsl) against
//! the CPU's (`quant::binarymos`, whose gradients `format::binarymos::grad` are checked against
//! central differences):
//!   * the loss and the three gradients of one step, on shapes that are no multiple of the 16-wide
//!     tiles, with 1, 4 and 16 experts and routers that make the gates far from uniform;
//!   * 20 Adam steps with no read-back in between: every step's loss and the final tables;
//!   * a GPU session quantizing the tiny Llama with BinaryMoS: trained on the GPU, each tensor's
//!     loss trace and the PPL as the CPU session's.
//!
//! Natively on whatever adapter wgpu finds (Mesa lavapipe without a GPU).

use crate::gpu_check;
use crate::tiny_llama;
use gpu_check::{close, gpu};
use tiny_llama::{mos_config, packed};

use quantlab::linalg::sgemm;
use quantlab::model::eval::{EvalOptions, Protocol};
use quantlab::playground::engine::Device;
use quantlab::playground::session::Session;
use quantlab::quant::binarymos::{train_lite, BinaryMosOptions, LiteOptions, MosLayer};
use quantlab::quant::calib::CalibOptions;
use quantlab::quant::config::{LayerQuant, Method, QuantConfig};
use quantlab::testkit::Rng;
use std::collections::BTreeMap;
use std::rc::Rc;

/// One step's gradients, GPU against CPU, relative to each gradient's largest magnitude: both in
/// f32 with sums in another order (the CPU's blocked sgemm, the GPU's 16-wide tiles and
/// workgroup reductions) over at most 130 terms of mixed sign. Measured at most 2.6e-6 on
/// lavapipe; 1e-4 leaves room for other drivers' `exp` and orders and is far below any wrong link
/// of the chain (a dropped term changes a gradient by a share of its whole size).
const GRAD_TOL: f32 = 1e-4;
/// The loss, relative: the CPU sums the squared errors in f64, the GPU in f32 (rows reduced over
/// a workgroup, then over tokens), about 1e-7 relative per addition. Measured at most 1.1e-7.
const LOSS_REL_TOL: f64 = 1e-5;
/// 20 Adam steps, GPU against CPU: the tables relative to their largest magnitude, and every
/// step's loss relative. Adam divides each first moment by the root of the second, so a rounding
/// difference in a gradient near zero could move a value by a share of its step (1 % of the
/// tensor's mean magnitude at lr 0.01); with the experts apart (see `problem`) none does.
/// Measured at most 1.4e-6 (tables) and 1.0e-7 (losses) on lavapipe.
const TRAIN_TABLE_TOL: f32 = 1e-4;
const TRAIN_LOSS_REL_TOL: f64 = 1e-5;

/// A layer at its SVID start (`MosLayer::init`) with the router then set to ±`router`/√cols so
/// the gates are far from uniform (logits of order `router`) without saturating: at ±1 per entry
/// a gate falls to 1e-13 and the router's gradient is pure cancellation, 1e-6 of the others', `t` random input rows and the loaded weight's outputs on them.
fn problem(
    rows: usize,
    cols: usize,
    experts: usize,
    t: usize,
    router: f32,
    seed: u64,
) -> (MosLayer, Vec<f32>, Vec<f32>) {
    let mut r = Rng(seed);
    let w: Vec<f32> = (0..rows * cols).map(|_| 0.05 * r.normal()).collect();
    let mut layer = MosLayer::init(&w, rows, cols, experts, seed).unwrap();
    // The experts moved apart, as after a few steps. At the SVID start they are equal, every
    // expert's dG is the same and the router's gradient is zero up to rounding (≈ 1e-6 of the
    // others'), which Adam's first step, normalised per value, turns into a full step on either
    // device: two devices agree there only on the scales, not on the router.
    for v in layer.s_in.iter_mut().chain(layer.s_out.iter_mut()) {
        *v *= 1.0 + 0.3 * r.next();
    }
    if router > 0.0 {
        let a = router / (cols as f32).sqrt();
        layer.router = (0..cols * experts).map(|_| a * r.next()).collect();
    }
    // Two kinds of token, scaled differently per channel, as the CPU's synthetic layer test:
    // something for the experts and the router to separate.
    let x: Vec<f32> = (0..t * cols)
        .map(|i| {
            r.normal()
                * if (i / cols).is_multiple_of(2) {
                    1.0
                } else {
                    0.3 + (i % cols) as f32 / cols as f32
                }
        })
        .collect();
    let mut target = vec![0f32; t * rows];
    sgemm(t, cols, rows, &x, cols, 1, &w, 1, cols, &mut target, rows);
    (layer, x, target)
}

#[test]
fn one_steps_loss_and_gradients_match_the_cpu() {
    let g = gpu();
    for (rows, cols, experts, t, seed) in [
        (5, 3, 1, 7, 1),
        (37, 130, 4, 33, 2),
        (71, 45, 16, 128, 3),
        (24, 17, 4, 1, 4),
    ] {
        let what = format!("{rows}×{cols} ×{experts} t={t}");
        let (layer, x, target) = problem(rows, cols, experts, t, 3.0, seed);
        let (want_loss, want) = layer.loss_and_grads(&x, &target);
        let (loss, got) =
            pollster::block_on(g.mos_loss_and_grads(&layer, &x, &target)).expect(&what);
        assert!(
            (loss - want_loss).abs() <= LOSS_REL_TOL * want_loss,
            "{what}: loss gpu {loss} cpu {want_loss}"
        );
        close(&got.s_in, &want.s_in, GRAD_TOL, &format!("{what} dS_in"));
        close(&got.s_out, &want.s_out, GRAD_TOL, &format!("{what} dS_out"));
        // With one expert the gates are all 1 and the router's gradient is exactly zero on the
        // CPU; the GPU's is rounding noise around zero, so compare against the scale of dS_in.
        if experts == 1 {
            let scale = want.s_in.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(
                got.router.iter().all(|v| v.abs() <= GRAD_TOL * scale),
                "{what}: one expert, router gradient {:?}",
                got.router
            );
        } else {
            close(&got.router, &want.router, GRAD_TOL, &format!("{what} dW_R"));
        }
    }
}

#[test]
fn twenty_adam_steps_match_the_cpu() {
    let g = gpu();
    let opts = LiteOptions {
        steps: 20,
        lr: 0.01,
    };
    for (rows, cols, experts, seed) in [(24, 32, 4, 5), (19, 40, 1, 6), (33, 21, 16, 7)] {
        let what = format!("{rows}×{cols} ×{experts}");
        let (layer, x, target) = problem(rows, cols, experts, 128, 0.0, seed);
        let mut cpu = layer.clone();
        let want = train_lite(&mut cpu, &x, &target, &opts, &mut |_, _| true).unwrap();
        let (got_layer, got) =
            pollster::block_on(g.mos_train_lite(&layer, &x, &target, &opts)).expect(&what);
        assert_eq!(got.len(), want.len(), "{what}: losses");
        for (s, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= TRAIN_LOSS_REL_TOL * b,
                "{what}: step {s} loss gpu {a} cpu {b}"
            );
        }
        // Training moved the loss, so the agreement is not that of two untrained layers.
        assert!(want[20] < 0.99 * want[0], "{what}: CPU losses {want:?}");
        close(
            &got_layer.s_in,
            &cpu.s_in,
            TRAIN_TABLE_TOL,
            &format!("{what} S_in"),
        );
        close(
            &got_layer.s_out,
            &cpu.s_out,
            TRAIN_TABLE_TOL,
            &format!("{what} S_out"),
        );
        close(
            &got_layer.router,
            &cpu.router,
            TRAIN_TABLE_TOL,
            &format!("{what} W_R"),
        );
        assert_eq!(
            got_layer.signs, layer.signs,
            "{what}: the signs stay frozen"
        );
    }
}

const TEXT: &str = "The quick brown fox jumps over the lazy dog. A tiny model, a tiny text: \
                    enough tokens to calibrate and to evaluate two short windows of it.";
/// A whole tiny model trained on the GPU against the CPU: each tensor's losses relative, and PPL
/// relative, which also carries the GPU's forward pass (tests/gpu_binarymos.rs holds that to
/// 1e-3) and tables rounded to f16. The real tensors start at SVID, where the experts are equal
/// and the router's first Adam step follows rounding noise (see `problem`), differently on each
/// device: measured 9.4e-6 (losses) and 8.2e-5 (PPL) on lavapipe.
const SESSION_LOSS_REL_TOL: f64 = 1e-4;
const SESSION_PPL_REL_TOL: f64 = 1e-3;

/// The tiny Llama checkpoint on `device`, calibrated on the CPU (so both sessions train on the
/// same rows).
fn tiny_session(device: &Device) -> (Session, Vec<u32>) {
    let mut s = tiny_llama::load(device);
    let ids = s.tokenize(TEXT).unwrap();
    let calib = CalibOptions {
        n_seq: 2,
        seq_len: 16,
        ..CalibOptions::default()
    };
    pollster::block_on(s.calibrate_async(&ids, &calib, true, &mut |_, _| true)).unwrap();
    (s, ids)
}

/// Each tensor's losses as `set_quant_traced` reports them.
fn quantize_traced(s: &mut Session, cfg: &QuantConfig) -> BTreeMap<String, Vec<f64>> {
    let mut trace: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    s.set_quant_traced(cfg, &mut |_, _| true, &mut |name, step, loss| {
        let v = trace.entry(name.to_string()).or_default();
        assert_eq!(v.len(), step, "{name}: steps in order");
        v.push(loss);
        true
    })
    .unwrap();
    trace
}

#[test]
fn a_gpu_session_trains_binarymos_on_the_gpu_as_the_cpu_does() {
    let cfg = QuantConfig {
        method: Method::BinaryMos(BinaryMosOptions {
            experts: 4,
            steps: 20,
            lr: 0.01,
        }),
        default: LayerQuant {
            bits: 1,
            ..LayerQuant::default()
        },
        ..QuantConfig::default()
    };
    let (mut cpu, ids) = tiny_session(&Device::Cpu);
    let (mut on_gpu, _) = tiny_session(&Device::Gpu(Rc::new(gpu())));
    assert_eq!(on_gpu.engine().backend, "gpu");
    let want = quantize_traced(&mut cpu, &cfg);
    let got = quantize_traced(&mut on_gpu, &cfg);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    assert_eq!(got.len(), 14, "every block linear of the two blocks");
    // Trained on the GPU indeed: its losses are summed in f32, the CPU's in f64, so a trace
    // that equals the CPU's to the last bit was computed there.
    assert_ne!(got, want, "the GPU session trained on the CPU");
    let worst = got
        .iter()
        .flat_map(|(n, l)| l.iter().zip(&want[n]).map(|(a, b)| (a - b).abs() / b))
        .fold(0f64, f64::max);
    eprintln!("session: losses differ by at most {worst:e} relative");
    for (name, losses) in &got {
        let w = &want[name];
        assert_eq!(
            losses.len(),
            21,
            "{name}: the loss before and after each step"
        );
        assert!(
            losses[20] < losses[0],
            "{name}: training lowers the loss: {losses:?}"
        );
        for (s, (a, b)) in losses.iter().zip(w).enumerate() {
            assert!(
                (a - b).abs() <= SESSION_LOSS_REL_TOL * b,
                "{name} step {s}: gpu {a} cpu {b}"
            );
        }
    }
    let opts = EvalOptions {
        protocol: Protocol::Llamacpp,
        ctx: 16,
        max_windows: Some(2),
        kl: false,
    };
    let c = cpu.evaluate_tokens(&ids, &opts, &mut |_| true).unwrap();
    let r = pollster::block_on(on_gpu.evaluate_tokens_async(&ids, &opts, &mut |_| true)).unwrap();
    let rel = (r.ppl - c.ppl).abs() / c.ppl;
    eprintln!(
        "session: cpu ppl {:.6}, gpu ppl {:.6}, rel {rel:e}",
        c.ppl, r.ppl
    );
    assert!(
        c.ppl.is_finite() && rel < SESSION_PPL_REL_TOL,
        "gpu {} vs cpu {}",
        r.ppl,
        c.ppl
    );
}

/// BinaryMoS with `experts` and `steps`, 1 bit, as the page's method menu makes it.
#[test]
fn a_stopped_gpu_training_resumes_with_the_rest_and_ends_as_an_uninterrupted_run() {
    // The page's path (`setQuantAsync`): trained on the GPU tensor by tensor, awaited.
    let cfg = mos_config(4, 10, 0.01);
    let device = Device::Gpu(Rc::new(gpu()));
    let run = |s: &mut Session, cfg: &QuantConfig, stop_at: usize| {
        let mut seen: Vec<String> = Vec::new();
        pollster::block_on(
            s.set_quant_traced_async(cfg, &mut |_, _| true, &mut |name, _, _| {
                if !seen.iter().any(|n| n == name) {
                    seen.push(name.to_string());
                }
                seen.len() <= stop_at
            }),
        )
    };
    let (mut straight, _) = tiny_session(&device);
    run(&mut straight, &cfg, usize::MAX).unwrap();
    let want = packed(&straight);
    assert_eq!(want.len(), 14);

    // Stopped when the 6th tensor reports: five done and the 6th trained before it reported.
    let (mut s, _) = tiny_session(&device);
    let stopped = run(&mut s, &cfg, 5);
    assert!(
        matches!(stopped, Err(quantlab::Error::Cancelled)),
        "{stopped:?}"
    );
    assert_eq!(s.lite_done(&cfg), 6);
    let other = mos_config(4, 10, 0.02);
    assert_eq!(
        s.lite_done(&other),
        0,
        "another configuration reuses nothing"
    );
    // Resumed: the same tensors, byte for byte, as the run that was never stopped.
    run(&mut s, &cfg, usize::MAX).unwrap();
    assert_eq!(s.lite_done(&cfg), 14);
    assert_eq!(packed(&s), want);
    // Another configuration starts over: the kept tensors of the first are dropped, and its
    // result differs.
    run(&mut s, &other, usize::MAX).unwrap();
    assert_eq!(s.lite_done(&cfg), 0);
    assert_eq!(s.lite_done(&other), 14);
    assert_ne!(packed(&s), want);
}
