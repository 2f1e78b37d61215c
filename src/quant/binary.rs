//! 1-bit weights (docs/onebit.md): sign binarization and OneBit's two value vectors.
//!
//! - **Sign**: `Ŵ_r = α_r · sign(W_r)` with `α_r = mean|W_r|`, the scale that minimises
//!   `‖W_r − α·sign(W_r)‖²` (XNOR-Net's closed form). Stored as the `Int` family at 1 bit per row.
//! - **OneBit** (Xu et al., arXiv 2402.11295): `Ŵ = diag(s_out) · sign(W) · diag(s_in)`, stored
//!   as `Format::OneBit`. Initialised by SVID, its "sign-value-independent decomposition": the
//!   signs of `W` and a rank-1 approximation `|W| ≈ s_out · s_inᵀ` (the top singular pair of
//!   `|W|`, by power iteration; `|W|` is non-negative, so the pair is too).
//! - **OneBit, fitted** (`fit` rounds, needs calibration): with the signs frozen, the two
//!   vectors are refitted to what the layer computes on calibration inputs `X` rather than to
//!   `W` itself: minimise `‖X Wᵀ − X Ŵᵀ‖² = Σ_r (w_r − ŵ_r) H (w_r − ŵ_r)ᵀ`, `H = XᵀX` (the
//!   calibration Gram). This is the "lite" layer-wise objective of issue 15 for one expert. It is
//!   quadratic in each vector given the other, so each round solves both exactly (alternating
//!   least squares): the loss never rises, which the tests check.
//!     * `s_out` given `s_in`: with `v_r = sign(w_r) ⊙ s_in`, row `r` alone gives
//!       `s_out[r] = (w_r H v_rᵀ) / (v_r H v_rᵀ)`.
//!     * `s_in` given `s_out`: with `U = diag(s_out) · sign(W)`, the normal equations are
//!       `(H ⊙ UᵀU) s_in = colsum(U ⊙ (W H))`, a `cols × cols` system solved by Cholesky (the
//!       Hadamard product of two PSD matrices is PSD, Schur; a small ridge makes it definite).

use crate::format::{Granularity, IntSpec, QTensor};
use crate::linalg::{cholesky_lower, sgemm};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Power iterations for SVID's top singular pair: `|W|` is non-negative with a dominant first
/// singular value, so the vector settles in a few steps; 30 leaves it converged to f32 precision on
/// the default model's tensors (checked by `svid_is_the_best_rank_one_fit`).
const SVID_ITERS: usize = 30;
/// Most refit rounds a config may ask for (each costs about three `rows × cols²` products).
pub const MAX_FIT_ROUNDS: usize = 20;
/// Ridge added to the `s_in` system, relative to its mean diagonal: keeps a Gram with unused
/// input channels (all-zero columns) solvable without moving the answer measurably.
const RIDGE: f64 = 1e-6;

/// OneBit's options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneBitOptions {
    /// Alternating least-squares rounds on the calibration Gram after SVID (0: SVID only, no
    /// calibration needed).
    #[serde(default)]
    pub fit: usize,
}

fn check_shape(w: &[f32], rows: usize, cols: usize, name: &str) -> Result<()> {
    if rows == 0 || cols == 0 || w.len() != rows * cols {
        return Err(Error::config(
            "binary",
            format!("{name}: {} weights for a {rows}×{cols} tensor", w.len()),
        ));
    }
    if let Some(i) = w.iter().position(|v| !v.is_finite()) {
        return Err(Error::config(
            "binary",
            format!("{name}: weight {i} is not finite"),
        ));
    }
    Ok(())
}

/// Sign binarization with `α_r = mean|W_r|` per row.
pub fn sign(w: &[f32], rows: usize, cols: usize, name: &str) -> Result<QTensor> {
    check_shape(w, rows, cols, name)?;
    let codes: Vec<u8> = w.iter().map(|&v| (v >= 0.0) as u8).collect();
    let alpha: Vec<f32> = w
        .chunks(cols)
        .map(|r| (r.iter().map(|v| v.abs() as f64).sum::<f64>() / cols as f64) as f32)
        .collect();
    let spec = IntSpec {
        bits: 1,
        gran: Granularity::PerRow,
        sym: true,
    };
    QTensor::from_int_parts(spec, rows, cols, &codes, &alpha, &[])
}

