//! The f16 tensor-core product (`shaders/matmul_coop.wgsl`, `--precision f16`) against the CPU
//! reference, where the adapter has cooperative matrices; where it has none (Mesa lavapipe, the
//! CI machine, every browser), that the precision is refused with the reason and the f32
//! reference stays in use. The benchmark (`quantlab bench --backend gpu --precision f16`) and
//! the perplexity comparison run on the GPU machine (docs/gpu-perf.md).

#[path = "common/cli.rs"]
mod cli;
#[path = "common/gpu_check.rs"]
mod gpu_check;
#[path = "common/rng.rs"]
mod rng;
use gpu_check::{act, close, gpu, read};
use rng::Rng;

use quantlab::format::ggml::quantize::quantize;
use quantlab::format::ggml::GgmlType;
use quantlab::format::{Format, QTensor};
use quantlab::gpu::{Gpu, MatmulVariant, Precision};
use quantlab::model::backend::Backend;
use quantlab::model::cpu::Cpu;

/// Inputs rounded to f16 (relative error ≤ 2⁻¹¹ each) and products summed in f32: over k ≤ 576
/// random-sign terms the output's error stays within a few 2⁻¹¹ of its largest magnitude.
const COOP_TOL: f32 = 4e-3;

fn check(g: &Gpu, w: &QTensor, m: usize, bias: bool, seed: u64) {
    let mut r = Rng(seed);
    let x = r.vec(m * w.cols);
    let b = bias.then(|| r.vec(w.rows));
    let want = Cpu.linear(
        &act(m, w.cols, x.clone()),
        &Cpu.load_matrix(w, b.as_deref()).unwrap(),
    );
    let gm = g.load_matrix(w, b.as_deref()).unwrap();
    let gx = g.upload_act(m, w.cols, &x).unwrap();
    for tile in [MatmulVariant::Tiled, MatmulVariant::SplitK] {
        g.force_matmul(Some(tile));
        let got = g.linear(&gx, &gm);
        close(
            &read(g, &got),
            &want.data,
            COOP_TOL,
            &format!(
                "f16 {} {m}×{}→{} {}",
                w.format.name(),
                w.cols,
                w.rows,
                tile.name()
            ),
        );
    }
    g.force_matmul(None);
}

#[test]
fn f16_tensor_cores_match_cpu_or_are_refused_with_the_reason() {
    let g = gpu();
    if !g.ctx.coop {
        let e = g.set_precision(Precision::F16).unwrap_err().to_string();
        assert!(e.contains("cooperative matrices"), "{e}");
        assert!(e.contains("--precision f32"), "{e}");
        assert_eq!(g.precision(), Precision::F32);
        eprintln!("no tensor cores on {}: {e}", g.ctx.describe());
        return;
    }
    g.set_precision(Precision::F16).unwrap();
    let mut r = Rng(11);
    // Edges (37 tokens, 70 rows: partial tiles), several tiles with split-K, and the formats
    // the default model stores (Q4_1 linears, Q8_0 head) besides plain f32.
    for (m, n, k) in [(37, 70, 96), (130, 200, 576)] {
        let w = r.vec(n * k);
        check(&g, &QTensor::from_f32(n, k, &w), m, true, 1);
        check(&g, &ggml(GgmlType::Q4_1, n, k, &w), m, false, 2);
        check(&g, &ggml(GgmlType::Q8_0, n, k, &w), m, true, 3);
    }
}

fn ggml(t: GgmlType, rows: usize, cols: usize, w: &[f32]) -> QTensor {
    let bytes = quantize(t, w, rows, cols).unwrap();
    QTensor::new(Format::Ggml(t), rows, cols, bytes).unwrap()
}

#[test]
fn f16_on_the_cpu_backend_is_refused() {
    let out = cli::run(&[
        "eval",
        "--model",
        "tests/fixtures/tiny/llama",
        "--text",
        "tests/data/wikitext-2-raw-test.txt",
        "--precision",
        "f16",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--precision") && err.contains("--backend gpu"),
        "{err}"
    );
}
