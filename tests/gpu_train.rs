//! Full BinaryMoS distillation on the GPU (issue 15; `quantlab::gpu::TrainGemm`,
//! shaders/train_gemm.wgsl; docs/binarymos.md "Training on the GPU"): the kernel's three products
//! against their CPU reference (`linalg::mul_t`, `mul`, `t_mul`) on odd shapes; a few steps of a
//! tiny Llama trained with the products on the GPU against the same run on the CPU (losses per
//! step and every trained tensor); and `quantlab binarize --mode full --backend gpu` writing a
//! file that `eval` loads and that names its backend. Natively on whatever adapter wgpu finds
//! (Mesa lavapipe without a GPU).

use crate::cli;
use crate::gpu_check;
use crate::rng;

use cli::{last_json, quantlab, root};
use gpu_check::{close, gpu};
use quantlab::gpu::TrainGemm;
use quantlab::linalg::{mul, mul_t, t_mul, Gemm};
use quantlab::model::arch::Arch;
use quantlab::testkit::{tiny_config, tiny_model, tokens};
use quantlab::train::full::{FullOptions, Trainer};
use rng::Rng;
use std::rc::Rc;

/// Kernel against `linalg` on the same inputs, relative to the largest output: both are f32 sums
/// of up to 4 100 products of values in ±1, in different orders (the kernel along k in ranges
/// of 2 048, the CPU in matrixmultiply's blocks), each rounding ≈ 6e-8 of a running sum that
/// stays near the output's size; 1e-5 is far above that and far below a wrong index, a missed
/// tile or a missed range (errors of order 1).
const GEMM_TOL: f32 = 1e-5;

/// A GPU run's losses against the CPU run's, step by step, relative. The two differ only in the
/// summation order of the products (`GEMM_TOL`-sized differences per product), carried through
/// the tiny model's 2 blocks, its KL and 3 AdamW steps (measured worst 4.4e-6 on lavapipe).
/// 1e-4 leaves room for that and catches a wrong gradient, which changes the later steps'
/// losses by far more.
const LOSS_TOL: f64 = 1e-4;
/// Peak learning rate and steps of the compared runs.
const LR: f32 = 1e-3;
const STEPS: usize = 3;
/// Every trained value, GPU run against CPU run, absolute: AdamW's first steps move a value by
/// about `lr` whatever its gradient's size, so where a gradient is near zero and the two runs'
/// rounding gives it different signs, the value may end `2·lr` a step apart; bounded by
/// `lr·STEPS`, a third of that worst case (measured worst on lavapipe: 6.4e-4, a router value).
const VALUE_TOL: f32 = LR * STEPS as f32;
/// Nine in ten values of every latent weight and scale table, absolute: there the gradients
/// are far from zero and the runs move them alike; their difference is the products' rounding
/// (measured 90th percentile ≤ 3e-7 on lavapipe), so `lr/1000` = 1e-6. Routers are left out:
/// with nearly uniform gates their gradient is a difference of nearly equal terms
/// (`G ⊙ (dG − rowsum(G ⊙ dG))`), whose sign the rounding decides for most values.
const MOST_TOL: f32 = LR / 1000.0;

fn train_gemm() -> TrainGemm {
    TrainGemm::new(Rc::new(gpu())).expect("the train_gemm pipeline")
}

#[test]
fn the_three_products_match_the_cpu_on_odd_shapes() {
    let g = train_gemm();
    // Partial tiles on every side, k not a multiple of 4 or of the 16-wide slice, m = 1, one
    // side a whole tile, and k larger than a tile.
    let shapes = [
        (1, 37, 70),
        (65, 129, 3),
        (130, 7, 65),
        (64, 64, 64),
        (3, 200, 129),
        // k past one workgroup's range (several ranges, the last partial), as the head's
        // gradient product (k = vocabulary).
        (5, 4100, 70),
    ];
    for (m, k, n) in shapes {
        let mut r = Rng(m as u64 * 1000 + k as u64 * 10 + n as u64);
        let a = r.vec(m * k);
        let bt = r.vec(n * k);
        let b = r.vec(k * n);
        let at = r.vec(m * n);
        let what = |op: &str| format!("{op} {m}×{k}×{n}");
        close(
            &g.mul_t(&a, &bt, m, k, n),
            &mul_t(&a, &bt, m, k, n),
            GEMM_TOL,
            &what("mul_t"),
        );
        close(
            &g.mul(&a, &b, m, k, n),
            &mul(&a, &b, m, k, n),
            GEMM_TOL,
            &what("mul"),
        );
        // aᵀ·b with a `m × k` and b `m × n`.
        close(
            &g.t_mul(&a, &at, m, k, n),
            &t_mul(&a, &at, m, k, n),
            GEMM_TOL,
            &what("t_mul"),
        );
        // The weight forms: the same numbers, from the step's kept copy the second time.
        for _ in 0..2 {
            close(
                &g.mul_t_w(&a, &bt, m, k, n),
                &mul_t(&a, &bt, m, k, n),
                GEMM_TOL,
                &what("mul_t_w"),
            );
            close(
                &g.mul_w(&a, &b, m, k, n),
                &mul(&a, &b, m, k, n),
                GEMM_TOL,
                &what("mul_w"),
            );
        }
    }
    g.check().unwrap();
    // Two weights per shape, each uploaded once though used twice.
    let (products, uploads) = g.counts();
    assert_eq!((products, uploads), (7 * shapes.len(), 2 * shapes.len()));
    // After the step's end a weight is uploaded again: its slice may have changed.
    g.end_step();
    let (m, k, n) = shapes[0];
    let mut w = Rng(1).vec(n * k);
    let a = Rng(2).vec(m * k);
    let first = g.mul_t_w(&a, &w, m, k, n);
    g.end_step();
    w.iter_mut().for_each(|v| *v = -*v);
    let second = g.mul_t_w(&a, &w, m, k, n);
    close(
        &second,
        &first.iter().map(|v| -v).collect::<Vec<_>>(),
        GEMM_TOL,
        "re-upload",
    );
    // An operand shorter than its shape: zeros, and the failure named at the check.
    let z = g.mul(&a[..m * k - 1], &w, m, k, n);
    assert!(z.iter().all(|v| *v == 0.0));
    let e = g.check().unwrap_err().to_string();
    assert!(e.contains("left operand has"), "{e}");
    g.check().unwrap();
}

