//! Calibrated quantizers through `QuantConfig::apply_calibrated` on a small synthetic model:
//! calibration through the real forward pass, missing statistics, and GPTQ's output error on the
//! calibration inputs against RTN's for every layer.

use crate::synthetic;
use synthetic::Norms;

use quantlab::format::Granularity;
use quantlab::model::cpu::Cpu;
use quantlab::model::net::Model;
use quantlab::model::weights::ModelWeights;
use quantlab::quant::calib::{self, CalibFrom, CalibOptions, Calibration};
use quantlab::quant::config::{LayerQuant, Method, QuantConfig};
use quantlab::quant::gptq::{self, GptqOptions};

/// Two layers, d = 64, FFN 128, 4 heads of 16 (2 KV heads), vocab 32, all f32; norms with
/// uneven channel gains so activations have outlier channels, as real ones do.
fn synthetic() -> ModelWeights {
    let gains: Vec<f32> = (0..64).map(|j| 0.5 + (j % 9) as f32 * 0.4).collect();
    let ffn = gains.iter().rev().copied().collect();
    synthetic::synthetic(&Norms {
        attn: gains,
        ffn,
        output: vec![1.0; 64],
    })
}

fn tokens(n: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) % 32)
        .collect()
}

fn calibrated(src: &ModelWeights) -> Calibration {
    let model = Model::load(&Cpu, src).unwrap();
    let opts = CalibOptions {
        n_seq: 6,
        seq_len: 40,
        from: CalibFrom::Tail,
    };
    let mut calls = 0;
    let c = calib::calibrate(&model, &tokens(300), Some(1), &opts, &mut |_, _| {
        calls += 1;
        true
    })
    .unwrap();
    assert_eq!(calls, 7, "progress before each sequence and at the end");
    c
}

/// The layer output error `‖XWᵀ − XŴᵀ‖²` of every linear of `q` against `src`.
fn layer_errors(src: &ModelWeights, q: &ModelWeights, c: &Calibration) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (li, (a, b)) in src.layers.iter().zip(&q.layers).enumerate() {
        for (k, (x, y)) in a.linears().iter().zip(b.linears()).enumerate() {
            let st = c.site(li, src.topology().site_of(k)).unwrap();
            let e = calib::output_error(
                &x.w.dequantize().unwrap(),
                &y.w.dequantize().unwrap(),
                x.w.cols,
                &st.gram,
            )
            .unwrap();
            out.push((x.name.clone(), e));
        }
    }
    out
}

#[test]
fn calibration_sees_every_site_with_the_right_width() {
    let src = synthetic();
    let c = calibrated(&src);
    assert_eq!(c.range, 60..300);
    assert_eq!(c.layers.len(), 2);
    for l in &c.layers {
        let dims: Vec<usize> = l.iter().map(|s| s.dim).collect();
        assert_eq!(dims, [64, 64, 64, 128]);
        for s in l {
            assert_eq!(s.rows, 240);
            // diag(XᵀX) is the squared ℓ2 norm of each channel.
            for j in 0..s.dim {
                let d = s.gram[j * s.dim + j];
                let l2 = s.l2[j] * s.l2[j];
                assert!((d - l2).abs() <= 1e-4 * l2.max(1e-6), "{d} vs {l2}");
                assert!(s.max_abs[j] >= s.mean_abs[j]);
            }
        }
    }
    // Cancelling stops with Error::Cancelled.
    let model = Model::load(&Cpu, &src).unwrap();
    let r = calib::calibrate(
        &model,
        &tokens(300),
        None,
        &CalibOptions {
            n_seq: 2,
            seq_len: 40,
            from: CalibFrom::Offset(0),
        },
        &mut |d, _| d < 1,
    );
    assert!(matches!(r, Err(quantlab::Error::Cancelled)));
}

