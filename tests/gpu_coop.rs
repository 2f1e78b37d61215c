//! The f16 tensor-core products (`shaders/matmul_coop.wgsl` and the wide
//! `matmul_coop_wide.wgsl`, `--precision f16`) against the CPU reference, where the adapter has
//! cooperative matrices; where it has none but has f16 shader values (Mesa lavapipe, the CI
//! machine), that f16 is taken by the packed-f16 kernel (tests/gpu_f16.rs checks its results);
//! where it has neither, that the precision is refused with the reason and the f32 reference
//! stays in use. The benchmark (`quantlab bench --backend gpu --precision f16`) and
//! the perplexity comparison run on the GPU machine (docs/gpu-perf.md).

#[path = "common/cli.rs"]
mod cli;
#[path = "common/f16_check.rs"]
mod f16_check;
#[path = "common/gpu_check.rs"]
mod gpu_check;
#[path = "common/rng.rs"]
mod rng;
use f16_check::{check, ggml};
use gpu_check::{act, close, gpu, read};
use rng::Rng;

use quantlab::format::ggml::GgmlType;
use quantlab::format::{AddOns, QTensor};
use quantlab::gpu::{AttentionVariant, Gpu, MatmulGen, Precision};
use quantlab::model::backend::Backend;
use quantlab::model::cpu::Cpu;

/// Inputs rounded to f16 (relative error ≤ 2⁻¹¹ each) and products summed in f32: over k ≤ 576
/// random-sign terms the output's error stays within a few 2⁻¹¹ of its largest magnitude.
const COOP_TOL: f32 = 4e-3;

#[test]
fn f16_tensor_cores_match_cpu_or_are_refused_with_the_reason() {
    let g = gpu();
    if !g.ctx.coop && g.ctx.f16 {
        g.set_precision(Precision::F16).unwrap();
        assert_eq!(g.precision(), Precision::F16);
        eprintln!(
            "no tensor cores on {}: packed f16 instead",
            g.ctx.describe()
        );
        return;
    }
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
    // Edges (37 tokens, 70 rows: partial tiles), several tiles with split-K (also of the
    // 128×128 wide kernel, whose forced split of k = 224 ends mid-slice), and the formats
    // the default model stores (Q4_1 linears, Q8_0 head) besides plain f32.
    for (m, n, k) in [(37, 70, 96), (130, 200, 576), (300, 270, 224)] {
        let w = r.vec(n * k);
        check(&g, &QTensor::from_f32(n, k, &w), m, true, 1, COOP_TOL);
        check(&g, &ggml(GgmlType::Q4_1, n, k, &w), m, false, 2, COOP_TOL);
        check(&g, &ggml(GgmlType::Q8_0, n, k, &w), m, true, 3, COOP_TOL);
    }
}

/// The all-f16 product of `MatmulGen::V7` (activations and weight converted to f16 in
/// storage; shaders/matmul_h16.wgsl) against the CPU, where there are tensor cores: whole
/// 128×128 tiles stored straight from the accumulators, partial tiles and a bias through
/// workgroup memory, the default model's formats and the CMPQ-style f16 weight, a k that is
/// not a multiple of the staged kernels' 32-wide stage (V7's kernel then); each product must have taken that
/// path (smaller ones and forced variants keep the older kernels), and a second product with
/// the same weight reuses its decoded copy (`Mat::h16`).
#[test]
fn all_f16_products_match_cpu() {
    let g = gpu();
    if !g.ctx.coop {
        eprintln!("no tensor cores on {}: nothing to check", g.ctx.describe());
        return;
    }
    g.set_precision(Precision::F16).unwrap();
    let mut r = Rng(17);
    g.set_matmul_gen(MatmulGen::V7);
    products_match_cpu(&g, &mut r, MatmulGen::V7);
    shared_rows_convert_again(&g, &mut r);
    g.set_matmul_gen(MatmulGen::default());
}

/// The same for `MatmulGen::V8`'s staged kernel (shaders/matmul_h16_staged.wgsl; in its own
/// test, so that a driver failing on it does not hide V7's result).
#[test]
fn staged_f16_products_match_cpu() {
    let g = gpu();
    if !g.ctx.coop {
        eprintln!("no tensor cores on {}: nothing to check", g.ctx.describe());
        return;
    }
    g.set_precision(Precision::F16).unwrap();
    g.set_matmul_gen(MatmulGen::V8);
    products_match_cpu(&g, &mut Rng(17), MatmulGen::V8);
    g.set_matmul_gen(MatmulGen::default());
}

