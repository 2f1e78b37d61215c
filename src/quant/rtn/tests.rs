//! Unit tests of the RTN quantizer against a plain scalar re-implementation of methods.md §1.
//!
//! The reference rounds each scale up to the next f16, as `quantize` does before choosing codes
//! (the format stores f16 scales); rounds with `f32::round_ties_even` and clamps *after* rounding
//! (the quantizer clamps before; for integer bounds the two agree, which this test checks).

use super::*;
use crate::format::Format;

/// Dequantized values of quantizer and reference may differ by this much, relative to the
/// group's scale (they are expected to be equal; the slack covers f32 formatting of `q·s`).
const REL_TOL: f32 = 1e-6;

/// Deterministic pseudo-random numbers (splitmix64) so tests need no dependency.
struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Roughly normal (sum of 4 uniforms), with occasional 8× outliers like real weights.
    fn weight(&mut self) -> f32 {
        let x = (0..4).map(|_| self.uniform()).sum::<f32>() - 2.0;
        if self.next_u64().is_multiple_of(97) {
            8.0 * x
        } else {
            x
        }
    }
}

fn weights(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut r = Rng(seed);
    (0..n).map(|_| scale * r.weight()).collect()
}

fn spec(bits: u8, gran: Granularity, sym: bool) -> IntSpec {
    IntSpec { bits, gran, sym }
}

/// Round a scale up to f16, the rule the module documents: nearest, then one step up if below.
fn f16r(s: f32) -> f32 {
    let h = half::f16::from_f32(s);
    if h.to_f32() >= s {
        h.to_f32()
    } else {
        let up = half::f16::from_bits(h.to_bits() + 1).to_f32();
        assert!(up > s && up > h.to_f32());
        up
    }
}

/// Straightforward scalar RTN: returns the dequantized tensor and each weight's group scale.
fn reference(w: &[f32], rows: usize, cols: usize, sp: IntSpec) -> (Vec<f32>, Vec<f32>) {
    let g = match sp.gran {
        Granularity::PerTensor => rows * cols,
        Granularity::PerRow => cols,
        Granularity::Group(g) => g,
    };
    let b = sp.bits as i32;
    let mut out = Vec::with_capacity(w.len());
    let mut scale_of = Vec::with_capacity(w.len());
    for grp in w.chunks(g) {
        if sp.sym && b == 1 {
            let mut sum = 0f64;
            for &x in grp {
                sum += x.abs() as f64;
            }
            let s = f16r((sum / grp.len() as f64) as f32);
            for &x in grp {
                out.push(if x >= 0.0 { s } else { -s });
                scale_of.push(s);
            }
        } else if sp.sym {
            let qmax = ((1 << (b - 1)) - 1) as f32;
            let amax = grp.iter().fold(0f32, |a, &x| a.max(x.abs()));
            let s = f16r(amax / qmax);
            for &x in grp {
                let q = if s > 0.0 {
                    (x / s).round_ties_even().clamp(-qmax, qmax)
                } else {
                    0.0
                };
                out.push(q * s);
                scale_of.push(s);
            }
        } else {
            let levels = ((1 << b) - 1) as f32;
            let lo = grp.iter().fold(0f32, |a, &x| a.min(x));
            let hi = grp.iter().fold(0f32, |a, &x| a.max(x));
            let s = f16r((hi - lo) / levels);
            let z = if s > 0.0 {
                (-lo / s).round_ties_even().clamp(0.0, levels)
            } else {
                0.0
            };
            for &x in grp {
                let c = if s > 0.0 {
                    ((x / s).round_ties_even() + z).clamp(0.0, levels)
                } else {
                    0.0
                };
                out.push((c - z) * s);
                scale_of.push(s);
            }
        }
    }
    (out, scale_of)
}

fn mse(a: &[f32], b: &[f32]) -> f64 {
    let s: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    s / a.len() as f64
}

const GRANS: [Granularity; 4] = [
    Granularity::PerTensor,
    Granularity::PerRow,
    Granularity::Group(16),
    Granularity::Group(32),
];

#[test]
fn round_trick_matches_round_ties_even() {
    let mut x = -300.0f32;
    while x <= 300.0 {
        assert_eq!(round_even_small(x), x.round_ties_even(), "x = {x}");
        x += 0.125;
    }
    for v in [0.49999997f32, -0.49999997, 2.5, -2.5, 3.5, 1e-30, -1e-30] {
        assert_eq!(round_even_small(v), v.round_ties_even(), "x = {v}");
    }
}

