//! The integer W4A8 product on the GPU (src/gpu/intmm.rs, shaders/matmul_int.wgsl; arXiv
//! 2311.05161) against its CPU reference `format::intmm::int_linear`, natively on whatever
//! adapter wgpu finds (Mesa lavapipe on machines without a GPU): both `dot4` variants, split
//! and unsplit, per-token dynamic, per-tensor dynamic and static activation scales, 4-bit
//! weights with per-row and group-32 scales, with and without bias, at shapes that are not
//! multiples of the 64×64 tile. Also: the path is really taken (`Gpu::int_products`), writing
//! an activation drops its codes, and what the kernel cannot run falls back to the float path.

use crate::gpu_check;
use crate::rng;
use gpu_check::{act, close, gpu, read};
use rng::Rng;

use quantlab::format::act::{ActGranularity, ActQuantSpec, ActScale};
use quantlab::format::addons::AddOns;
use quantlab::format::intmm::{int_linear, quantize_act, ActCodes};
use quantlab::format::{Granularity, IntSpec, QTensor};
use quantlab::gpu::{Gpu, IntMatmul, MatmulVariant};
use quantlab::model::backend::Backend;
use quantlab::model::config::RopeStyle;
use quantlab::model::cpu::Cpu;

/// GPU integer product against the CPU reference on the same codes, per output, relative to
/// `E = Σ_k |x̂_k ŵ_k| + |b|` (x̂ = qa·sa, ŵ = qw·sw). Both sum every group exactly in i32; they
/// differ only in float rounding after that: the per-group multiply-adds (fused on the GPU),
/// split-K's partial sums and the token-scale multiply, each ≤ 2⁻²⁴ of E. At most 48 groups
/// and 24 splits here: (48 + 24 + 4) · 2⁻²⁴ ≈ 4.5e-6 of E, under this bound.
const INT_GPU_VS_CPU_REL: f64 = 1e-5;
/// The float path (matmul.wgsl) on the same fake-quantized activations: f32 sums of k products
/// in another order; relative to the largest |y|, as `MATMUL_TOL` in tests/gpu_kernels.rs.
const FLOAT_PATH_TOL: f32 = 1e-5;
/// GPU codes against the CPU's (`quantize_act`) from the same inputs: the GPU's division
/// `x / s` may round differently at a tie (tests/gpu_kernels.rs `ACTQ_MISMATCH_FRAC`), so codes
/// may differ by one step, in at most this fraction of the activations.
const CODE_MISMATCH_FRAC: f64 = 1e-3;

fn int_weight(r: &mut Rng, bits: u8, gran: Granularity, sym: bool, n: usize, k: usize) -> QTensor {
    let spec = IntSpec { bits, gran, sym };
    let groups = n * k / gran.group_len(n, k, "w").unwrap();
    let mask = (1u32 << bits) - 1;
    let codes: Vec<u8> = (0..n * k).map(|_| (r.next_u32() & mask) as u8).collect();
    let scales: Vec<f32> = (0..groups).map(|_| 0.01 + 0.1 * r.next().abs()).collect();
    let zeros: Vec<u8> = (0..groups).map(|_| (r.next_u32() & mask) as u8).collect();
    QTensor::from_int_parts(spec, n, k, &codes, &scales, &zeros).unwrap()
}

