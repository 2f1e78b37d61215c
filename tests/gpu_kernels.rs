//! Every GPU kernel against the CPU reference backend (src/model/cpu.rs) and the format table's
//! dequantization (`QTensor::dequantize`), on seeded random data, natively on whatever adapter
//! wgpu finds (Mesa lavapipe on machines without a GPU). Sizes are small and deliberately not
//! multiples of the kernels' tiles, so edge handling is exercised.

#[path = "common/gpu_check.rs"]
mod gpu_check;
#[path = "common/rng.rs"]
mod rng;
use gpu_check::{act, close, gpu, read};
use rng::Rng;

use quantlab::format::ggml::GgmlType;
use quantlab::format::{Format, Granularity, IntSpec, QTensor};
use quantlab::gpu::{AttentionVariant, Gpu, GpuContext, MatmulGen, MatmulVariant, ShaderChecks};
use quantlab::model::backend::Backend;
use quantlab::model::config::RopeStyle;
use quantlab::model::cpu::Cpu;

/// Matrix products: f32 sums in a different order than SGEMM; error relative to the output's
/// largest magnitude.
const MATMUL_TOL: f32 = 1e-5;
/// Dequantized gathers: the same f32 arithmetic, up to a fused multiply-add.
const EMBED_TOL: f32 = 1e-6;
/// RMSNorm (f32 reduction on the GPU, f64 on the CPU), RoPE (same host-computed angles).
const NORM_TOL: f32 = 1e-5;
const ROPE_TOL: f32 = 1e-6;
/// Attention: online softmax vs two-pass softmax, in f32.
const ATTN_TOL: f32 = 1e-5;
/// SiLU·mul and add: one or two f32 operations per element.
const ELEMENTWISE_TOL: f32 = 1e-6;
/// LayerNorm: f32 corrected two-pass mean/variance on the GPU, f64 on the CPU. `inverseSqrt` may
/// be 2 ulp off (2.4e-7) plus a few roundings; lavapipe's worst is 1.9e-7. Tighter than NORM_TOL
/// on purpose: a plain f32 two-pass (no correction of the mean) errs by 4.6e-5 on rows at
/// 1000 ± 1, so this tolerance tells the two apart.
const LAYERNORM_TOL: f32 = 1e-6;
/// GELU (tanh approximation): a handful of f32 operations and the driver's `tanh`, which may be
/// an ulp or two off near ±1 (lavapipe's tanh(−8.45) is −1, the CPU's −1 + 2⁻²³: 3e-7 at x = −5);
/// relative to the largest output for random data, per element (to max(|y|, 1)) in the tails.
const GELU_TOL: f32 = 1e-6;
/// Log-softmax scores: f32 reductions over the vocabulary on the GPU, f64 on the CPU; nats.
const NLL_TOL: f64 = 1e-4;
const KL_TOL: f64 = 1e-4;

#[test]
fn context_reports_adapter_and_limits() {
    let c = pollster::block_on(GpuContext::new()).expect("adapter");
    assert!(!c.info.name.is_empty());
    // WebGPU's default is 128 MiB; we asked for the adapter's own (lavapipe and real GPUs
    // report at least that).
    assert!(
        c.limits.max_storage_buffer_binding_size >= 128 << 20,
        "{:?}",
        c.limits
    );
    eprintln!("adapter: {}", c.describe());
}

/// GPU `linear` against the CPU on the same stored tensor (the CPU expands it with the format
/// table's `dequantize`, the GPU decodes it in the matmul's inner loop).
fn check_linear(g: &Gpu, w: &QTensor, bias: bool, seed: u64) {
    let mut r = Rng(seed);
    let m = 37;
    let x = r.vec(m * w.cols);
    let b = bias.then(|| r.vec(w.rows));
    let cm = Cpu.load_matrix(w, b.as_deref()).unwrap();
    let want = Cpu.linear(&act(m, w.cols, x.clone()), &cm);
    let gm = g.load_matrix(w, b.as_deref()).unwrap();
    let gx = g.upload_act(m, w.cols, &x).unwrap();
    // Every kernel variant (split-K is forced even where the default would not split).
    for tile in MatmulVariant::ALL {
        g.force_matmul(Some(tile));
        let got = g.linear(&gx, &gm);
        assert_eq!((got.rows, got.cols), (m, w.rows));
        close(
            &read(g, &got),
            &want.data,
            MATMUL_TOL,
            &format!("{} tile {}", w.format.name(), tile.name()),
        );
    }
    g.force_matmul(None);
}

fn int_tensor(r: &mut Rng, spec: IntSpec, rows: usize, cols: usize) -> QTensor {
    let groups = rows * cols / spec.gran.group_len(rows, cols, "t").unwrap();
    let mask = ((1u16 << spec.bits) - 1) as u32;
    let codes: Vec<u8> = (0..rows * cols)
        .map(|_| (r.next_u32() & mask) as u8)
        .collect();
    let scales: Vec<f32> = (0..groups).map(|_| 0.01 + 0.1 * r.next().abs()).collect();
    let zeros: Vec<u8> = (0..groups).map(|_| (r.next_u32() & mask) as u8).collect();
    QTensor::from_int_parts(spec, rows, cols, &codes, &scales, &zeros).unwrap()
}

