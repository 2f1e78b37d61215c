//! The backward pass of the BinaryMoS product (`MosParts::forward_trace`, arXiv 2406.12311 §3),
//! written out by hand, one matrix product per link of the chain. For `t` input rows `X`:
//!   `G = softmax(X·W_R)`, `SIN = G·S_in`, `SOUT = G·S_out`, `XS = X ⊙ SIN`,
//!   `H = XS·Bᵀ`, `Y = H ⊙ SOUT`.
//! Given `dY`:
//!   `dS_out = Gᵀ(dY ⊙ H)`, `dH = dY ⊙ SOUT`, `dXS = dH·B`, `dB = dHᵀ·XS`,
//!   `dS_in = Gᵀ(dXS ⊙ X)`, `dG = (dY ⊙ H)·S_outᵀ + (dXS ⊙ X)·S_inᵀ`,
//!   `dZ = G ⊙ (dG − rowsum(G ⊙ dG))`, `dW_R = Xᵀ·dZ`, `dX = dXS ⊙ SIN + dZ·W_Rᵀ`.
//! `dB` is the gradient with respect to the sign matrix taken as real values: full distillation
//! (`train`) passes it to the latent weights through the straight-through estimator. Lite
//! training needs neither `dB` nor `dX` and skips both products. Checked against central
//! differences in `format::binarymos::grad::tests`.

use super::{MosParts, MosTrace};
use crate::linalg::{mul, mul_t, t_mul, CpuGemm, Gemm};

/// Gradients of one BinaryMoS product, shaped as the parts of `MosParts`.
#[derive(Clone, Debug, PartialEq)]
pub struct MosGrads {
    /// `experts × cols`.
    pub s_in: Vec<f32>,
    /// `experts × rows`.
    pub s_out: Vec<f32>,
    /// `cols × experts`.
    pub router: Vec<f32>,
    /// With respect to the signs as real values (`rows × cols`), when asked for.
    pub signs: Option<Vec<f32>>,
    /// With respect to the input (`t × cols`), when asked for.
    pub x: Option<Vec<f32>>,
}

impl MosParts {
    /// The gradients of a scalar loss, given its gradient `dy` (`t × rows`) with respect to the
    /// product's output on input `x` (`t × cols`), whose forward pass left `c`. `want_signs`
    /// and `want_x` add `dB` and `dX`.
    pub fn backward(
        &self,
        x: &[f32],
        c: &MosTrace,
        dy: &[f32],
        want_signs: bool,
        want_x: bool,
    ) -> MosGrads {
        self.backward_on(x, c, dy, want_signs, want_x, &CpuGemm)
    }

