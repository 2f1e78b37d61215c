use super::*;
use crate::quant::calib::output_error;
use crate::testkit::Rng;

/// Seeded inputs `X` (`n × cols`) whose channels differ in scale and are correlated, as real
/// activations are, and their Gram `XᵀX`.
fn inputs(n: usize, cols: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut r = Rng(seed);
    let gain: Vec<f32> = (0..cols)
        .map(|j| 0.2 + 3.0 * ((j * 7919) % 13) as f32 / 13.0)
        .collect();
    let mut x = vec![0f32; n * cols];
    for t in 0..n {
        let common = r.normal();
        for j in 0..cols {
            x[t * cols + j] = gain[j] * (r.normal() + 0.7 * common);
        }
    }
    let mut g = vec![0f32; cols * cols];
    sgemm(cols, n, cols, &x, 1, cols, &x, cols, 1, &mut g, cols);
    (x, g)
}

fn sq_err(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum()
}

#[test]
fn sign_scale_is_the_least_squares_one() {
    let (rows, cols) = (6, 40);
    let w = Rng(3).vec(rows * cols);
    let q = sign(&w, rows, cols, "t").unwrap();
    let d = q.dequantize().unwrap();
    for r in 0..rows {
        let row = &w[r * cols..(r + 1) * cols];
        let alpha = row.iter().map(|v| v.abs()).sum::<f32>() / cols as f32;
        for (c, &v) in row.iter().enumerate() {
            // f16 storage of α: relative 2⁻¹¹.
            let want = if v >= 0.0 { alpha } else { -alpha };
            assert!(
                (d[r * cols + c] - want).abs() <= want.abs() * 1e-3,
                "({r}, {c})"
            );
        }
        // Any other scale fits the row worse.
        let err = |a: f32| {
            sq_err(
                row,
                &row.iter()
                    .map(|v| if *v >= 0.0 { a } else { -a })
                    .collect::<Vec<_>>(),
            )
        };
        assert!(err(alpha) < err(alpha * 1.01) && err(alpha) < err(alpha * 0.99));
    }
    assert_eq!(q.format.storage(rows, cols).unwrap().total(), q.data.len());
}

#[test]
fn svid_recovers_a_rank_one_magnitude_exactly() {
    // |W| = u vᵀ with mixed signs: SVID gives back every weight.
    let (rows, cols) = (5, 12);
    let mut r = Rng(9);
    let u: Vec<f32> = (0..rows).map(|_| 0.5 + r.next().abs()).collect();
    let v: Vec<f32> = (0..cols).map(|_| 0.1 + r.next().abs()).collect();
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| u[i / cols] * v[i % cols] * if r.next() < 0.0 { -1.0 } else { 1.0 })
        .collect();
    let (a, b) = svid(&w, rows, cols);
    let mean_b = b.iter().sum::<f32>() / cols as f32;
    assert!((mean_b - 1.0).abs() < 1e-5, "mean(s_in) = {mean_b}");
    for i in 0..rows * cols {
        let got = a[i / cols] * b[i % cols];
        assert!(
            (got - w[i].abs()).abs() <= 1e-5 * w[i].abs(),
            "weight {i}: {got} vs {}",
            w[i].abs()
        );
    }
}

#[test]
fn svid_is_the_best_rank_one_fit() {
    // A stationary point of ‖|W| − a bᵀ‖²: moving either vector in any direction fits worse.
    let (rows, cols) = (16, 24);
    let w = Rng(11).vec(rows * cols);
    let abs: Vec<f32> = w.iter().map(|v| v.abs()).collect();
    let (a, b) = svid(&w, rows, cols);
    let outer = |a: &[f32], b: &[f32]| {
        (0..rows * cols)
            .map(|i| a[i / cols] * b[i % cols])
            .collect::<Vec<_>>()
    };
    let base = sq_err(&abs, &outer(&a, &b));
    let mut r = Rng(5);
    for _ in 0..8 {
        let da: Vec<f32> = a.iter().map(|x| x + 0.01 * r.next()).collect();
        let db: Vec<f32> = b.iter().map(|x| x + 0.01 * r.next()).collect();
        assert!(sq_err(&abs, &outer(&da, &b)) > base);
        assert!(sq_err(&abs, &outer(&a, &db)) > base);
    }
}

