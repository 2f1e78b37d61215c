//! BinaryMoS's token-adaptive product on the GPU (src/gpu/binarymos.rs, shaders/binarymos.wgsl,
//! shaders/fmt_sign.wgsl) against its CPU reference `MosParts::forward` (src/format/binarymos.rs):
//!   * one linear layer at shapes whose rows and columns are not multiples of the 64-wide tile
//!     (or of 4: the fragment's one-weight path), with 1, 2, 4, 8, 13 and 16 experts, routers that
//!     make the gates far from uniform, with and without a bias, every matmul variant, a weight
//!     split into row parts, the LM head's row slice (`logits_row`), and the bytes held;
//!   * what has no meaning for a token-adaptive weight (a gather, add-ons) refused by name;
//!   * whole tiny models quantized with `Method::BinaryMos`, GPU against CPU logits and PPL;
//!   * a `.qlab` BinaryMoS file opened on the GPU: evaluated and generating as on the CPU, its
//!     GPU memory the format table's.
//!
//! Natively on whatever adapter wgpu finds (Mesa lavapipe without a GPU).

use crate::gpu_check;
use gpu_check::{act, close, gpu, read};

use quantlab::format::binarymos::MosParts;
use quantlab::format::{storage_with, AddOns, Format, QTensor};
use quantlab::gpu::{Gpu, MatmulVariant};
use quantlab::io::tokenizer::TokenizerFiles;
use quantlab::model::backend::Backend;
use quantlab::model::backend::TokenScore;
use quantlab::model::config::ModelConfig;
use quantlab::model::cpu::Cpu;
use quantlab::model::eval::{self, EvalOptions, Protocol};
use quantlab::model::net::Model;
use quantlab::model::weights::ModelWeights;
use quantlab::playground::engine::Device;
use quantlab::playground::generate::Which;
use quantlab::playground::session::Session;
use quantlab::quant::binarymos::BinaryMosOptions;
use quantlab::quant::calib::{calibrate, CalibFrom, CalibOptions};
use quantlab::quant::config::{LayerQuant, Method, QuantConfig};
use quantlab::testkit::{tiny_model, tiny_variants, tokens, Rng};
use std::rc::Rc;

/// One layer, GPU against `MosParts::forward`, relative to the output's largest magnitude: both
/// compute in f32, but the sums (router logits, the mixed scales, the sign product) run in
/// another order, and the GPU's `exp` is within a few ULP of the CPU's. Measured 6.5e-7 on
/// lavapipe; the plain formats' products are held to the same 1e-5 (tests/gpu_formats.rs).
const LINEAR_TOL: f32 = 1e-5;
/// A whole model, GPU against CPU: per-token NLL in nats and PPL relative (as tests/gpu_model.rs:
/// the per-layer f32 differences above carried through two layers; measured at most 5.2e-6
/// nats and 4e-7 relative on lavapipe).
const NLL_ABS_TOL: f64 = 1e-3;
const PPL_REL_TOL: f64 = 1e-3;

/// A BinaryMoS tensor with random signs, input scales in 1 ± 0.5, output scales in 0.05 ±
/// 0.03, and a router in ±`router` (tables rounded to f16 by packing: the reference reads the
/// packed tensor back).
fn mos_tensor(rows: usize, cols: usize, experts: usize, router: f32, seed: u64) -> QTensor {
    let mut r = Rng(seed);
    let p = MosParts {
        rows,
        cols,
        experts,
        signs: (0..rows * cols)
            .map(|_| if r.next() < 0.0 { -1.0 } else { 1.0 })
            .collect(),
        s_in: (0..experts * cols).map(|_| 1.0 + 0.5 * r.next()).collect(),
        s_out: (0..experts * rows)
            .map(|_| 0.05 + 0.03 * r.next())
            .collect(),
        router: (0..cols * experts).map(|_| router * r.next()).collect(),
    };
    p.to_qtensor().unwrap()
}