/// The same for `MatmulGen::V12`: V8's kernel with its tiles as arrays of 16-byte pieces
/// (shaders/h16_tiles_nested.wgsl), whose fragments run from one piece into the next.
#[test]
fn nested_tile_f16_products_match_cpu() {
    let g = gpu();
    if !g.ctx.coop {
        eprintln!("no tensor cores on {}: nothing to check", g.ctx.describe());
        return;
    }
    g.set_precision(Precision::F16).unwrap();
    g.set_matmul_gen(MatmulGen::V12);
    products_match_cpu(&g, &mut Rng(17), MatmulGen::V12);
    // The same fragments in the same order as V8's flat tiles: the same bits.
    let mut r = Rng(23);
    let (m, n, k) = (1100, 270, 576);
    let t = ggml(GgmlType::Q4_1, n, k, &r.vec(n * k));
    let x = r.vec(m * k);
    let mut outs = Vec::new();
    for gen in [MatmulGen::V8, MatmulGen::V12] {
        g.set_matmul_gen(gen);
        let gm = g.load_matrix(&t, None).unwrap();
        let gx = g.upload_act(m, k, &x).unwrap();
        outs.push(read(&g, &g.linear(&gx, &gm)));
    }
    assert_eq!(
        outs[0], outs[1],
        "V12's nested tiles gave other bits than V8's flat ones"
    );
    g.set_matmul_gen(MatmulGen::default());
}

/// One generation's all-f16 products of several shapes, formats and biases against the CPU.
fn products_match_cpu(g: &Gpu, r: &mut Rng, gen: MatmulGen) {
    for (m, n, k, bias) in [
        (1280, 256, 64, false),
        (1030, 200, 96, true),
        (1040, 130, 80, true),
        (1100, 270, 576, false),
        (1024, 576, 1536, false),
    ] {
        let w = r.vec(n * k);
        let b = bias.then(|| r.vec(n));
        let x = r.vec(m * k);
        // ggml's blocks are 32 wide: at other k, plain f32 only.
        let mut formats = vec![QTensor::from_f32(n, k, &w)];
        if k % 32 == 0 {
            formats.push(ggml(GgmlType::Q4_1, n, k, &w));
            formats.push(ggml(GgmlType::Q8_0, n, k, &w));
        }
        for t in formats {
            let want = Cpu.linear(
                &act(m, k, x.clone()),
                &Cpu.load_matrix(&t, b.as_deref()).unwrap(),
            );
            let gm = g.load_matrix(&t, b.as_deref()).unwrap();
            let gx = g.upload_act(m, k, &x).unwrap();
            let (before, decoded) = (g.h16_products(), g.h16_decoded());
            let got = g.linear(&gx, &gm);
            let what = format!("{} {} {m}×{k}→{n} bias {bias}", gen.name(), t.format.name());
            assert_eq!(
                g.h16_products(),
                before + 1,
                "{what}: not the all-f16 product"
            );
            assert_eq!(g.h16_decoded(), decoded + 1, "{what}: no kept f16 copy");
            let got = read(g, &got);
            close(&got, &want.data, COOP_TOL, &what);
            // Again with the same weight: its kept copy, not a second decode, and the same bits.
            let again = read(g, &g.linear(&gx, &gm));
            assert_eq!(g.h16_decoded(), decoded + 1, "{what}: decoded twice");
            assert_eq!(again, got, "{what}: the kept copy gave other results");
        }
    }
}

