//! Exactness on few distinct values, k-means against RTN at 3 bits on Gaussian data (same bits
//! and equal effective bits), fixed tables, outliers and the format-table bytes.

use super::*;
use crate::format::IntSpec;
use crate::quant::rtn::{self, RtnOptions};
use crate::quant::testutil::gaussian;

fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn few_distinct_values_are_reproduced_exactly() {
    let (rows, cols) = (12, 40);
    // Each column holds ≤ 8 distinct f16-exact values; rows then hold more than 8.
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| {
            let (r, c) = (i / cols, i % cols);
            ((r * 5 + c) % 8) as f32 * 0.125 - 0.5 + c as f32
        })
        .collect();
    for bits in [3, 4] {
        let per = KmeansOptions {
            per: Per::Column,
            outlier_frac: 0.0,
            ..KmeansOptions::default()
        };
        let q = kmeans(&w, rows, cols, bits, &per, "t").unwrap();
        assert_eq!(q.dequantize().unwrap(), w, "{bits} bits per column");
    }
    let wt: Vec<f32> = (0..cols * rows)
        .map(|i| w[(i % rows) * cols + i / rows])
        .collect();
    let q = kmeans(&wt, cols, rows, 3, &KmeansOptions::default(), "t").unwrap();
    assert_eq!(q.dequantize().unwrap(), wt, "per row");
}

#[test]
fn kmeans_beats_rtn_at_three_bits_on_gaussian_rows() {
    let (rows, cols) = (32, 512);
    let w: Vec<f32> = gaussian(3, rows * cols).iter().map(|v| v * 0.02).collect();
    let km = kmeans(&w, rows, cols, 3, &KmeansOptions::default(), "t").unwrap();
    let e_km = mse(&w, &km.dequantize().unwrap());
    let rtn = |gran, sym| {
        let q = rtn::quantize(
            &w,
            rows,
            cols,
            IntSpec { bits: 3, gran, sym },
            &RtnOptions::default(),
            "t",
        )
        .unwrap();
        (mse(&w, &q.dequantize().unwrap()), q.bits_per_weight())
    };
    let (e_row, _) = rtn(Granularity::PerRow, false);
    assert!(
        e_km < e_row,
        "same granularity: kmeans {e_km} ≥ rtn {e_row}"
    );
    // Equal effective bits: RTN with groups of 64 spends about what the per-row table costs.
    let (e_g64, b_g64) = rtn(Granularity::Group(64), true);
    assert!(
        km.bits_per_weight() <= b_g64 + 0.01,
        "{} vs {b_g64}",
        km.bits_per_weight()
    );
    assert!(e_km < e_g64, "equal bits: kmeans {e_km} ≥ rtn g64 {e_g64}");
}

#[test]
fn fixed_tables_hit_their_levels_and_bound_the_error() {
    let (rows, cols) = (4, 64);
    for (table, lut, top) in [
        (Codebook::Nf4(Granularity::Group(32)), &NF4, 1.0f32),
        (Codebook::Fp4(Granularity::Group(32)), &E2M1, 6.0),
    ] {
        // Values exactly on the grid of scale 0.25·top⁻¹·top = 0.25 ... built from the table.
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| lut[(i * 7) % 16] * 0.25 / top * top)
            .collect();
        let mut w = w;
        for g in w.chunks_mut(32) {
            g[0] = 0.25 * top; // make absmax exactly the table's top
        }
        let q = fixed(&w, rows, cols, table, "t").unwrap();
        assert_eq!(q.dequantize().unwrap(), w, "{table:?}");
        assert_eq!(q.data.len(), rows * cols / 2 + 2 * rows * cols / 32);
        // Gaussian data: every value within half the largest gap of the table of its group.
        let gw: Vec<f32> = gaussian(8, rows * cols);
        let d = fixed(&gw, rows, cols, table, "t")
            .unwrap()
            .dequantize()
            .unwrap();
        for (gi, (a, b)) in gw.chunks(32).zip(d.chunks(32)).enumerate() {
            let amax = a.iter().fold(0f32, |m, x| m.max(x.abs()));
            let gap = lut
                .windows(2)
                .map(|p| (p[1] - p[0]).abs())
                .fold(0f32, f32::max)
                / top;
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() <= 0.5 * gap * amax * 1.002,
                    "{table:?} group {gi}: {x} → {y}"
                );
            }
        }
    }
    assert!(fixed(&[0.0; 8], 1, 8, Codebook::PerRow, "t").is_err());
}

