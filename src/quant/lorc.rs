//! LoRC, low-rank compensation: "ZeroQuant-V2: Exploring Post-training Quantization in LLMs from
//! Comprehensive Study to Low Rank Compensation", Yao et al., arXiv 2303.08302 §5, as restated in
//! docs/methods.md §7.
//!
//! After any quantizer, the error `E = W − Ŵ` is approximated by its rank-`r` truncated SVD
//! `U_r Σ_r V_rᵀ`, stored as `Û = U_r Σ_r^½` (`rows × r`) and `V̂ = Σ_r^½ V_rᵀ` (`r × cols`) in
//! f16 (or int8 with per-row f16 scales), and the layer uses `Ŵ + ÛV̂`. The factors are an add-on
//! of the format table (`format::AddOns::lowrank`), so their bytes count in every memory report.
//! The CPU reference backend adds `ÛV̂` into its dense f32 weight at load (it expands weights
//! anyway); a GPU kernel would compute `Ŵx + Û(V̂x)` instead, `r·(rows + cols)` extra MACs.
//!
//! The truncated SVD is a deterministic randomized subspace iteration (Halko, Martinsson, Tropp,
//! "Finding structure with randomness", 2011, Alg. 4.4): a seeded Gaussian test matrix of
//! `r + OVERSAMPLE` columns, `POWER_ITERS` power iterations with re-orthonormalisation (modified
//! Gram–Schmidt, twice), then the exact SVD of the small projected matrix through a cyclic Jacobi
//! eigen-decomposition of `BBᵀ`. Large products run as f32 SGEMM; the small algebra in f64.

use crate::format::{AddOns, LowRankSpec, QTensor};
use crate::linalg::sgemm;
use crate::quant::rtn::f16_ceil;
use crate::{Error, Result};
use half::f16;
use serde::{Deserialize, Serialize};

/// Extra columns of the randomized range finder.
pub const OVERSAMPLE: usize = 8;
/// Power iterations of the range finder.
pub const POWER_ITERS: usize = 6;
/// Largest rank accepted.
pub const MAX_RANK: usize = 256;

/// LoRC parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LorcOptions {
    pub rank: usize,
    /// int8 factors with f16 row scales instead of f16 factors.
    pub bits8: bool,
}

impl Default for LorcOptions {
    fn default() -> Self {
        LorcOptions {
            rank: 8,
            bits8: false,
        }
    }
}

/// A truncated SVD: `u` is `rows × r` (row-major), `s` has `r` values (descending), `v` is
/// `r × cols` (row-major, the rows of `Vᵀ`).
#[derive(Clone, Debug)]
pub struct Svd {
    pub u: Vec<f64>,
    pub s: Vec<f64>,
    pub v: Vec<f64>,
}

/// Eigen-decomposition of a symmetric `n × n` matrix by cyclic Jacobi rotations; returns
/// eigenvalues (descending) and eigenvectors as the rows of the second result.
fn jacobi_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let norm: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * norm || norm == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A ← JᵀAJ on rows/columns p, q.
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| a[y * n + y].total_cmp(&a[x * n + x]));
    let vals = order.iter().map(|&i| a[i * n + i]).collect();
    // Eigenvector i is column i of v; return them as rows.
    let vecs = order
        .iter()
        .flat_map(|&i| (0..n).map(move |k| (k, i)))
        .map(|(k, i)| v[k * n + i])
        .collect();
    (vals, vecs)
}

/// Orthonormalise the `l` columns of `y` (`m × l`, row-major) in place: modified Gram–Schmidt,
/// applied twice for stability; a column that vanishes becomes zero.
fn orthonormalize(y: &mut [f64], m: usize, l: usize) {
    for _ in 0..2 {
        for j in 0..l {
            for i in 0..j {
                let d: f64 = (0..m).map(|k| y[k * l + i] * y[k * l + j]).sum();
                for k in 0..m {
                    y[k * l + j] -= d * y[k * l + i];
                }
            }
            let n: f64 = (0..m)
                .map(|k| y[k * l + j] * y[k * l + j])
                .sum::<f64>()
                .sqrt();
            let inv = if n > 1e-300 { 1.0 / n } else { 0.0 };
            for k in 0..m {
                y[k * l + j] *= inv;
            }
        }
    }
}

/// Seeded standard-normal-ish values (sum of four uniforms, rescaled): only their spread matters.
fn test_matrix(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            let mut acc = 0f32;
            for _ in 0..4 {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                acc += (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            acc * 1.732
        })
        .collect()
}