#[test]
fn gptq_needs_calibration_and_beats_rtn_on_every_layer() {
    let src = synthetic();
    let q = LayerQuant {
        bits: 3,
        gran: Granularity::Group(32),
        sym: true,
        clip_search: false,
        grid: Default::default(),
    };
    let gptq = QuantConfig {
        method: Method::Gptq(GptqOptions::default()),
        ..QuantConfig::rtn(q)
    };
    let e = gptq.apply(&src).unwrap_err().to_string();
    assert!(e.contains("gptq needs calibration"), "{e}");

    let c = calibrated(&src);
    let qg = gptq
        .apply_calibrated(&src, Some(&c), &mut |_, _| true)
        .unwrap();
    let qr = QuantConfig::rtn(q).apply(&src).unwrap();
    assert_eq!(
        qg.memory().linear,
        qr.memory().linear,
        "same format, same bytes"
    );
    let eg = layer_errors(&src, &qg, &c);
    let er = layer_errors(&src, &qr, &c);
    for ((name, g), (_, r)) in eg.iter().zip(&er) {
        assert!(g < r, "{name}: gptq {g} ≥ rtn {r}");
    }
    // The config quantizes a block at a time with one Hessian factor per input, in parallel:
    // byte for byte what GPTQ gives each tensor alone.
    for (li, (a, b)) in src.layers.iter().zip(&qg.layers).enumerate() {
        for (k, (x, y)) in a.linears().iter().zip(b.linears()).enumerate() {
            let st = c.site(li, src.topology().site_of(k)).unwrap();
            let alone = gptq::quantize(
                &x.w.dequantize().unwrap(),
                x.w.rows,
                x.w.cols,
                &st.gram,
                st.rows,
                q.spec(),
                &q.rtn_options(),
                &GptqOptions::default(),
                &x.name,
            )
            .unwrap();
            assert_eq!(y.w, alone, "{}", x.name);
        }
    }
}

#[test]
fn awq_needs_calibration_folds_norms_and_lowers_total_error() {
    let src = synthetic();
    let q = LayerQuant {
        bits: 3,
        gran: Granularity::PerRow,
        sym: true,
        clip_search: false,
        grid: Default::default(),
    };
    let awq = QuantConfig {
        method: Method::Awq(quantlab::quant::awq::AwqOptions::default()),
        ..QuantConfig::rtn(q)
    };
    let e = awq.apply(&src).unwrap_err().to_string();
    assert!(e.contains("awq needs calibration"), "{e}");
    let c = calibrated(&src);
    let qa = awq
        .apply_calibrated(&src, Some(&c), &mut |_, _| true)
        .unwrap();
    assert_ne!(
        qa.layers[0].norms[0], src.layers[0].norms[0],
        "scales folded into the norm"
    );
    assert_eq!(
        qa.memory().linear,
        QuantConfig::rtn(q).apply(&src).unwrap().memory().linear
    );
    // Whole-model check on the same calibration tokens: closer to the original's hidden states
    // than RTN's.
    let toks = tokens(300)[60..120].to_vec();
    let h = |m: &ModelWeights| {
        Model::load(&Cpu, m)
            .unwrap()
            .forward(&Cpu, &toks)
            .unwrap()
            .data
    };
    let want = h(&src);
    let dist = |m: &ModelWeights| -> f64 {
        h(m).iter()
            .zip(&want)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum()
    };
    let (da, dr) = (dist(&qa), dist(&QuantConfig::rtn(q).apply(&src).unwrap()));
    assert!(da < dr, "awq {da} ≥ rtn {dr}");
}

