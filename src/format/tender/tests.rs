use super::*;
use crate::format::act::{
    fake_quant as uniform_fake_quant, ActGranularity, ActQuantSpec, ActScale,
};
use crate::testkit::Rng;

/// Per output, `tender_linear` rounds `s_0 · sw` to f32 once and the three f64 terms' sum to f32
/// once; the f64 reference rounds each `x̂`, `ŵ` to f32 once too. A few f32 ulps (2⁻²⁴) of the
/// absolute sum `E = Σ |x̂ ŵ| + |bias|`.
const TENDER_VS_FAKE_QUANT_REL: f64 = 1e-6;

fn spec(bits: u8, groups: u8, chunk: usize) -> TenderSpec {
    TenderSpec {
        bits,
        groups,
        chunk,
        round: TenderRound::Up,
    }
}

/// Activations with a few outlier channels, as LLM sites have them.
fn outlier_rows(r: &mut Rng, rows: usize, cols: usize) -> Vec<f32> {
    let mut x: Vec<f32> = r.vec(rows * cols);
    for t in 0..rows {
        x[t * cols + 3] = 60.0 + 10.0 * r.next();
        x[t * cols + cols / 2] *= 25.0;
        x[t * cols + cols - 1] += 5.0; // an offset the bias removes
    }
    x
}

fn int_weight(r: &mut Rng, bits: u8, rows: usize, cols: usize) -> QTensor {
    let mask = (1u32 << bits) - 1;
    let codes: Vec<u8> = (0..rows * cols)
        .map(|_| (r.next_u32() & mask) as u8)
        .collect();
    let scales: Vec<f32> = (0..rows).map(|_| 0.01 + 0.1 * r.next().abs()).collect();
    QTensor::from_int_parts(
        IntSpec {
            bits,
            gran: Granularity::PerRow,
            sym: true,
        },
        rows,
        cols,
        &codes,
        &scales,
        &[],
    )
    .unwrap()
}

#[test]
fn thresholds_halve_and_groups_follow_the_rounding() {
    let s = spec(8, 4, 64);
    assert_eq!(
        (0..4).map(|i| s.threshold(8.0, i)).collect::<Vec<_>>(),
        [1.0, 2.0, 4.0, 8.0]
    );
    assert_eq!(s.scale(8.0, 3), 2.0 * s.scale(8.0, 2));
    assert_eq!(s.scale(8.0, 1), 2.0 * s.scale(8.0, 0));
    // Up: the smallest covering threshold; down: the largest below.
    let cases = [
        (0.3, 0, 0),
        (1.0, 0, 0),
        (1.5, 1, 0),
        (2.0, 1, 1),
        (7.9, 3, 2),
        (8.0, 3, 3),
    ];
    let down = TenderSpec {
        round: TenderRound::Down,
        ..s
    };
    for (a, up, dn) in cases {
        assert_eq!(s.group_of(a, 8.0), up, "up {a}");
        assert_eq!(down.group_of(a, 8.0), dn, "down {a}");
    }
    // The bias is the midpoint; the deviation half the range.
    let c = TenderChunk::from_range(&[10.0, 1.0, -2.0], &[6.0, -1.0, -3.0], &s).unwrap();
    assert_eq!(c.bias, [8.0, 0.0, -2.5]);
    assert_eq!(c.tmax, 2.0);
    assert_eq!(c.group, [3, 2, 1]); // deviations 2, 1, 0.5 against θ = 0.25, 0.5, 1, 2
    assert_eq!(c.group_sizes(4), [0, 1, 1, 1]);
}

#[test]
fn specs_and_chunks_are_checked() {
    assert!(spec(8, 4, 256).check().is_ok());
    for bad in [
        spec(6, 4, 256),
        spec(8, 1, 256),
        spec(8, 17, 256),
        spec(8, 4, 100),
        spec(8, 4, 0),
    ] {
        assert!(bad.check().is_err(), "{bad:?}");
    }
    let e = spec(8, 4, 100).check().unwrap_err().to_string();
    assert!(e.contains("act.tender.chunk") && e.contains("64"), "{e}");
    // Two sequences of 5 rows, chunks of 2: positions 0, 1, 2 (the last one row) in each.
    let c = chunks(10, 5, 2).unwrap();
    assert_eq!(
        c,
        vec![
            (0, 0..2),
            (1, 2..4),
            (2, 4..5),
            (0, 5..7),
            (1, 7..9),
            (2, 9..10)
        ]
    );
    assert!(chunks(10, 4, 2).is_err());
    let x = vec![1.0f32; 64 * 8];
    let wrong = TenderChunk {
        bias: vec![0.0; 7],
        tmax: 1.0,
        group: vec![0; 8],
    };
    assert!(quantize(&x, 8, 64, &spec(8, 4, 64), Some(&[wrong])).is_err());
    let bad_group = TenderChunk {
        bias: vec![0.0; 8],
        tmax: 1.0,
        group: vec![4; 8],
    };
    assert!(quantize(&x, 8, 64, &spec(8, 4, 64), Some(&[bad_group])).is_err());
    assert!(quantize(&x, 8, 64, &spec(8, 4, 64), Some(&[])).is_err());
    let nan = TenderChunk::from_range(&[f32::INFINITY], &[0.0], &spec(8, 4, 64));
    assert!(nan.is_err());
}