/// GPU `linear` (every matmul variant) against the CPU backend, which runs `MosParts::forward`
/// and adds the bias; and the bytes the GPU holds against the format table. Returns the largest
/// error relative to the output's largest magnitude.
fn check_linear(g: &Gpu, w: &QTensor, m: usize, bias: bool, seed: u64) -> f32 {
    let what = format!(
        "{} {}×{} m={m} bias={bias}",
        w.format.name(),
        w.rows,
        w.cols
    );
    let mut r = Rng(seed);
    let x = r.vec(m * w.cols);
    let b = bias.then(|| r.vec(w.rows));
    let want = Cpu.linear(
        &act(m, w.cols, x.clone()),
        &Cpu.load_matrix(w, b.as_deref()).unwrap(),
    );
    // The CPU backend's product is the format module's reference.
    let mos = MosParts::from_qtensor(w).unwrap().forward(&x);
    if !bias {
        assert_eq!(want.data, mos, "{what}: CPU backend vs MosParts::forward");
    }
    let held0 = g.weight_bytes_held();
    let gm = g.load_matrix(w, b.as_deref()).unwrap();
    let table = storage_with(w.format, w.addons, w.rows, w.cols)
        .unwrap()
        .total()
        + b.as_ref().map_or(0, |b| 4 * b.len());
    assert_eq!(gm.bytes, table, "{what}: bytes");
    assert_eq!(g.weight_bytes_held() - held0, table as u64, "{what}: held");
    let gx = g.upload_act(m, w.cols, &x).unwrap();
    let scale = want.data.iter().fold(0f32, |a, v| a.max(v.abs()));
    let mut worst = 0f32;
    for v in MatmulVariant::ALL {
        g.force_matmul(Some(v));
        let got = g.linear(&gx, &gm);
        assert_eq!((got.rows, got.cols), (m, w.rows));
        let got = read(g, &got);
        close(
            &got,
            &want.data,
            LINEAR_TOL,
            &format!("{what} {}", v.name()),
        );
        let e = got
            .iter()
            .zip(&want.data)
            .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
        worst = worst.max(e / scale);
    }
    g.force_matmul(None);
    worst
}

#[test]
fn linear_matches_mos_forward_at_every_expert_count() {
    let g = gpu();
    eprintln!("{}", g.name());
    // 71 × 96: partial tiles, k a multiple of 4 (the fragment's four-sign path); 37 × 130:
    // k not a multiple of 4 (one sign at a time), signs of a row straddling words; 5 × 3: less
    // than one word per row. 37 tokens: a partial tile of tokens; 1: one token.
    let shapes = [(71, 96), (37, 130), (5, 3)];
    let mut seed = 1;
    let mut worst = 0f32;
    // 13: a last vec4 of logits partly filled (shaders/binarymos.wgsl holds four).
    for experts in [1, 2, 4, 8, 13, 16] {
        for &(rows, cols) in &shapes {
            // A router of ±1 makes logits of several units: the gates are far from uniform, so
            // a wrong expert or a mis-normalised softmax shows.
            let w = mos_tensor(rows, cols, experts, 1.0, seed);
            for (m, bias) in [(37, false), (1, true), (70, true)] {
                worst = worst.max(check_linear(&g, &w, m, bias, seed + 100));
            }
            seed += 1;
        }
    }
    eprintln!("largest relative error {worst:e} (tolerance {LINEAR_TOL:e})");
}