/// Random ggml blocks with sane f16 scales (random bytes there could be NaN/inf).
fn ggml_tensor(r: &mut Rng, t: GgmlType, rows: usize, cols: usize) -> QTensor {
    let blocks = rows * cols / 32;
    let mut data = Vec::new();
    for _ in 0..blocks {
        let d = half::f16::from_f32(0.001 + 0.02 * r.next().abs());
        data.extend_from_slice(&d.to_le_bytes());
        match t {
            GgmlType::Q4_1 => {
                let m = half::f16::from_f32(0.1 * r.next());
                data.extend_from_slice(&m.to_le_bytes());
                data.extend(r.bytes(16));
            }
            GgmlType::Q8_0 => data.extend(r.bytes(32)),
            _ => unreachable!("only the formats the GPU decodes"),
        }
    }
    QTensor::new(Format::Ggml(t), rows, cols, data).unwrap()
}

#[test]
fn matmul_plain_formats() {
    let g = gpu();
    let mut r = Rng(1);
    let (n, k) = (70, 96);
    let w = r.vec(n * k);
    check_linear(&g, &QTensor::from_f32(n, k, &w), true, 2);
    let f16: Vec<u8> = w
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect();
    check_linear(&g, &QTensor::new(Format::F16, n, k, f16).unwrap(), false, 3);
    let bf16: Vec<u8> = w
        .iter()
        .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
        .collect();
    check_linear(
        &g,
        &QTensor::new(Format::BF16, n, k, bf16).unwrap(),
        true,
        4,
    );
}

/// Kernels compiled without wgpu's loop bounds, and without its index clamps too
/// (`ShaderChecks::Bounds`, `None`: timing options, src/gpu/pipelines.rs) compute the same
/// products to the bit as the fully checked ones, in every variant, for a plain and a packed
/// weight with partial tiles and a bias.
#[test]
fn kernels_without_wgpu_checks_give_the_same_bits() {
    let g = gpu();
    let mut r = Rng(31);
    let (m, n, k) = (70, 130, 224);
    let w = r.vec(n * k);
    let b = r.vec(n);
    let x = r.vec(m * k);
    let gx = g.upload_act(m, k, &x).unwrap();
    for t in [
        QTensor::from_f32(n, k, &w),
        ggml_tensor(&mut r, GgmlType::Q4_1, n, k),
    ] {
        let gm = g.load_matrix(&t, Some(&b)).unwrap();
        let run = |checks: ShaderChecks| {
            g.set_shader_checks(checks);
            MatmulVariant::ALL
                .iter()
                .map(|&v| {
                    g.force_matmul(Some(v));
                    read(&g, &g.linear(&gx, &gm))
                })
                .collect::<Vec<_>>()
        };
        let full = run(ShaderChecks::Full);
        for checks in [ShaderChecks::Bounds, ShaderChecks::None] {
            let got = run(checks);
            for ((v, a), b) in MatmulVariant::ALL.iter().zip(&full).zip(&got) {
                let same = a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits());
                assert!(
                    same,
                    "{} {} {}: differs",
                    t.format.name(),
                    v.name(),
                    checks.name()
                );
            }
        }
    }
    g.set_shader_checks(ShaderChecks::default());
    g.force_matmul(None);
}

#[test]
fn matmul_int_formats_every_width_and_granularity() {
    let g = gpu();
    let mut r = Rng(5);
    // 71 rows × 96: odd sizes, so packed sections end mid-word and tiles are partial.
    let (n, k) = (71, 96);
    for bits in 1..=8u8 {
        for sym in [true, false] {
            for gran in [
                Granularity::PerTensor,
                Granularity::PerRow,
                Granularity::Group(32),
            ] {
                let spec = IntSpec { bits, gran, sym };
                let w = int_tensor(&mut r, spec, n, k);
                check_linear(&g, &w, bits % 2 == 0, 10 + bits as u64);
            }
        }
    }
}

#[test]
fn matmul_ggml_blocks() {
    let g = gpu();
    let mut r = Rng(6);
    // 71 × 96 Q8_0 = 213 blocks of 34 bytes: the blob is not a whole number of words.
    for t in [GgmlType::Q4_1, GgmlType::Q8_0] {
        let w = ggml_tensor(&mut r, t, 71, 96);
        check_linear(&g, &w, false, 20);
        check_linear(&g, &w, true, 21);
    }
}