#[test]
fn codes_reconstruct_within_half_a_step_of_their_group() {
    let mut r = Rng(21);
    let (rows, cols) = (128, 40);
    let x = outlier_rows(&mut r, rows, cols);
    for (bits, k) in [(8, 4), (4, 8), (8, 16), (4, 2)] {
        let s = spec(bits, k, 64);
        let q = quantize(&x, cols, 128, &s, None).unwrap();
        assert_eq!(q.chunks.len(), 2);
        let v = q.values();
        let mut fq = x.clone();
        fake_quant(&mut fq, cols, 128, &s, None).unwrap();
        assert_eq!(v, fq, "fake_quant stores the codes' values");
        let qmax = s.qmax() as i8;
        assert!(q.codes.iter().all(|c| (-qmax..=qmax).contains(c)));
        for t in 0..rows {
            let c = &q.chunks[q.chunk_of_row[t] as usize];
            for j in 0..cols {
                let step = s.scale(c.tmax, c.group[j]);
                let err = (v[t * cols + j] - x[t * cols + j]).abs();
                assert!(
                    err <= 0.5 * step * (1.0 + 1e-5) + 1e-6,
                    "{bits}b k {k} ({t},{j}): {err} > {step}/2"
                );
            }
        }
    }
}

/// Tender's point: with outlier channels, the ordinary channels keep fine steps, so the error is
/// far below one per-tensor scale's, and below one per-token scale's.
#[test]
fn decomposition_beats_a_single_scale_on_outlier_channels() {
    let mut r = Rng(22);
    let (rows, cols) = (256, 64);
    let x = outlier_rows(&mut r, rows, cols);
    let mse = |v: &[f32]| {
        v.iter()
            .zip(&x)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
    };
    for bits in [8u8, 4] {
        let mut tender = x.clone();
        fake_quant(&mut tender, cols, rows, &spec(bits, 8, 256), None).unwrap();
        for gran in [ActGranularity::PerTensor, ActGranularity::PerToken] {
            let mut u = x.clone();
            let a = ActQuantSpec {
                bits,
                gran,
                scale: ActScale::Dynamic,
            };
            uniform_fake_quant(&mut u, cols, &a).unwrap();
            assert!(
                mse(&tender) * 4.0 < mse(&u),
                "{bits}b: Tender {} against {gran:?} {}",
                mse(&tender),
                mse(&u)
            );
        }
    }
}

#[test]
fn static_chunks_are_used_by_position_and_the_last_repeats() {
    let mut r = Rng(23);
    let cols = 16;
    let x = r.vec(3 * 64 * cols); // one sequence of three chunks of 64
    let s = spec(8, 4, 64);
    let c0 = TenderChunk::from_range(&[1.0; 16], &[-1.0; 16], &s).unwrap();
    let c1 = TenderChunk::from_range(&[4.0; 16], &[0.0; 16], &s).unwrap();
    let q = quantize(&x, cols, 3 * 64, &s, Some(&[c0.clone(), c1.clone()])).unwrap();
    assert_eq!(q.chunks, vec![c0, c1.clone(), c1]);
    assert_eq!(q.chunk_of_row[64 * 2 + 5], 2);
    // Dynamic statistics come from each chunk's own rows.
    let d = quantize(&x, cols, 64, &s, None).unwrap();
    assert_eq!(d.chunks.len(), 3);
    assert_eq!(
        d.chunks[1],
        TenderChunk::from_rows(&x[64 * cols..128 * cols], cols, &s).unwrap()
    );
}

