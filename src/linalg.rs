//! Dense linear algebra shared by the model and the quantizers: matrix products through
//! `matrixmultiply` (blocked, with runtime SIMD detection) behind safe wrappers, and the f64
//! Cholesky factorisation and triangular inverse GPTQ needs (arXiv 2210.17323 §4 "Step 3:
//! Cholesky reformulation"), both blocked so that almost all of their `n³/3` and `n³/6`
//! multiply-adds run as matrix products, in parallel natively. Unblocked, a 1536-wide
//! factorisation was one long serial chain of dot products per layer (the largest single cost of
//! quantizing SmolLM2 with 16 threads).
//!
//! The factorisation and the inverse reduce to the plain unblocked loops for `n ≤ NB`, so small
//! matrices give exactly the numbers they always gave.

use crate::par;
use crate::{Error, Result};

/// matrixmultiply's kernels: `c = alpha · a · b + beta · c` on strided raw pointers
/// (`m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc`).
pub type Kernel<T> = unsafe fn(
    usize,
    usize,
    usize,
    T,
    *const T,
    isize,
    isize,
    *const T,
    isize,
    isize,
    T,
    *mut T,
    isize,
    isize,
);

/// The element types of `gemm`: f32 and f64, each with its matrixmultiply kernel.
pub trait Real: Copy {
    const KERNEL: Kernel<Self>;
}

impl Real for f32 {
    const KERNEL: Kernel<f32> = matrixmultiply::sgemm;
}

impl Real for f64 {
    const KERNEL: Kernel<f64> = matrixmultiply::dgemm;
}

/// `c = alpha · a · b + beta · c` for `a` (m×k, strides rsa/csa), `b` (k×n, strides rsb/csb) and
/// `c` (m×n, row stride rsc). Safe wrapper: checks every index the strides can reach lies inside
/// the slices.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Real>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: &[T],
    rsa: usize,
    csa: usize,
    b: &[T],
    rsb: usize,
    csb: usize,
    beta: T,
    c: &mut [T],
    rsc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    if k > 0 {
        assert!(
            last(m, k, rsa, csa) < a.len() && last(k, n, rsb, csb) < b.len(),
            "gemm operand out of range"
        );
    }
    assert!(last(m, n, rsc, 1) < c.len(), "gemm output out of range");
    // SAFETY: the asserts above prove every element addressed by the given dimensions and strides
    // lies inside the slices; `c` is exclusively borrowed and does not alias `a` or `b`.
    unsafe {
        (T::KERNEL)(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
            1,
        );
    }
}

/// `c (m×n) = a (m×k, strides rsa/csa) · b (k×n, strides rsb/csb)`, overwriting `c` (row stride
/// `rsc`): `gemm` in f32 with `alpha = 1`, `beta = 0`.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    csb: usize,
    c: &mut [f32],
    rsc: usize,
) {
    gemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, rsc);
}

/// `sgemm` with the rows of `c` split into blocks, one per thread (`par`), each block one
/// `sgemm` call. Every element of `c` is still one call's dot product over the whole `k` in the
/// same order, so the result is bit for bit `sgemm`'s whatever the thread count
/// (`par_sgemm_equals_sgemm`); matrixmultiply itself runs on one thread.
#[allow(clippy::too_many_arguments)]
pub fn par_sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    csb: usize,
    c: &mut [f32],
    rsc: usize,
) {
    // Below this many multiply-adds per block a thread costs more than it saves.
    const MIN_WORK: usize = 1 << 16;
    if m < 2 || n == 0 || rsc < n || par::threads() == 1 || m * k * n < 2 * MIN_WORK {
        return sgemm(m, k, n, a, rsa, csa, b, rsb, csb, c, rsc);
    }
    let used = ((m - 1) * rsc + n).min(c.len());
    let min_rows = (MIN_WORK / (k * n).max(1)).max(1);
    par::for_each_row_block(&mut c[..used], rsc, min_rows, |r0, block| {
        // A full block holds `per · rsc` values, the last `(rows − 1)·rsc + n`.
        let rows = (block.len() + rsc - n) / rsc;
        sgemm(
            rows,
            k,
            n,
            &a[r0 * rsa..],
            rsa,
            csa,
            b,
            rsb,
            csb,
            block,
            rsc,
        );
    });
}