/// The wide kernels (`shaders/matmul_wide.wgsl`: 128×64 tiles, 8×8 per invocation; V9's
/// `matmul_wide2.wgsl`: 128×128, double-buffered) over several tiles in both directions, every
/// edge partial (300 tokens = 2 tiles + 44, 130 weight rows = 2 tiles + 2 or 1 + 2, k = 200 not
/// a multiple of the 16- or 8-wide slice's tile pair), whole and split-K, and `MatmulGen::V6` /
/// `V9` choosing them by itself at `WIDE_MIN_ROWS` tokens (what a batch of windows runs),
/// against the CPU.
#[test]
fn wide_matmul_several_tiles_and_the_default_choice() {
    let g = gpu();
    let mut r = Rng(30);
    let (m, n, k) = (300, 130, 200);
    let w = r.vec(n * k);
    let q41 = ggml_tensor(&mut r, GgmlType::Q4_1, n, 224);
    for (w, bias) in [(QTensor::from_f32(n, k, &w), true), (q41, false)] {
        let m = if w.cols == k { m } else { 1030 };
        let x = r.vec(m * w.cols);
        let b = bias.then(|| r.vec(w.rows));
        let want = Cpu.linear(
            &act(m, w.cols, x.clone()),
            &Cpu.load_matrix(&w, b.as_deref()).unwrap(),
        );
        let gm = g.load_matrix(&w, b.as_deref()).unwrap();
        let gx = g.upload_act(m, w.cols, &x).unwrap();
        for (v, gen) in [
            (Some(MatmulVariant::Wide), MatmulGen::V6),
            (Some(MatmulVariant::WideSplitK), MatmulGen::V6),
            (None, MatmulGen::V6),
            (None, MatmulGen::V5),
            (Some(MatmulVariant::Wide), MatmulGen::V9),
            (Some(MatmulVariant::WideSplitK), MatmulGen::V9),
            (None, MatmulGen::V9),
            (None, MatmulGen::V10),
            (Some(MatmulVariant::WideSplitK), MatmulGen::V11),
            (None, MatmulGen::V11),
            (None, MatmulGen::V12),
        ] {
            g.force_matmul(v);
            g.set_matmul_gen(gen);
            let got = g.linear(&gx, &gm);
            close(
                &read(&g, &got),
                &want.data,
                MATMUL_TOL,
                &format!("{} {m}×{}→{n} {v:?} {gen:?}", w.format.name(), w.cols),
            );
        }
    }
    // Fewer than `WIDE_MIN_ROWS` tokens but at least 256 tiles of 128×128 (the LM head's chunk
    // of one window): V9–V12 run the wide kernel there too, V6 the 64×64 one; all match the
    // CPU.
    let (m, n, k) = (255, 16384, 64);
    let w = QTensor::from_f32(n, k, &r.vec(n * k));
    let x = r.vec(m * k);
    let want = Cpu.linear(&act(m, k, x.clone()), &Cpu.load_matrix(&w, None).unwrap());
    let (gm, gx) = (
        g.load_matrix(&w, None).unwrap(),
        g.upload_act(m, k, &x).unwrap(),
    );
    for gen in [
        MatmulGen::V6,
        MatmulGen::V9,
        MatmulGen::V10,
        MatmulGen::V11,
        MatmulGen::V12,
    ] {
        g.set_matmul_gen(gen);
        let got = read(&g, &g.linear(&gx, &gm));
        close(
            &got,
            &want.data,
            MATMUL_TOL,
            &format!("head-like {m}×{k}→{n} {gen:?}"),
        );
    }
    g.force_matmul(None);
    g.set_matmul_gen(MatmulGen::default());
}

#[test]
fn embed_gathers_dequantized_rows() {
    let g = gpu();
    let mut r = Rng(7);
    let tokens = [5u32, 0, 70, 5, 33];
    let tables = [
        ggml_tensor(&mut r, GgmlType::Q8_0, 71, 64),
        ggml_tensor(&mut r, GgmlType::Q4_1, 71, 64),
        int_tensor(
            &mut r,
            IntSpec {
                bits: 3,
                gran: Granularity::Group(32),
                sym: false,
            },
            71,
            64,
        ),
    ];
    for t in &tables {
        let want = Cpu
            .embed(&Cpu.load_matrix(t, None).unwrap(), &tokens)
            .unwrap();
        let got = g.embed(&g.load_matrix(t, None).unwrap(), &tokens).unwrap();
        close(
            &read(&g, &got),
            &want.data,
            EMBED_TOL,
            &format!("embed {}", t.format.name()),
        );
    }
    let gm = g.load_matrix(&tables[0], None).unwrap();
    assert!(g.embed(&gm, &[71]).is_err(), "token outside the vocabulary");
}

