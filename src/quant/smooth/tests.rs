//! The transforms keep the model's function on every architecture, rescale the statistics to
//! what the transformed model really produces, and AQAS never does worse than the points of its
//! grid it could have chosen.

use super::*;
use crate::format::Granularity;
use crate::model::cpu::Cpu;
use crate::model::net::Model;
use crate::quant::calib::{calibrate, CalibFrom, CalibOptions};
use crate::testkit::{tiny_model, tiny_variants, tokens, Rng, TINY_VOCAB};

/// Relative tolerance for "the same function" in f32 (a fold changes rounding only).
const FOLD_TOL: f32 = 2e-4;

fn calib_of(m: &ModelWeights) -> Calibration {
    let model = Model::load(&Cpu, m).unwrap();
    let o = CalibOptions {
        n_seq: 4,
        seq_len: 32,
        from: CalibFrom::Offset(0),
    };
    calibrate(
        &model,
        &tokens(200, TINY_VOCAB, 5),
        None,
        &o,
        &mut |_, _| true,
    )
    .unwrap()
}

fn hidden(m: &ModelWeights) -> Vec<f32> {
    let model = Model::load(&Cpu, m).unwrap();
    model
        .forward(&Cpu, &tokens(24, TINY_VOCAB, 9))
        .unwrap()
        .data
}

fn rel(a: &[f32], b: &[f32]) -> f32 {
    let num: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f32 = b.iter().map(|y| y * y).sum();
    (num / den.max(1e-30)).sqrt()
}

fn int8() -> IntSpec {
    IntSpec {
        bits: 8,
        gran: Granularity::PerRow,
        sym: true,
    }
}

fn int4() -> IntSpec {
    IntSpec {
        bits: 4,
        gran: Granularity::PerRow,
        sym: true,
    }
}

fn every_smooth() -> [Smooth; 3] {
    [
        Smooth::Smoothquant { alpha: 0.5 },
        Smooth::Awq { grid: 5 },
        Smooth::Aqas { step: 0.25 },
    ]
}

#[test]
fn folds_keep_the_function_and_rescale_the_statistics_on_every_architecture() {
    for (label, cfg) in tiny_variants() {
        let src = tiny_model(cfg, 3);
        let cal = calib_of(&src);
        for sm in every_smooth() {
            let plan = |_: &str| Some(int4());
            let (out, rescaled, report) =
                smooth_model(&src, &cal, &sm, &plan, None, &mut |_, _| true).unwrap();
            let e = rel(&hidden(&out), &hidden(&src));
            assert!(
                e < FOLD_TOL,
                "{label} {}: hidden states moved by {e}",
                sm.name()
            );
            // Which sites were scaled: exactly those with a foldable producer.
            let topo = src.topology();
            for alphas in &report.alpha {
                for (site, a) in alphas.iter().enumerate() {
                    let foldable = !matches!(topo.sites[site].producer, Producer::Opaque(_));
                    assert_eq!(a.is_some(), foldable, "{label} {} site {site}", sm.name());
                }
            }
            // The rescaled statistics are those of the transformed model (calibrated again).
            let again = calib_of(&out);
            for (l, (r, a)) in rescaled.layers.iter().zip(&again.layers).enumerate() {
                for (site, (r, a)) in r.iter().zip(a).enumerate() {
                    let what = format!("{label} {} layer {l} site {site}", sm.name());
                    assert!(rel(&r.max_abs, &a.max_abs) < 1e-3, "{what}: max|x|");
                    assert!(rel(&r.gram, &a.gram) < 1e-3, "{what}: Gram");
                    assert!(rel(&r.samples, &a.samples) < 1e-3, "{what}: samples");
                }
            }
        }
    }
}

#[test]
fn a_group_with_a_linear_kept_as_loaded_is_not_scaled() {
    let (_, cfg) = tiny_variants().remove(0);
    let src = tiny_model(cfg, 4);
    let cal = calib_of(&src);
    // Keep attn_k as loaded: its site (attn_in) must stay unscaled.
    let plan = |n: &str| (!n.ends_with("attn_k.weight")).then_some(int4());
    let (out, _, report) = smooth_model(
        &src,
        &cal,
        &Smooth::Smoothquant { alpha: 0.5 },
        &plan,
        None,
        &mut |_, _| true,
    )
    .unwrap();
    let topo = src.topology();
    let attn_in = topo.sites.iter().position(|s| s.name == "attn_in").unwrap();
    assert!(report.alpha.iter().all(|l| l[attn_in].is_none()));
    for (a, b) in out.layers.iter().zip(&src.layers) {
        assert_eq!(
            a.norms[0].weight, b.norms[0].weight,
            "attn_norm was rewritten"
        );
    }
}

#[test]
fn smoothquant_scales_follow_the_formula_and_tie_gqa_heads() {
    let max_x = [8.0, 1.0, 0.5, 2.0];
    let w = [1.0, -2.0, 0.5, 0.25, /* row 2 */ -4.0, 1.0, 0.25, 1.0];
    let s = smoothquant_scales(&max_x, &[&w], 0.5, None);
    let want = [
        8f32.sqrt() / 4f32.sqrt(),
        1.0 / 2f32.sqrt(),
        0.5f32.sqrt() / 0.5f32.sqrt(),
        2f32.sqrt(),
    ];
    for (a, b) in s.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{s:?} vs {want:?}");
    }
    // 4 query heads of 1 channel over 2 KV heads: heads 0,1 and 2,3 share a scale.
    let s = smoothquant_scales(&max_x, &[&w], 0.5, Some((4, 2, 1)));
    assert_eq!(s[0], s[1]);
    assert_eq!(s[2], s[3]);
}

