//! Tender on the GPU (Lee et al., arXiv 2406.12930; src/gpu/tender.rs, shaders/tender_*.wgsl)
//! against its CPU reference `format::tender`, natively on whatever adapter wgpu finds (Mesa
//! lavapipe without a GPU): the decomposition (biases, tmax, groups: exact), codes and
//! fake-quantized values (dynamic and static, 4 and 8 bits, k from 2 to 16, chunks of 64 to 256
//! rows, partial last chunks, several sequences per batch, rounding up and down) on activations
//! with outlier channels; the integer product with shift accumulation against
//! `tender_linear` (64-bit accumulators equal as integers, outputs within a named tolerance),
//! with `dot4I8Packed` and its emulation, and against the float path on the same activations;
//! what the integer kernel does not take falls back to the float path.

use crate::gpu_check;
use crate::rng;
use gpu_check::{act, gpu, read};
use rng::Rng;

use quantlab::format::addons::AddOns;
use quantlab::format::tender::{
    fake_quant, quantize, tender_linear, weight_codes, TenderChunk, TenderCodes, TenderRound,
    TenderSpec,
};
use quantlab::format::{Granularity, IntSpec, QTensor};
use quantlab::gpu::{Gpu, IntMatmul};
use quantlab::model::backend::Backend;
use quantlab::model::cpu::Cpu;

/// GPU codes against the CPU's from the same inputs: the GPU's `(x − β) / s` may round
/// differently where it sits on a tie (WGSL allows 2.5 ULP for `/`, and `s_0 = θ_0 / qmax` is
/// itself a division), so a code may differ by one step, in at most this fraction of the
/// activations (as `ACTQ_MISMATCH_FRAC` in tests/gpu_kernels.rs).
const CODE_MISMATCH_FRAC: f64 = 1e-3;
/// `s_0` against the CPU's `θ_0 / qmax` from the same (bit-equal) tmax, in ulps: WGSL's 2.5 ULP
/// for division.
const S0_ULPS: i64 = 3;
/// A fake-quantized value against the CPU's where the codes agree, relative to `|β| + |q·s|`:
/// `s` may be a few ulps off (S0_ULPS) and `β + q·s` may be fused into one rounding on the
/// GPU: a few 2⁻²⁴.
const VALUE_REL: f32 = 1e-6;
/// The integer product against `tender_linear` on the same codes, per output, relative to
/// `E_T = Σ_k (|q_k s_{g_k}| + |β_k|) |ŵ_k| + |b|` (it bounds both terms of the output). The
/// accumulators are equal as integers (asserted); the GPU then rounds `f32(acc)` (≤ 2
/// roundings), `s_0 · sw`, the product and the sum in f32, with `s_0` up to S0_ULPS off, and
/// `β_c · Ŵᵀ + b` is an f32 matmul of `cols` products (the CPU's is f64): a few 2⁻²⁴ of E_T for
/// the first, about √cols · 2⁻²⁴ for the matmul (≈ 1.4e-6 at 576 columns) with this bound as
/// margin.
const TENDER_GPU_VS_CPU_REL: f64 = 1e-5;
/// The float path (matmul.wgsl on the fake-quantized values) against the same reference,
/// relative to E_T: an f32 sum of `cols` products in another order, as the float path of
/// tests/gpu_intmm.rs.
const FLOAT_PATH_REL: f64 = 1e-5;

/// The float path against the CPU backend's product of the same fake-quantized values, relative
/// to the largest |y| (`FLOAT_PATH_TOL` of tests/gpu_intmm.rs).
const FLOAT_VS_CPU_TOL: f32 = 1e-5;

fn spec(bits: u8, groups: u8, chunk: usize, round: TenderRound) -> TenderSpec {
    TenderSpec {
        bits,
        groups,
        chunk,
        round,
    }
}

/// Activations with outlier channels, as LLM sites have them (the CPU tests' data): one large
/// offset channel, one channel 25× the rest, one with an offset the bias removes.
fn outlier_rows(r: &mut Rng, rows: usize, cols: usize) -> Vec<f32> {
    let mut x: Vec<f32> = r.vec(rows * cols);
    for t in 0..rows {
        x[t * cols + 3] = 60.0 + 10.0 * r.next();
        x[t * cols + cols / 2] *= 25.0;
        x[t * cols + cols - 1] += 5.0;
    }
    x
}