#[test]
fn rmsnorm_silu_mul_add_and_the_fused_add_rmsnorm() {
    let g = gpu();
    let mut r = Rng(8);
    let (t, d) = (9, 576);
    let (x, w, y) = (r.vec(t * d), r.vec(d), r.vec(t * d));
    let want = Cpu.rmsnorm(&act(t, d, x.clone()), &w, 1e-5);
    let gx = g.upload_act(t, d, &x).unwrap();
    let got = g.rmsnorm(&gx, &g.load_vector(&w).unwrap(), 1e-5);
    close(&read(&g, &got), &want.data, NORM_TOL, "rmsnorm");

    let mut cg = act(t, d, x.clone());
    Cpu.silu_mul(&mut cg, &act(t, d, y.clone()));
    let mut gg = g.upload_act(t, d, &x).unwrap();
    g.silu_mul(&mut gg, &g.upload_act(t, d, &y).unwrap());
    close(&read(&g, &gg), &cg.data, ELEMENTWISE_TOL, "silu_mul");

    let mut ca = act(t, d, x.clone());
    Cpu.add(&mut ca, &act(t, d, y.clone()));
    let mut ga = g.upload_act(t, d, &x).unwrap();
    g.add(&mut ga, &g.upload_act(t, d, &y).unwrap());
    close(&read(&g, &ga), &ca.data, ELEMENTWISE_TOL, "add");

    // The fused residual add and norm (shaders/add_rmsnorm.wgsl): both results the same bits as
    // `add` then `rmsnorm` on the GPU, and close to the CPU's. 300 columns: a row longer than
    // the workgroup, and not a multiple of it.
    let d = 300;
    let (x, w, y) = (r.vec(t * d), r.vec(d), r.vec(t * d));
    let gw = g.load_vector(&w).unwrap();
    let mut fx = g.upload_act(t, d, &x).unwrap();
    let fused = g.add_rmsnorm(&mut fx, &g.upload_act(t, d, &y).unwrap(), &gw, 1e-5);
    let mut ux = g.upload_act(t, d, &x).unwrap();
    g.add(&mut ux, &g.upload_act(t, d, &y).unwrap());
    let unfused = g.rmsnorm(&ux, &gw, 1e-5);
    assert_eq!(read(&g, &fx), read(&g, &ux), "add_rmsnorm's sum");
    assert_eq!(read(&g, &fused), read(&g, &unfused), "add_rmsnorm's norm");
    let mut cx = act(t, d, x);
    let want = Cpu.add_rmsnorm(&mut cx, &act(t, d, y), &w, 1e-5);
    close(&read(&g, &fused), &want.data, NORM_TOL, "add_rmsnorm");
}

#[test]
fn rope_both_styles() {
    let g = gpu();
    let mut r = Rng(9);
    let (t, h, hd) = (11, 3, 64);
    let x = r.vec(t * h * hd);
    for style in [RopeStyle::Interleaved, RopeStyle::Half] {
        let mut c = act(t, h * hd, x.clone());
        Cpu.rope(&mut c, h, hd, 300, 10000.0, style, t);
        let mut gx = g.upload_act(t, h * hd, &x).unwrap();
        g.rope(&mut gx, h, hd, 300, 10000.0, style, t);
        close(
            &read(&g, &gx),
            &c.data,
            ROPE_TOL,
            &format!("rope {style:?}"),
        );
    }
}

/// Every attention kernel run (variant, key splits) that applies to head dimension `hd` on this
/// device: the split kernel at each split (splits the head dimension does not allow fall back
/// to the default), and each tiled variant the head dimension and workgroup memory allow.
fn attention_runs(g: &Gpu, hd: usize) -> Vec<(AttentionVariant, Option<usize>)> {
    let mut runs: Vec<_> = [None, Some(4), Some(8), Some(16)]
        .into_iter()
        .map(|ns| (AttentionVariant::Split, ns))
        .collect();
    // The tensor-core kernels round their inputs to f16: tests/gpu_coop.rs checks them.
    for v in AttentionVariant::ALL {
        let f32_tiled = !matches!(
            v,
            AttentionVariant::Split | AttentionVariant::Coop | AttentionVariant::Coop1
        );
        if f32_tiled && g.attention_variant_applies(v, hd) {
            runs.push((v, None));
        }
    }
    runs
}

