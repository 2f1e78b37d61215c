//! Everything works on every architecture (issue "architectures as data", item 3): each tiny
//! synthetic model of the test kit (Llama with GQA, OPT pre-LayerNorm, OPT post-LayerNorm with
//! projections, GPT-2) runs the same forward pass on the CPU and on the GPU (lavapipe without a
//! GPU), and every weight method — RTN, GPTQ, AWQ, k-means, NF4, FP4, CMPQ, and LoRC on top —
//! quantizes it from calibration statistics gathered through its topology, giving a finite
//! perplexity on which both backends agree.

use crate::gpu_check;

use gpu_check::{close, gpu, read};
use quantlab::format::Granularity;
use quantlab::model::cpu::Cpu;
use quantlab::model::eval::{self, EvalOptions, Protocol};
use quantlab::model::net::Model;
use quantlab::model::weights::ModelWeights;
use quantlab::quant::awq::AwqOptions;
use quantlab::quant::calib::{calibrate, CalibFrom, CalibOptions};
use quantlab::quant::cmpq::CmpqOptions;
use quantlab::quant::codebook::KmeansOptions;
use quantlab::quant::config::{LayerQuant, Method, QuantConfig};
use quantlab::quant::gptq::GptqOptions;
use quantlab::quant::lorc::LorcOptions;
use quantlab::testkit::{tiny_model, tiny_variants, tokens};

/// Final hidden states, GPU against CPU, relative to the largest value: f32 kernels with other
/// summation orders over two layers.
const HIDDEN_TOL: f32 = 1e-4;
/// Perplexity, GPU against CPU, relative (as tests/gpu_model.rs).
const PPL_REL_TOL: f64 = 1e-3;

fn ppl_cpu_gpu(w: &ModelWeights, reference: &ModelWeights, toks: &[u32]) -> (f64, f64) {
    let opts = EvalOptions {
        protocol: Protocol::Llamacpp,
        ctx: 32,
        max_windows: None,
        kl: true,
    };
    let clock = || 0.0;
    let c = Model::load(&Cpu, w).unwrap();
    let cr = Model::load(&Cpu, reference).unwrap();
    let rc = eval::ready(eval::evaluate(
        &Cpu,
        &c,
        Some(&cr),
        toks,
        None,
        &opts,
        &clock,
        &mut |_| true,
    ))
    .unwrap();
    let g = gpu();
    let m = Model::load(&g, w).unwrap();
    let mr = Model::load(&g, reference).unwrap();
    let rg = eval::ready(eval::evaluate(
        &g,
        &m,
        Some(&mr),
        toks,
        None,
        &opts,
        &clock,
        &mut |_| true,
    ))
    .unwrap();
    assert!(rc.kl.is_some_and(f64::is_finite) && rg.kl.is_some_and(f64::is_finite));
    (rc.ppl, rg.ppl)
}

#[test]
fn every_architecture_runs_the_same_forward_on_cpu_and_gpu() {
    let g = gpu();
    for (label, cfg) in tiny_variants() {
        let w = tiny_model(cfg.clone(), 7);
        let toks = tokens(48, cfg.vocab, 3);
        // Two independent sequences of 24 in one batch, as evaluation runs them.
        let c = Model::load(&Cpu, &w).unwrap();
        let want = c.forward_batch(&Cpu, &toks, 24).unwrap();
        let m = Model::load(&g, &w).unwrap();
        let got = read(&g, &m.forward_batch(&g, &toks, 24).unwrap());
        close(&got, &want.data, HIDDEN_TOL, label);
        // The batch equals the sequences run alone.
        let alone = c.forward(&Cpu, &toks[24..]).unwrap();
        assert_eq!(
            &want.data[24 * want.cols..],
            &alone.data[..],
            "{label}: batch"
        );
        assert!(want.data.iter().all(|v| v.is_finite()), "{label}");
    }
}

#[test]
fn every_method_quantizes_every_architecture() {
    let lq = |bits, gran| LayerQuant {
        bits,
        gran,
        sym: true,
        clip_search: false,
        grid: Default::default(),
    };
    let methods: Vec<(&str, QuantConfig)> = vec![
        (
            "rtn w4 g32",
            QuantConfig {
                method: Method::Rtn,
                default: lq(4, Granularity::Group(32)),
                ..QuantConfig::default()
            },
        ),
        (
            "gptq w4 row",
            QuantConfig {
                method: Method::Gptq(GptqOptions::default()),
                default: lq(4, Granularity::PerRow),
                ..QuantConfig::default()
            },
        ),
        (
            "awq w4 g32",
            QuantConfig {
                method: Method::Awq(AwqOptions::default()),
                default: lq(4, Granularity::Group(32)),
                ..QuantConfig::default()
            },
        ),
        (
            "kmeans 3",
            QuantConfig {
                method: Method::Kmeans(KmeansOptions::default()),
                default: lq(3, Granularity::PerRow),
                ..QuantConfig::default()
            },
        ),
        (
            "nf4 g32",
            QuantConfig {
                method: Method::Nf4,
                default: lq(4, Granularity::Group(32)),
                ..QuantConfig::default()
            },
        ),
        (
            "fp4 g32",
            QuantConfig {
                method: Method::Fp4,
                default: lq(4, Granularity::Group(32)),
                ..QuantConfig::default()
            },
        ),
        (
            "cmpq 3.0",
            QuantConfig {
                method: Method::Cmpq(CmpqOptions::default()),
                ..QuantConfig::default()
            },
        ),
        (
            "rtn w3 row + lorc 4",
            QuantConfig {
                method: Method::Rtn,
                default: lq(3, Granularity::PerRow),
                lorc: Some(LorcOptions {
                    rank: 4,
                    bits8: false,
                }),
                ..QuantConfig::default()
            },
        ),
    ];
    for (label, cfg) in tiny_variants() {
        let w = tiny_model(cfg.clone(), 11);
        let toks = tokens(8 * 32, cfg.vocab, 5);
        let opts = CalibOptions {
            n_seq: 6,
            seq_len: 32,
            from: CalibFrom::Offset(0),
        };
        let calib = calibrate(
            &Model::load(&Cpu, &w).unwrap(),
            &toks,
            None,
            &opts,
            &mut |_, _| true,
        )
        .unwrap();
        let topo = w.topology();
        assert_eq!(calib.layers[0].len(), topo.sites.len(), "{label}");
        for (k, l) in topo.linears.iter().enumerate() {
            assert_eq!(calib.layers[0][l.site].dim, l.cols, "{label}: linear {k}");
        }
        for (mlabel, q) in &methods {
            let out = q
                .apply_calibrated(&w, Some(&calib), &mut |_, _| true)
                .unwrap_or_else(|e| panic!("{label} {mlabel}: {e}"));
            let bits = out.memory().bits_per_weight;
            assert!(bits < 8.0, "{label} {mlabel}: {bits} bits/weight");
            let (pc, pg) = ppl_cpu_gpu(&out, &w, &toks);
            assert!(pc.is_finite() && pc > 1.0, "{label} {mlabel}: PPL {pc}");
            assert!(
                ((pc - pg) / pc).abs() <= PPL_REL_TOL,
                "{label} {mlabel}: CPU PPL {pc} vs GPU {pg}"
            );
            eprintln!(
                "{label:>10} {mlabel:<20} {bits:.3} bits/weight  PPL cpu {pc:.4} gpu {pg:.4}"
            );
        }
    }
}