#[test]
fn gates_are_far_from_uniform_so_the_check_can_fail() {
    // Guards the test above: with its router the product differs from the uniform-gate weight
    // (what a kernel ignoring the router would compute) by far more than the tolerance.
    let w = mos_tensor(71, 96, 4, 1.0, 3);
    let x = Rng(9).vec(37 * 96);
    let y = MosParts::from_qtensor(&w).unwrap().forward(&x);
    let dense = w.dequantize().unwrap();
    let uniform = Cpu.linear(
        &act(37, 96, x),
        &Cpu.load_matrix(
            &QTensor::new(Format::F32, 71, 96, f32_bytes(&dense)).unwrap(),
            None,
        )
        .unwrap(),
    );
    let scale = y.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = y
        .iter()
        .zip(&uniform.data)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst / scale > 100.0 * LINEAR_TOL, "{worst} of {scale}");
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn split_weights_head_rows_and_refusals() {
    let g = gpu();
    let w = mos_tensor(150, 72, 4, 1.0, 21);
    let (m, k) = (9, 72);
    let x = Rng(22).vec(m * k);
    let want = MosParts::from_qtensor(&w).unwrap().forward(&x);
    let gx = g.upload_act(m, k, &x).unwrap();

    // Split into row parts (a small binding limit): each part mixes its own rows of S_out.
    g.limit_storage_binding(Some(2048));
    let parts = g.load_matrix(&w, None).unwrap();
    g.limit_storage_binding(None);
    assert!(parts.parts() > 2, "{} parts", parts.parts());
    close(
        &read(&g, &g.linear(&gx, &parts)),
        &want,
        LINEAR_TOL,
        "split",
    );

    // The head's one-row product reads row `row` of the window (`x_row0`).
    let whole = g.load_matrix(&w, None).unwrap();
    for row in [0, 4, m - 1] {
        let got = g.logits_row(&gx, &whole, row).unwrap();
        close(&got, &want[row * 150..(row + 1) * 150], LINEAR_TOL, "row");
    }

    // A gather of a BinaryMoS table has no token to mix its scales for: refused by name.
    let e = g.embed(&whole, &[0, 1]).err().expect("refused").to_string();
    assert!(e.contains("BinaryMoS"), "{e}");
    // Add-ons on a BinaryMoS base: refused at load, not run against the signs.
    let addons = AddOns {
        outliers: 1,
        lowrank: None,
    };
    let base = w.format.storage(w.rows, w.cols).unwrap().total();
    let extra = storage_with(w.format, addons, w.rows, w.cols)
        .unwrap()
        .total()
        - base;
    let with = w.with_extra(addons, &vec![0; extra]).unwrap();
    let e = g
        .load_matrix(&with, None)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("BinaryMoS") && e.contains("outliers"), "{e}");
    // Nothing recorded failed on the way.
    read(&g, &gx);
}

/// The weights of a tiny model of `cfg` quantized with BinaryMoS (`experts`, 20 lite steps) on a
/// CPU calibration of its own tokens, and those tokens.
fn tiny_mos(cfg: ModelConfig, experts: usize) -> (Vec<u32>, ModelWeights) {
    let src = tiny_model(cfg, 7);
    let toks = tokens(400, src.config.vocab, 11);
    let calib = {
        let m = Model::load(&Cpu, &src).unwrap();
        let o = CalibOptions {
            n_seq: 4,
            seq_len: 48,
            from: CalibFrom::Offset(0),
        };
        calibrate(&m, &toks, None, &o, &mut |_, _| true).unwrap()
    };
    let q = QuantConfig {
        method: Method::BinaryMos(BinaryMosOptions {
            experts,
            steps: 20,
            lr: 0.01,
        }),
        default: LayerQuant {
            bits: 1,
            ..LayerQuant::default()
        },
        ..QuantConfig::default()
    }
    .apply_calibrated(&src, Some(&calib), &mut |_, _| true)
    .unwrap();
    (toks, q)
}

#[test]
fn tiny_binarymos_models_evaluate_on_the_gpu_as_on_the_cpu() {
    let g = gpu();
    // Every architecture (OPT and GPT-2 have biases on their linears), at 4, 1, 16, 2 experts.
    for ((name, cfg), experts) in tiny_variants().into_iter().zip([4usize, 1, 16, 2]) {
        let (toks, w) = tiny_mos(cfg, experts);
        let what = format!("{name} binarymos{experts}");
        assert!(
            w.layers.iter().flat_map(|l| l.linears()).all(|l| l.w.format
                == Format::BinaryMos {
                    experts: experts as u8
                }),
            "{what}: every block linear is BinaryMoS"
        );
        let cm = Model::load(&Cpu, &w).unwrap();
        let gm = Model::load(&g, &w).unwrap();

        // Every scored token of one window against the CPU's.
        let window = &toks[..32];
        let cx = cm.forward(&Cpu, window).unwrap();
        let gx = gm.forward(&g, window).unwrap();
        let (cs, _) = Cpu
            .score(&cx, cm.head(), 0, &window[1..], None, false)
            .unwrap();
        let (p, _) = g
            .score(&gx, gm.head(), 0, &window[1..], None, false)
            .unwrap();
        let gs = pollster::block_on(g.read_scores(p)).unwrap();
        let worst = gs
            .iter()
            .zip(&cs)
            .map(|(a, b)| (a.nll - b.nll).abs())
            .fold(0f64, f64::max);
        eprintln!("{what}: max |Δnll| {worst:e}");
        assert!(worst < NLL_ABS_TOL, "{what}: NLL differs by {worst}");
        let argmax = |s: &[TokenScore]| s.iter().map(|t| t.argmax).collect::<Vec<_>>();
        assert_eq!(argmax(&gs), argmax(&cs), "{what}: argmax");

        // PPL over two windows through the evaluation loop.
        let opts = EvalOptions {
            protocol: Protocol::Llamacpp,
            ctx: 32,
            max_windows: Some(2),
            kl: false,
        };
        let c = eval::ready(eval::evaluate(
            &Cpu,
            &cm,
            None,
            &toks,
            None,
            &opts,
            &|| 0.0,
            &mut |_| true,
        ))
        .unwrap();
        let r = pollster::block_on(eval::evaluate(
            &g,
            &gm,
            None,
            &toks,
            None,
            &opts,
            &|| 0.0,
            &mut |_| true,
        ))
        .unwrap();
        let rel = (r.ppl - c.ppl).abs() / c.ppl;
        eprintln!(
            "{what}: cpu ppl {:.6}, gpu ppl {:.6}, rel {rel:e}",
            c.ppl, r.ppl
        );
        assert_eq!(r.windows, 2, "{what}");
        assert_eq!(r.tokens_scored, c.tokens_scored, "{what}");
        assert!(rel < PPL_REL_TOL, "{what}: gpu {} vs cpu {}", r.ppl, c.ppl);
    }
}

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny/llama");
const TEXT: &str = "The quick brown fox jumps over the lazy dog. A tiny model, a tiny text: \
                    enough tokens to calibrate and to evaluate two short windows of it.";