fn int_weight(r: &mut Rng, bits: u8, gran: Granularity, sym: bool, n: usize, k: usize) -> QTensor {
    let spec = IntSpec { bits, gran, sym };
    let groups = n * k / gran.group_len(n, k, "w").unwrap();
    let mask = (1u32 << bits) - 1;
    let codes: Vec<u8> = (0..n * k).map(|_| (r.next_u32() & mask) as u8).collect();
    let scales: Vec<f32> = (0..groups).map(|_| 0.01 + 0.1 * r.next().abs()).collect();
    let zeros: Vec<u8> = (0..groups).map(|_| (r.next_u32() & mask) as u8).collect();
    QTensor::from_int_parts(spec, n, k, &codes, &scales, &zeros).unwrap()
}

/// Calibrated-looking chunks for static mode: the decomposition of other data of the same kind,
/// a little wider than the data quantized (so some values clip, some do not).
fn fixed_chunks(r: &mut Rng, n: usize, cols: usize, s: &TenderSpec) -> Vec<TenderChunk> {
    (0..n)
        .map(|_| {
            let x: Vec<f32> = outlier_rows(r, 64, cols).iter().map(|v| v * 1.1).collect();
            TenderChunk::from_rows(&x, cols, s).unwrap()
        })
        .collect()
}

/// Quantize `x` on the GPU; check the decomposition, codes and values against the CPU's;
/// return the GPU activation and its codes.
fn check_act(
    g: &Gpu,
    x: &[f32],
    cols: usize,
    seq: usize,
    s: &TenderSpec,
    fixed: Option<&[TenderChunk]>,
    what: &str,
) -> (<Gpu as Backend>::Act, TenderCodes) {
    let rows = x.len() / cols;
    let mut gx = g.upload_act(rows, cols, x).unwrap();
    g.tender_act(&mut gx, s, fixed, seq).unwrap();
    assert!(gx.has_codes(), "{what}: codes kept");
    let (got, s0) = pollster::block_on(g.read_tender(&gx))
        .unwrap()
        .expect("Tender codes");
    let want = quantize(x, cols, seq, s, fixed).unwrap();
    assert_eq!(
        got.chunk_of_row, want.chunk_of_row,
        "{what}: chunks of rows"
    );
    assert_eq!(got.chunks.len(), want.chunks.len(), "{what}: chunks");
    for (c, (a, b)) in got.chunks.iter().zip(&want.chunks).enumerate() {
        // Max, min, halving, comparisons and products by powers of two: bit for bit.
        assert_eq!(a.bias, b.bias, "{what}: chunk {c} biases");
        assert_eq!(a.tmax.to_bits(), b.tmax.to_bits(), "{what}: chunk {c} tmax");
        assert_eq!(a.group, b.group, "{what}: chunk {c} groups");
        let ulps = (s0[c].to_bits() as i64 - s.scale(b.tmax, 0).to_bits() as i64).abs();
        assert!(ulps <= S0_ULPS, "{what}: chunk {c} s_0 {ulps} ulps off");
    }
    let xh = read(g, &gx);
    let mut fq = x.to_vec();
    fake_quant(&mut fq, cols, seq, s, fixed).unwrap();
    let qmax = s.qmax() as i8;
    let mut differ = 0;
    for (i, (&p, &q)) in got.codes.iter().zip(&want.codes).enumerate() {
        let (t, j) = (i / cols, i % cols);
        let c = &want.chunks[want.chunk_of_row[t] as usize];
        assert!((-qmax..=qmax).contains(&p), "{what}: code {p}");
        assert!(
            (p as i32 - q as i32).abs() <= 1,
            "{what} ({t},{j}): code {p} vs {q}"
        );
        differ += (p != q) as usize;
        let step = s.scale(c.tmax, c.group[j]);
        let room = VALUE_REL * (c.bias[j].abs() + (q as f32 * step).abs())
            + if p == q { 0.0 } else { step * 1.00001 };
        assert!(
            (xh[i] - fq[i]).abs() <= room,
            "{what} ({t},{j}): gpu {} cpu {} (codes {p} {q}, step {step})",
            xh[i],
            fq[i]
        );
    }
    assert!(
        differ as f64 <= CODE_MISMATCH_FRAC * got.codes.len() as f64,
        "{what}: {differ} codes differ"
    );
    (gx, got)
}

/// (bits, k, chunk T, rounding, sequence length, sequences, columns): partial last chunks (130,
/// 200, 300, 100 positions), several sequences per batch, more columns than a workgroup's 256,
/// widths not a multiple of 4, every k from 2 to 16 at its extremes.
const ACT_CASES: [(u8, u8, usize, TenderRound, usize, usize, usize); 6] = [
    (8, 4, 64, TenderRound::Up, 130, 2, 96),
    (4, 8, 128, TenderRound::Down, 200, 2, 70),
    (8, 16, 64, TenderRound::Up, 64, 3, 300),
    (4, 2, 256, TenderRound::Up, 300, 1, 33),
    (8, 16, 64, TenderRound::Down, 100, 3, 576),
    (8, 3, 192, TenderRound::Up, 192, 2, 64),
];