/// A weight with sparse outliers (the add-on CMPQ stores) in the all-f16 products: written into
/// the weight's f16 copy (shaders/outliers_f16.wgsl) instead of a pass after the product,
/// checked against the CPU for V7 and V8, two bases, a bias, and outliers sharing words (odd
/// and even neighbours in a row); the copy, once made, serves a second product.
#[test]
fn outliers_in_the_f16_copy_match_cpu() {
    let g = gpu();
    if !g.ctx.coop {
        eprintln!("no tensor cores on {}: nothing to check", g.ctx.describe());
        return;
    }
    g.set_precision(Precision::F16).unwrap();
    let mut r = Rng(23);
    let (m, n, k) = (1100, 270, 576);
    let x = r.vec(m * k);
    let b = r.vec(n);
    // Positions: a run of neighbours in row 3 (two to a word), then spread ones.
    let mut idx: Vec<u32> = (0..6).map(|c| (3 * k + 100 + c) as u32).collect();
    idx.extend((0..300).map(|_| r.next_u32() % (n * k) as u32));
    idx.sort_unstable();
    idx.dedup();
    let mut bytes: Vec<u8> = idx.iter().flat_map(|i| i.to_le_bytes()).collect();
    bytes.extend(r.f16s(idx.len(), -4.0, 8.0));
    let addons = AddOns {
        outliers: idx.len(),
        lowrank: None,
    };
    let w = r.vec(n * k);
    for gen in [MatmulGen::V7, MatmulGen::V8, MatmulGen::V12] {
        g.set_matmul_gen(gen);
        for base in [QTensor::from_f32(n, k, &w), ggml(GgmlType::Q4_1, n, k, &w)] {
            let t = base.with_extra(addons, &bytes).unwrap();
            assert_ne!(t.dequantize().unwrap(), base.dequantize().unwrap());
            let want = Cpu.linear(
                &act(m, k, x.clone()),
                &Cpu.load_matrix(&t, Some(&b)).unwrap(),
            );
            let gm = g.load_matrix(&t, Some(&b)).unwrap();
            let gx = g.upload_act(m, k, &x).unwrap();
            let what = format!(
                "{} {} with {} outliers",
                gen.name(),
                t.format.name(),
                idx.len()
            );
            let before = g.h16_products();
            let got = read(&g, &g.linear(&gx, &gm));
            assert_eq!(
                g.h16_products(),
                before + 1,
                "{what}: not the all-f16 product"
            );
            close(&got, &want.data, COOP_TOL, &what);
            let again = read(&g, &g.linear(&gx, &gm));
            assert_eq!(again, got, "{what}: the kept copy gave other results");
        }
    }
    g.set_matmul_gen(MatmulGen::default());
}

/// The f16 copies written by the kernels that produce a product's input (shaders/add_rmsnorm.wgsl
/// `main_h16`, elementwise.wgsl `silu_mul_h16`): the next all-f16 product takes them instead
/// of converting (`Gpu::h16_converted` does not move), with the same bits as when it converts
/// the same rows itself (the same rows again after an unrelated kernel), and the produced f32
/// values are those of the unfused path.
#[test]
fn producers_f16_copies_match_the_conversion() {
    let g = gpu();
    if !g.ctx.coop {
        eprintln!("no tensor cores on {}: nothing to check", g.ctx.describe());
        return;
    }
    g.set_precision(Precision::F16).unwrap();
    let mut r = Rng(29);
    let (m, d, f) = (1040, 576, 1536);
    let (x, y, nw) = (r.vec(m * d), r.vec(m * d), r.vec(d));
    let w1 = g
        .load_matrix(&ggml(GgmlType::Q4_1, f, d, &r.vec(f * d)), None)
        .unwrap();
    let w2 = g
        .load_matrix(&ggml(GgmlType::Q4_1, d, f, &r.vec(d * f)), None)
        .unwrap();
    let gw = g.load_vector(&nw).unwrap();
    let (gy, up) = (
        g.upload_act(m, d, &y).unwrap(),
        g.upload_act(m, f, &r.vec(m * f)).unwrap(),
    );

    // Residual add + norm, then a product of its output.
    let mut gx = g.upload_act(m, d, &x).unwrap();
    let n = g.add_rmsnorm(&mut gx, &gy, &gw, 1e-5);
    let converted = g.h16_converted();
    let p1 = read(&g, &g.linear(&n, &w1));
    assert_eq!(
        g.h16_converted(),
        converted,
        "add_rmsnorm's f16 copy was not taken"
    );
    let mut ux = g.upload_act(m, d, &x).unwrap();
    g.add(&mut ux, &gy);
    let un = g.rmsnorm(&ux, &gw, 1e-5);
    assert_eq!(read(&g, &gx), read(&g, &ux), "add_rmsnorm's sum");
    assert_eq!(read(&g, &n), read(&g, &un), "add_rmsnorm's norm");
    let p2 = read(&g, &g.linear(&un, &w1));
    assert_eq!(
        g.h16_converted(),
        converted + 1,
        "the unfused rows were not converted"
    );
    assert_eq!(p1, p2, "the product of add_rmsnorm's f16 copy");

    // SwiGLU's gate, then the down projection of it.
    let mut gate = g.upload_act(m, f, &r.vec(m * f)).unwrap();
    let mut plain = g.upload_act(m, f, &read(&g, &gate)).unwrap();
    g.silu_mul(&mut gate, &up);
    let converted = g.h16_converted();
    let q1 = read(&g, &g.linear(&gate, &w2));
    assert_eq!(
        g.h16_converted(),
        converted,
        "silu_mul's f16 copy was not taken"
    );
    g.set_precision(Precision::F32).unwrap();
    g.silu_mul(&mut plain, &up);
    g.set_precision(Precision::F16).unwrap();
    assert_eq!(
        read(&g, &gate),
        read(&g, &plain),
        "silu_mul_h16's f32 values"
    );
    let q2 = read(&g, &g.linear(&plain, &w2));
    assert_eq!(
        g.h16_converted(),
        converted + 1,
        "the plain silu_mul rows were not converted"
    );
    assert_eq!(q1, q2, "the product of silu_mul's f16 copy");
}