/// Rank-`rank` truncated SVD of the row-major `rows × cols` matrix `e`.
pub fn truncated_svd(e: &[f32], rows: usize, cols: usize, rank: usize) -> Result<Svd> {
    if rank == 0 || rank > rows.min(cols) || rank > MAX_RANK || e.len() != rows * cols {
        return Err(Error::config(
            "lorc.rank",
            format!(
                "rank {rank} for a {rows}×{cols} matrix ({} values); 1..={}",
                e.len(),
                rows.min(cols).min(MAX_RANK)
            ),
        ));
    }
    let l = (rank + OVERSAMPLE).min(rows.min(cols));
    let omega = test_matrix(cols * l, 0x9e37_79b9_7f4a_7c15 ^ (rows * 31 + cols) as u64);
    // Y (rows × l) = E Ω.
    let mut y32 = vec![0f32; rows * l];
    sgemm(rows, cols, l, e, cols, 1, &omega, l, 1, &mut y32, l);
    let mut y: Vec<f64> = y32.iter().map(|&v| v as f64).collect();
    orthonormalize(&mut y, rows, l);
    let mut z32 = vec![0f32; cols * l];
    for _ in 0..POWER_ITERS {
        // Z (cols × l) = Eᵀ Q, orthonormalised; then Q = orth(E Z).
        let q32: Vec<f32> = y.iter().map(|&v| v as f32).collect();
        sgemm(cols, rows, l, e, 1, cols, &q32, l, 1, &mut z32, l);
        let mut z: Vec<f64> = z32.iter().map(|&v| v as f64).collect();
        orthonormalize(&mut z, cols, l);
        let zf: Vec<f32> = z.iter().map(|&v| v as f32).collect();
        sgemm(rows, cols, l, e, cols, 1, &zf, l, 1, &mut y32, l);
        y = y32.iter().map(|&v| v as f64).collect();
        orthonormalize(&mut y, rows, l);
    }
    // B (l × cols) = Qᵀ E, in f64 for the small exact step.
    let mut b = vec![0f64; l * cols];
    for r in 0..rows {
        let er = &e[r * cols..(r + 1) * cols];
        for i in 0..l {
            let q = y[r * l + i];
            if q != 0.0 {
                let bi = &mut b[i * cols..(i + 1) * cols];
                bi.iter_mut().zip(er).for_each(|(x, &v)| *x += q * v as f64);
            }
        }
    }
    let mut bbt = vec![0f64; l * l];
    for i in 0..l {
        for j in 0..=i {
            let d: f64 = b[i * cols..(i + 1) * cols]
                .iter()
                .zip(&b[j * cols..(j + 1) * cols])
                .map(|(x, y)| x * y)
                .sum();
            bbt[i * l + j] = d;
            bbt[j * l + i] = d;
        }
    }
    let (vals, vecs) = jacobi_eigen(&bbt, l);
    let mut u = vec![0f64; rows * rank];
    let mut s = Vec::with_capacity(rank);
    let mut v = vec![0f64; rank * cols];
    for k in 0..rank {
        let sigma = vals[k].max(0.0).sqrt();
        s.push(sigma);
        let w = &vecs[k * l..(k + 1) * l];
        for r in 0..rows {
            u[r * rank + k] = (0..l).map(|i| y[r * l + i] * w[i]).sum();
        }
        if sigma > 0.0 {
            for c in 0..cols {
                v[k * cols + c] = (0..l).map(|i| w[i] * b[i * cols + c]).sum::<f64>() / sigma;
            }
        }
    }
    Ok(Svd { u, s, v })
}

/// Encode `m` (`n_rows × n_cols`, row-major) as f16, or as int8 codes then f16 row scales.
fn encode_factor(m: &[f64], n_rows: usize, n_cols: usize, bits8: bool, out: &mut Vec<u8>) {
    let pad = |out: &mut Vec<u8>| out.resize(out.len().div_ceil(4) * 4, 0);
    if !bits8 {
        for &x in m {
            out.extend_from_slice(&f16::from_f64(x).to_le_bytes());
        }
        pad(out);
        return;
    }
    let mut scales = Vec::with_capacity(n_rows);
    for row in m.chunks_exact(n_cols) {
        let amax = row.iter().fold(0f64, |a, x| a.max(x.abs())) as f32;
        let s = f16_ceil(amax / 127.0);
        for &x in row {
            let q = if s > 0.0 {
                (x / s as f64).round().clamp(-127.0, 127.0)
            } else {
                0.0
            };
            out.push(q as i8 as u8);
        }
        scales.push(s);
    }
    pad(out);
    for s in scales {
        out.extend_from_slice(&f16::from_f32(s).to_le_bytes());
    }
    pad(out);
}

/// `q` with LoRC factors of `w − q` added (replacing any it had). `w` is the matrix `q`
/// approximates (row-major, `q.rows × q.cols`).
pub fn compensate(q: &QTensor, w: &[f32], opts: &LorcOptions, name: &str) -> Result<QTensor> {
    let (rows, cols) = (q.rows, q.cols);
    if w.len() != rows * cols {
        return Err(Error::config(
            "lorc",
            format!("{name}: {} values for a {rows}×{cols} tensor", w.len()),
        ));
    }
    let base = QTensor {
        addons: AddOns {
            lowrank: None,
            ..q.addons
        },
        ..q.clone()
    };
    // Drop any old factors' bytes: keep base format + outliers.
    let st = base.format.storage(rows, cols)?;
    let keep = st.total() + q.storage().outliers;
    let base = QTensor::with_addons(
        base.format,
        base.addons,
        rows,
        cols,
        q.data[..keep.min(q.data.len())].to_vec(),
    )?;
    let wq = base.dequantize()?;
    let e: Vec<f32> = w.iter().zip(&wq).map(|(a, b)| a - b).collect();
    let rank = opts.rank.min(rows.min(cols));
    let svd = truncated_svd(&e, rows, cols, rank)
        .map_err(|err| Error::config("lorc.rank", format!("{name}: {err}")))?;
    let sq: Vec<f64> = svd.s.iter().map(|s| s.sqrt()).collect();
    let uh: Vec<f64> = (0..rows * rank).map(|i| svd.u[i] * sq[i % rank]).collect();
    let vh: Vec<f64> = (0..rank * cols).map(|i| svd.v[i] * sq[i / cols]).collect();
    let mut bytes = base.data.clone();
    encode_factor(&uh, rows, rank, opts.bits8, &mut bytes);
    encode_factor(&vh, rank, cols, opts.bits8, &mut bytes);
    let addons = AddOns {
        lowrank: Some(LowRankSpec {
            rank,
            bits8: opts.bits8,
        }),
        ..base.addons
    };
    QTensor::with_addons(base.format, addons, rows, cols, bytes)
}

#[cfg(test)]
mod tests;