/// SVID: the top singular pair of `|W|` as `(s_out, s_in)`, scaled so that `mean(s_in) = 1`
/// (both vectors then sit well inside f16's range).
pub fn svid(w: &[f32], rows: usize, cols: usize) -> (Vec<f32>, Vec<f32>) {
    let abs: Vec<f64> = w.iter().map(|v| v.abs() as f64).collect();
    let mut b = vec![1.0f64; cols];
    let mut a = vec![0.0f64; rows];
    for _ in 0..SVID_ITERS {
        // a = |W| b, then b = |W|ᵀ a, normalised.
        for (r, ar) in a.iter_mut().enumerate() {
            *ar = abs[r * cols..(r + 1) * cols]
                .iter()
                .zip(&b)
                .map(|(x, y)| x * y)
                .sum();
        }
        b.iter_mut().for_each(|v| *v = 0.0);
        for (r, &ar) in a.iter().enumerate() {
            for (bc, x) in b.iter_mut().zip(&abs[r * cols..(r + 1) * cols]) {
                *bc += x * ar;
            }
        }
        let norm = b.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm == 0.0 {
            // W is all zeros: any vectors do, and zero scales reproduce it.
            return (vec![0.0; rows], vec![1.0; cols]);
        }
        b.iter_mut().for_each(|v| *v /= norm);
    }
    // With ‖b‖ = 1, a = |W| b makes a·bᵀ the best rank-1 approximation for this b.
    for (r, ar) in a.iter_mut().enumerate() {
        *ar = abs[r * cols..(r + 1) * cols]
            .iter()
            .zip(&b)
            .map(|(x, y)| x * y)
            .sum();
    }
    let mean = b.iter().sum::<f64>() / cols as f64;
    (
        a.iter().map(|v| (v * mean) as f32).collect(),
        b.iter().map(|v| (v / mean) as f32).collect(),
    )
}

/// `x H` for the rows of `x` (`n × cols`): one SGEMM.
fn times_gram(x: &[f32], cols: usize, gram: &[f32]) -> Vec<f32> {
    let n = x.len() / cols;
    let mut out = vec![0f32; n * cols];
    sgemm(n, cols, cols, x, cols, 1, gram, cols, 1, &mut out, cols);
    out
}

/// The `s_out` step: each row's exact least-squares value given `s_in`.
fn fit_s_out(
    signs: &[bool],
    s_in: &[f32],
    wh: &[f32],
    cols: usize,
    gram: &[f32],
    s_out: &mut [f32],
) {
    let v = signed(signs, cols, |_, c| s_in[c]);
    let vh = times_gram(&v, cols, gram);
    for (r, so) in s_out.iter_mut().enumerate() {
        let row = r * cols..(r + 1) * cols;
        let dot = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| *x as f64 * *y as f64)
                .sum::<f64>()
        };
        let num = dot(&v[row.clone()], &wh[row.clone()]);
        let den = dot(&v[row.clone()], &vh[row]);
        // den = v H vᵀ ≥ 0; zero only when the row's inputs never fire: keep the SVID value.
        if den > 0.0 && (num / den).is_finite() {
            *so = (num / den) as f32;
        }
    }
}

