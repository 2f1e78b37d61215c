//! The f64 linear algebra GPTQ needs (arXiv 2210.17323 §4 "Step 3: Cholesky reformulation"):
//! a Cholesky factorisation and a triangular inverse, both blocked so that almost all of their
//! `n³/3` and `n³/6` multiply-adds run as matrix products (matrixmultiply's `dgemm`), in
//! parallel natively. Unblocked, a 1536-wide factorisation was one long serial chain of dot
//! products per layer (the largest single cost of quantizing SmolLM2 with 16 threads).
//!
//! Both reduce to the plain unblocked loops for `n ≤ NB`, so small matrices give exactly the
//! numbers they always gave.

use crate::par;
use crate::{Error, Result};

/// Block size: large enough for `dgemm` to run near its peak, small enough that the unblocked
/// parts (diagonal blocks, panel solves: `n·NB²` work) stay minor.
const NB: usize = 64;

/// `Σ a_i b_i` in four independent lanes (vectorisable, fixed order).
#[inline]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// `c (m×n, row stride rsc) −= a (m×k) · b (k×n)` with the given strides. The ranges are fixed
/// by the callers' loop bounds (not by input data); the asserts document and enforce them.
#[allow(clippy::too_many_arguments)]
fn dgemm_sub(
    m: usize,
    k: usize,
    n: usize,
    a: &[f64],
    rsa: usize,
    csa: usize,
    b: &[f64],
    rsb: usize,
    csb: usize,
    c: &mut [f64],
    rsc: usize,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        last(m, k, rsa, csa) < a.len() && last(k, n, rsb, csb) < b.len(),
        "dgemm operand out of range"
    );
    assert!(last(m, n, rsc, 1) < c.len(), "dgemm output out of range");
    // SAFETY: the asserts above prove every element addressed by the dimensions and strides lies
    // inside the slices; `c` is exclusively borrowed and does not alias `a` or `b`.
    unsafe {
        matrixmultiply::dgemm(
            m,
            k,
            n,
            -1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            1.0,
            c.as_mut_ptr(),
            rsc as isize,
            1,
        );
    }
}

/// Unblocked Cholesky of the diagonal block `k0..k1` of the `n × n` matrix `a`, whose entries
/// already hold the updates from columns before `k0`.
fn factor_block(a: &mut [f64], n: usize, k0: usize, k1: usize, name: &str) -> Result<()> {
    for i in k0..k1 {
        for j in k0..=i {
            let (head, row_i) = a.split_at_mut(i * n);
            let row_i = &mut row_i[..n];
            let row_j: &[f64] = if j == i {
                &row_i[k0..j]
            } else {
                &head[j * n + k0..j * n + j]
            };
            let s = dot(&row_i[k0..j], row_j);
            if j == i {
                let d = row_i[i] - s;
                if !(d > 0.0 && d.is_finite()) {
                    return Err(Error::config(
                        "gptq",
                        format!("{name}: the damped Hessian is not positive definite at column {i}; raise the damping"),
                    ));
                }
                row_i[i] = d.sqrt();
            } else {
                let ljj = head[j * n + j];
                row_i[j] = (row_i[j] - s) / ljj;
            }
        }
    }
    Ok(())
}

/// In-place lower Cholesky factor of the symmetric `n × n` matrix `a` (only its lower triangle is
/// read; the upper is zeroed). Errors if `a` is not positive definite. Right-looking by blocks
/// of `NB` columns: factor the diagonal block, solve the panel below it, subtract the panel's
/// outer product from the trailing lower triangle (by row blocks, in parallel).
pub(crate) fn cholesky_lower(a: &mut [f64], n: usize, name: &str) -> Result<()> {
    let mut panel = Vec::new();
    for k0 in (0..n).step_by(NB) {
        let k1 = (k0 + NB).min(n);
        factor_block(a, n, k0, k1, name)?;
        if k1 == n {
            break;
        }
        // Panel: L[i, k0..k1] = A[i, k0..k1] · L11⁻ᵀ for every row i ≥ k1 (forward solve).
        let (head, tail) = a.split_at_mut(k1 * n);
        let l11: &[f64] = head;
        let solve = |row: &mut [f64]| {
            for j in k0..k1 {
                let s = dot(&row[k0..j], &l11[j * n + k0..j * n + j]);
                row[j] = (row[j] - s) / l11[j * n + j];
            }
        };
        par::for_each_chunk_mut(tail, n, |_, row| solve(row));
        // A copy of the panel (rows k1.., NB columns) so the update reads it while writing `a`.
        let w = k1 - k0;
        panel.clear();
        for row in tail.chunks(n) {
            panel.extend_from_slice(&row[k0..k1]);
        }
        // Trailing update, lower triangle only: rows i0..i1 get columns k1..i1.
        let panel = &panel;
        let update = |bi: usize, rows: &mut [f64]| {
            let i0 = k1 + bi * NB;
            let m = rows.len() / n;
            let cols = i0 + m - k1;
            dgemm_sub(
                m,
                w,
                cols,
                &panel[(i0 - k1) * w..],
                w,
                1,
                panel,
                1,
                w,
                &mut rows[k1..],
                n,
            );
        };
        par::for_each_chunk_mut(tail, NB * n, update);
    }
    for i in 0..n {
        for v in &mut a[i * n + i + 1..(i + 1) * n] {
            *v = 0.0;
        }
    }
    Ok(())
}

/// `M = L⁻¹` of the lower-triangular `n × n` `l`, returned transposed (`mt` row `j` = column `j`
/// of `M`). Column blocks of `M` are independent (in parallel natively); within one, row blocks
/// are forward-substituted: the rows above the diagonal block enter as one matrix product.
pub(crate) fn lower_inverse_transposed(l: &[f64], n: usize) -> Vec<f64> {
    let mut mt = vec![0f64; n * n];
    let column_block = |bj: usize, mtj: &mut [f64]| {
        let j0 = bj * NB;
        let nj = mtj.len() / n;
        let mut t = vec![0f64; NB * nj];
        for i0 in (j0..n).step_by(NB) {
            let i1 = (i0 + NB).min(n);
            let mi = i1 - i0;
            // t (mi × nj) = Σ_{p in j0..i0} L[i, p] · M[p, j0 + c]; M[p][j0 + c] = mtj[c·n + p].
            t[..mi * nj].iter_mut().for_each(|v| *v = 0.0);
            dgemm_sub(
                mi,
                i0 - j0,
                nj,
                &l[i0 * n + j0..],
                n,
                1,
                &mtj[j0..],
                1,
                n,
                &mut t,
                nj,
            );
            // Forward substitution within the diagonal block of L (t holds −Σ so far).
            for c in 0..nj {
                let col = j0 + c;
                let m = &mut mtj[c * n..(c + 1) * n];
                for i in i0.max(col)..i1 {
                    let e = if i == col { 1.0 } else { 0.0 };
                    let s = dot(&l[i * n + i0.max(col)..i * n + i], &m[i0.max(col)..i]);
                    m[i] = (e + t[(i - i0) * nj + c] - s) / l[i * n + i];
                }
            }
        }
    };
    par::for_each_chunk_mut(&mut mt, NB * n, column_block);
    mt
}