#[test]
fn causal_attention_with_grouped_kv_heads() {
    let g = gpu();
    let mut r = Rng(10);
    // The tiled kernel is what runs at the default model's head dimension, so this device must
    // be able to run at least its smaller variant (lavapipe: 32 KiB of workgroup memory).
    assert!(
        g.attention_variant_applies(AttentionVariant::Tiled32, 64),
        "{} lacks the workgroup memory of attention_tiled.wgsl (32 queries: {} bytes)",
        g.ctx.describe(),
        quantlab::gpu::shaders::attention_tiled_bytes(32)
    );
    // 70 queries cross the kernels' 16-, 32- and 64-query blocks; 6 query heads share 2 KV
    // heads; 130 queries: several key tiles before the diagonal. 36: a head dimension that is a
    // multiple of 4 only.
    for (t, h, kv, hd) in [
        (70, 6, 2, 64),
        (130, 9, 3, 64),
        (5, 4, 4, 32),
        (33, 9, 3, 128),
        (19, 3, 3, 36),
    ] {
        let (q, k, v) = (r.vec(t * h * hd), r.vec(t * kv * hd), r.vec(t * kv * hd));
        let want = Cpu.attention(
            &act(t, h * hd, q.clone()),
            &act(t, kv * hd, k.clone()),
            &act(t, kv * hd, v.clone()),
            h,
            kv,
            hd,
            t,
        );
        for (var, ns) in attention_runs(&g, hd) {
            g.force_attention_variant(Some(var));
            g.force_attention_splits(ns);
            assert_eq!(g.attention_variant(hd), var);
            let got = g.attention(
                &g.upload_act(t, h * hd, &q).unwrap(),
                &g.upload_act(t, kv * hd, &k).unwrap(),
                &g.upload_act(t, kv * hd, &v).unwrap(),
                h,
                kv,
                hd,
                t,
            );
            close(
                &read(&g, &got),
                &want.data,
                ATTN_TOL,
                &format!(
                    "attention t{t} h{h}/{kv} hd{hd} {} splits {ns:?}",
                    var.name()
                ),
            );
        }
        g.force_attention_variant(None);
        g.force_attention_splits(None);
    }
    // Tiled variants fall back to the split kernel at other head dimensions.
    g.force_attention_variant(Some(AttentionVariant::Tiled32));
    assert_eq!(g.attention_variant(32), AttentionVariant::Split);
    g.force_attention_variant(None);
}

/// A batch of independent sequences (how evaluation runs several windows at once): GPU rope and
/// attention against the CPU reference with the same `seq`, which tests/cpu_reference.rs checks
/// against separate sequences.
#[test]
fn batched_sequences_rope_and_attention() {
    let g = gpu();
    let mut r = Rng(12);
    for (seq, n, h, kv, hd) in [(70, 3, 6, 2, 64), (16, 5, 9, 3, 64), (5, 2, 4, 4, 32)] {
        let rows = seq * n;
        let (q, k, v) = (
            r.vec(rows * h * hd),
            r.vec(rows * kv * hd),
            r.vec(rows * kv * hd),
        );
        let mut cq = act(rows, h * hd, q.clone());
        Cpu.rope(&mut cq, h, hd, 0, 10000.0, RopeStyle::Half, seq);
        let mut gq = g.upload_act(rows, h * hd, &q).unwrap();
        g.rope(&mut gq, h, hd, 0, 10000.0, RopeStyle::Half, seq);
        close(
            &read(&g, &gq),
            &cq.data,
            ROPE_TOL,
            &format!("rope {n}×{seq}"),
        );
        let want = Cpu.attention(
            &cq,
            &act(rows, kv * hd, k.clone()),
            &act(rows, kv * hd, v.clone()),
            h,
            kv,
            hd,
            seq,
        );
        for (var, ns) in attention_runs(&g, hd) {
            g.force_attention_variant(Some(var));
            g.force_attention_splits(ns);
            let got = g.attention(
                &gq,
                &g.upload_act(rows, kv * hd, &k).unwrap(),
                &g.upload_act(rows, kv * hd, &v).unwrap(),
                h,
                kv,
                hd,
                seq,
            );
            close(
                &read(&g, &got),
                &want.data,
                ATTN_TOL,
                &format!(
                    "attention {n}×{seq} h{h}/{kv} hd{hd} {} splits {ns:?}",
                    var.name()
                ),
            );
        }
        g.force_attention_variant(None);
        g.force_attention_splits(None);
    }
}
/// The LM head fused with log-softmax, NLL, argmax, and KL/top-1 against log-probs kept from a
/// first (reference) head, over more rows than one scoring chunk.
#[test]
fn score_nll_kl_top1_against_cpu() {
    let g = gpu();
    let mut r = Rng(11);
    let (rows, d, vocab, from) = (75, 48, 1000, 3);
    let n = rows - from;
    let x = r.vec(rows * d);
    let ha = QTensor::from_f32(vocab, d, &r.vec(vocab * d));
    // The model head: the reference plus a small perturbation, so KL is small but not zero and
    // top-1 mostly agrees.
    let hb_vals: Vec<f32> = ha
        .dequantize()
        .unwrap()
        .iter()
        .map(|v| v + 0.3 * r.next())
        .collect();
    let hb = QTensor::from_f32(vocab, d, &hb_vals);
    let targets: Vec<u32> = (0..n).map(|_| r.next_u32() % vocab as u32).collect();

    let cx = act(rows, d, x.clone());
    let (ca, cb) = (
        Cpu.load_matrix(&ha, None).unwrap(),
        Cpu.load_matrix(&hb, None).unwrap(),
    );
    let (_, cref) = Cpu.score(&cx, &ca, from, &targets, None, true).unwrap();
    let (cs, _) = Cpu
        .score(&cx, &cb, from, &targets, cref.as_ref(), false)
        .unwrap();

    let gx = g.upload_act(rows, d, &x).unwrap();
    let (ga, gb) = (
        g.load_matrix(&ha, None).unwrap(),
        g.load_matrix(&hb, None).unwrap(),
    );
    let (p0, gref) = g.score(&gx, &ga, from, &targets, None, true).unwrap();
    let s0 = pollster::block_on(g.read_scores(p0)).unwrap();
    let (p1, _) = g
        .score(&gx, &gb, from, &targets, gref.as_ref(), false)
        .unwrap();
    let gs = pollster::block_on(g.read_scores(p1)).unwrap();
    assert_eq!((s0.len(), gs.len()), (n, n));
    assert!(s0.iter().all(|s| s.kl == 0.0 && s.top1_agree));
    let mut disagree = 0;
    for (i, (a, b)) in gs.iter().zip(&cs).enumerate() {
        assert!(
            (a.nll - b.nll).abs() < NLL_TOL,
            "row {i} nll {} vs {}",
            a.nll,
            b.nll
        );
        assert!(
            (a.kl - b.kl).abs() < KL_TOL,
            "row {i} kl {} vs {}",
            a.kl,
            b.kl
        );
        assert_eq!(a.argmax, b.argmax, "row {i} argmax");
        assert_eq!(a.top1_agree, b.top1_agree, "row {i} top-1");
        disagree += !b.top1_agree as usize;
    }
    // The comparison is only meaningful if both outcomes occur.
    assert!(
        gs.iter().any(|s| s.kl > 1e-3),
        "perturbation too small to test KL"
    );
    assert!(
        disagree > 0 && disagree < n,
        "top-1 disagreements {disagree} of {n}"
    );
    // Out-of-range targets are refused before anything is recorded.
    assert!(g
        .score(&gx, &ga, from, &[vocab as u32], None, false)
        .is_err());
}