#[test]
fn tender_act_matches_cpu_reference() {
    let g = gpu();
    let mut r = Rng(0x7e4d_0001);
    for (bits, k, t, round, seq, nseq, cols) in ACT_CASES {
        let s = spec(bits, k, t, round);
        let x = outlier_rows(&mut r, seq * nseq, cols);
        let what = format!("{bits}b k {k} T {t} {round:?} {nseq}×{seq}×{cols}");
        check_act(&g, &x, cols, seq, &s, None, &format!("dynamic {what}"));
        // Two calibrated positions: sequences of more chunks reuse the last.
        let fixed = fixed_chunks(&mut r, 2, cols, &s);
        check_act(
            &g,
            &x,
            cols,
            seq,
            &s,
            Some(&fixed),
            &format!("static {what}"),
        );
    }
}

#[test]
fn bad_inputs_are_refused_and_drop_the_codes() {
    let g = gpu();
    let mut r = Rng(0x7e4d_0002);
    let (rows, cols) = (128, 40);
    let x = outlier_rows(&mut r, rows, cols);
    let s = spec(8, 4, 64, TenderRound::Up);
    let mut gx = g.upload_act(rows, cols, &x).unwrap();
    for (why, bad, seq, fixed) in [
        ("6 bits", spec(6, 4, 64, TenderRound::Up), 64, None),
        ("k 17", spec(8, 17, 64, TenderRound::Up), 64, None),
        ("chunk 100", spec(8, 4, 100, TenderRound::Up), 64, None),
        ("sequences of 48", s, 48, None),
        ("no chunk", s, 64, Some(Vec::new())),
        (
            "39 biases",
            s,
            64,
            Some(vec![TenderChunk {
                bias: vec![0.0; 39],
                tmax: 1.0,
                group: vec![0; 40],
            }]),
        ),
        (
            "group 4 of 4",
            s,
            64,
            Some(vec![TenderChunk {
                bias: vec![0.0; 40],
                tmax: 1.0,
                group: vec![4; 40],
            }]),
        ),
    ] {
        g.tender_act(&mut gx, &s, None, 64).unwrap();
        assert!(gx.has_codes());
        let e = g.tender_act(&mut gx, &bad, fixed.as_deref(), seq);
        assert!(e.is_err(), "{why} accepted");
        assert!(!gx.has_codes(), "{why}: stale codes kept");
    }
    // Writing the activation drops the codes; W4A8's quantization replaces them.
    g.tender_act(&mut gx, &s, None, 64).unwrap();
    g.relu(&mut gx);
    assert!(!gx.has_codes());
    g.tender_act(&mut gx, &s, None, 64).unwrap();
    use quantlab::format::act::{ActGranularity, ActQuantSpec, ActScale};
    let a8 = ActQuantSpec {
        bits: 8,
        gran: ActGranularity::PerToken,
        scale: ActScale::Dynamic,
    };
    g.fake_quant_act(&mut gx, &a8).unwrap();
    assert!(pollster::block_on(g.read_tender(&gx)).unwrap().is_none());
    assert!(pollster::block_on(g.read_act_codes(&gx)).unwrap().is_some());
}

/// `E_T` of `TENDER_GPU_VS_CPU_REL` for every output, in f64.
fn abs_sums(a: &TenderCodes, w: &QTensor, bias: Option<&[f32]>) -> Vec<f64> {
    let wh = w.dequantize().unwrap();
    let k = a.cols;
    let mut e = Vec::with_capacity(a.rows * w.rows);
    for t in 0..a.rows {
        let c = &a.chunks[a.chunk_of_row[t] as usize];
        let xa: Vec<f64> = (0..k)
            .map(|i| {
                let q = a.codes[t * k + i] as f64 * a.spec.scale(c.tmax, c.group[i]) as f64;
                q.abs() + (c.bias[i] as f64).abs()
            })
            .collect();
        for j in 0..w.rows {
            let s: f64 = xa
                .iter()
                .zip(&wh[j * k..(j + 1) * k])
                .map(|(p, &q)| p * (q as f64).abs())
                .sum();
            e.push(s + bias.map_or(0.0, |b| b[j].abs() as f64));
        }
    }
    e
}