#[test]
fn fitting_to_calibration_lowers_the_output_error_every_round() {
    let (rows, cols, n) = (24, 32, 256);
    let w = Rng(21).vec(rows * cols);
    let (_, gram) = inputs(n, cols, 4);
    let opts = OneBitOptions { fit: 4 };
    let (q, losses) = onebit_fit(&w, rows, cols, Some(&gram), &opts, "t").unwrap();
    assert_eq!(losses.len(), 5);
    for k in 1..losses.len() {
        // Each step is an exact least-squares solve: never worse (up to f32 products).
        assert!(
            losses[k] <= losses[k - 1] * (1.0 + 1e-5),
            "round {k}: {losses:?}"
        );
    }
    // And it matters: refitted to the inputs, the error drops well below SVID's.
    assert!(losses[4] < 0.9 * losses[0], "{losses:?}");
    // The stored (f16) tensor has the error of the last round, to f16's precision.
    let stored = output_error(&w, &q.dequantize().unwrap(), cols, &gram).unwrap();
    assert!(
        (stored - losses[4]).abs() <= 1e-2 * losses[4],
        "stored {stored} vs {}",
        losses[4]
    );
}

#[test]
fn each_fitted_vector_is_a_stationary_point_by_finite_differences() {
    // The two closed forms against the loss itself: after a step, the loss's central difference
    // along each coordinate of the vector just solved is ~0 (relative to its size at SVID).
    let (rows, cols, n) = (8, 12, 128);
    let w = Rng(31).vec(rows * cols);
    let (_, gram) = inputs(n, cols, 8);
    let signs: Vec<bool> = w.iter().map(|&v| v >= 0.0).collect();
    let (mut s_out, mut s_in) = svid(&w, rows, cols);
    let wh = times_gram(&w, cols, &gram);
    let loss = |so: &[f32], si: &[f32]| {
        output_error(&w, &dense(&signs, so, si, cols), cols, &gram).unwrap()
    };
    const H: f32 = 1e-3;
    let grad = |so: &[f32], si: &[f32], which: usize, j: usize| {
        let (mut a, mut b) = (so.to_vec(), si.to_vec());
        let v = if which == 0 { &mut a[j] } else { &mut b[j] };
        *v += H;
        let up = loss(&a, &b);
        let v = if which == 0 { &mut a[j] } else { &mut b[j] };
        *v -= 2.0 * H;
        (up - loss(&a, &b)) / (2.0 * H as f64)
    };
    let size0: f64 = (0..rows)
        .map(|j| grad(&s_out, &s_in, 0, j).abs())
        .sum::<f64>()
        + (0..cols)
            .map(|j| grad(&s_out, &s_in, 1, j).abs())
            .sum::<f64>();
    fit_s_out(&signs, &s_in, &wh, cols, &gram, &mut s_out);
    for j in 0..rows {
        let g = grad(&s_out, &s_in, 0, j);
        assert!(
            g.abs() < 1e-3 * size0,
            "∂L/∂s_out[{j}] = {g} after its step (SVID total {size0})"
        );
    }
    fit_s_in(&signs, &s_out, &wh, cols, &gram, "t", &mut s_in).unwrap();
    for j in 0..cols {
        let g = grad(&s_out, &s_in, 1, j);
        assert!(
            g.abs() < 1e-3 * size0,
            "∂L/∂s_in[{j}] = {g} after its step (SVID total {size0})"
        );
    }
}

#[test]
fn bad_input_names_what_is_wrong() {
    let w = Rng(1).vec(4 * 8);
    let fit = OneBitOptions { fit: 2 };
    let e = onebit(&w, 4, 8, None, &fit, "blk.0.x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("calibration") && e.contains("blk.0.x"), "{e}");
    let e = onebit(&w, 4, 8, Some(&[0.0; 9]), &fit, "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("Gram"), "{e}");
    let e = onebit(
        &w,
        4,
        8,
        None,
        &OneBitOptions {
            fit: MAX_FIT_ROUNDS + 1,
        },
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("onebit.fit"), "{e}");
    let mut nan = w.clone();
    nan[5] = f32::NAN;
    assert!(sign(&nan, 4, 8, "t")
        .unwrap_err()
        .to_string()
        .contains("not finite"));
    assert!(onebit(&w, 4, 7, None, &OneBitOptions::default(), "t").is_err());
    // No fit rounds: no calibration needed, and an all-zero Gram fits nothing but fails nothing.
    assert!(onebit(&w, 4, 8, None, &OneBitOptions::default(), "t").is_ok());
    assert!(onebit(&w, 4, 8, Some(&[0.0; 64]), &fit, "t").is_ok());
}