/// Several windows scored with one product of the head (`Backend::score_windows`, src/gpu/
/// score.rs): each window's scores are the CPU's for its rows (windows of unequal length, at
/// scattered rows of one batch), and a bad target in any window is refused.
#[test]
fn several_windows_scored_with_one_head_product() {
    let g = gpu();
    let mut r = Rng(12);
    let (rows, d, vocab) = (160, 48, 1000);
    let x = r.vec(rows * d);
    let head = QTensor::from_f32(vocab, d, &r.vec(vocab * d));
    let windows: Vec<(usize, Vec<u32>)> = [(3, 37), (40, 40), (100, 59)]
        .into_iter()
        .map(|(from, n)| (from, (0..n).map(|_| r.next_u32() % vocab as u32).collect()))
        .collect();
    let spans: Vec<(usize, &[u32])> = windows.iter().map(|(f, t)| (*f, &t[..])).collect();
    let (cx, ch) = (
        act(rows, d, x.clone()),
        Cpu.load_matrix(&head, None).unwrap(),
    );
    let (gx, gh) = (
        g.upload_act(rows, d, &x).unwrap(),
        g.load_matrix(&head, None).unwrap(),
    );
    let pendings = g.score_windows(&gx, &gh, &spans).unwrap();
    assert_eq!(pendings.len(), windows.len());
    for (w, ((from, targets), p)) in windows.iter().zip(pendings).enumerate() {
        let got = pollster::block_on(g.read_scores(p)).unwrap();
        let (c, _) = Cpu.score(&cx, &ch, *from, targets, None, false).unwrap();
        let want = pollster::block_on(Cpu.read_scores(c)).unwrap();
        assert_eq!(got.len(), targets.len(), "window {w}");
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a.nll - b.nll).abs() < NLL_TOL,
                "window {w} row {i}: {} vs {}",
                a.nll,
                b.nll
            );
            assert_eq!(a.argmax, b.argmax, "window {w} row {i} argmax");
        }
    }
    let mut bad = windows[2].1.clone();
    bad[5] = vocab as u32;
    let spans = [(3, &windows[0].1[..]), (100, &bad[..])];
    let e = g
        .score_windows(&gx, &gh, &spans)
        .err()
        .expect("a target past the vocabulary");
    assert!(e.to_string().contains("vocab 1000"), "{e}");
}

/// Activation fake-quantization: the scales are equal bit for bit (`act::dynamic_scale` is a
/// product, correctly rounded everywhere), but the GPU may land one step off the CPU where `x / s`
/// sits on a rounding tie up to the division's error (WGSL allows 2.5 ULP for `/`), so every
/// element must be within one quantization step and at most this fraction of them may differ at
/// all. (With the scale itself a quotient, NVIDIA's driver put it an ulp off and every value of
/// the tensor differed: this test failed on the H100 in session 13.)
const ACTQ_MISMATCH_FRAC: f64 = 1e-3;