/// The worst `|got − want| / E` and where.
fn worst_of_e(got: &[f32], want: &[f32], e: &[f64]) -> (f64, usize) {
    let (mut worst, mut at) = (0f64, 0);
    for (i, ((p, q), e)) in got.iter().zip(want).zip(e).enumerate() {
        let rel = (*p as f64 - *q as f64).abs() / e.max(f64::MIN_POSITIVE);
        if rel > worst || rel.is_nan() {
            (worst, at) = (rel, i);
        }
    }
    (worst, at)
}

/// Run `linear` on the integer path (both `dot4` variants) and the float path; compare with
/// `tender_linear` on the GPU's own codes, the accumulators as integers.
fn check_product(
    g: &Gpu,
    gx: &<Gpu as Backend>::Act,
    a: &TenderCodes,
    w: &QTensor,
    bias: Option<&[f32]>,
    what: &str,
) -> f64 {
    let mat = g.load_matrix(w, bias).unwrap();
    let (want, accs) = tender_linear(a, w, bias).unwrap();
    let e = abs_sums(a, w, bias);
    let mut worst_seen = 0f64;
    for v in [IntMatmul::Native, IntMatmul::Emulated] {
        g.force_int_matmul(Some(v));
        let before = g.int_products();
        let y = g.linear(gx, &mat);
        assert_eq!(g.int_products(), before + 1, "{what}: integer path");
        assert_eq!((y.rows, y.cols), (a.rows, w.rows));
        let (worst, at) = worst_of_e(&read(g, &y), &want, &e);
        worst_seen = worst_seen.max(worst);
        assert!(
            worst <= TENDER_GPU_VS_CPU_REL,
            "{what} {}: {worst:e} of E_T at {at}: gpu {} cpu {}",
            v.name(),
            read(g, &y)[at],
            want[at]
        );
        let got = pollster::block_on(g.tender_accumulators(gx, &mat))
            .unwrap()
            .expect("integer path");
        if let Some(i) = (0..accs.len()).find(|&i| got[i] != accs[i]) {
            panic!(
                "{what} {}: accumulator {i}: gpu {} cpu {}",
                v.name(),
                got[i],
                accs[i]
            );
        }
    }
    g.force_int_matmul(Some(IntMatmul::Off));
    let before = g.int_products();
    let y = g.linear(gx, &mat);
    assert_eq!(g.int_products(), before, "{what}: float path");
    assert!(pollster::block_on(g.tender_accumulators(gx, &mat))
        .unwrap()
        .is_none());
    let (worst, at) = worst_of_e(&read(g, &y), &want, &e);
    assert!(
        worst <= FLOAT_PATH_REL,
        "{what} float path: {worst:e} of E_T at {at}"
    );
    g.force_int_matmul(None);
    worst_seen
}

#[test]
fn integer_product_matches_cpu_reference() {
    let g = gpu();
    eprintln!(
        "adapter: {} · dot4I8Packed: {}",
        g.ctx.describe(),
        g.ctx.dot4
    );
    let mut r = Rng(0x7e4d_0003);
    let mut worst = 0f64;
    // (bits, k, T, sequence length, sequences, columns, outputs, weight bits, granularity):
    // output counts not multiples of the 64-wide tile, int2 to int8 weights per row and per
    // tensor, partial chunks, k 2 to 16.
    for (i, (bits, k, t, seq, nseq, cols, n, wbits, gran)) in [
        (8u8, 4u8, 64, 130, 2, 96, 40, 4u8, Granularity::PerRow),
        (8, 16, 64, 100, 3, 576, 70, 8, Granularity::PerRow),
        (4, 8, 128, 200, 1, 70, 13, 4, Granularity::PerTensor),
        (4, 2, 64, 64, 2, 33, 9, 2, Granularity::PerRow),
        (8, 8, 256, 256, 1, 1536, 24, 4, Granularity::PerRow),
    ]
    .into_iter()
    .enumerate()
    {
        let s = spec(bits, k, t, TenderRound::Up);
        let x = outlier_rows(&mut r, seq * nseq, cols);
        let w = int_weight(&mut r, wbits, gran, true, n, cols);
        let bias = (i % 2 == 0).then(|| r.vec(n));
        let what = format!("{bits}b k {k} T {t} {nseq}×{seq}×{cols}→{n} int{wbits} {gran:?}");
        let (gx, a) = check_act(&g, &x, cols, seq, &s, None, &what);
        worst = worst.max(check_product(&g, &gx, &a, &w, bias.as_deref(), &what));
        let fixed = fixed_chunks(&mut r, 1, cols, &s);
        let what = format!("static {what}");
        let (gx, a) = check_act(&g, &x, cols, seq, &s, Some(&fixed), &what);
        worst = worst.max(check_product(&g, &gx, &a, &w, bias.as_deref(), &what));
    }
    eprintln!(
        "worst GPU integer vs CPU reference: {worst:e} of E_T (bound {TENDER_GPU_VS_CPU_REL:e})"
    );
}

