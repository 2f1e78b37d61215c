use super::*;
use crate::linalg::{mul_t, t_mul};
use crate::quant::binary::{onebit, OneBitOptions};

fn problem(rows: usize, cols: usize, t: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut r = Rng(seed);
    let w = r.vec(rows * cols);
    // Two kinds of token whose channels are scaled differently: the case token-adaptive scales
    // are for.
    let x: Vec<f32> = (0..t * cols)
        .map(|i| {
            let (tok, c) = (i / cols, i % cols);
            let gain = if tok % 2 == 0 {
                1.0 + (c % 3) as f32
            } else {
                3.0 - (c % 3) as f32
            };
            gain * r.normal()
        })
        .collect();
    let target = mul_t(&x, &w, t, cols, rows);
    (w, x, target)
}

/// The trained tensor `pick` (0: s_in, 1: s_out, 2: router).
fn param(l: &mut MosLayer, pick: usize) -> &mut Vec<f32> {
    match pick {
        0 => &mut l.s_in,
        1 => &mut l.s_out,
        _ => &mut l.router,
    }
}

#[test]
fn gradients_match_finite_differences() {
    let (rows, cols, t, k) = (5, 7, 9, 3);
    let (w, x, target) = problem(rows, cols, t, 3);
    let mut layer = MosLayer::init(&w, rows, cols, k, 7).unwrap();
    // Move off the symmetric start so every term of the chain is exercised.
    let mut r = Rng(11);
    layer
        .s_in
        .iter_mut()
        .for_each(|v| *v *= 1.0 + 0.3 * r.next());
    layer
        .s_out
        .iter_mut()
        .for_each(|v| *v *= 1.0 + 0.3 * r.next());
    layer.router.iter_mut().for_each(|v| *v = 0.5 * r.normal());
    let (loss, g) = layer.loss_and_grads(&x, &target);
    assert!((loss - layer.loss(&x, &target)).abs() <= 1e-9 * loss);
    // Central differences of the f32 forward (sums in f64): step 1e-2, agreement to 1 % of each
    // tensor's gradient norm (truncation O(h²) and f32 rounding are both far below that).
    const H: f32 = 1e-2;
    const REL_TOL: f64 = 1e-2;
    for (name, pick) in [("s_in", 0), ("s_out", 1), ("router", 2)] {
        let analytic = [&g.s_in, &g.s_out, &g.router][pick].clone();
        let mut fd = Vec::new();
        for i in 0..analytic.len() {
            let mut l2 = layer.clone();
            param(&mut l2, pick)[i] += H;
            let up = l2.loss(&x, &target);
            param(&mut l2, pick)[i] -= 2.0 * H;
            let down = l2.loss(&x, &target);
            fd.push((up - down) / (2.0 * H as f64));
        }
        let norm = analytic
            .iter()
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let diff = analytic
            .iter()
            .zip(&fd)
            .map(|(a, b)| (*a as f64 - b).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(norm > 0.0, "{name}: zero gradient");
        assert!(
            diff <= REL_TOL * norm,
            "{name}: ‖analytic − fd‖ = {diff:.3e}, ‖analytic‖ = {norm:.3e}"
        );
    }
}

#[test]
fn one_expert_at_initialisation_is_onebit() {
    // BinaryMoS with one expert and its SVID start is OneBit's SVID layer (to f16 storage).
    let (rows, cols, t) = (6, 16, 5);
    let (w, x, _) = problem(rows, cols, t, 5);
    let layer = MosLayer::init(&w, rows, cols, 1, 1).unwrap();
    let q = onebit(&w, rows, cols, None, &OneBitOptions::default(), "t").unwrap();
    let want = mul_t(&x, &q.dequantize().unwrap(), t, cols, rows);
    let got = layer.forward(&x);
    let scale = want.iter().map(|v| v.abs()).fold(0.0, f32::max);
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        // f16 rounds each of the two values: 2 × 2⁻¹¹ relative, over `cols` products.
        assert!(
            (a - b).abs() <= 2e-3 * scale,
            "output {i}: {a} vs OneBit {b}"
        );
    }
    // The gates of one expert are all 1.
    assert!(layer.gates(&x).iter().all(|&g| g == 1.0));
}

#[test]
fn lite_training_lowers_the_output_error() {
    let (rows, cols, t) = (24, 32, 128);
    let (w, x, target) = problem(rows, cols, t, 9);
    // The best one expert can do: OneBit's exact least-squares fit on the same inputs.
    let gram = t_mul(&x, &x, t, cols, cols);
    let (_, als) = crate::quant::binary::onebit_fit(
        &w,
        rows,
        cols,
        Some(&gram),
        &OneBitOptions { fit: 20 },
        "t",
    )
    .unwrap();
    let best_one = als[20] / t as f64;
    let mut last = Vec::new();
    for k in [1, 4] {
        let mut layer = MosLayer::init(&w, rows, cols, k, 2).unwrap();
        let mut seen = 0;
        let opts = LiteOptions {
            steps: 300,
            lr: 0.01,
        };
        let losses = train_lite(&mut layer, &x, &target, &opts, &mut |s, l| {
            seen = s;
            l.is_finite()
        })
        .unwrap();
        assert_eq!((losses.len(), seen), (301, 300));
        last.push(losses[300]);
    }
    // One expert: Adam on the hand-written gradients lands on the exact least-squares optimum
    // that `quant::binary` solves in closed form (two independent routes to one number).
    assert!(
        (last[0] - best_one).abs() <= 1e-3 * best_one,
        "one expert trained to {} vs the least-squares optimum {best_one}",
        last[0]
    );
    // Four experts with a router beat the best any single pair of scales can do: the paper's
    // claim, on inputs whose two kinds of token want different scales.
    assert!(
        last[1] < 0.95 * best_one,
        "four experts {} vs one expert's optimum {best_one}",
        last[1]
    );
    // Stopping from the progress callback cancels.
    let mut layer = MosLayer::init(&w, rows, cols, 2, 2).unwrap();
    let e = train_lite(
        &mut layer,
        &x,
        &target,
        &LiteOptions::default(),
        &mut |s, _| s < 3,
    );
    assert!(matches!(e, Err(Error::Cancelled)));
}

#[test]
fn bad_settings_name_the_field() {
    let w = Rng(1).vec(4 * 8);
    for k in [0, MAX_EXPERTS + 1] {
        let e = MosLayer::init(&w, 4, 8, k, 1).unwrap_err().to_string();
        assert!(e.contains("binarymos.experts"), "{e}");
    }
    assert!(MosLayer::init(&w, 4, 7, 2, 1).is_err());
    let mut layer = MosLayer::init(&w, 4, 8, 2, 1).unwrap();
    let e = train_lite(
        &mut layer,
        &[0.0; 16],
        &[0.0; 3],
        &LiteOptions::default(),
        &mut |_, _| true,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("targets"), "{e}");
}