#[test]
fn matches_scalar_reference() {
    let (rows, cols) = (8, 64);
    let mut w = weights(1, rows * cols, 0.05);
    // An all-zero group and a row of one sign exercise the edge cases.
    w[32..48].fill(0.0);
    for x in &mut w[2 * cols..3 * cols] {
        *x = x.abs() + 0.01;
    }
    for bits in 1..=8u8 {
        for sym in [true, false] {
            for gran in GRANS {
                let sp = spec(bits, gran, sym);
                let q = quantize(&w, rows, cols, sp, &RtnOptions::default(), "t").unwrap();
                assert_eq!(q.format, Format::Int(sp));
                assert_eq!(
                    q.data.len(),
                    Format::Int(sp).storage(rows, cols).unwrap().total()
                );
                let got = q.dequantize().unwrap();
                let (want, scale) = reference(&w, rows, cols, sp);
                for i in 0..w.len() {
                    let tol = REL_TOL * scale[i].max(f32::MIN_POSITIVE);
                    assert!(
                        (got[i] - want[i]).abs() <= tol,
                        "{}: weight {i}: got {} want {}",
                        Format::Int(sp).name(),
                        got[i],
                        want[i]
                    );
                }
            }
        }
    }
}

#[test]
fn eight_bit_error_is_at_most_half_a_step() {
    let (rows, cols) = (16, 128);
    let w = weights(2, rows * cols, 0.02);
    for sym in [true, false] {
        for gran in GRANS {
            let sp = spec(8, gran, sym);
            let q = quantize(&w, rows, cols, sp, &RtnOptions::default(), "t").unwrap();
            let got = q.dequantize().unwrap();
            let (_, scale) = reference(&w, rows, cols, sp);
            for i in 0..w.len() {
                let err = (got[i] - w[i]).abs();
                assert!(
                    err <= 0.5 * scale[i] * (1.0 + REL_TOL),
                    "{}: weight {i}: error {err} > s/2 = {}",
                    Format::Int(sp).name(),
                    0.5 * scale[i]
                );
            }
        }
    }
}

/// Values exactly on a grid (scale a power of two times a short mantissa, every group using its
/// extreme codes) are reproduced bit for bit, with and without clip search.
#[test]
fn on_grid_tensors_are_reproduced_exactly() {
    let (rows, cols) = (4, 64);
    let s = 0.01171875f32; // 3·2^-8, exact in f16
    let mut r = Rng(3);
    for bits in 1..=8u8 {
        for sym in [true, false] {
            for gran in GRANS {
                let sp = spec(bits, gran, sym);
                let g = sp.gran.group_len(rows, cols, "t").unwrap();
                let levels = (1i32 << bits) - 1;
                let mut w = vec![0f32; rows * cols];
                for grp in w.chunks_mut(g) {
                    if sym && bits == 1 {
                        for x in grp.iter_mut() {
                            *x = if r.next_u64().is_multiple_of(2) {
                                s
                            } else {
                                -s
                            };
                        }
                    } else if sym {
                        let qmax = (1i32 << (bits - 1)) - 1;
                        for x in grp.iter_mut() {
                            let q = (r.next_u64() % (2 * qmax as u64 + 1)) as i32 - qmax;
                            *x = q as f32 * s;
                        }
                        grp[0] = qmax as f32 * s; // the group's max|w| is on the grid's edge
                    } else {
                        let z = (r.next_u64() % (levels as u64 + 1)) as i32;
                        for x in grp.iter_mut() {
                            let c = (r.next_u64() % (levels as u64 + 1)) as i32;
                            *x = (c - z) as f32 * s;
                        }
                        grp[0] = (0 - z) as f32 * s;
                        grp[1] = (levels - z) as f32 * s;
                    }
                }
                for clip_search in [false, true] {
                    let opts = RtnOptions { clip_search };
                    let q = quantize(&w, rows, cols, sp, &opts, "t").unwrap();
                    assert_eq!(
                        q.dequantize().unwrap(),
                        w,
                        "{} clip {clip_search}",
                        Format::Int(sp).name()
                    );
                }
            }
        }
    }
}