#[test]
fn outliers_are_kept_exactly_and_counted() {
    let (rows, cols) = (8, 64);
    let mut w: Vec<f32> = gaussian(5, rows * cols).iter().map(|v| v * 0.01).collect();
    for (k, i) in [3usize, 100, 257, 511].iter().enumerate() {
        w[*i] = 0.5 + k as f32; // f16-exact
    }
    let opts = KmeansOptions {
        per: Per::Row,
        outlier_frac: 4.0 / 512.0,
        ..KmeansOptions::default()
    };
    let q = kmeans(&w, rows, cols, 3, &opts, "t").unwrap();
    assert_eq!(q.addons.outliers, 4);
    let st = q.storage();
    assert_eq!(st.outliers, 4 * 4 + 8);
    let d = q.dequantize().unwrap();
    for i in [3usize, 100, 257, 511] {
        assert_eq!(d[i], w[i]);
    }
    // The outliers no longer take up levels of their rows' codebooks: lower error on the rest.
    let plain = kmeans(&w, rows, cols, 3, &KmeansOptions::default(), "t")
        .unwrap()
        .dequantize()
        .unwrap();
    let (e, ep) = (mse(&w, &d), mse(&w, &plain));
    assert!(e < ep, "with outliers {e} ≥ without {ep}");
    // Out-of-order indices in the bytes are an error, not a panic.
    let mut bad = q.clone();
    let base = st.codes + st.scales;
    bad.data.swap(base, base + 4);
    assert!(bad.dequantize().is_err());
    let too_many = KmeansOptions {
        per: Per::Row,
        outlier_frac: 0.5,
        ..KmeansOptions::default()
    };
    assert!(kmeans(&w, rows, cols, 3, &too_many, "t").is_err());
}

/// `Σ_j h_j (w_ij − ŵ_ij)²`: the diagonal part of the output error that weighted k-means fits.
fn weighted_err(w: &[f32], q: &[f32], h: &[f32]) -> f64 {
    let cols = h.len();
    w.iter()
        .zip(q)
        .enumerate()
        .map(|(i, (a, b))| h[i % cols] as f64 * ((a - b) as f64).powi(2))
        .sum()
}

#[test]
fn weighted_kmeans_fits_the_heavy_channels() {
    let (rows, cols) = (16, 256);
    let w: Vec<f32> = gaussian(11, rows * cols).iter().map(|v| v * 0.02).collect();
    // A few channels carry most of the activation energy, as in real models.
    let h: Vec<f32> = (0..cols)
        .map(|j| if j % 37 == 0 { 400.0 } else { 1.0 })
        .collect();
    let plain = kmeans(&w, rows, cols, 3, &KmeansOptions::default(), "t").unwrap();
    let wk = kmeans_weighted(&w, rows, cols, 3, &KmeansOptions::default(), &h, "t").unwrap();
    let (e_plain, e_w) = (
        weighted_err(&w, &plain.dequantize().unwrap(), &h),
        weighted_err(&w, &wk.dequantize().unwrap(), &h),
    );
    // Same storage, lower weighted error by a clear margin.
    assert_eq!(plain.data.len(), wk.data.len());
    const MIN_GAIN: f64 = 1.5;
    assert!(
        e_plain > MIN_GAIN * e_w,
        "plain {e_plain:e} vs weighted {e_w:e}"
    );
    // Uniform weights change nothing about what is optimised: no worse than plain k-means on
    // plain MSE by more than Lloyd's local-optimum slack.
    const SLACK: f64 = 1.02;
    let ones = vec![1.0f32; cols];
    let wu = kmeans_weighted(&w, rows, cols, 3, &KmeansOptions::default(), &ones, "t").unwrap();
    let (m_plain, m_u) = (
        mse(&w, &plain.dequantize().unwrap()),
        mse(&w, &wu.dequantize().unwrap()),
    );
    assert!(m_u <= SLACK * m_plain, "{m_u:e} vs {m_plain:e}");
}

#[test]
fn a_dominant_weight_gets_its_own_level() {
    let mut v: Vec<f32> = gaussian(5, 200).iter().map(|x| x * 0.1).collect();
    let mut h = vec![1.0f32; 200];
    v[17] = 0.7;
    h[17] = 1e6;
    let levels = kmeans_1d_weighted(&v, &h, 4);
    let want = f16::from_f32(0.7).to_f32();
    assert!(levels.contains(&want), "{levels:?}");
    assert!(
        levels.windows(2).all(|p| p[0] <= p[1]),
        "sorted: {levels:?}"
    );
    // All-zero weights: the unweighted fit.
    assert_eq!(kmeans_1d_weighted(&v, &[0.0; 200], 4), kmeans_1d(&v, 4));
}