/// The `s_in` step: solve `(H ⊙ UᵀU + ridge) s_in = colsum(U ⊙ W H)`.
fn fit_s_in(
    signs: &[bool],
    s_out: &[f32],
    wh: &[f32],
    cols: usize,
    gram: &[f32],
    name: &str,
    s_in: &mut [f32],
) -> Result<()> {
    let rows = s_out.len();
    let u = signed(signs, cols, |r, _| s_out[r]);
    // UᵀU (cols × cols): Uᵀ is U with swapped strides.
    let mut utu = vec![0f32; cols * cols];
    sgemm(cols, rows, cols, &u, 1, cols, &u, cols, 1, &mut utu, cols);
    let mut m: Vec<f64> = utu
        .iter()
        .zip(gram)
        .map(|(a, h)| *a as f64 * *h as f64)
        .collect();
    let mut rhs = vec![0f64; cols];
    for (i, (&ui, &whi)) in u.iter().zip(wh).enumerate() {
        rhs[i % cols] += ui as f64 * whi as f64;
    }
    let mean_diag = (0..cols).map(|j| m[j * cols + j]).sum::<f64>() / cols as f64;
    if mean_diag <= 0.0 || !mean_diag.is_finite() {
        // No calibration signal at all (an all-zero Gram): nothing to fit.
        return Ok(());
    }
    for j in 0..cols {
        m[j * cols + j] += RIDGE * mean_diag;
    }
    cholesky_lower(&mut m, cols, name)?;
    // L y = rhs, then Lᵀ x = y.
    let mut y = rhs;
    for i in 0..cols {
        let s: f64 = (0..i).map(|k| m[i * cols + k] * y[k]).sum();
        y[i] = (y[i] - s) / m[i * cols + i];
    }
    for i in (0..cols).rev() {
        let s: f64 = (i + 1..cols).map(|k| m[k * cols + i] * y[k]).sum();
        y[i] = (y[i] - s) / m[i * cols + i];
    }
    if y.iter().all(|v| v.is_finite()) {
        for (d, v) in s_in.iter_mut().zip(y) {
            *d = v as f32;
        }
    }
    Ok(())
}

/// OneBit: SVID, then `opts.fit` rounds of the two least-squares steps on `gram` (`cols × cols`;
/// required when `fit > 0`). Returns the tensor and, per round, the calibration output error
/// `‖X Wᵀ − X Ŵᵀ‖²` before it (index 0: SVID) and after the last (in f32 before f16 storage).
pub fn onebit_fit(
    w: &[f32],
    rows: usize,
    cols: usize,
    gram: Option<&[f32]>,
    opts: &OneBitOptions,
    name: &str,
) -> Result<(QTensor, Vec<f64>)> {
    check_shape(w, rows, cols, name)?;
    if opts.fit > MAX_FIT_ROUNDS {
        return Err(Error::config(
            "onebit.fit",
            format!("{} is outside 0..={MAX_FIT_ROUNDS}", opts.fit),
        ));
    }
    let signs: Vec<bool> = w.iter().map(|&v| v >= 0.0).collect();
    let (mut s_out, mut s_in) = svid(w, rows, cols);
    let mut losses = Vec::new();
    if opts.fit > 0 {
        let gram = gram.ok_or_else(|| {
            Error::config(
                "calibration",
                format!("onebit with fit rounds: no statistics for {name}"),
            )
        })?;
        if gram.len() != cols * cols {
            return Err(Error::config(
                "calibration",
                format!("{name}: a Gram of {} entries for {cols} inputs", gram.len()),
            ));
        }
        let wh = times_gram(w, cols, gram);
        let loss = |so: &[f32], si: &[f32]| {
            crate::quant::calib::output_error(w, &dense(&signs, so, si, cols), cols, gram)
        };
        losses.push(loss(&s_out, &s_in)?);
        for _ in 0..opts.fit {
            fit_s_out(&signs, &s_in, &wh, cols, gram, &mut s_out);
            fit_s_in(&signs, &s_out, &wh, cols, gram, name, &mut s_in)?;
            losses.push(loss(&s_out, &s_in)?);
        }
    }
    let q = QTensor::from_onebit_parts(rows, cols, &signs, &s_out, &s_in)?;
    Ok((q, losses))
}

/// OneBit as `Method::OneBit` uses it: the tensor only.
pub fn onebit(
    w: &[f32],
    rows: usize,
    cols: usize,
    gram: Option<&[f32]>,
    opts: &OneBitOptions,
    name: &str,
) -> Result<QTensor> {
    onebit_fit(w, rows, cols, gram, opts, name).map(|(q, _)| q)
}

/// `diag(s_out) · sign · diag(s_in)` in f32.
fn dense(signs: &[bool], s_out: &[f32], s_in: &[f32], cols: usize) -> Vec<f32> {
    signed(signs, cols, |r, c| s_out[r] * s_in[c])
}

/// `±value(r, c)` by the sign of each weight (row-major, `cols` wide).
fn signed(signs: &[bool], cols: usize, value: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    signs
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let v = value(i / cols, i % cols);
            if s {
                v
            } else {
                -v
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
