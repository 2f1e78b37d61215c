//! Tender (issue 14; arXiv 2406.12930) through the pipeline: its config validated and carried by
//! the share link, static decompositions assembled from the calibration's per-position ranges
//! (checked against the ranges observed directly), and the forward pass of every architecture
//! quantizing with it, finer than one per-tensor scale (each channel's step is at most the
//! tensor's).

use crate::gpu_check;

use quantlab::format::act::ActGranularity;
use quantlab::format::tender::{TenderChunk, TenderRound, TenderSpec};
use quantlab::format::Granularity;
use quantlab::model::cpu::Cpu;
use quantlab::model::net::Model;
use quantlab::model::weights::ModelWeights;
use quantlab::quant::act::{ActConfig, ActScaleKind, TenderAct};
use quantlab::quant::calib::{calibrate, CalibFrom, CalibOptions};
use quantlab::quant::config::{LayerQuant, Method, QuantConfig};
use quantlab::quant::smooth::Smooth;
use quantlab::testkit::{tiny_model, tiny_variants, tokens};

fn tender(bits: u8, groups: u8, chunk: usize, scale: ActScaleKind) -> ActConfig {
    ActConfig {
        bits,
        gran: ActGranularity::PerTensor,
        scale,
        percentile: None,
        tender: Some(TenderAct {
            groups,
            chunk,
            round: TenderRound::Up,
        }),
    }
}

fn rtn4() -> QuantConfig {
    QuantConfig::rtn(LayerQuant {
        bits: 4,
        gran: Granularity::PerRow,
        sym: true,
        clip_search: false,
        grid: Default::default(),
    })
}

#[test]
fn tender_configs_survive_the_share_link_and_bad_ones_name_the_field() {
    let c = QuantConfig {
        smooth: Some(Smooth::Smoothquant { alpha: 0.5 }),
        act: Some(tender(4, 8, 256, ActScaleKind::Static)),
        ..rtn4()
    };
    let back = QuantConfig::from_url(&c.to_url()).unwrap();
    assert_eq!(back, c);
    assert!(c.needs_calibration());
    assert_eq!(c.wa_label(), "W4A4 Tender k8");
    let ok = r#"{"version":1,"method":"rtn","default":{"bits":4,"gran":"per_row","sym":true},"act":{"bits":8,"gran":"per_tensor","tender":{"groups":4,"chunk":128}}}"#;
    let c = QuantConfig::from_json(ok).unwrap();
    assert_eq!(
        c.act.unwrap().tender.unwrap().round,
        TenderRound::Up,
        "the default rounding"
    );
    let with = |act: &str| {
        format!(
            r#"{{"version":1,"method":"rtn","default":{{"bits":4,"gran":"per_row","sym":true}},"act":{act}}}"#
        )
    };
    for (act, field) in [
        (
            r#"{"bits":6,"gran":"per_tensor","tender":{"groups":4,"chunk":256}}"#,
            "act.bits",
        ),
        (
            r#"{"bits":8,"gran":"per_tensor","tender":{"groups":17,"chunk":256}}"#,
            "act.tender.groups",
        ),
        (
            r#"{"bits":8,"gran":"per_tensor","tender":{"groups":1,"chunk":256}}"#,
            "act.tender.groups",
        ),
        (
            r#"{"bits":8,"gran":"per_tensor","tender":{"groups":4,"chunk":100}}"#,
            "act.tender.chunk",
        ),
        (
            r#"{"bits":8,"gran":"per_tensor","tender":{"groups":4,"chunk":1000000000}}"#,
            "act.tender.chunk",
        ),
        (
            r#"{"bits":8,"gran":"per_token","tender":{"groups":4,"chunk":256}}"#,
            "act.gran",
        ),
        (
            r#"{"bits":8,"gran":"per_tensor","scale":"static","percentile":99,"tender":{"groups":4,"chunk":256}}"#,
            "act.percentile",
        ),
        (
            r#"{"bits":8,"gran":"per_tensor","tender":{"groups":4,"chunk":256,"k":3}}"#,
            "k",
        ),
    ] {
        let e = QuantConfig::from_json(&with(act)).unwrap_err().to_string();
        assert!(e.contains(field), "{act}: {e}");
    }
    let aqas = QuantConfig {
        smooth: Some(Smooth::Aqas { step: 0.1 }),
        act: Some(tender(8, 4, 256, ActScaleKind::Static)),
        method: Method::Rtn,
        ..rtn4()
    };
    let e = aqas.validate().unwrap_err().to_string();
    assert!(e.contains("smooth") && e.contains("Tender"), "{e}");
}