    /// `backward` with its two large products (`dXS = dH·B`, `dB = dHᵀ·XS`, both `rows × cols`
    /// in size) on `gemm`; the products with an `experts`-wide side stay on the CPU.
    pub fn backward_on(
        &self,
        x: &[f32],
        c: &MosTrace,
        dy: &[f32],
        want_signs: bool,
        want_x: bool,
        gemm: &dyn Gemm,
    ) -> MosGrads {
        let (n, o, k) = (self.cols, self.rows, self.experts);
        let t = x.len() / n.max(1);
        let mut dy_h = vec![0f32; t * o];
        let mut dh = vec![0f32; t * o];
        for i in 0..t * o {
            dy_h[i] = dy[i] * c.h[i];
            dh[i] = dy[i] * c.sout[i];
        }
        let d_s_out = t_mul(&c.g, &dy_h, t, k, o);
        let dxs = gemm.mul_w(&dh, &self.signs, t, o, n);
        let sin = mul(&c.g, &self.s_in, t, k, n);
        let signs = want_signs.then(|| {
            let xs: Vec<f32> = x.iter().zip(&sin).map(|(a, b)| a * b).collect();
            gemm.t_mul(&dh, &xs, t, o, n)
        });
        let dsin: Vec<f32> = dxs.iter().zip(x).map(|(a, b)| a * b).collect();
        let d_s_in = t_mul(&c.g, &dsin, t, k, n);
        let mut dg = mul_t(&dy_h, &self.s_out, t, o, k);
        let dg_in = mul_t(&dsin, &self.s_in, t, n, k);
        dg.iter_mut().zip(&dg_in).for_each(|(a, b)| *a += b);
        let mut dz = vec![0f32; t * k];
        for r in 0..t {
            let (gr, dgr) = (&c.g[r * k..(r + 1) * k], &dg[r * k..(r + 1) * k]);
            let inner: f32 = gr.iter().zip(dgr).map(|(a, b)| a * b).sum();
            for j in 0..k {
                dz[r * k + j] = gr[j] * (dgr[j] - inner);
            }
        }
        let router = t_mul(x, &dz, t, n, k);
        let dx = want_x.then(|| {
            // dZ·W_Rᵀ: W_R is `cols × experts`, read transposed.
            let mut dx = mul_t(&dz, &self.router, t, k, n);
            for i in 0..t * n {
                dx[i] += dxs[i] * sin[i];
            }
            dx
        });
        MosGrads {
            s_in: d_s_in,
            s_out: d_s_out,
            router,
            signs,
            x: dx,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::Rng;

    /// Central differences in f32 of a loss summed in f64: a step of 1e-2 on values of order 1
    /// keeps the rounding error of the difference (≈ 1e-7·|L|/h) and the truncation error
    /// (≈ h²·|L'''|) both near 1e-4 of the derivative; 1 % of the gradient's norm is far above
    /// either and far below any wrong term.
    const FD_STEP: f32 = 1e-2;
    const FD_REL_TOL: f64 = 1e-2;

    /// A random layer with real-valued "signs" (so `dB` has a derivative to check), a router
    /// in ±1 (gates far from uniform) and a fixed random readout `r`: `L = Σ r ⊙ Y`.
    fn problem() -> (MosParts, Vec<f32>, Vec<f32>) {
        let (o, n, k, t) = (5, 7, 3, 4);
        let mut r = Rng(11);
        let p = MosParts {
            rows: o,
            cols: n,
            experts: k,
            signs: r.vec(o * n),
            s_in: (0..k * n).map(|_| 1.0 + 0.3 * r.next()).collect(),
            s_out: (0..k * o).map(|_| 0.5 + 0.2 * r.next()).collect(),
            router: r.vec(n * k),
        };
        let x = r.vec(t * n);
        let readout = r.vec(t * o);
        (p, x, readout)
    }

    fn loss(p: &MosParts, x: &[f32], readout: &[f32]) -> f64 {
        p.forward(x)
            .iter()
            .zip(readout)
            .map(|(a, b)| (a * b) as f64)
            .sum()
    }

    #[test]
    fn every_gradient_matches_central_differences() {
        let (p, x, readout) = problem();
        let g = p.backward(&x, &p.forward_trace(&x), &readout, true, true);
        let check = |what: &str, grad: &[f32], perturb: &dyn Fn(usize, f32) -> f64| {
            let norm = grad.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            for (i, &gi) in grad.iter().enumerate() {
                let fd = (perturb(i, FD_STEP) - perturb(i, -FD_STEP)) / (2.0 * FD_STEP as f64);
                assert!(
                    (fd - gi as f64).abs() <= FD_REL_TOL * norm,
                    "{what}[{i}]: backward {gi}, central difference {fd} (norm {norm})"
                );
            }
        };
        let with = |f: &dyn Fn(&mut MosParts)| {
            let mut q = p.clone();
            f(&mut q);
            loss(&q, &x, &readout)
        };
        check("s_in", &g.s_in, &|i, h| with(&|q| q.s_in[i] += h));
        check("s_out", &g.s_out, &|i, h| with(&|q| q.s_out[i] += h));
        check("router", &g.router, &|i, h| with(&|q| q.router[i] += h));
        check("signs", g.signs.as_deref().unwrap(), &|i, h| {
            with(&|q| q.signs[i] += h)
        });
        check("x", g.x.as_deref().unwrap(), &|i, h| {
            let mut x2 = x.clone();
            x2[i] += h;
            loss(&p, &x2, &readout)
        });
    }
}
