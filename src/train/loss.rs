//! The distillation loss of BinaryMoS (arXiv 2406.12311 §3.3, the authors' `KDTrainer`):
//! `KL(teacher ‖ student)` of the next-token distributions plus `λ · Σ_l MSE(h_l^S, h_l^T)`
//! over the hidden states the model hands on (each block's output; the last one after the
//! output norm, as Hugging Face's `hidden_states[1:]` are), `λ = 10`.
//!
//! One difference in scale from the authors' code: their KL is `batchmean`, summed over the
//! tokens of each sequence; here it is the mean over tokens, so the balance between the two
//! terms does not change with `--seq-len`. Gradients: `∂KL/∂z_S = (softmax(z_S) − p_T)/rows`,
//! `∂MSE/∂h_S = 2(h_S − h_T)/numel`.

use crate::linalg::Gemm;
use crate::model::cpu::Mat;

/// Rows of logits computed at a time (the vocabulary is wide: 64 × 49 152 floats is 12 MB).
const CHUNK_ROWS: usize = 64;

/// Log-softmax of one row in f64.
fn log_softmax(z: &[f32]) -> Vec<f64> {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + z.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
    z.iter().map(|&v| v as f64 - lse).collect()
}

/// `Σ_rows KL(p_T ‖ p_S)` of the head's logits of `student` and `teacher` (rows × d, what the
/// head reads), and, when `grad` is given, `scale · ∂/∂student` added into it (rows × d). The
/// three products with the head (`vocab × d`, the largest of a step) run on `gemm`.
pub fn kl_through_head(
    gemm: &dyn Gemm,
    head: &Mat,
    student: &[f32],
    teacher: &[f32],
    scale: f32,
    mut grad: Option<&mut [f32]>,
) -> f64 {
    let (d, v) = (head.cols, head.rows);
    let rows = student.len() / d.max(1);
    let mut total = 0f64;
    for r0 in (0..rows).step_by(CHUNK_ROWS) {
        let n = CHUNK_ROWS.min(rows - r0);
        let zs = gemm.mul_t_w(&student[r0 * d..(r0 + n) * d], &head.data, n, d, v);
        let zt = gemm.mul_t_w(&teacher[r0 * d..(r0 + n) * d], &head.data, n, d, v);
        let rows_out = crate::par::map(0..n, |i| {
            let (ls, lt) = (
                log_softmax(&zs[i * v..(i + 1) * v]),
                log_softmax(&zt[i * v..(i + 1) * v]),
            );
            let kl: f64 = lt.iter().zip(&ls).map(|(t, s)| t.exp() * (t - s)).sum();
            let dz: Vec<f32> = ls
                .iter()
                .zip(&lt)
                .map(|(s, t)| scale * (s.exp() - t.exp()) as f32)
                .collect();
            (kl, dz)
        });
        let mut dz = Vec::with_capacity(n * v);
        for (kl, row) in rows_out {
            total += kl;
            dz.extend(row);
        }
        if let Some(g) = grad.as_deref_mut() {
            // d(hidden) (n × d) = dZ (n × vocab) · head (vocab × d).
            let dh = gemm.mul_w(&dz, &head.data, n, v, d);
            g[r0 * d..(r0 + n) * d]
                .iter_mut()
                .zip(&dh)
                .for_each(|(a, b)| *a += b);
        }
    }
    total
}

/// `weight · mean((s − t)²)`, and `∂/∂s` added into `grad`.
pub fn mse(student: &[f32], teacher: &[f32], weight: f64, grad: Option<&mut [f32]>) -> f64 {
    let n = student.len().max(1) as f64;
    let sum: f64 = student
        .iter()
        .zip(teacher)
        .map(|(s, t)| ((s - t) as f64).powi(2))
        .sum();
    if let Some(g) = grad {
        let k = (2.0 * weight / n) as f32;
        for ((g, s), t) in g.iter_mut().zip(student).zip(teacher) {
            *g += k * (s - t);
        }
    }
    weight * sum / n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::CpuGemm;
    use crate::testkit::Rng;

    /// As the other gradient checks: f32 central differences of f64 sums, a step of 1 % of the
    /// values' size, 2 % of the largest gradient.
    const FD_REL_STEP: f32 = 1e-2;
    const FD_REL_TOL: f64 = 2e-2;

    #[test]
    fn kl_and_mse_gradients_match_central_differences() {
        let (rows, d, vocab) = (3, 5, 11);
        let mut r = Rng(6);
        let head = Mat {
            rows: vocab,
            cols: d,
            data: r.vec(vocab * d),
            bias: None,
            mos: None,
        };
        let (s, t) = (r.vec(rows * d), r.vec(rows * d));
        let loss =
            |s: &[f32]| kl_through_head(&CpuGemm, &head, s, &t, 1.0, None) + mse(s, &t, 10.0, None);
        let mut g = vec![0f32; rows * d];
        kl_through_head(&CpuGemm, &head, &s, &t, 1.0, Some(&mut g));
        mse(&s, &t, 10.0, Some(&mut g));
        let scale = g.iter().map(|v| v.abs() as f64).fold(0.0, f64::max);
        for i in 0..rows * d {
            let h = FD_REL_STEP;
            let (mut a, mut b) = (s.clone(), s.clone());
            a[i] += h;
            b[i] -= h;
            let fd = (loss(&a) - loss(&b)) / (2.0 * h as f64);
            assert!(
                (fd - g[i] as f64).abs() <= FD_REL_TOL * scale,
                "[{i}] backward {} vs {fd}",
                g[i]
            );
        }
        // KL of a distribution with itself is 0, and positive otherwise.
        assert!(kl_through_head(&CpuGemm, &head, &t, &t, 1.0, None).abs() < 1e-12);
        assert!(kl_through_head(&CpuGemm, &head, &s, &t, 1.0, None) > 0.0);
    }
}