/// Every site's rows observed in a plain forward pass of each calibration sequence, grouped by
/// chunk position: their per-channel max and min give the static decomposition directly.
#[test]
fn static_chunks_are_the_calibrated_ranges_of_each_position() {
    let (label, cfg) = tiny_variants().remove(0);
    let w = tiny_model(cfg.clone(), 9);
    let toks = tokens(3 * 128, cfg.vocab, 7);
    let opts = CalibOptions {
        n_seq: 3,
        seq_len: 128,
        from: CalibFrom::Offset(0),
    };
    let model = Model::load(&Cpu, &w).unwrap();
    let calib = calibrate(&model, &toks, None, &opts, &mut |_, _| true).unwrap();
    for chunk in [64usize, 128] {
        let c = QuantConfig {
            act: Some(tender(8, 4, chunk, ActScaleKind::Static)),
            ..QuantConfig::default()
        };
        let q = c
            .apply_calibrated(&w, Some(&calib), &mut |_, _| true)
            .unwrap();
        let plan = q.act.as_ref().unwrap().tender.clone().unwrap();
        let got = plan.chunks.unwrap();
        let spec = plan.spec;
        // Ranges seen directly: [layer][site][position] → (max, min) per channel.
        let positions = 128 / chunk;
        let mut seen: Vec<Vec<Vec<Range>>> = Vec::new();
        for s in 0..3 {
            let seq = &toks[s * 128..(s + 1) * 128];
            model
                .forward_observed(&Cpu, seq, &mut |l, site, x| {
                    while seen.len() <= l {
                        seen.push(Vec::new());
                    }
                    while seen[l].len() <= site {
                        seen[l].push(
                            (0..positions)
                                .map(|_| {
                                    (vec![f32::NEG_INFINITY; x.cols], vec![f32::INFINITY; x.cols])
                                })
                                .collect(),
                        );
                    }
                    for (t, row) in x.data.chunks_exact(x.cols).enumerate() {
                        let (hi, lo) = &mut seen[l][site][t / chunk];
                        for (j, &v) in row.iter().enumerate() {
                            hi[j] = hi[j].max(v);
                            lo[j] = lo[j].min(v);
                        }
                    }
                    Ok(())
                })
                .unwrap();
        }
        assert_eq!(got.len(), seen.len(), "{label}");
        for (l, layer) in seen.iter().enumerate() {
            for (site, pos) in layer.iter().enumerate() {
                assert_eq!(got[l][site].len(), positions);
                for (p, (hi, lo)) in pos.iter().enumerate() {
                    let want = TenderChunk::from_range(hi, lo, &spec).unwrap();
                    assert_eq!(
                        got[l][site][p], want,
                        "{label} T {chunk} layer {l} site {site} position {p}"
                    );
                }
            }
        }
    }
    // Without calibration, a static plan names what is missing.
    let c = QuantConfig {
        act: Some(tender(8, 4, 64, ActScaleKind::Static)),
        ..QuantConfig::default()
    };
    let e = c.apply(&w).unwrap_err().to_string();
    assert!(e.contains("calibrat"), "{e}");
}

/// Per-channel (max, min).
type Range = (Vec<f32>, Vec<f32>);

fn hidden(w: &ModelWeights, toks: &[u32]) -> Vec<f32> {
    let m = Model::load(&Cpu, w).unwrap();
    m.forward_batch(&Cpu, toks, 64).unwrap().data
}