#[test]
fn clip_search_is_never_worse_and_sometimes_better() {
    let (rows, cols) = (8, 256);
    let w = weights(4, rows * cols, 0.03);
    let mut improved = 0;
    for bits in [2u8, 3, 4, 8] {
        for sym in [true, false] {
            for gran in [
                Granularity::PerTensor,
                Granularity::PerRow,
                Granularity::Group(64),
            ] {
                let sp = spec(bits, gran, sym);
                let plain = quantize(&w, rows, cols, sp, &RtnOptions::default(), "t").unwrap();
                let opts = RtnOptions { clip_search: true };
                let clipped = quantize(&w, rows, cols, sp, &opts, "t").unwrap();
                let e0 = mse(&plain.dequantize().unwrap(), &w);
                let e1 = mse(&clipped.dequantize().unwrap(), &w);
                assert!(
                    e1 <= e0,
                    "{}: clip {e1} > plain {e0}",
                    Format::Int(sp).name()
                );
                if e1 < 0.9 * e0 {
                    improved += 1;
                }
            }
        }
    }
    // Heavy-tailed weights at 2-3 bits are where clipping pays; it must show there.
    assert!(improved >= 4, "clip search helped in only {improved} cases");
}

#[test]
fn bad_group_bits_shape_and_values_are_errors() {
    let w = vec![0.5f32; 4 * 48];
    let opts = RtnOptions::default();
    let e = quantize(
        &w,
        4,
        48,
        spec(4, Granularity::Group(32), true),
        &opts,
        "blk.0.x",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("blk.0.x") && e.contains("32") && e.contains("48"),
        "{e}"
    );
    for bits in [0u8, 9] {
        let e = quantize(
            &w,
            4,
            48,
            spec(bits, Granularity::PerRow, true),
            &opts,
            "blk.1.y",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("blk.1.y") && e.contains(&bits.to_string()),
            "{e}"
        );
    }
    let e = quantize(&w, 5, 48, spec(4, Granularity::PerRow, true), &opts, "m")
        .unwrap_err()
        .to_string();
    assert!(e.contains("192 values") && e.contains("5×48"), "{e}");
    assert!(quantize(&[], 0, 48, spec(4, Granularity::PerRow, true), &opts, "m").is_err());
    let mut bad = w.clone();
    bad[50] = f32::NAN;
    let e = quantize(
        &bad,
        4,
        48,
        spec(4, Granularity::PerRow, false),
        &opts,
        "blk.2.z",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("blk.2.z") && e.contains("row 1 column 2"), "{e}");
    bad[50] = f32::INFINITY;
    assert!(quantize(
        &bad,
        4,
        48,
        spec(8, Granularity::PerTensor, true),
        &opts,
        "t"
    )
    .is_err());
    // A scale beyond f16 is refused rather than stored as infinity.
    let huge = vec![1e9f32; 48];
    let e = quantize(
        &huge,
        1,
        48,
        spec(8, Granularity::PerRow, true),
        &opts,
        "big",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("big") && e.contains("f16"), "{e}");
}

#[test]
fn asymmetric_beats_symmetric_on_shifted_weights() {
    let (rows, cols) = (8, 128);
    let mut r = Rng(5);
    let w: Vec<f32> = (0..rows * cols).map(|_| 0.2 + 0.1 * r.weight()).collect();
    for bits in [2u8, 3, 4] {
        let opts = RtnOptions::default();
        let gran = Granularity::Group(32);
        let sym = quantize(&w, rows, cols, spec(bits, gran, true), &opts, "t").unwrap();
        let asym = quantize(&w, rows, cols, spec(bits, gran, false), &opts, "t").unwrap();
        let (es, ea) = (
            mse(&sym.dequantize().unwrap(), &w),
            mse(&asym.dequantize().unwrap(), &w),
        );
        assert!(ea < 0.7 * es, "{bits} bits: asym {ea} vs sym {es}");
    }
}