/// Products of the same rows back to back share one f16 copy of them (`Gpu::h16_x`); a kernel
/// that writes the rows in between (here an add) must make the next product convert again.
fn shared_rows_convert_again(g: &Gpu, r: &mut Rng) {
    let (m, n, k) = (1100, 270, 576);
    let x = r.vec(m * k);
    let d = r.vec(m * k);
    let mut gx = g.upload_act(m, k, &x).unwrap();
    let cpu = |x: &[f32], t: &QTensor| {
        Cpu.linear(&act(m, k, x.to_vec()), &Cpu.load_matrix(t, None).unwrap())
            .data
    };
    let ws: Vec<QTensor> = (0..2)
        .map(|_| QTensor::from_f32(n, k, &r.vec(n * k)))
        .collect();
    for (i, t) in ws.iter().enumerate() {
        let got = g.linear(&gx, &g.load_matrix(t, None).unwrap());
        close(
            &read(g, &got),
            &cpu(&x, t),
            COOP_TOL,
            &format!("shared rows, product {i}"),
        );
    }
    g.add(&mut gx, &g.upload_act(m, k, &d).unwrap());
    let sum: Vec<f32> = x.iter().zip(&d).map(|(a, b)| a + b).collect();
    let got = g.linear(&gx, &g.load_matrix(&ws[0], None).unwrap());
    close(
        &read(g, &got),
        &cpu(&sum, &ws[0]),
        COOP_TOL,
        "rows written in between",
    );
}

/// Attention on tensor cores rounds Q, K, V and the probabilities to f16: each score is off by
/// about scale·Σ|q·k|·2⁻¹⁰ (≈ 3e-3 for 64 dimensions of values in [-1, 1]), which moves each
/// probability by as much relatively; the output, a weighted mean of V, moves by at most that
/// share of |V|. 1e-2 of the largest output leaves room for the roundings of P and V.
const ATTN_COOP_TOL: f32 = 1e-2;

/// `attention_coop.wgsl` (two passes over the keys, both products on tensor cores) against the
/// CPU's f32 attention where there are tensor cores: partial query blocks, grouped KV heads,
/// several key tiles, batched sequences. It runs only when forced (slower than tiled64 on the
/// H100) and only at head dimension 64.
#[test]
fn attention_on_tensor_cores_matches_cpu() {
    let g = gpu();
    if !g.ctx.coop {
        eprintln!("no tensor cores on {}: nothing to check", g.ctx.describe());
        return;
    }
    g.set_precision(Precision::F32).unwrap();
    assert_ne!(g.attention_variant(64), AttentionVariant::Coop);
    g.set_precision(Precision::F16).unwrap();
    assert_ne!(g.attention_variant(64), AttentionVariant::Coop);
    attention_matches_cpu(&g, AttentionVariant::Coop);
}

/// `attention_coop1.wgsl` (one pass over the keys, the softmax's maximum updated lazily), the
/// same way, and with scores that rise along the sequence by more than its threshold (so that
/// O is rescaled after the first tile too). It is the default at f16 (and never at f32).
#[test]
fn one_pass_attention_on_tensor_cores_matches_cpu() {
    let g = gpu();
    if !g.ctx.coop {
        eprintln!("no tensor cores on {}: nothing to check", g.ctx.describe());
        return;
    }
    assert_ne!(g.attention_variant(64), AttentionVariant::Coop1);
    g.set_precision(Precision::F16).unwrap();
    assert_eq!(g.attention_variant(64), AttentionVariant::Coop1);
    assert_ne!(g.attention_variant(32), AttentionVariant::Coop1);
    attention_matches_cpu(&g, AttentionVariant::Coop1);
    g.force_attention_variant(Some(AttentionVariant::Coop1));
    // Rising scores: q = 1, key j's entries 3·j/t (+ noise), so the score grows by 24 (scale
    // 1/8 × 64 dimensions × 3) over the sequence, three times the threshold; with noise of
    // ±0.3 per entry on top.
    let mut r = Rng(29);
    let (rows, h, kv, hd) = (512, 9, 3, 64);
    let q = vec![1.0f32; rows * h * hd];
    let k: Vec<f32> = (0..rows * kv * hd)
        .map(|i| 3.0 * (i / (kv * hd)) as f32 / rows as f32 + 0.3 * r.vec(1)[0])
        .collect();
    let v = r.vec(rows * kv * hd);
    let what = "coop1 attention, rising scores";
    attention_close(&g, (rows, rows, h, kv), (&q, &k, &v), what);
    g.force_attention_variant(None);
    g.set_precision(Precision::default()).unwrap();
}