fn rel(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// Tender in the forward pass of every architecture: the quantized model differs from the
/// unquantized one, by less than with one dynamic per-tensor scale at the same bits (a channel's
/// step `θ_g/qmax` never exceeds `tmax/qmax`, and `tmax` after the bias is at most the
/// tensor's absmax), and more groups never hurt much.
#[test]
fn tender_quantizes_the_forward_of_every_architecture_finer_than_one_scale() {
    for (label, cfg) in tiny_variants() {
        let w = tiny_model(cfg.clone(), 11);
        let toks = tokens(2 * 64, cfg.vocab, 3);
        let base = hidden(&w, &toks);
        for bits in [8u8, 4] {
            let per_tensor = QuantConfig {
                act: Some(ActConfig {
                    bits,
                    gran: ActGranularity::PerTensor,
                    scale: ActScaleKind::Dynamic,
                    percentile: None,
                    tender: None,
                }),
                ..QuantConfig::default()
            };
            let e_tensor = rel(&hidden(&per_tensor.apply(&w).unwrap(), &toks), &base);
            let mut last = f64::INFINITY;
            for k in [2u8, 8, 16] {
                let c = QuantConfig {
                    act: Some(tender(bits, k, 64, ActScaleKind::Dynamic)),
                    ..QuantConfig::default()
                };
                let q = c.apply(&w).unwrap();
                assert_eq!(
                    q.act.as_ref().unwrap().tender.as_ref().unwrap().spec,
                    TenderSpec {
                        bits,
                        groups: k,
                        chunk: 64,
                        round: TenderRound::Up
                    }
                );
                let e = rel(&hidden(&q, &toks), &base);
                assert!(e > 0.0 && e.is_finite(), "{label} A{bits} k {k}: {e}");
                assert!(
                    e < e_tensor,
                    "{label} A{bits} k {k}: Tender {e} ≥ per tensor {e_tensor}"
                );
                assert!(
                    e < 1.5 * last,
                    "{label} A{bits} k {k}: {e} against {last} with fewer groups"
                );
                last = e;
            }
        }
    }
}

/// Perplexity, GPU against CPU, relative: the same bound and reason as tests/w4a8.rs (a value on
/// a rounding boundary may take the other code on one backend, and random tiny models amplify
/// each flip).
const PPL_REL_TOL: f64 = 1e-2;

/// A Tender model (W4 per-row RTN, so the GPU multiplies in integers with shift accumulation)
/// evaluated on the GPU and the CPU: the perplexities agree, static and dynamic, on every
/// architecture.
#[test]
fn a_tender_model_evaluates_alike_on_the_gpu_and_the_cpu() {
    use quantlab::model::eval::{self, EvalOptions, Protocol};
    let g = gpu_check::gpu();
    for (label, cfg) in tiny_variants() {
        let w = tiny_model(cfg.clone(), 13);
        let toks = tokens(4 * 64, cfg.vocab, 4);
        let calib = calibrate(
            &Model::load(&Cpu, &w).unwrap(),
            &toks,
            None,
            &CalibOptions {
                n_seq: 4,
                seq_len: 64,
                from: CalibFrom::Offset(0),
            },
            &mut |_, _| true,
        )
        .unwrap();
        for scale in [ActScaleKind::Dynamic, ActScaleKind::Static] {
            let c = QuantConfig {
                act: Some(tender(8, 8, 64, scale)),
                ..rtn4()
            };
            let q = c
                .apply_calibrated(&w, Some(&calib), &mut |_, _| true)
                .unwrap();
            let opts = EvalOptions {
                protocol: Protocol::Llamacpp,
                ctx: 64,
                max_windows: None,
                kl: false,
            };
            let clock = || 0.0;
            let cpu = eval::ready(eval::evaluate(
                &Cpu,
                &Model::load(&Cpu, &q).unwrap(),
                None,
                &toks,
                None,
                &opts,
                &clock,
                &mut |_| true,
            ))
            .unwrap()
            .ppl;
            let gpu = eval::ready(eval::evaluate(
                &g,
                &Model::load(&g, &q).unwrap(),
                None,
                &toks,
                None,
                &opts,
                &clock,
                &mut |_| true,
            ))
            .unwrap()
            .ppl;
            assert!(
                ((gpu - cpu) / cpu).abs() <= PPL_REL_TOL,
                "{label} {scale:?}: GPU {gpu} CPU {cpu}"
            );
        }
    }
}