/// Accumulators past 32 bits and of both signs (k = 16, channels spread over every group at
/// ±qmax, int8 weights at ±127 or random: up to Σ_i 2^i · 36 · 127 · 128 ≈ 4·10^10), with
/// partial sums of both signs folded into large accumulators: the two-word accumulation, its
/// carries and its sign extension are exact.
#[test]
fn wide_accumulators_are_exact() {
    let g = gpu();
    let mut r = Rng(0x7e4d_0005);
    let (seq, cols, n) = (64, 576, 8);
    let s = spec(8, 16, 64, TenderRound::Up);
    // Channel j swings between ±4 · 2^−(j mod 16) (β = 0, group 15 − j mod 16): rows of all
    // +, all −, alternating signs, and random values inside the range.
    let x: Vec<f32> = (0..seq * cols)
        .map(|i| {
            let (t, j) = (i / cols, i % cols);
            let a = 4.0 / (1u32 << (j % 16)) as f32;
            match t % 4 {
                0 => a,
                1 => -a,
                2 => a * r.next(),
                _ => a * if j % 3 == 0 { 1.0 } else { -1.0 },
            }
        })
        .collect();
    // Weight rows: all +127, all −128, then random codes.
    let codes: Vec<u8> = (0..n * cols)
        .map(|i| match i / cols {
            0 => 255,
            1 => 0,
            _ => r.next_u32() as u8,
        })
        .collect();
    let w = QTensor::from_int_parts(
        IntSpec {
            bits: 8,
            gran: Granularity::PerRow,
            sym: true,
        },
        n,
        cols,
        &codes,
        &vec![0.01; n],
        &[],
    )
    .unwrap();
    let (gx, a) = check_act(&g, &x, cols, seq, &s, None, "wide");
    assert!(
        a.chunks[0].group_sizes(16).iter().all(|&c| c == 36),
        "every group holds 36 channels"
    );
    let (_, accs) = tender_linear(&a, &w, None).unwrap();
    let big = accs.iter().filter(|v| v.unsigned_abs() > 1 << 32).count();
    assert!(
        accs.iter().any(|&v| v > 1 << 32) && accs.iter().any(|&v| v < -(1 << 32)),
        "the data must reach past 32 bits both ways"
    );
    eprintln!("{big} of {} accumulators past 2^32", accs.len());
    check_product(&g, &gx, &a, &w, None, "wide accumulators");
}

/// Weights `weight_codes` refuses (grouped scales, asymmetric, 1-bit, f32, with add-ons) run on
/// the float path over the fake-quantized values, with the CPU backend's result on them.
#[test]
fn other_weights_take_the_float_path() {
    let g = gpu();
    let mut r = Rng(0x7e4d_0004);
    let (seq, cols, n) = (64, 96, 20);
    let x = outlier_rows(&mut r, seq, cols);
    let s = spec(8, 4, 64, TenderRound::Up);
    let base = int_weight(&mut r, 4, Granularity::PerRow, true, n, cols);
    let addons = AddOns {
        outliers: 7,
        lowrank: None,
    };
    let mut next = || r.next_u32();
    let bytes = addons.random(n, cols, &mut next).unwrap();
    let with_addons = base.with_extra(addons, &bytes).unwrap();
    let cases = [
        (
            "group 32",
            int_weight(&mut r, 4, Granularity::Group(32), true, n, cols),
        ),
        (
            "asymmetric",
            int_weight(&mut r, 4, Granularity::PerRow, false, n, cols),
        ),
        (
            "1-bit signs",
            int_weight(&mut r, 1, Granularity::PerRow, true, n, cols),
        ),
        ("f32", QTensor::from_f32(n, cols, &r.vec(n * cols))),
        ("outliers", with_addons),
    ];
    let (gx, _) = check_act(&g, &x, cols, seq, &s, None, "float path");
    let xh = read(&g, &gx);
    for (name, w) in cases {
        assert!(
            weight_codes(&w).is_err(),
            "{name}: the CPU reference refuses it too"
        );
        let before = g.int_products();
        let y = g.linear(&gx, &g.load_matrix(&w, None).unwrap());
        assert_eq!(g.int_products(), before, "{name}: float path");
        let want = Cpu.linear(
            &act(seq, cols, xh.clone()),
            &Cpu.load_matrix(&w, None).unwrap(),
        );
        gpu_check::close(&read(&g, &y), &want.data, FLOAT_VS_CPU_TOL, name);
    }
}
