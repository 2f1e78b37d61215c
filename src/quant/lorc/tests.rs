//! The randomized truncated SVD against a full one-sided Jacobi SVD written here, and LoRC's
//! effect on the weight error of a quantized matrix.

use super::*;
use crate::format::{Granularity, IntSpec};
use crate::quant::rtn::{self, RtnOptions};
use crate::quant::testutil::gaussian;

/// Relative agreement of singular values and optimal residuals with the full reference.
const SVD_TOL: f64 = 1e-4;

/// Full SVD singular values by one-sided Jacobi (Hestenes): rotate column pairs of A (m × n)
/// until orthogonal; the column norms are then the singular values. f64 throughout.
fn reference_singular_values(a: &[f32], m: usize, n: usize) -> Vec<f64> {
    let mut x: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    for _ in 0..60 {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let (mut alpha, mut beta, mut gamma) = (0.0, 0.0, 0.0);
                for k in 0..m {
                    let (xp, xq) = (x[k * n + p], x[k * n + q]);
                    alpha += xp * xp;
                    beta += xq * xq;
                    gamma += xp * xq;
                }
                if gamma.abs() <= 1e-15 * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let t = if zeta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for k in 0..m {
                    let (xp, xq) = (x[k * n + p], x[k * n + q]);
                    x[k * n + p] = c * xp - s * xq;
                    x[k * n + q] = s * xp + c * xq;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let mut s: Vec<f64> = (0..n)
        .map(|j| {
            (0..m)
                .map(|k| x[k * n + j] * x[k * n + j])
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    s.sort_by(|a, b| b.total_cmp(a));
    s
}

/// A matrix with a decaying spectrum (like quantization error plus structure).
fn test_matrix_decaying(m: usize, n: usize) -> Vec<f32> {
    let g = gaussian(21, m * n);
    let a = gaussian(22, m * 3);
    let b = gaussian(23, 3 * n);
    (0..m * n)
        .map(|i| {
            let (r, c) = (i / n, i % n);
            let low: f32 = (0..3)
                .map(|k| a[r * 3 + k] * b[k * n + c] * (3 - k) as f32)
                .sum();
            0.3 * g[i] + low
        })
        .collect()
}

#[test]
fn truncated_svd_matches_full_reference() {
    for (m, n, r) in [(40, 24, 4), (24, 40, 8), (30, 30, 1)] {
        let e = test_matrix_decaying(m, n);
        let full = reference_singular_values(&e, m, n.min(m).max(n));
        let full = if m >= n {
            full
        } else {
            reference_singular_values(&transpose(&e, m, n), n, m)
        };
        let svd = truncated_svd(&e, m, n, r).unwrap();
        for k in 0..r {
            let rel = (svd.s[k] - full[k]).abs() / full[0];
            assert!(
                rel < SVD_TOL,
                "{m}×{n} r{r}: σ{k} {} vs {}",
                svd.s[k],
                full[k]
            );
        }
        // Residual of the rank-r reconstruction = optimal (Eckart–Young).
        let mut res = 0f64;
        for i in 0..m {
            for j in 0..n {
                let a: f64 = (0..r)
                    .map(|k| svd.u[i * r + k] * svd.s[k] * svd.v[k * n + j])
                    .sum();
                res += (e[i * n + j] as f64 - a).powi(2);
            }
        }
        let opt: f64 = full[r..].iter().map(|s| s * s).sum();
        let total: f64 = full.iter().map(|s| s * s).sum();
        assert!(
            (res - opt).abs() <= SVD_TOL * total,
            "{m}×{n} r{r}: residual {res} vs optimal {opt}"
        );
    }
    assert!(truncated_svd(&[0.0; 12], 3, 4, 4).is_err());
}

fn transpose(a: &[f32], m: usize, n: usize) -> Vec<f32> {
    (0..m * n).map(|i| a[(i % m) * n + i / m]).collect()
}

#[test]
fn lorc_lowers_weight_error_and_counts_its_bytes() {
    let (rows, cols) = (48, 64);
    let w = test_matrix_decaying(rows, cols);
    let spec = IntSpec {
        bits: 2,
        gran: Granularity::PerRow,
        sym: true,
    };
    let q = rtn::quantize(&w, rows, cols, spec, &RtnOptions::default(), "t").unwrap();
    let err = |t: &QTensor| -> f64 {
        let d = t.dequantize().unwrap();
        w.iter()
            .zip(&d)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum()
    };
    let e0 = err(&q);
    let mut last = e0;
    for bits8 in [false, true] {
        for rank in [2, 8] {
            let c = compensate(&q, &w, &LorcOptions { rank, bits8 }, "t").unwrap();
            let st = c.storage();
            let want = if bits8 {
                (rank * rows).div_ceil(4) * 4
                    + (2 * rows).div_ceil(4) * 4
                    + rank * cols
                    + (2 * rank).div_ceil(4) * 4
            } else {
                2 * rank * (rows + cols)
            };
            assert_eq!(st.lowrank, want);
            assert_eq!(c.data.len(), st.total());
            let e = err(&c);
            assert!(e < 0.9 * e0, "rank {rank} bits8 {bits8}: {e} vs {e0}");
            if !bits8 && rank == 8 {
                assert!(e < last);
            }
            last = e;
            // Compensating again replaces the factors instead of stacking them.
            let again = compensate(&c, &w, &LorcOptions { rank, bits8 }, "t").unwrap();
            assert_eq!(again.data.len(), c.data.len());
        }
    }
}