#[test]
fn weighted_kmeans_per_column_and_bad_weights() {
    let (rows, cols) = (24, 16);
    let w: Vec<f32> = gaussian(9, rows * cols);
    let h: Vec<f32> = (0..cols).map(|j| 1.0 + j as f32).collect();
    let col = KmeansOptions {
        per: Per::Column,
        ..KmeansOptions::default()
    };
    // Within one column every weight has the same H_jj: the fit is the unweighted one.
    assert_eq!(
        kmeans_weighted(&w, rows, cols, 3, &col, &h, "t")
            .unwrap()
            .data,
        kmeans(&w, rows, cols, 3, &col, "t").unwrap().data
    );
    let e = kmeans_weighted(&w, rows, cols, 3, &col, &h[1..], "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("15 channel weights for 16 inputs"), "{e}");
    let mut bad = h.clone();
    bad[3] = f32::NAN;
    assert!(kmeans_weighted(&w, rows, cols, 3, &col, &bad, "t").is_err());
}

/// A row whose absmax is exactly 6·Δ with Δ = 0.125 (f16-exact, so Δ is stored exactly), and
/// `n` small weights of magnitudes spread evenly over 0.3·Δ..0.7·Δ, alternating in sign.
fn small_weights_row(n: usize) -> Vec<f32> {
    let delta = 0.125f32;
    let mut w = vec![6.0 * delta];
    for i in 0..n {
        let m = (0.3 + 0.4 * i as f32 / (n - 1) as f32) * delta;
        w.push(if i % 2 == 0 { m } else { -m });
    }
    w
}

#[test]
fn dint_keeps_small_weights_that_int4_zeroes() {
    use crate::format::DintParams;
    let w = small_weights_row(63);
    let cols = w.len();
    let delta = 0.125f32;
    let dint = fixed(
        &w,
        1,
        cols,
        Codebook::Dint(Granularity::PerRow, DintParams::default()),
        "t",
    )
    .unwrap()
    .dequantize()
    .unwrap();
    // dINT: every weight of 0.3·Δ..0.7·Δ goes to the denormal ±0.5·Δ (nearest: |w| within
    // 0.25·Δ of it), never to 0; the absmax is +6·Δ exactly.
    assert_eq!(dint[0], 6.0 * delta);
    for (x, y) in w[1..].iter().zip(&dint[1..]) {
        assert_eq!(*y, 0.5 * delta * x.signum(), "dint: {x} → {y}");
    }
    // INT4 symmetric on the same row: step s = 6Δ/7 (f16 rounded up), and everything below
    // s/2 ≈ 0.43·Δ rounds to 0 — the lower part of the same range.
    let spec = IntSpec {
        bits: 4,
        gran: Granularity::PerRow,
        sym: true,
    };
    let int = rtn::quantize(&w, 1, cols, spec, &RtnOptions::default(), "t")
        .unwrap()
        .dequantize()
        .unwrap();
    let s = crate::quant::rtn::f16_ceil(6.0 * delta / 7.0);
    let mut zeroed = 0;
    for (x, y) in w[1..].iter().zip(&int[1..]) {
        if x.abs() < 0.5 * s {
            assert_eq!(*y, 0.0, "int4: {x} below half a step → {y}");
            zeroed += 1;
        }
    }
    // A third of the range lies below 0.43·Δ: many weights, not an edge case.
    assert!(zeroed >= 63 / 4, "int4 zeroed only {zeroed} of 63");
}

#[test]
fn dint_rounds_to_the_nearest_level_with_ties_to_the_smaller_magnitude() {
    use crate::format::DintParams;
    let p = DintParams::default();
    let delta = 0.125f32;
    // Exactly halfway points (all exact in f32): 0.25Δ between 0 and the denormal, 0.75Δ
    // between the denormal and 1, 2.5Δ between 2 and 3; and points just off them.
    let cases: [(f32, f32); 8] = [
        (0.25, 0.0),
        (-0.25, 0.0),
        (0.75, 0.5),
        (-0.75, -0.5),
        (2.5, 2.0),
        (-2.5, -2.0),
        (0.2500001, 0.5),
        (0.7500001, 1.0),
    ];
    let mut w = vec![6.0 * delta];
    w.extend(cases.iter().map(|c| c.0 * delta));
    let d = fixed(&w, 1, w.len(), Codebook::Dint(Granularity::PerRow, p), "t")
        .unwrap()
        .dequantize()
        .unwrap();
    for ((x, want), got) in cases.iter().zip(&d[1..]) {
        assert_eq!(*got, want * delta, "{x}·Δ");
    }
    // Without zero: small values go to the denormal of their sign.
    let nz = DintParams { zero: false, ..p };
    let d = fixed(
        &[6.0 * delta, 0.01, -0.01],
        1,
        3,
        Codebook::Dint(Granularity::PerRow, nz),
        "t",
    )
    .unwrap()
    .dequantize()
    .unwrap();
    assert_eq!(d[1..], [0.5 * delta, -0.5 * delta]);
}

#[test]
fn dint_rtn_values_lie_on_the_grid_and_bytes_match_the_table() {
    use crate::format::DintParams;
    let (rows, cols) = (6, 64);
    let w: Vec<f32> = gaussian(11, rows * cols);
    for p in [
        DintParams::default(),
        DintParams {
            denorm: 3,
            max: 4,
            zero: true,
        },
    ] {
        let levels = p.levels().unwrap();
        let table = Codebook::Dint(Granularity::Group(16), p);
        let q = fixed(&w, rows, cols, table, "t").unwrap();
        assert_eq!(q.data.len(), rows * cols / 2 + 2 * rows * cols / 16);
        let d = q.dequantize().unwrap();
        for (g, (wg, dg)) in w.chunks(16).zip(d.chunks(16)).enumerate() {
            let amax = wg.iter().fold(0f32, |m, x| m.max(x.abs()));
            let s = crate::quant::rtn::f16_ceil(amax / p.max as f32);
            for (x, y) in wg.iter().zip(dg) {
                assert!(levels.iter().any(|l| l * s == *y), "{p:?} group {g}: {y}");
                // Nearest level: no other level is strictly closer.
                let best = levels
                    .iter()
                    .map(|l| (x - l * s).abs())
                    .fold(f32::INFINITY, f32::min);
                assert_eq!((x - y).abs(), best, "{p:?} group {g}: {x} → {y}");
            }
        }
    }
}

/// The Lloyd loop as it was before its runs were cached (one sweep summing every value into
/// `sums[c]`, every iteration): `lloyd` must give the same levels bit for bit.
fn lloyd_reference(v: &[f32], levels: &mut [f32]) {
    let k = levels.len();
    let mut sums = vec![0f64; k];
    let mut counts = vec![0usize; k];
    for _ in 0..KMEANS_ITERS {
        sums.iter_mut().for_each(|s| *s = 0.0);
        counts.iter_mut().for_each(|c| *c = 0);
        let mut c = 0;
        for &x in v {
            while c + 1 < k && (x - levels[c + 1]).abs() <= (x - levels[c]).abs() {
                c += 1;
            }
            sums[c] += x as f64;
            counts[c] += 1;
        }
        let mut changed = false;
        for i in 0..k {
            if counts[i] > 0 {
                let m = (sums[i] / counts[i] as f64) as f32;
                changed |= m != levels[i];
                levels[i] = m;
            }
        }
        if !changed {
            break;
        }
        levels.sort_by(f32::total_cmp);
    }
}

#[test]
fn cached_runs_give_the_reference_levels_bit_for_bit() {
    let bits = |l: &[f32]| l.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let mut cases = 0;
    for seed in 0..40u64 {
        let n = [9, 17, 100, 576, 1536][seed as usize % 5];
        let g = gaussian(seed, n);
        let inputs: Vec<Vec<f32>> = vec![
            g.clone(),
            // Heavy ties: values on a coarse grid.
            g.iter().map(|x| (x * 4.0).round() / 4.0).collect(),
            // Magnitudes far apart, where rounded distances can tie.
            g.iter()
                .enumerate()
                .map(|(i, x)| if i % 7 == 0 { x * 6.0e4 } else { x * 1e-6 })
                .collect(),
            // Signed zeros and one value repeated most of the time.
            g.iter()
                .enumerate()
                .map(|(i, x)| match i % 5 {
                    0 => 0.0,
                    1 => -0.0,
                    2 | 3 => 0.5,
                    _ => *x,
                })
                .collect(),
        ];
        for v in &inputs {
            for k in [2, 4, 8, 16, 32] {
                assert_eq!(
                    bits(&kmeans_1d(v, k)),
                    bits(&kmeans_1d_by(v, k, lloyd_reference)),
                    "seed {seed}, n {n}, k {k}"
                );
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 40 * 4 * 5);
}

#[test]
fn radix_order_is_total_cmp_order() {
    let mut v = gaussian(7, 3000);
    v.extend([
        0.0,
        -0.0,
        f32::MIN_POSITIVE / 4.0,
        -f32::MIN_POSITIVE / 4.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::MAX,
        f32::MIN,
        1.0,
        1.0,
        -1.0,
    ]);
    let mut want = v.clone();
    want.sort_by(f32::total_cmp);
    let bits = |l: &[f32]| l.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&sorted(&v)), bits(&want));
}
