//! Folding keeps the model's function (GQA included); AWQ lowers the layer output error of
//! layers whose inputs have outlier channels.

use super::*;
use crate::model::cpu::Cpu;
use crate::model::net::Model;
use crate::model::weights::ModelWeights;
use crate::quant::calib::{calibrate, CalibFrom, CalibOptions, Calibration};
use crate::quant::testutil::{lcg, tiny_model, tokens};

/// Relative tolerance for "the same function" in f32 (folds change rounding only).
const FOLD_TOL: f32 = 2e-4;

fn calib(m: &ModelWeights) -> Calibration {
    let model = Model::load(&Cpu, m).unwrap();
    let o = CalibOptions {
        n_seq: 4,
        seq_len: 48,
        from: CalibFrom::Offset(0),
    };
    calibrate(&model, &tokens(400), None, &o, &mut |_, _| true).unwrap()
}

fn hidden(m: &ModelWeights) -> Vec<f32> {
    let model = Model::load(&Cpu, m).unwrap();
    model.forward(&Cpu, &tokens(40)).unwrap().data
}

/// Fold positive scales into every site of every layer, optionally untied for o under GQA.
fn folded(src: &ModelWeights, tied: bool) -> ModelWeights {
    let mut m = src.clone();
    let topo = m.topology();
    for (li, layer) in m.layers.iter_mut().enumerate() {
        let mut w: Vec<Vec<f32>> = layer
            .linears()
            .iter()
            .map(|l| l.w.dequantize().unwrap())
            .collect();
        let rows: Vec<usize> = layer.linears().iter().map(|l| l.w.rows).collect();
        for site in 0..topo.sites.len() {
            let dim = topo.sites[site].width;
            let mean: Vec<f32> = lcg(100 + li as u64 * 4 + site as u64, dim)
                .iter()
                .map(|v| v + 0.6)
                .collect();
            let tie = topo.sites[site].heads.filter(|_| tied);
            let s = scales_for(&mean, 0.7, tie);
            let foldable = !matches!(topo.sites[site].producer, Producer::Opaque(_));
            assert_eq!(fold(&mut w, &rows, layer, &topo, site, &s), foldable);
        }
        for (l, wk) in layer.linears_mut().iter_mut().zip(&w) {
            l.w = QTensor::from_f32(l.w.rows, l.w.cols, wk);
        }
    }
    m
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn folding_keeps_the_function_with_gqa_when_tied() {
    for n_kv in [4, 2] {
        let src = tiny_model(n_kv);
        let want = hidden(&src);
        let d = max_rel_diff(&want, &hidden(&folded(&src, true)));
        assert!(d <= FOLD_TOL, "n_kv {n_kv}: {d}");
    }
    // Untied scales for o cannot be folded into v rows shared by two query heads.
    let src = tiny_model(2);
    let d = max_rel_diff(&hidden(&src), &hidden(&folded(&src, false)));
    assert!(d > 100.0 * FOLD_TOL, "untied fold went unnoticed: {d}");
}

#[test]
fn folding_keeps_the_function_of_every_architecture() {
    use crate::testkit;
    for (label, cfg) in testkit::tiny_variants() {
        let src = testkit::tiny_model(cfg, 5);
        let want = hidden(&src);
        let out = folded(&src, true);
        let d = max_rel_diff(&want, &hidden(&out));
        assert!(d <= FOLD_TOL, "{label}: {d}");
        // Something was folded: the weights changed (every architecture has a foldable site).
        assert!(
            src.layers[0]
                .linears
                .iter()
                .zip(&out.layers[0].linears)
                .any(|(a, b)| a.w != b.w),
            "{label}: nothing folded"
        );
    }
}

#[test]
fn awq_lowers_output_error_where_inputs_have_outliers() {
    let src = tiny_model(2);
    let cal = calib(&src);
    for clip in [false, true] {
        let mut m = src.clone();
        let spec = IntSpec {
            bits: 3,
            gran: Granularity::PerRow,
            sym: true,
        };
        let (mut better, mut total) = (0, 0);
        let (mut sum_awq, mut sum_rtn) = (0f64, 0f64);
        for (li, layer) in m.layers.iter_mut().enumerate() {
            let orig = src.layers[li].clone();
            let topo = src.topology();
            let sc = quantize_layer(
                layer,
                &topo,
                &cal.layers[li],
                &|_| Some(spec),
                &AwqOptions { grid: 20, clip },
            )
            .unwrap();
            assert!(
                sc.alpha.iter().any(|&a| a > 0.0),
                "α stayed 0 in layer {li}"
            );
            for (k, (a, q)) in orig.linears().iter().zip(layer.linears()).enumerate() {
                let st = &cal.layers[li][topo.site_of(k)];
                let w = a.w.dequantize().unwrap();
                let eff = effective_weights(&q.w.dequantize().unwrap(), k, a.w.cols, &sc, &topo);
                let ea = output_error(&w, &eff, a.w.cols, &st.gram).unwrap();
                let r = rtn::quantize(&w, a.w.rows, a.w.cols, spec, &RtnOptions::default(), "t")
                    .unwrap();
                let er = output_error(&w, &r.dequantize().unwrap(), a.w.cols, &st.gram).unwrap();
                total += 1;
                better += usize::from(ea < er);
                sum_awq += ea;
                sum_rtn += er;
            }
        }
        assert!(
            sum_awq < sum_rtn,
            "clip {clip}: awq {sum_awq} ≥ rtn {sum_rtn}"
        );
        assert!(
            2 * better > total,
            "clip {clip}: only {better}/{total} layers better"
        );
    }
}

#[test]
fn kept_linears_block_their_groups() {
    let src = tiny_model(2);
    let cal = calib(&src);
    let mut layer = src.layers[0].clone();
    let spec = IntSpec {
        bits: 4,
        gran: Granularity::Group(16),
        sym: false,
    };
    // v kept: neither o (producer v) nor q/k/v (consumer v) may be scaled.
    let plan = |n: &str| (!n.contains("attn_v")).then_some(spec);
    let topo = src.topology();
    let sc = quantize_layer(
        &mut layer,
        &topo,
        &cal.layers[0],
        &plan,
        &AwqOptions::default(),
    )
    .unwrap();
    let site = |name: &str| topo.sites.iter().position(|s| s.name == name).unwrap();
    let v = topo.linear_index("attn_v").unwrap();
    assert!(sc.s[site("attn_in")].iter().all(|&v| v == 1.0));
    assert!(sc.s[site("attn_out")].iter().all(|&v| v == 1.0));
    assert_eq!(layer.linears[v].w, src.layers[0].linears[v].w);
    assert_eq!(layer.norm("attn_norm"), src.layers[0].norm("attn_norm"));
}