#[test]
fn fake_quant_activations_match_cpu() {
    use quantlab::format::act::{dynamic_scale, ActGranularity, ActQuantSpec, ActScale};
    let g = gpu();
    let mut r = Rng(12);
    // 300 columns: more than one workgroup's 256; row 4 is all zeros (zero scale).
    let (t, d) = (13, 300);
    let mut x: Vec<f32> = r.vec(t * d).iter().map(|v| 3.0 * v).collect();
    x[4 * d..5 * d].iter_mut().for_each(|v| *v = 0.0);
    for bits in [4u8, 8] {
        for (gran, scale) in [
            (ActGranularity::PerTensor, ActScale::Dynamic),
            (ActGranularity::PerToken, ActScale::Dynamic),
            (ActGranularity::PerTensor, ActScale::Static(0.05)),
        ] {
            let spec = ActQuantSpec { bits, gran, scale };
            let mut c = act(t, d, x.clone());
            Cpu.fake_quant_act(&mut c, &spec).unwrap();
            let mut gx = g.upload_act(t, d, &x).unwrap();
            g.fake_quant_act(&mut gx, &spec).unwrap();
            let got = read(&g, &gx);
            let qmax = spec.qmax();
            let absmax = |v: &[f32]| v.iter().fold(0f32, |m, a| m.max(a.abs()));
            let row_step = |row: usize| match (scale, gran) {
                (ActScale::Static(s), _) => s,
                (_, ActGranularity::PerTensor) => dynamic_scale(absmax(&x), qmax),
                (_, ActGranularity::PerToken) => {
                    dynamic_scale(absmax(&x[row * d..(row + 1) * d]), qmax)
                }
            };
            let mut differ = 0;
            for (i, (a, b)) in got.iter().zip(&c.data).enumerate() {
                let step = row_step(i / d);
                assert!(
                    (a - b).abs() <= step * 1.0001,
                    "{spec:?} at {i}: gpu {a} cpu {b} (step {step})"
                );
                differ += (a != b) as usize;
            }
            let frac = differ as f64 / got.len() as f64;
            assert!(frac <= ACTQ_MISMATCH_FRAC, "{spec:?}: {differ} differ");
            // The CPU result really is quantized: few distinct levels, not the input.
            let mut levels: Vec<u32> = c.data.iter().map(|v| v.to_bits()).collect();
            levels.sort_unstable();
            levels.dedup();
            assert!(levels.len() <= t * (2 * qmax as usize + 1), "{spec:?}");
            assert_ne!(c.data, x);
        }
    }
    assert!(g
        .fake_quant_act(
            &mut g.upload_act(1, 4, &[0.0; 4]).unwrap(),
            &ActQuantSpec {
                bits: 9,
                gran: ActGranularity::PerToken,
                scale: ActScale::Dynamic,
            }
        )
        .is_err());
}

/// Worst |a − b| relative to the largest |b|, the measure `close` checks (printed with
/// `--nocapture` to see how far inside its tolerance a kernel is).
fn worst_rel(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() / scale)
        .fold(0f32, f32::max)
}

/// LayerNorm with and without bias, at widths under, over and not a multiple of the kernel's
/// 256 invocations, on rows centred at 0, rows at 1000 ± 1 (a naive f32 mean or E[x²] − E[x]²
/// would be off there) and rows with a few values 500 times the rest (as LLM activations have).
#[test]
fn layernorm_against_cpu() {
    let g = gpu();
    let mut r = Rng(13);
    for (t, d) in [(5, 77), (3, 1000), (4, 256), (2, 1), (7, 2304)] {
        let centred = r.vec(t * d);
        let offset: Vec<f32> = r.vec(t * d).iter().map(|v| 1000.0 + v).collect();
        let mut outlier = r.vec(t * d);
        outlier
            .iter_mut()
            .step_by(d.max(2) - 1)
            .for_each(|v| *v *= 500.0);
        let (w, b) = (r.vec(d), r.vec(d));
        let gw = g.load_vector(&w).unwrap();
        let gb = g.load_vector(&b).unwrap();
        for (kind, x) in [
            ("centred", &centred),
            ("1000±1", &offset),
            ("outlier", &outlier),
        ] {
            let cx = act(t, d, x.clone());
            let gx = g.upload_act(t, d, x).unwrap();
            for bias in [false, true] {
                let want = Cpu.layernorm(&cx, &w, bias.then_some(&b), 1e-5);
                let got = read(&g, &g.layernorm(&gx, &gw, bias.then_some(&gb), 1e-5));
                let what = format!("layernorm {t}×{d} {kind} bias {bias}");
                eprintln!("{what}: worst {:e}", worst_rel(&got, &want.data));
                close(&got, &want.data, LAYERNORM_TOL, &what);
            }
        }
    }
}