/// `a · bᵀ` for row-major `a` (`m × k`) and `b` (`n × k`): `m × n` (`par_sgemm`).
pub fn mul_t(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    par_sgemm(m, k, n, a, k, 1, b, 1, k, &mut c, n);
    c
}

/// `a · b` for row-major `a` (`m × k`) and `b` (`k × n`): `m × n` (`par_sgemm`).
pub fn mul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    par_sgemm(m, k, n, a, k, 1, b, n, 1, &mut c, n);
    c
}

/// `aᵀ · b` for row-major `a` (`m × k`) and `b` (`m × n`): `k × n` (`par_sgemm`).
pub fn t_mul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0f32; k * n];
    par_sgemm(k, m, n, a, 1, k, b, n, 1, &mut c, n);
    c
}

/// Where the trainer's large f32 products run (full BinaryMoS distillation, docs/binarymos.md
/// "Training on the GPU"): the forward and backward passes (`model::arch::llama::grad`,
/// `format::binarymos::grad`, `train::loss`) are written once against this seam. `CpuGemm` is
/// `mul_t` / `mul` / `t_mul` themselves, so the CPU trainer's numbers are what they were bit for
/// bit; `gpu::TrainGemm` runs them on wgpu.
///
/// A product never fails here: an implementation that can (a lost GPU) returns zeros and reports
/// the failure at the next `check`, which the trainer calls before it uses a step's gradients.
pub trait Gemm {
    /// `a · bᵀ` for row-major `a` (`m × k`) and `b` (`n × k`): `m × n`.
    fn mul_t(&self, a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32>;
    /// `a · b` for row-major `a` (`m × k`) and `b` (`k × n`): `m × n`.
    fn mul(&self, a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32>;
    /// `aᵀ · b` for row-major `a` (`m × k`) and `b` (`m × n`): `k × n`.
    fn t_mul(&self, a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32>;
    /// `mul_t` whose `b` is a weight: the same slice, unchanged, until `end_step` (so a device
    /// may keep its copy instead of uploading it again).
    fn mul_t_w(&self, a: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        self.mul_t(a, w, m, k, n)
    }
    /// `mul` whose `b` is a weight (as `mul_t_w`).
    fn mul_w(&self, a: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        self.mul(a, w, m, k, n)
    }
    /// The weights given since the last call may change or be freed from now on.
    fn end_step(&self) {}
    /// The first failure since the last check.
    fn check(&self) -> Result<()> {
        Ok(())
    }
    /// Where the products run, for logs and the model file ("cpu", "gpu: <adapter>").
    fn name(&self) -> String;
    /// Wall seconds spent in products so far, where measured (the GPU's: uploads, kernel and
    /// read-back), so a step's time can be split between them and the CPU's share.
    fn seconds(&self) -> Option<f64> {
        None
    }
}

/// The CPU's products: `mul_t`, `mul` and `t_mul` (`par_sgemm`).
pub struct CpuGemm;

impl Gemm for CpuGemm {
    fn mul_t(&self, a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        mul_t(a, b, m, k, n)
    }
    fn mul(&self, a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        mul(a, b, m, k, n)
    }
    fn t_mul(&self, a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        t_mul(a, b, m, k, n)
    }
    fn name(&self) -> String {
        "cpu".to_string()
    }
}

/// Block size: large enough for `dgemm` to run near its peak, small enough that the unblocked
/// parts (diagonal blocks, panel solves: `n·NB²` work) stay minor.
const NB: usize = 64;

/// `Σ a_i b_i` in four independent lanes (vectorisable, fixed order).
#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
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
            gemm(
                m,
                w,
                cols,
                -1.0,
                &panel[(i0 - k1) * w..],
                w,
                1,
                panel,
                1,
                w,
                1.0,
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
fn lower_inverse_transposed(l: &[f64], n: usize) -> Vec<f64> {
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
            gemm(
                mi,
                i0 - j0,
                nj,
                -1.0,
                &l[i0 * n + j0..],
                n,
                1,
                &mtj[j0..],
                1,
                n,
                1.0,
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

/// The upper Cholesky factor `U` of `H⁻¹` (`H⁻¹ = UᵀU`) for symmetric positive definite `H`.
pub(crate) fn inverse_cholesky_upper(h: &[f64], n: usize, name: &str) -> Result<Vec<f64>> {
    // A = J H J, factor A = L Lᵀ.
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            l[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
        }
    }
    cholesky_lower(&mut l, n, name)?;
    // M = L⁻¹, held transposed: `mt` row j is column j of M.
    let mt = lower_inverse_transposed(&l, n);
    // U = R⁻¹ = J M J: U[i][j] = M[n-1-i][n-1-j] = mt[n-1-j][n-1-i].
    let mut u = vec![0f64; n * n];
    for i in 0..n {
        for j in i..n {
            u[i * n + j] = mt[(n - 1 - j) * n + (n - 1 - i)];
        }
    }
    Ok(u)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testkit::Rng;

    #[test]
    fn par_sgemm_equals_sgemm() {
        // Odd shapes, strided and transposed operands, a padded output row stride.
        for (m, k, n, rsc) in [
            (1, 5, 7, 7),
            (97, 33, 61, 64),
            (300, 257, 129, 131),
            (513, 64, 3, 3),
        ] {
            let a = Rng(3).vec(m * k);
            let b = Rng(5).vec(n * k);
            let (mut want, mut got) = (vec![0f32; m * rsc], vec![0f32; m * rsc]);
            // b read transposed (column stride k), as the model's `x · Wᵀ`.
            sgemm(m, k, n, &a, k, 1, &b, 1, k, &mut want, rsc);
            par_sgemm(m, k, n, &a, k, 1, &b, 1, k, &mut got, rsc);
            assert!(
                want.iter()
                    .zip(&got)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{m}×{k}×{n}"
            );
        }
    }

    /// Reconstruction tolerance for the inverse Cholesky factor (f64, n ≤ 40).
    const FACTOR_TOL: f64 = 1e-9;

    /// A damped Hessian-like symmetric positive definite `n × n` matrix: `2·XᵀX/t + 0.01·mean
    /// diag·I` of `t` rows of correlated channels with uneven scales and one dead channel.
    fn spd(n: usize, t: usize, seed: u64) -> Vec<f64> {
        let base = Rng(seed).vec(t * n);
        let x = |k: usize, j: usize| -> f64 {
            let mix = base[k * n + j] + 0.6 * base[k * n + (j + 1) % n];
            if j == 5 {
                0.0
            } else {
                (mix * (1.0 + (j % 7) as f32)) as f64
            }
        };
        let mut h = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] = 2.0 * (0..t).map(|k| x(k, i) * x(k, j)).sum::<f64>() / t as f64;
            }
        }
        let lambda = 0.01 * (0..n).map(|j| h[j * n + j]).sum::<f64>() / n as f64;
        for j in 0..n {
            h[j * n + j] += lambda;
        }
        h
    }

    /// Gauss–Jordan inverse in f64 (the reference needs `H⁻¹` itself).
    pub(crate) fn inverse(a: &[f64], n: usize) -> Vec<f64> {
        let mut m = a.to_vec();
        let mut inv = vec![0f64; n * n];
        for i in 0..n {
            inv[i * n + i] = 1.0;
        }
        for c in 0..n {
            let p = (c..n)
                .max_by(|&x, &y| m[x * n + c].abs().total_cmp(&m[y * n + c].abs()))
                .unwrap();
            for k in 0..n {
                m.swap(c * n + k, p * n + k);
                inv.swap(c * n + k, p * n + k);
            }
            let d = m[c * n + c];
            for k in 0..n {
                m[c * n + k] /= d;
                inv[c * n + k] /= d;
            }
            for r in 0..n {
                if r != c {
                    let f = m[r * n + c];
                    for k in 0..n {
                        m[r * n + k] -= f * m[c * n + k];
                        inv[r * n + k] -= f * inv[c * n + k];
                    }
                }
            }
        }
        inv
    }

    #[test]
    fn gemm_matches_loops_with_strides_alpha_and_beta() {
        let (m, k, n) = (5, 7, 3);
        let mut rng = Rng(9);
        let (a, b, c0) = (rng.vec(m * k), rng.vec(n * k), rng.vec(m * n));
        // a row-major, b given transposed (n × k), c = 2·a·b − c0.
        let mut c = c0.clone();
        gemm(m, k, n, 2.0, &a, k, 1, &b, 1, k, -1.0, &mut c, n);
        let a64: Vec<f64> = a.iter().map(|&v| v as f64).collect();
        let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
        let mut c64: Vec<f64> = c0.iter().map(|&v| v as f64).collect();
        gemm(m, k, n, 2.0, &a64, k, 1, &b64, 1, k, -1.0, &mut c64, n);
        let mut s = vec![0f32; m * n];
        sgemm(m, k, n, &a, k, 1, &b, 1, k, &mut s, n);
        for i in 0..m {
            for j in 0..n {
                let ab: f64 = (0..k).map(|p| a64[i * k + p] * b64[j * k + p]).sum();
                let want = 2.0 * ab - c0[i * n + j] as f64;
                assert!((c64[i * n + j] - want).abs() < 1e-12, "f64 {i},{j}");
                assert!((c[i * n + j] as f64 - want).abs() < 1e-5, "f32 {i},{j}");
                assert!((s[i * n + j] as f64 - ab).abs() < 1e-5, "sgemm {i},{j}");
            }
        }
    }

    #[test]
    fn inverse_cholesky_factor_reconstructs_inverse() {
        let n = 23;
        let h = spd(n, 60, 3);
        let u = inverse_cholesky_upper(&h, n, "t").unwrap();
        let inv = inverse(&h, n);
        for i in 0..n {
            for j in 0..n {
                if j < i {
                    assert_eq!(u[i * n + j], 0.0);
                }
                let utu: f64 = (0..n).map(|k| u[k * n + i] * u[k * n + j]).sum();
                let scale = inv[i * n + i].abs().max(inv[j * n + j].abs());
                assert!(
                    (utu - inv[i * n + j]).abs() <= FACTOR_TOL * scale,
                    "{i},{j}"
                );
            }
            assert!(u[i * n + i] > 0.0);
        }
        let mut not_pd = vec![1.0, 2.0, 2.0, 1.0];
        assert!(cholesky_lower(&mut not_pd, 2, "t").is_err());
    }

    #[test]
    fn blocked_factor_matches_inverse_past_one_block() {
        // Widths past the 64-column block, one not a multiple of it: the blocked
        // Cholesky and triangular inverse against Gauss–Jordan, and against the unblocked loops'
        // definition `UᵀU = H⁻¹` with `U` upper.
        for n in [64, 65, 150] {
            let h = spd(n, 3 * n, 17);
            let u = inverse_cholesky_upper(&h, n, "t").unwrap();
            let inv = inverse(&h, n);
            let scale = (0..n).map(|i| inv[i * n + i].abs()).fold(0f64, f64::max);
            for i in 0..n {
                for j in 0..n {
                    if j < i {
                        assert_eq!(u[i * n + j], 0.0);
                    }
                    let utu: f64 = (0..n).map(|k| u[k * n + i] * u[k * n + j]).sum();
                    assert!(
                        (utu - inv[i * n + j]).abs() <= FACTOR_TOL * scale,
                        "n {n}: {i},{j}: {utu} vs {}",
                        inv[i * n + j]
                    );
                }
            }
        }
    }
}