#[test]
fn a_binarymos_qlab_file_evaluates_and_generates_on_the_gpu() {
    // The tiny Llama checkpoint binarized with 4 experts and saved as .qlab, as tests/qlab.rs
    // does; until the GPU path existed, such a file opened on the CPU backend only.
    let read =
        |f: &str| std::fs::read(format!("{TINY}/{f}")).unwrap_or_else(|e| panic!("{f}: {e}"));
    let tok = read("tokenizer.json");
    let mut s = Session::load_hf(
        "tiny-llama",
        &read("config.json"),
        TokenizerFiles::Json(&tok),
        &[("model.safetensors", &read("model.safetensors"))],
    )
    .unwrap();
    let ids = s.tokenize(TEXT).unwrap();
    let calib = CalibOptions {
        n_seq: 2,
        seq_len: 16,
        ..CalibOptions::default()
    };
    s.calibrate(&ids, &calib, &mut |_, _| true).unwrap();
    s.set_quant(&QuantConfig {
        method: Method::BinaryMos(BinaryMosOptions {
            experts: 4,
            steps: 5,
            lr: 0.01,
        }),
        default: LayerQuant {
            bits: 1,
            ..LayerQuant::default()
        },
        ..QuantConfig::default()
    })
    .unwrap();
    let file = s.save_qlab(serde_json::Value::Null).unwrap();

    let cpu = Session::load_file_on("mos.qlab", file.clone(), &Device::Cpu).unwrap();
    let g = Rc::new(gpu());
    let on_gpu = Session::load_file_on("mos.qlab", file, &Device::Gpu(g))
        .unwrap_or_else(|e| panic!("a BinaryMoS .qlab opens on the GPU: {e}"));
    let engine = on_gpu.engine();
    assert_eq!(engine.backend, "gpu");
    // What the GPU's buffers hold is the format table's total (src/format/binarymos.rs).
    assert_eq!(engine.weight_bytes, Some(on_gpu.memory().total_bytes));

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
        "qlab: cpu ppl {:.6}, gpu ppl {:.6}, rel {rel:e}",
        c.ppl, r.ppl
    );
    assert_eq!(r.tokens_scored, c.tokens_scored);
    assert!(
        c.ppl.is_finite() && rel < PPL_REL_TOL,
        "gpu {} vs cpu {}",
        r.ppl,
        c.ppl
    );

    // Greedy generation from the file's model: the same tokens on both backends.
    let gen = |s: &Session| {
        pollster::block_on(
            s.generate_async("The quick brown", 8, Which::Reference, &mut |_, _| true),
        )
        .unwrap()
    };
    let (a, b) = (gen(&cpu), gen(&on_gpu));
    eprintln!("qlab: generated {:?} / {:?}", a.tokens, b.tokens);
    assert_eq!(a.tokens.len(), 8);
    assert_eq!(b.tokens, a.tokens);
}