/// The GPU's attention (the kernel in force) on `rows` rows in sequences of `t`, with `h` query
/// and `kv` KV heads of 64, against the CPU's f32 attention within `ATTN_COOP_TOL`.
fn attention_close(
    g: &Gpu,
    (rows, t, h, kv): (usize, usize, usize, usize),
    (q, k, v): (&[f32], &[f32], &[f32]),
    what: &str,
) {
    let hd = 64;
    let want = Cpu.attention(
        &act(rows, h * hd, q.to_vec()),
        &act(rows, kv * hd, k.to_vec()),
        &act(rows, kv * hd, v.to_vec()),
        h,
        kv,
        hd,
        t,
    );
    let got = g.attention(
        &g.upload_act(rows, h * hd, q).unwrap(),
        &g.upload_act(rows, kv * hd, k).unwrap(),
        &g.upload_act(rows, kv * hd, v).unwrap(),
        h,
        kv,
        hd,
        t,
    );
    close(&read(g, &got), &want.data, ATTN_COOP_TOL, what);
}

/// Tensor-core attention `variant` (forced) against the CPU's f32 attention: partial query
/// blocks, grouped KV heads, several key tiles, batched sequences.
fn attention_matches_cpu(g: &Gpu, variant: AttentionVariant) {
    g.force_attention_variant(Some(variant));
    assert_eq!(g.attention_variant(64), variant);
    assert_ne!(g.attention_variant(32), variant);
    let mut r = Rng(23);
    // (rows, sequence length, heads, KV heads): 70 crosses the 64-query block and the 32-key
    // tile; 300 = 3 sequences of 100; 512 the evaluation window.
    for (rows, t, h, kv) in [
        (70, 70, 6, 2),
        (300, 100, 9, 3),
        (512, 512, 9, 3),
        (33, 33, 4, 4),
    ] {
        let hd = 64;
        let (q, k, v) = (
            r.vec(rows * h * hd),
            r.vec(rows * kv * hd),
            r.vec(rows * kv * hd),
        );
        let what = format!(
            "{} attention {rows} rows of {t}, {h}/{kv} heads",
            variant.name()
        );
        attention_close(g, (rows, t, h, kv), (&q, &k, &v), &what);
    }
    g.force_attention_variant(None);
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

/// `quantlab eval --backend gpu` on the tiny model with `var=value` set: it must fail before
/// any work, naming the variable, the value and `expected` (one of the values it takes).
fn refused_env(var: &str, value: &str, expected: &str) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quantlab"))
        .args(TINY_EVAL)
        .env(var, value)
        .current_dir(cli::root())
        .output()
        .expect("run quantlab");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(var) && err.contains(&format!("{value:?}")) && err.contains(expected),
        "{err}"
    );
}

/// `QUANTLAB_MATMUL` (the kernel generation, for timing v5 … v12 with one binary) is refused
/// with the values it takes when it holds anything else.
#[test]
fn an_unknown_matmul_generation_is_refused() {
    refused_env("QUANTLAB_MATMUL", "v13", "v12");
}

/// `QUANTLAB_ATTENTION` (the attention kernel, for timing) likewise.
#[test]
fn an_unknown_attention_kernel_is_refused() {
    refused_env("QUANTLAB_ATTENTION", "flash", "tiled64, coop, coop1");
}

/// `QUANTLAB_EVAL_ROWS` (tokens per evaluation batch, for timing) likewise: not a number, or
/// none of the sizes it takes.
#[test]
fn a_bad_eval_batch_size_is_refused() {
    refused_env("QUANTLAB_EVAL_ROWS", "lots", "1 to 1048576");
    refused_env("QUANTLAB_EVAL_ROWS", "0", "1 to 1048576");
}