#[test]
fn codebook_methods_apply_through_the_config_and_count_their_bytes() {
    use quantlab::format::{Codebook, Format};
    use quantlab::quant::codebook::{self, KmeansOptions, Per};
    let src = synthetic();
    let q = |bits, gran| LayerQuant {
        bits,
        gran,
        sym: true,
        clip_search: false,
        grid: Default::default(),
    };
    let km = KmeansOptions {
        per: Per::Column,
        outlier_frac: 0.01,
        weighted: false,
    };
    let cases = [
        (Method::Kmeans(km), q(3, Granularity::PerRow)),
        (Method::Nf4, q(4, Granularity::Group(32))),
        (Method::Fp4, q(4, Granularity::PerRow)),
    ];
    for (method, lq) in cases {
        let cfg = QuantConfig {
            method: method.clone(),
            ..QuantConfig::rtn(lq)
        };
        let out = cfg.apply(&src).unwrap();
        let mut want_scales = 0;
        for (a, b) in src.linears().zip(out.linears()) {
            let w = a.w.dequantize().unwrap();
            let (r, c) = (a.w.rows, a.w.cols);
            let direct = match &method {
                Method::Kmeans(o) => codebook::kmeans(&w, r, c, 3, o, &a.name).unwrap(),
                Method::Nf4 => codebook::fixed(&w, r, c, Codebook::Nf4(lq.gran), &a.name).unwrap(),
                _ => codebook::fixed(&w, r, c, Codebook::Fp4(lq.gran), &a.name).unwrap(),
            };
            assert_eq!(b.w, direct, "{}", a.name);
            assert!(matches!(b.w.format, Format::Codebook { .. }));
            want_scales += match &method {
                Method::Kmeans(_) => 2 * 8 * c,
                Method::Nf4 => 2 * r * c / 32,
                _ => 2 * r,
            };
        }
        let m = out.memory();
        assert_eq!(m.linear.scales, want_scales, "{method:?}");
        // u32 index + f16 value each, the values padded to 4 bytes per tensor.
        let outliers: usize = out
            .linears()
            .map(|l| 4 * l.w.addons.outliers + (2 * l.w.addons.outliers).div_ceil(4) * 4)
            .sum();
        assert_eq!(m.linear.outliers, outliers);
        assert_eq!(outliers > 0, matches!(method, Method::Kmeans(_)));
        assert_eq!(
            m.linear.total(),
            out.linears().map(|l| l.w.data.len()).sum::<usize>()
        );
    }
}

#[test]
fn lorc_after_rtn_and_awq_lowers_output_error_and_costs_bytes() {
    use quantlab::quant::lorc::LorcOptions;
    let src = synthetic();
    let c = calibrated(&src);
    let q = LayerQuant {
        bits: 2,
        gran: Granularity::PerRow,
        sym: true,
        clip_search: false,
        grid: Default::default(),
    };
    for method in [Method::Rtn, Method::Awq(Default::default())] {
        let base = QuantConfig {
            method: method.clone(),
            ..QuantConfig::rtn(q)
        };
        let with = QuantConfig {
            lorc: Some(LorcOptions {
                rank: 8,
                bits8: false,
            }),
            ..base.clone()
        };
        let a = base
            .apply_calibrated(&src, Some(&c), &mut |_, _| true)
            .unwrap();
        let b = with
            .apply_calibrated(&src, Some(&c), &mut |_, _| true)
            .unwrap();
        // r·(in + out) f16 values per linear.
        let want: usize = src.linears().map(|l| 2 * 8 * (l.w.rows + l.w.cols)).sum();
        assert_eq!(b.memory().linear.lowrank, want);
        assert_eq!(b.memory().linear.total(), a.memory().linear.total() + want);
        if method == Method::Rtn {
            // Same basis as the source: the per-layer output error drops everywhere.
            for ((n, ea), (_, eb)) in layer_errors(&src, &a, &c)
                .iter()
                .zip(&layer_errors(&src, &b, &c))
            {
                assert!(eb < ea, "{n}: lorc {eb} ≥ {ea}");
            }
        }
        let toks = tokens(300)[60..120].to_vec();
        let h = |m: &ModelWeights| {
            Model::load(&Cpu, m)
                .unwrap()
                .forward(&Cpu, &toks)
                .unwrap()
                .data
        };
        let want = h(&src);
        let dist = |m: &ModelWeights| -> f64 {
            h(m).iter()
                .zip(&want)
                .map(|(x, y)| ((x - y) as f64).powi(2))
                .sum()
        };
        assert!(dist(&b) < dist(&a), "{method:?}");
    }
}
