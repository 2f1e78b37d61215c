//! The packed-f16 product (`shaders/matmul_f16.wgsl`: `--precision f16` on devices with f16
//! shader values but no cooperative matrices; the page's f16 choice where the browser offers
//! `shader-f16`) against the CPU reference's f32 product, for several storage formats, edges
//! and split-K; and a whole model's perplexity at f16 against f32. Natively on whatever adapter
//! wgpu finds: Mesa lavapipe (the CI machine) offers SHADER_F16 but no cooperative matrices, so
//! it runs this kernel (the product test forces it on devices with tensor cores too; the
//! perplexity test there measures the tensor cores). A device with neither is refused
//! (tests/gpu_coop.rs).

#[path = "common/cli.rs"]
mod cli;
#[path = "common/f16_check.rs"]
mod f16_check;
#[path = "common/gpu_check.rs"]
mod gpu_check;
#[path = "common/rng.rs"]
mod rng;
use f16_check::{check, ggml};
use gpu_check::gpu;
use rng::Rng;

use quantlab::format::ggml::GgmlType;
use quantlab::format::{Granularity, IntSpec, QTensor};
use quantlab::gpu::Precision;
use quantlab::quant::rtn::{self, RtnOptions};

/// Error relative to the output's largest magnitude. Each input is rounded to f16 (≤ 2⁻¹¹
/// relative) and each product to f16 (≤ 2⁻¹¹ more); the sums are f32, so over random-sign
/// terms the error stays a few 2⁻¹¹ (4.9e-4) of the output's scale whatever k. Measured on
/// lavapipe: 2.9e-4 to 5.5e-4 over the formats and shapes below; the bound leaves room (2.7×)
/// for devices that round f16 products differently.
const F16_TOL: f32 = 1.5e-3;

/// `w` as 3-bit integers with asymmetric groups of 32 (the project's RTN): a format whose
/// `w_load4` unpacks codes that straddle bytes.
fn int3(w: &[f32], n: usize, k: usize) -> QTensor {
    let spec = IntSpec {
        bits: 3,
        gran: Granularity::Group(32),
        sym: false,
    };
    rtn::quantize(w, n, k, spec, &RtnOptions::default(), "w").unwrap()
}

#[test]
fn packed_f16_product_matches_cpu_for_several_formats() {
    let g = gpu();
    // On devices with tensor cores too, where `--precision f16` would take those instead.
    g.force_packed_f16(true).unwrap();
    g.set_precision(Precision::F16).unwrap();
    let mut r = Rng(21);
    // k = 99: a row length not a multiple of 4 (the loads' per-element edge path).
    let w = r.vec(70 * 99);
    check(&g, &QTensor::from_f32(70, 99, &w), 37, true, 1, F16_TOL);
    // Partial tiles (37 tokens, 70 rows) and several tiles with split-K; k = 256·n for the
    // k-quants' 256-weight super-blocks.
    for (m, n, k) in [(37, 70, 256), (100, 130, 512)] {
        let w = r.vec(n * k);
        check(&g, &QTensor::from_f32(n, k, &w), m, true, 2, F16_TOL);
        check(&g, &ggml(GgmlType::Q4_0, n, k, &w), m, false, 3, F16_TOL);
        check(&g, &ggml(GgmlType::Q4_1, n, k, &w), m, true, 4, F16_TOL);
        check(&g, &ggml(GgmlType::Q8_0, n, k, &w), m, false, 5, F16_TOL);
        check(&g, &ggml(GgmlType::Q4_K, n, k, &w), m, true, 6, F16_TOL);
        check(&g, &ggml(GgmlType::Q6_K, n, k, &w), m, false, 7, F16_TOL);
        check(&g, &int3(&w, n, k), m, true, 8, F16_TOL);
    }
}

/// Perplexity at f16 against the CPU backend's (f32), relative. The tiny Llama's random weights
/// give a perplexity of ~2,800 (10× its vocabulary), far more sensitive to rounding than a
/// trained model: measured on lavapipe 0.12 % (2,784.35 vs 2,787.66), so the bound is 0.3 %,
/// not the 0.1 % the issue asks of a real model (docs/gpu-perf.md measures that one).
const PPL_REL_TOL: f64 = 3e-3;

#[test]
fn packed_f16_perplexity_matches_cpu_on_the_tiny_llama() {
    let ppl = |backend: &str, precision: &str| {
        let a = [
            "eval",
            "--model",
            "tests/fixtures/tiny/llama",
            "--text",
            "www/texts/prose.txt",
            "--ctx",
            "64",
            "--windows",
            "2",
            "--backend",
            backend,
            "--precision",
            precision,
            "--json",
        ];
        cli::last_json(&cli::quantlab(&a).0)["ppl"]
            .as_f64()
            .unwrap()
    };
    let (c, g) = (ppl("cpu", "f32"), ppl("gpu", "f16"));
    eprintln!("tiny llama PPL: cpu f32 {c:.5}, gpu f16 {g:.5}");
    assert!(c.is_finite() && c > 1.0, "{c}");
    assert!(
        ((c - g) / c).abs() <= PPL_REL_TOL,
        "cpu f32 {c} vs gpu f16 {g}"
    );
}