#[test]
fn zero_and_tiny_tensors() {
    let z = vec![0f32; 2 * 32];
    for bits in 1..=8u8 {
        for sym in [true, false] {
            for clip_search in [false, true] {
                let sp = spec(bits, Granularity::Group(16), sym);
                let q = quantize(&z, 2, 32, sp, &RtnOptions { clip_search }, "t").unwrap();
                assert!(q.dequantize().unwrap().iter().all(|&x| x == 0.0));
            }
        }
    }
    // Weights so small their scale underflows f16 keep the smallest subnormal scale, so the
    // largest of them survives instead of collapsing to zero.
    let tiny: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 1e-8).collect();
    let q = quantize(
        &tiny,
        1,
        32,
        spec(8, Granularity::PerRow, true),
        &RtnOptions::default(),
        "t",
    )
    .unwrap();
    let d = q.dequantize().unwrap();
    // -1.6e-7 / 5.96e-8 = -2.68 rounds to -3 steps of the smallest subnormal.
    assert_eq!(d[0], -3.0 * half::f16::from_bits(1).to_f32());
}

#[test]
fn parallel_and_serial_runs_are_bit_identical() {
    let (rows, cols) = (64, 192);
    let w = weights(6, rows * cols, 0.04);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let four = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    for gran in [
        Granularity::PerTensor,
        Granularity::PerRow,
        Granularity::Group(64),
    ] {
        for clip_search in [false, true] {
            let sp = spec(3, gran, false);
            let opts = RtnOptions { clip_search };
            let a = one.install(|| quantize(&w, rows, cols, sp, &opts, "t").unwrap());
            let b = four.install(|| quantize(&w, rows, cols, sp, &opts, "t").unwrap());
            assert_eq!(a, b, "{} clip {clip_search}", Format::Int(sp).name());
        }
    }
}

#[test]
fn clip_factors_span_the_documented_range() {
    let f = clip_factors();
    assert_eq!(f[0], 1.0);
    assert!((f[CLIP_STEPS - 1] - CLIP_MIN).abs() < 1e-6);
    assert!(f.windows(2).all(|p| p[1] < p[0]));
}

/// Importance-weighted RTN (llama.cpp's imatrix idea): on every row, for 2–4 bits, symmetric
/// and not, per row and in groups, `Σ imp_j (w_j − ŵ_j)²` is never above plain RTN's (the
/// weighted search includes plain RTN's range), and it is strictly lower summed over the rows.
#[test]
fn importance_weighted_error_is_never_worse_on_the_weighted_objective() {
    let (rows, cols) = (24, 128);
    let mut rng = Rng(1818);
    let w: Vec<f32> = (0..rows * cols).map(|_| rng.weight()).collect();
    // Importances over four decades, as mean x² of real activations spread.
    let imp: Vec<f32> = (0..cols)
        .map(|_| 10f32.powf(4.0 * rng.uniform() - 2.0))
        .collect();
    let err = |q: &QTensor| -> Vec<f64> {
        let d = q.dequantize().unwrap();
        (0..rows)
            .map(|r| {
                (0..cols)
                    .map(|j| {
                        let e = (w[r * cols + j] - d[r * cols + j]) as f64;
                        imp[j] as f64 * e * e
                    })
                    .sum()
            })
            .collect()
    };
    for bits in [2, 3, 4] {
        for sym in [true, false] {
            for gran in [Granularity::PerRow, Granularity::Group(32)] {
                let spec = IntSpec { bits, gran, sym };
                let plain = quantize(&w, rows, cols, spec, &RtnOptions::default(), "t").unwrap();
                let weighted = quantize_weighted(&w, rows, cols, spec, &imp, "t").unwrap();
                assert_eq!(plain.format, weighted.format);
                let (ep, ew) = (err(&plain), err(&weighted));
                for (r, (p, q)) in ep.iter().zip(&ew).enumerate() {
                    assert!(q <= p, "{spec:?} row {r}: weighted {q} > plain {p}");
                }
                let (sp, sw) = (ep.iter().sum::<f64>(), ew.iter().sum::<f64>());
                assert!(sw < sp, "{spec:?}: {sw} vs {sp}");
            }
        }
    }
    let per_tensor = IntSpec {
        bits: 4,
        gran: Granularity::PerTensor,
        sym: true,
    };
    let e = quantize_weighted(&w, rows, cols, per_tensor, &imp, "t").unwrap_err();
    assert!(e.to_string().contains("per-row or group"), "{e}");
    assert!(quantize_weighted(&w, rows, cols, per_tensor, &imp[1..], "t").is_err());
}