#[test]
fn shift_accumulation_is_the_weighted_sum_of_partials() {
    assert_eq!(shift_accumulate(&[3, -1, 2]), 3 - 2 + 8);
    let mut r = Rng(24);
    for _ in 0..100 {
        let p: Vec<i64> = (0..16)
            .map(|_| (r.next_u32() as i64 % 4_000_000) - 2_000_000)
            .collect();
        let direct: i64 = p.iter().enumerate().map(|(i, &v)| v << i).sum();
        assert_eq!(shift_accumulate(&p), direct);
    }
}

/// The integer identity: the shift-accumulated sum equals the decomposed fake-quant product in
/// exact integers, `Σ_j q_j · qw_j · 2^(g_j)`; `acc · s_0 · sw` equals the f64 product of the
/// decomposed values `(q_j s_{g_j}) (qw_j sw)` to f64 rounding; and the whole output (bias term
/// included) equals the float product of the fake-quantized values within
/// `TENDER_VS_FAKE_QUANT_REL`.
#[test]
fn integer_product_equals_the_decomposed_fake_quant_product() {
    let mut r = Rng(25);
    for (bits, k, wbits, rows, cols, n) in [
        (8u8, 4u8, 4u8, 128, 96, 12),
        (8, 16, 8, 64, 200, 7),
        (4, 8, 4, 130, 64, 9),
        (4, 2, 8, 64, 33, 5),
    ] {
        let x = outlier_rows(&mut r, rows, cols);
        let s = spec(bits, k, 64);
        let seq = if rows == 130 { 65 } else { rows };
        let a = quantize(&x, cols, seq, &s, None).unwrap();
        let w = int_weight(&mut r, wbits, n, cols);
        let bias = r.vec(n);
        let (y, accs) = tender_linear(&a, &w, Some(&bias)).unwrap();
        let (qw, sw) = weight_codes(&w).unwrap();
        let xh = a.values();
        let wh = w.dequantize().unwrap();
        for t in 0..rows {
            let c = &a.chunks[a.chunk_of_row[t] as usize];
            let s0 = s.scale(c.tmax, 0) as f64;
            for j in 0..n {
                let mut exact: i128 = 0;
                let mut decomposed = 0f64;
                for i in 0..cols {
                    let (q, g, wq) = (a.codes[t * cols + i] as i128, c.group[i], qw[j * cols + i]);
                    exact += q * wq as i128 * (1i128 << g);
                    decomposed +=
                        (q as f64 * s.scale(c.tmax, g) as f64) * (wq as f64 * sw[j] as f64);
                }
                let acc = accs[t * n + j];
                assert_eq!(acc as i128, exact, "{bits}b k {k} ({t},{j})");
                let via_acc = acc as f64 * s0 * sw[j] as f64;
                assert!(
                    (via_acc - decomposed).abs() <= 1e-12 * decomposed.abs().max(1e-30) + 1e-30,
                    "({t},{j}): {via_acc} vs {decomposed}"
                );
                let (xr, wr) = (&xh[t * cols..(t + 1) * cols], &wh[j * cols..(j + 1) * cols]);
                let want: f64 = xr
                    .iter()
                    .zip(wr)
                    .map(|(&p, &q)| p as f64 * q as f64)
                    .sum::<f64>()
                    + bias[j] as f64;
                let e: f64 = xr
                    .iter()
                    .zip(wr)
                    .map(|(&p, &q)| (p as f64 * q as f64).abs())
                    .sum::<f64>()
                    + (bias[j] as f64).abs();
                let err = (y[t * n + j] as f64 - want).abs();
                assert!(
                    err <= TENDER_VS_FAKE_QUANT_REL * e,
                    "({t},{j}): {} vs {want} (E {e})",
                    y[t * n + j]
                );
            }
        }
    }
}

#[test]
fn weights_the_integer_engine_cannot_take_are_refused() {
    let mut r = Rng(26);
    let x = r.vec(64 * 32);
    let a = quantize(&x, 32, 64, &spec(8, 4, 64), None).unwrap();
    let grouped = QTensor::from_int_parts(
        IntSpec {
            bits: 4,
            gran: Granularity::Group(16),
            sym: true,
        },
        2,
        32,
        &[1; 64],
        &[0.1; 4],
        &[],
    )
    .unwrap();
    let e = tender_linear(&a, &grouped, None).unwrap_err().to_string();
    assert!(e.contains("one scale per row"), "{e}");
    assert!(tender_linear(&a, &QTensor::from_f32(2, 32, &[0.0; 64]), None).is_err());
    let w = int_weight(&mut r, 4, 2, 16);
    assert!(tender_linear(&a, &w, None).is_err(), "16 columns for 32");
}