#[test]
fn gelu_and_relu_against_cpu() {
    let g = gpu();
    let mut r = Rng(14);
    for (t, d) in [(5, 77), (3, 1000)] {
        // ±6 covers GELU's curved part and both tails.
        let x: Vec<f32> = r.vec(t * d).iter().map(|v| 6.0 * v).collect();
        let mut c = act(t, d, x.clone());
        Cpu.gelu(&mut c);
        let mut gx = g.upload_act(t, d, &x).unwrap();
        g.gelu(&mut gx);
        let got = read(&g, &gx);
        eprintln!("gelu {t}×{d}: worst {:e}", worst_rel(&got, &c.data));
        close(&got, &c.data, GELU_TOL, &format!("gelu {t}×{d}"));

        // ReLU is exact: a max rounds nothing.
        let mut c = act(t, d, x.clone());
        Cpu.relu(&mut c);
        let mut gx = g.upload_act(t, d, &x).unwrap();
        g.relu(&mut gx);
        assert_eq!(read(&g, &gx), c.data, "relu {t}×{d}");
    }
    // Large |x|, where tanh's argument is clamped: finite and per element close to the CPU
    // (x itself for large x, 0 for large −x).
    let x = [
        0.0, 1.0, -1.0, 5.0, -5.0, 5.6, -5.6, 10.0, -10.0, 30.0, -30.0, 1e4, -1e4, 1e20, -1e20,
    ];
    let mut c = act(1, x.len(), x.to_vec());
    Cpu.gelu(&mut c);
    let mut gx = g.upload_act(1, x.len(), &x).unwrap();
    g.gelu(&mut gx);
    let got = read(&g, &gx);
    let (mut worst, mut at) = (0f32, (0.0, 0.0, 0.0));
    for ((&x, &a), &b) in x.iter().zip(&got).zip(&c.data) {
        assert!(a.is_finite(), "gelu({x}) = {a} on the GPU");
        let e = (a - b).abs() / b.abs().max(1.0);
        if e > worst {
            (worst, at) = (e, (x, a, b));
        }
        assert!(e <= GELU_TOL, "gelu({x}): gpu {a} cpu {b}");
    }
    let (x, a, b) = at;
    eprintln!("gelu tails: worst {worst:e} (to max(|y|, 1)) at x = {x}: gpu {a} cpu {b}");
}

/// A copy: bit for bit.
#[test]
fn slice_cols_copies_exactly() {
    let g = gpu();
    let mut r = Rng(15);
    // GPT-2's fused q/k/v (3 × 96 columns) and odd ranges, including one column and all.
    for (t, d, ranges) in [
        (7, 288, vec![(0, 96), (96, 96), (192, 96)]),
        (5, 77, vec![(0, 77), (13, 31), (76, 1), (0, 1)]),
        (3, 1000, vec![(300, 700), (1, 999), (500, 0)]),
    ] {
        let x = r.vec(t * d);
        let (cx, gx) = (act(t, d, x.clone()), g.upload_act(t, d, &x).unwrap());
        for (from, width) in ranges {
            let want = Cpu.slice_cols(&cx, from, width);
            let got = g.slice_cols(&gx, from, width);
            assert_eq!((got.rows, got.cols), (t, width));
            assert_eq!(
                read(&g, &got),
                want.data,
                "slice_cols {t}×{d} {from}+{width}"
            );
        }
    }
}

/// More values than one dispatch dimension holds (65535 workgroups of 256): the kernels' 2-D
/// index reaches every element.
#[test]
fn relu_and_slice_cols_past_one_dispatch_dimension() {
    let g = gpu();
    let mut r = Rng(16);
    let (t, d) = (4100, 4099);
    assert!(t * (d - 3) > 65535 * 256);
    let x: Vec<f32> = (0..t * d).map(|_| r.next()).collect();
    let cx = act(t, d, x.clone());
    let gx = g.upload_act(t, d, &x).unwrap();
    assert_eq!(
        read(&g, &g.slice_cols(&gx, 3, d - 3)),
        Cpu.slice_cols(&cx, 3, d - 3).data
    );
    let mut c = cx;
    Cpu.relu(&mut c);
    let mut gx = gx;
    g.relu(&mut gx);
    assert_eq!(read(&g, &gx), c.data, "relu {t}×{d}");
}

/// Shape mismatches cannot be returned by these ops: each is recorded and reported by the next
/// readback, nothing panics, and the backend works again afterwards.
#[test]
fn layernorm_and_slice_cols_record_shape_errors() {
    let g = gpu();
    let x = g
        .upload_act(2, 4, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
        .unwrap();
    let (w3, w4) = (
        g.load_vector(&[1.0; 3]).unwrap(),
        g.load_vector(&[1.0; 4]).unwrap(),
    );
    let refused = |y: <Gpu as Backend>::Act, op: &str| {
        let e = pollster::block_on(g.read_act(&y)).expect_err(op);
        assert!(e.to_string().contains(op), "{op}: {e}");
    };
    refused(g.layernorm(&x, &w3, None, 1e-5), "layernorm");
    refused(g.layernorm(&x, &w4, Some(&w3), 1e-5), "layernorm");
    refused(g.slice_cols(&x, 3, 2), "slice_cols");
    refused(g.slice_cols(&x, usize::MAX, 2), "slice_cols");
    let y = g.layernorm(&x, &w4, Some(&w4), 1e-5);
    assert_eq!(read(&g, &y).len(), 8);
    assert_eq!(
        read(&g, &g.slice_cols(&x, 1, 3)),
        [2.0, 3.0, 4.0, 6.0, 7.0, 8.0]
    );
}