#[test]
fn percentiles_by_nearest_rank() {
    let mut v: Vec<f32> = (1..=10).map(|i| i as f32).collect();
    assert_eq!(percentile(&mut v, 100.0), 10.0);
    assert_eq!(percentile(&mut v, 90.0), 9.0);
    assert_eq!(percentile(&mut v, 50.0), 5.0);
    assert_eq!(percentile(&mut [], 99.0), 0.0);
    // Rows with absmax 1..=4 at 8 bits: the max gives 4/127, the 50th percentile 2/127.
    let x = [1.0, -0.5, 2.0, 0.0, -3.0, 1.0, 0.5, 4.0];
    assert_eq!(static_scale(&x, 2, 8, None), 4.0 / 127.0);
    assert_eq!(static_scale(&x, 2, 8, Some(50.0)), 2.0 / 127.0);
}

/// One site with an outlier channel (as real LLMs have): 64 samples × 32 channels, channel 3
/// at 40× the others; two consumers.
fn outlier_site(r: &mut Rng) -> (SiteStats, Vec<Vec<f32>>) {
    let (n, d) = (64, 32);
    let mut x = r.vec(n * d);
    for row in x.chunks_exact_mut(d) {
        row[3] *= 40.0;
    }
    let mut max_abs = vec![0f32; d];
    for row in x.chunks_exact(d) {
        for (m, v) in max_abs.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
    let st = SiteStats {
        dim: d,
        rows: n,
        gram: vec![0.0; d * d],
        mean_abs: max_abs.clone(),
        l2: max_abs.clone(),
        max_abs,
        samples: x,
        pos_max: Vec::new(),
        pos_min: Vec::new(),
    };
    (st, vec![r.vec(48 * d), r.vec(16 * d)])
}

/// The AQAS objective at a given α (the search's own computation, one point).
fn objective(st: &SiteStats, ws: &[Vec<f32>], alpha: f32, act: &ActTarget) -> f64 {
    let d = st.dim;
    let members: Vec<(&[f32], usize, IntSpec, &str)> = ws
        .iter()
        .map(|w| (&w[..], w.len() / d, int4(), "w"))
        .collect();
    // A grid of one point, α: step 1 over [α, α] is the search at α alone.
    let refs: Vec<&[f32]> = ws.iter().map(|w| &w[..]).collect();
    let s = smoothquant_scales(&st.max_abs, &refs, alpha, None);
    let n = st.sample_rows();
    let mut xs = st.samples.clone();
    for row in xs.chunks_exact_mut(d) {
        row.iter_mut().zip(&s).for_each(|(v, &f)| *v /= f);
    }
    let absmax = st
        .max_abs
        .iter()
        .zip(&s)
        .fold(0f32, |m, (&x, &f)| m.max(x / f));
    act.apply(&mut xs, d, absmax).unwrap();
    let mut err = 0f64;
    for (w, rows, spec, name) in members {
        let y_ref = matmul_t(&st.samples, w, n, d, rows);
        let mut w_s = w.to_vec();
        for row in w_s.chunks_exact_mut(d) {
            row.iter_mut().zip(&s).for_each(|(v, &f)| *v *= f);
        }
        let q = rtn::quantize(&w_s, rows, d, spec, &RtnOptions::default(), name).unwrap();
        let y = matmul_t(&xs, &q.dequantize().unwrap(), n, d, rows);
        err += y
            .iter()
            .zip(&y_ref)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>();
    }
    err
}

#[test]
fn aqas_picks_the_best_point_of_its_grid_with_both_quantizers_active() {
    let mut r = Rng(11);
    let (st, ws) = outlier_site(&mut r);
    let members: Vec<(&[f32], usize, IntSpec, &str)> = ws
        .iter()
        .map(|w| (&w[..], w.len() / st.dim, int4(), "w"))
        .collect();
    for act in [
        ActTarget {
            bits: 8,
            gran: ActGranularity::PerTensor,
            static_scale: true,
            percentile: None,
        },
        ActTarget {
            bits: 4,
            gran: ActGranularity::PerToken,
            static_scale: false,
            percentile: None,
        },
    ] {
        let (alpha, _) = aqas_search(&st, &members, 0.1, Some(&act), None).unwrap();
        let chosen = objective(&st, &ws, alpha, &act);
        for i in 0..=10 {
            let a = i as f32 * 0.1;
            let e = objective(&st, &ws, a, &act);
            assert!(
                chosen <= e * (1.0 + 1e-9),
                "{act:?}: α={alpha} gives {chosen}, α={a} gives {e}"
            );
        }
        // With an outlier channel and per-tensor 8-bit activations, some smoothing pays.
        if act.static_scale {
            assert!(alpha > 0.0, "AQAS kept α = 0 despite a 40× outlier channel");
        }
    }
    // Without samples AQAS says what is missing.
    let mut bare = st.clone();
    bare.samples.clear();
    let e = aqas_search(&bare, &members, 0.1, None, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("samples"), "{e}");
}

#[test]
fn bad_parameters_are_refused_naming_the_field() {
    for (sm, field) in [
        (Smooth::Smoothquant { alpha: 1.5 }, "smooth.alpha"),
        (Smooth::Smoothquant { alpha: f32::NAN }, "smooth.alpha"),
        (Smooth::Awq { grid: 0 }, "smooth.grid"),
        (Smooth::Aqas { step: 0.0 }, "smooth.step"),
        (Smooth::Aqas { step: 2.0 }, "smooth.step"),
    ] {
        let e = sm.validate().unwrap_err().to_string();
        assert!(e.contains(field), "{sm:?}: {e}");
    }
    let _ = int8();
}
