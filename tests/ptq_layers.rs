//! Per-layer output error `‖XWᵀ − XŴᵀ‖²` on the calibration inputs of the real default model,
//! for every block linear at 3 and 4 bits, per row and groups of 64: GPTQ (act-order) below RTN
//! on every layer, AWQ below RTN on most (issue 5's "must show"). Calibration: the last 32 × 512
//! tokens of WikiText-2 test (disjoint from the first 40 evaluation windows).
//! CI checks every 10th block (and the last: 28 layers) with 4 × 512 calibration tokens to stay
//! within its time (AWQ's search is most of it); the full table (all 210 layers, 32 × 512) is
//! `cargo run --release --example ptq_layers`, which runs the same function over every layer.

use quantlab::format::{Granularity, IntSpec};
use quantlab::playground::session::Session;
use quantlab::quant::awq::{self, AwqOptions};
use quantlab::quant::calib::{self, CalibOptions};
use quantlab::quant::gptq::{self, GptqOptions};
use quantlab::quant::rtn::{self, RtnOptions};
use std::time::Instant;

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
);
const WIKITEXT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/wikitext-2-raw-test.txt"
);

#[test]
fn gptq_beats_rtn_on_every_layer_and_awq_on_most() {
    let layers: Vec<usize> = (0..30).step_by(10).chain([29]).collect();
    let copts = CalibOptions {
        n_seq: 4,
        ..CalibOptions::default()
    };
    compare(&layers, &copts);
}

/// Per-layer errors of RTN, GPTQ and AWQ on the listed blocks; panics on a violation.
pub fn compare(layers: &[usize], copts: &CalibOptions) {
    let bytes = std::fs::read(MODEL)
        .unwrap_or_else(|e| panic!("{MODEL}: {e} — run scripts/fetch-model.sh"));
    let mut s = Session::load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", bytes).expect("loads");
    let text = std::fs::read_to_string(WIKITEXT).unwrap_or_else(|e| panic!("{WIKITEXT}: {e}"));
    let tokens = s.tokenize(&text).expect("tokenizes");
    let t = Instant::now();
    s.calibrate(&tokens, copts, &mut |_, _| true)
        .expect("calibrates");
    eprintln!(
        "calibration {} × {}: {:.1} s",
        copts.n_seq,
        copts.seq_len,
        t.elapsed().as_secs_f64()
    );
    let c = s.calibration().expect("calibrated").clone();
    let src = s.source().clone();
    let topo = src.topology();
    let cfg = &topo;

    for (bits, gran) in [
        (4, Granularity::PerRow),
        (4, Granularity::Group(64)),
        (3, Granularity::PerRow),
        (3, Granularity::Group(64)),
    ] {
        let spec = IntSpec {
            bits,
            gran,
            sym: true,
        };
        let (mut n, mut gptq_better, mut awq_better) = (0, 0, 0);
        let (mut sum_r, mut sum_g, mut sum_a) = (0f64, 0f64, 0f64);
        let mut worst_g: f64 = 0.0;
        let mut failures = Vec::new();
        let (mut t_g, mut t_a) = (0f64, 0f64);
        for &li in layers {
            let layer = &src.layers[li];
            let stats = &c.layers[li];
            let mut awq_layer = layer.clone();
            let t = Instant::now();
            let scales = awq::quantize_layer(
                &mut awq_layer,
                cfg,
                stats,
                &|_| Some(spec),
                &AwqOptions::default(),
            )
            .expect("awq");
            t_a += t.elapsed().as_secs_f64();
            for (k, (lin, aq)) in layer.linears().iter().zip(awq_layer.linears()).enumerate() {
                let st = &stats[topo.site_of(k)];
                let (rows, cols) = (lin.w.rows, lin.w.cols);
                let w = lin.w.dequantize().unwrap();
                let r =
                    rtn::quantize(&w, rows, cols, spec, &RtnOptions::default(), &lin.name).unwrap();
                let t = Instant::now();
                let g = gptq::quantize(
                    &w,
                    rows,
                    cols,
                    &st.gram,
                    st.rows,
                    spec,
                    &RtnOptions::default(),
                    &GptqOptions::default(),
                    &lin.name,
                )
                .unwrap();
                t_g += t.elapsed().as_secs_f64();
                let a = awq::effective_weights(&aq.w.dequantize().unwrap(), k, cols, &scales, cfg);
                let er = calib::output_error(&w, &r.dequantize().unwrap(), cols, &st.gram).unwrap();
                let eg = calib::output_error(&w, &g.dequantize().unwrap(), cols, &st.gram).unwrap();
                let ea = calib::output_error(&w, &a, cols, &st.gram).unwrap();
                n += 1;
                gptq_better += usize::from(eg < er);
                awq_better += usize::from(ea < er);
                if eg >= er {
                    failures.push(format!("{} gptq {eg:.4e} ≥ rtn {er:.4e}", lin.name));
                }
                worst_g = worst_g.max(eg / er);
                sum_r += er;
                sum_g += eg;
                sum_a += ea;
            }
        }
        println!(
            "W{bits} {gran:?}: GPTQ < RTN on {gptq_better}/{n} layers (worst ratio {worst_g:.3}, total error ratio {:.3}); AWQ < RTN on {awq_better}/{n} (total ratio {:.3}); GPTQ {t_g:.1} s, AWQ {t_a:.1} s",
            sum_g / sum_r,
            sum_a / sum_r
        );
        assert!(failures.is_empty(), "W{bits} {gran:?}: {failures:?}");
        assert!(
            2 * awq_better > n,
            "W{bits} {gran:?}: AWQ better on only {awq_better}/{n}"
        );
    }
}