/// `E` of `INT_GPU_VS_CPU_REL` for every output, in f64.
fn abs_sums(a: &ActCodes, w: &QTensor, bias: Option<&[f32]>) -> Vec<f64> {
    let (xh, wh, k) = (a.values(), w.dequantize().unwrap(), a.cols);
    let mut e = Vec::with_capacity(a.rows * w.rows);
    for t in 0..a.rows {
        let xr = &xh[t * k..(t + 1) * k];
        for j in 0..w.rows {
            let s: f64 = xr
                .iter()
                .zip(&wh[j * k..(j + 1) * k])
                .map(|(&p, &q)| (p as f64 * q as f64).abs())
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

fn quantized_act(
    g: &Gpu,
    x: &[f32],
    t: usize,
    k: usize,
    spec: &ActQuantSpec,
) -> (<Gpu as Backend>::Act, ActCodes) {
    let mut gx = g.upload_act(t, k, x).unwrap();
    g.fake_quant_act(&mut gx, spec).unwrap();
    assert!(gx.has_codes(), "{spec:?} keeps codes");
    let (codes, scales) = pollster::block_on(g.read_act_codes(&gx))
        .unwrap()
        .expect("codes");
    let a = ActCodes {
        rows: t,
        cols: k,
        codes,
        scales,
    };
    // The codes are exactly the activations the float path sees (as numbers: a code of 0
    // leaves −0 there).
    let xh = read(g, &gx);
    let same = a.values().iter().zip(&xh).all(|(p, q)| p == q);
    assert!(
        same,
        "{spec:?}: codes · scales ≠ the fake-quantized activations"
    );
    // And they are the CPU's, up to ties of the division.
    let cpu = quantize_act(x, k, spec).unwrap();
    let mut differ = 0;
    for (p, q) in a.codes.iter().zip(&cpu.codes) {
        assert!(
            (*p as i32 - *q as i32).abs() <= 1,
            "{spec:?}: code {p} vs {q}"
        );
        differ += (p != q) as usize;
    }
    assert!(
        differ as f64 <= CODE_MISMATCH_FRAC * a.codes.len() as f64,
        "{spec:?}: {differ} codes differ"
    );
    (gx, a)
}

fn specs() -> [ActQuantSpec; 3] {
    [
        ActQuantSpec {
            bits: 8,
            gran: ActGranularity::PerToken,
            scale: ActScale::Dynamic,
        },
        // ±3 inputs against 127 · 0.02 = 2.54: some activations clamp.
        ActQuantSpec {
            bits: 8,
            gran: ActGranularity::PerTensor,
            scale: ActScale::Static(0.02),
        },
        ActQuantSpec {
            bits: 4,
            gran: ActGranularity::PerTensor,
            scale: ActScale::Dynamic,
        },
    ]
}

#[test]
fn integer_product_matches_cpu_reference() {
    let g = gpu();
    eprintln!(
        "adapter: {} · dot4I8Packed: {}",
        g.ctx.describe(),
        g.ctx.dot4
    );
    let mut r = Rng(41);
    let shapes = [(7, 96, 40), (5, 90, 13), (33, 576, 1536)];
    let mut case = 0;
    let mut worst_seen = 0f64;
    for (t, k, n) in shapes {
        for gran in [Granularity::PerRow, Granularity::Group(32)] {
            if matches!(gran, Granularity::Group(g) if k % g != 0) {
                continue; // 90 columns: per row only (k not a multiple of 4 nor of 16)
            }
            for spec in specs() {
                case += 1;
                let w = int_weight(&mut r, 4, gran, true, n, k);
                let bias = (case % 2 == 0).then(|| r.vec(n));
                let x: Vec<f32> = r.vec(t * k).iter().map(|v| 3.0 * v).collect();
                let mat = g.load_matrix(&w, bias.as_deref()).unwrap();
                let (gx, a) = quantized_act(&g, &x, t, k, &spec);
                let want = int_linear(&a, &w, bias.as_deref()).unwrap();
                let e = abs_sums(&a, &w, bias.as_deref());
                let what = format!("{t}×{k}→{n} {gran:?} {spec:?} bias {}", bias.is_some());
                for v in [IntMatmul::Native, IntMatmul::Emulated] {
                    // Auto splits these small products (split-K); Tiled never splits.
                    for tile in [None, Some(MatmulVariant::Tiled)] {
                        g.force_int_matmul(Some(v));
                        g.force_matmul(tile);
                        let before = g.int_products();
                        let y = g.linear(&gx, &mat);
                        assert_eq!(g.int_products(), before + 1, "{what}: integer path");
                        assert_eq!((y.rows, y.cols), (t, n));
                        let got = read(&g, &y);
                        let (worst, at) = worst_of_e(&got, &want, &e);
                        worst_seen = worst_seen.max(worst);
                        assert!(
                            worst <= INT_GPU_VS_CPU_REL,
                            "{what} {} {tile:?}: {worst:e} of E at {at}: gpu {} cpu {}",
                            v.name(),
                            got[at],
                            want[at]
                        );
                    }
                }
                // The float path on the same activations agrees, and is not counted.
                g.force_int_matmul(Some(IntMatmul::Off));
                g.force_matmul(None);
                let before = g.int_products();
                let y = g.linear(&gx, &mat);
                assert_eq!(g.int_products(), before, "{what}: float path");
                close(&read(&g, &y), &want, FLOAT_PATH_TOL, &what);
                g.force_int_matmul(None);
            }
        }
    }
    eprintln!(
        "worst GPU integer vs CPU reference: {worst_seen:e} of E (bound {INT_GPU_VS_CPU_REL:e})"
    );
}

/// Every operation that writes an activation in place drops its codes (the next `linear`
/// takes the float path and sees the new values); a refused re-quantization drops them too.
#[test]
fn writing_an_activation_drops_its_codes() {
    let g = gpu();
    let mut r = Rng(42);
    let (t, k, n) = (6, 64, 24);
    let w = int_weight(&mut r, 4, Granularity::Group(32), true, n, k);
    let mat = g.load_matrix(&w, None).unwrap();
    let cm = Cpu.load_matrix(&w, None).unwrap();
    let spec = specs()[0];
    let x = r.vec(t * k);
    let other = g.upload_act(t, k, &r.vec(t * k)).unwrap();
    type Write = fn(&Gpu, &mut <Gpu as Backend>::Act, &<Gpu as Backend>::Act);
    let writes: [(&str, Write); 6] = [
        ("add", |g, a, b| g.add(a, b)),
        ("silu_mul", |g, a, b| g.silu_mul(a, b)),
        ("gelu", |g, a, _| g.gelu(a)),
        ("relu", |g, a, _| g.relu(a)),
        ("rope", |g, a, _| {
            g.rope(a, 2, 32, 0, 10000.0, RopeStyle::Half, 6)
        }),
        ("bad fake_quant", |g, a, _| {
            let bad = ActQuantSpec {
                bits: 9,
                gran: ActGranularity::PerToken,
                scale: ActScale::Dynamic,
            };
            assert!(g.fake_quant_act(a, &bad).is_err());
        }),
    ];
    for (name, write) in writes {
        let mut gx = g.upload_act(t, k, &x).unwrap();
        assert!(!gx.has_codes(), "an upload has no codes");
        g.fake_quant_act(&mut gx, &spec).unwrap();
        assert!(gx.has_codes());
        write(&g, &mut gx, &other);
        assert!(!gx.has_codes(), "{name} keeps stale codes");
        assert!(pollster::block_on(g.read_act_codes(&gx)).unwrap().is_none());
        let before = g.int_products();
        let y = g.linear(&gx, &mat);
        assert_eq!(g.int_products(), before, "{name}: float path");
        let want = Cpu.linear(&act(t, k, read(&g, &gx)), &cm);
        close(&read(&g, &y), &want.data, FLOAT_PATH_TOL, name);
    }
}

/// Weights the kernel does not take run on the float path with the same result as without
/// codes; a weight with add-ons runs in integers and then its add-on kernels.
#[test]
fn other_weights_fall_back_and_addons_follow() {
    let g = gpu();
    let mut r = Rng(43);
    let (t, k, n) = (9, 96, 20);
    let spec = specs()[0];
    let x: Vec<f32> = r.vec(t * k);
    let fallbacks = [
        (
            "asymmetric",
            int_weight(&mut r, 4, Granularity::PerRow, false, n, k),
        ),
        (
            "group 8",
            int_weight(&mut r, 4, Granularity::Group(8), true, n, k),
        ),
        (
            "1-bit signs",
            int_weight(&mut r, 1, Granularity::PerRow, true, n, k),
        ),
        ("f32", QTensor::from_f32(n, k, &r.vec(n * k))),
    ];
    for (name, w) in fallbacks {
        let mat = g.load_matrix(&w, None).unwrap();
        let cm = Cpu.load_matrix(&w, None).unwrap();
        let (gx, a) = quantized_act(&g, &x, t, k, &spec);
        let before = g.int_products();
        let y = g.linear(&gx, &mat);
        assert_eq!(g.int_products(), before, "{name}: float path");
        let want = Cpu.linear(&act(t, k, a.values()), &cm);
        close(&read(&g, &y), &want.data, FLOAT_PATH_TOL, name);
    }
    // Also in integers: 8-bit weights (codes − 128 still fit a signed byte), one scale for the
    // whole tensor, and the shortest groups the kernel takes (16, one k slice).
    let (gx, a) = quantized_act(&g, &x, t, k, &spec);
    for (name, bits, gran) in [
        ("int8 g32", 8, Granularity::Group(32)),
        ("int4 per tensor", 4, Granularity::PerTensor),
        ("int4 g16", 4, Granularity::Group(16)),
        ("int2 per row", 2, Granularity::PerRow),
    ] {
        let w = int_weight(&mut r, bits, gran, true, n, k);
        let before = g.int_products();
        let y = g.linear(&gx, &g.load_matrix(&w, None).unwrap());
        assert_eq!(g.int_products(), before + 1, "{name}: integer path");
        let want = int_linear(&a, &w, None).unwrap();
        let (worst, at) = worst_of_e(&read(&g, &y), &want, &abs_sums(&a, &w, None));
        assert!(
            worst <= INT_GPU_VS_CPU_REL,
            "{name}: {worst:e} of E at {at}"
        );
    }
    // Outliers and low-rank factors: the integer base product, then the add-on kernels.
    let base = int_weight(&mut r, 4, Granularity::Group(32), true, n, k);
    let addons = AddOns {
        outliers: 17,
        lowrank: Some(quantlab::format::addons::LowRankSpec {
            rank: 3,
            bits8: true,
        }),
    };
    let mut next = || r.next_u32();
    let bytes = addons.random(n, k, &mut next).unwrap();
    let w = base.with_extra(addons, &bytes).unwrap();
    let mat = g.load_matrix(&w, None).unwrap();
    let before = g.int_products();
    let y = g.linear(&gx, &mat);
    assert_eq!(g.int_products(), before + 1, "add-ons: integer base");
    let want = Cpu.linear(&act(t, k, a.values()), &Cpu.load_matrix(&w, None).unwrap());
    close(&read(&g, &y), &want.data, FLOAT_PATH_TOL, "add-ons");
}

/// A shape mismatch with codes attached is recorded and reported at readback, as for every op.
#[test]
fn shape_mismatch_is_recorded_not_a_panic() {
    let g = gpu();
    let mut r = Rng(44);
    let w = int_weight(&mut r, 4, Granularity::PerRow, true, 8, 64);
    let mat = g.load_matrix(&w, None).unwrap();
    let (gx, _) = quantized_act(&g, &r.vec(3 * 32), 3, 32, &specs()[0]);
    let before = g.int_products();
    let y = g.linear(&gx, &mat);
    assert_eq!(g.int_products(), before);
    let e = pollster::block_on(g.read_act(&y)).unwrap_err().to_string();
    assert!(e.contains("32 columns"), "{e}");
}

/// Natively wgpu's shader compiler implements `packed_4x8_integer_dot_product` on every device
/// (lowering `dot4I8Packed` to `OpSDot` or to an exact polyfill), so the native variant is the
/// default there; the browser reports its own.
#[test]
fn native_dot4_is_offered() {
    let g = gpu();
    assert!(g.ctx.dot4, "{}", g.ctx.describe());
}