#[test]
fn gpu_training_follows_the_cpu_run() {
    const SEQ: usize = 16;
    let src = tiny_model(tiny_config(Arch::Llama, 0), 3);
    let toks = tokens(6 * SEQ, src.config.vocab, 5);
    let o = FullOptions::paper(2, STEPS, LR, SEQ, 2);
    let mut cpu = Trainer::new(&src, "tiny", toks.clone(), o.clone()).unwrap();
    let mut on_gpu = Trainer::new(&src, "tiny", toks, o).unwrap();
    on_gpu.set_gemm(Box::new(train_gemm()));
    assert_eq!(cpu.backend(), "cpu");
    assert!(
        on_gpu.backend().starts_with("gpu: "),
        "{}",
        on_gpu.backend()
    );
    let mut worst = 0f64;
    for _ in 0..STEPS {
        let (a, b) = (cpu.step().unwrap(), on_gpu.step().unwrap());
        for (x, y, what) in [
            (a.loss, b.loss, "loss"),
            (a.kl, b.kl, "KL"),
            (a.hidden, b.hidden, "hidden"),
            (a.grad_norm, b.grad_norm, "gradient norm"),
        ] {
            let e = (x - y).abs() / x.abs();
            worst = worst.max(e);
            assert!(
                e <= LOSS_TOL,
                "step {}: {what} cpu {x} gpu {y} ({e:e})",
                a.step
            );
        }
    }
    let (ta, tb) = (cpu.checkpoint().unwrap(), on_gpu.checkpoint().unwrap());
    let (sa, sb) = (
        safetensors::SafeTensors::deserialize(&ta).unwrap(),
        safetensors::SafeTensors::deserialize(&tb).unwrap(),
    );
    let floats = |b: &[u8]| -> Vec<f32> { bytemuck::pod_collect_to_vec(b) };
    let mut names = sa.names();
    names.sort();
    // 2 blocks × 7 linears × (latent, S_in, S_out, W_R), each with two AdamW moments.
    assert_eq!(names.len(), 2 * 7 * 4 * 3);
    let mut worst_value = 0f32;
    for n in names.iter().filter(|n| !n.contains("adam")) {
        let (x, y) = (
            floats(sa.tensor(n).unwrap().data()),
            floats(sb.tensor(n).unwrap().data()),
        );
        let mut d: Vec<f32> = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).collect();
        d.sort_by(f32::total_cmp);
        let (most, max) = (d[d.len() * 9 / 10], d[d.len() - 1]);
        worst_value = worst_value.max(max);
        assert!(max <= VALUE_TOL, "{n}: a value differs by {max:e}");
        if !n.ends_with(".router") {
            assert!(
                most <= MOST_TOL,
                "{n}: a tenth of the values differ by {most:e} or more"
            );
        }
    }
    eprintln!("worst difference: losses {worst:e} (relative), trained values {worst_value:e}");
}

#[test]
fn the_cli_trains_on_the_gpu_and_writes_a_file_eval_loads() {
    let dir = root().join("target/test-gpu-train");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("g.qlab").to_str().unwrap().to_string();
    let (_, log) = quantlab(&[
        "binarize",
        "--model",
        "tests/fixtures/tiny/llama",
        "--text",
        "www/texts/dialogue.txt",
        "--method",
        "binarymos",
        "--experts",
        "2",
        "--mode",
        "full",
        "--backend",
        "gpu",
        "--steps",
        "2",
        "--lr",
        "1e-3",
        "--seq-len",
        "16",
        "--batch",
        "2",
        "--keep-first",
        "64",
        "--out",
        &out,
    ]);
    assert!(log.contains("matrix products on gpu: "), "{log}");
    assert!(
        log.contains("step 2/2") && log.contains("tokens/s"),
        "{log}"
    );
    assert!(log.contains("s/step on the GPU"), "{log}");
    let f = quantlab::model::qlab::read("g.qlab", &std::fs::read(&out).unwrap()).unwrap();
    let bin = &f.info["extra"]["binarize"];
    assert!(
        bin["backend"].as_str().unwrap().starts_with("gpu: "),
        "{bin}"
    );
    assert_eq!(bin["steps"], 2, "{bin}");
    let ev = last_json(
        &quantlab(&[
            "eval",
            "--model",
            &out,
            "--text",
            "www/texts/prose.txt",
            "--ctx",
            "32",
            "--windows",
            "2",
            "--no-kl",
            "--json",
        ])
        .0,
    );
    assert!(ev["ppl"].as_f64().unwrap().is_finite(), "{ev}");
}