/// `QUANTLAB_SHADER_CHECKS` (what wgpu adds to the kernels, for timing) likewise.
#[test]
fn an_unknown_shader_checks_value_is_refused() {
    refused_env("QUANTLAB_SHADER_CHECKS", "off", "bounds");
}

/// `quantlab eval` of the tiny Llama on the GPU: two windows of 64 tokens of the prose text.
const TINY_EVAL: [&str; 12] = [
    "eval",
    "--backend",
    "gpu",
    "--model",
    "tests/fixtures/tiny/llama",
    "--text",
    "www/texts/prose.txt",
    "--ctx",
    "64",
    "--windows",
    "2",
    "--json",
];

/// `TINY_EVAL` with `QUANTLAB_SHADER_DIR=dir`: (success, stdout, stderr).
fn eval_with_shader_dir(dir: &std::path::Path) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quantlab"))
        .args(TINY_EVAL)
        .env("QUANTLAB_SHADER_DIR", dir)
        .current_dir(cli::root())
        .output()
        .expect("run quantlab");
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// A fresh folder holding `files` (name, text).
fn shader_dir(tag: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("quantlab-shaders-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("mkdir");
    for (name, text) in files {
        std::fs::write(d.join(name), text).expect("write");
    }
    d
}

/// `QUANTLAB_SHADER_DIR` (kernel work on a GPU machine: many versions of a kernel per call with
/// one binary) replaces a file of shaders/ with the folder's file of the same name, and that is
/// what runs: an identical copy of add_rmsnorm.wgsl gives the same perplexity to the last bit,
/// one whose norm is scaled by 1.5 gives another; stderr names what was replaced.
#[test]
fn a_shader_dir_replaces_the_kernels_it_names() {
    let ppl = |out: &str| cli::last_json(out)["ppl"].as_f64().unwrap();
    let built_in = ppl(&cli::quantlab(&TINY_EVAL).0);
    let src = std::fs::read_to_string(cli::root().join("shaders/add_rmsnorm.wgsl")).unwrap();
    let same = shader_dir(
        "same",
        &[("add_rmsnorm.wgsl", &src), ("notes.txt", "not a kernel")],
    );
    let (ok, out, err) = eval_with_shader_dir(&same);
    assert!(ok, "{err}");
    assert_eq!(ppl(&out), built_in);
    assert!(
        err.contains("shaders/ add_rmsnorm.wgsl replaced from"),
        "{err}"
    );
    let norm = "return inverseSqrt(part[0] / f32(P.cols) + P.eps);";
    assert!(src.contains(norm), "the line the test changes");
    let scaled = src.replace(
        norm,
        "return 1.5 * inverseSqrt(part[0] / f32(P.cols) + P.eps);",
    );
    let other = shader_dir("other", &[("add_rmsnorm.wgsl", &scaled)]);
    let (ok, out, err) = eval_with_shader_dir(&other);
    assert!(ok, "{err}");
    let changed = ppl(&out);
    assert!(
        (changed - built_in).abs() > 0.01 * built_in,
        "{changed} vs {built_in}"
    );
    let _ = std::fs::remove_dir_all(same);
    let _ = std::fs::remove_dir_all(other);
}

/// A shader folder that replaces nothing, holds no kernel, is not there, or holds a kernel that
/// does not compile is refused with the reason.
#[test]
fn bad_shader_dirs_are_refused_with_the_reason() {
    let unknown = shader_dir("unknown", &[("flash.wgsl", "fn main() {}")]);
    let empty = shader_dir("empty", &[]);
    let broken = shader_dir("broken", &[("add_rmsnorm.wgsl", "fn x(")]);
    let missing = std::env::temp_dir().join("quantlab-shaders-not-there");
    for (dir, says) in [
        (
            &unknown,
            "QUANTLAB_SHADER_DIR: flash.wgsl replaces no file of shaders/",
        ),
        (&empty, "holds no .wgsl file"),
        (&missing, "quantlab-shaders-not-there"),
        // wgpu's compile error names the module by its pipeline label.
        (&broken, "'add_rmsnorm:main'"),
    ] {
        let (ok, _, err) = eval_with_shader_dir(dir);
        assert!(!ok && err.contains(says), "{}: {err}", dir.display());
    }
    for d in [unknown, empty, broken] {
        let _ = std::fs::remove_dir_all(d);
    }
}
