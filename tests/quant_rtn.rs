//! `QuantConfig::apply` with RTN, on a small synthetic model built in code and on the real
//! default model: which tensors change, the memory report the format table yields, error versus
//! bits, per-tensor overrides, progress and cancellation.

use crate::synthetic;
use synthetic::Norms;

use quantlab::format::{Format, Granularity, IntSpec};
use quantlab::io::gguf::Gguf;
use quantlab::model::weights::ModelWeights;
use quantlab::quant::config::{LayerQuant, Method, QuantConfig};
use quantlab::quant::rtn::{self, RtnOptions};
use quantlab::Error;

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
);

fn real_model() -> ModelWeights {
    let bytes = std::fs::read(MODEL).unwrap_or_else(|e| {
        panic!("{MODEL}: {e}; run scripts/fetch-model.sh to fetch the default model")
    });
    let g = Gguf::parse("SmolLM2-135M-Instruct.Q4_1.gguf", &bytes).expect("parse");
    let cfg = g.model_config().expect("config");
    ModelWeights::from_source(cfg, &g).expect("from_source")
}

fn lq(bits: u8, gran: Granularity, sym: bool) -> LayerQuant {
    LayerQuant {
        bits,
        gran,
        sym,
        clip_search: false,
        grid: Default::default(),
    }
}

/// Two layers, d = 64, FFN 128, 4 heads of 16 (2 KV heads), vocab 32, all f32.
fn synthetic() -> ModelWeights {
    synthetic::synthetic(&Norms {
        attn: vec![1.0; 64],
        ffn: vec![0.5; 64],
        output: vec![1.5; 64],
    })
}

/// Everything except the block linears is identical.
fn assert_rest_unchanged(a: &ModelWeights, b: &ModelWeights) {
    assert_eq!(a.config, b.config);
    assert_eq!(a.token_embd, b.token_embd);
    assert_eq!(a.output, b.output);
    assert_eq!(a.output_norm, b.output_norm);
    for (x, y) in a.layers.iter().zip(&b.layers) {
        assert_eq!(x.norms, y.norms);
        for (p, q) in x.linears().iter().zip(y.linears()) {
            assert_eq!(p.name, q.name);
            assert_eq!(p.bias, q.bias);
        }
    }
}

#[test]
fn synthetic_none_is_a_clone_and_rtn_matches_the_quantizer() {
    let src = synthetic();
    assert_eq!(QuantConfig::default().method, Method::None);
    let kept = QuantConfig::default().apply(&src).unwrap();
    assert_rest_unchanged(&src, &kept);
    for (a, b) in src.linears().zip(kept.linears()) {
        assert_eq!(a.w, b.w);
    }

    let q = LayerQuant {
        clip_search: true,
        grid: Default::default(),
        ..lq(3, Granularity::Group(16), false)
    };
    let out = QuantConfig::rtn(q).apply(&src).unwrap();
    assert_rest_unchanged(&src, &out);
    for (a, b) in src.linears().zip(out.linears()) {
        let want = rtn::quantize(
            &a.w.dequantize().unwrap(),
            a.w.rows,
            a.w.cols,
            q.spec(),
            &RtnOptions { clip_search: true },
            &a.name,
        )
        .unwrap();
        assert_eq!(b.w, want, "{}", b.name);
    }
}

#[test]
fn synthetic_overrides_last_match_wins() {
    let src = synthetic();
    let eight = lq(8, Granularity::PerRow, true);
    let two = lq(2, Granularity::Group(32), false);
    let cfg = QuantConfig::rtn(lq(4, Granularity::Group(32), true))
        .with_override("*.ffn_down.weight", Some(eight))
        .with_override("blk.1.*", None)
        .with_override("blk.1.attn_v.weight", Some(two));
    let out = cfg.apply(&src).unwrap();
    for (a, b) in src.linears().zip(out.linears()) {
        let want = if b.name == "blk.1.attn_v.weight" {
            Format::Int(two.spec())
        } else if b.name.starts_with("blk.1.") {
            assert_eq!(a.w, b.w, "{} must stay as loaded", b.name);
            Format::F32
        } else if b.name.ends_with("ffn_down.weight") {
            Format::Int(eight.spec())
        } else {
            Format::Int(IntSpec {
                bits: 4,
                gran: Granularity::Group(32),
                sym: true,
            })
        };
        assert_eq!(b.w.format, want, "{}", b.name);
    }
    assert_eq!(
        cfg.clone()
            .with_override("blk.7.*", None)
            .unmatched_patterns(&src),
        vec!["blk.7.*"]
    );
}

#[test]
fn synthetic_bad_group_names_the_tensor_before_any_work() {
    let src = synthetic();
    // Groups of 128 fit ffn_down (128 inputs) but not attn_q (64 inputs).
    let cfg = QuantConfig::rtn(lq(4, Granularity::Group(128), true));
    let mut calls = 0;
    let e = cfg
        .apply_with(&src, &mut |_, _| {
            calls += 1;
            true
        })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("blk.0.attn_q.weight") && e.contains("128") && e.contains("64"),
        "{e}"
    );
    assert_eq!(calls, 0);
    let only_down = QuantConfig::rtn(lq(4, Granularity::PerRow, true)).with_override(
        "*.ffn_down.weight",
        Some(lq(4, Granularity::Group(128), true)),
    );
    assert!(only_down.apply(&src).is_ok());
}

#[test]
fn synthetic_progress_and_cancel() {
    let src = synthetic();
    let cfg = QuantConfig::rtn(LayerQuant::default());
    let mut seen = Vec::new();
    cfg.apply_with(&src, &mut |d, t| {
        seen.push((d, t));
        true
    })
    .unwrap();
    let want: Vec<(usize, usize)> = (0..=14).map(|d| (d, 14)).collect();
    assert_eq!(seen, want);
    let r = cfg.apply_with(&src, &mut |d, _| d < 3);
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
}

#[test]
fn real_model_int4_g32_memory_is_exact() {
    let src = real_model();
    let before = src.memory();
    let params = src.config.block_linear_params();
    assert_eq!(params, 30 * 3_538_944);

    let t = std::time::Instant::now();
    let sym = QuantConfig::rtn(lq(4, Granularity::Group(32), true))
        .apply(&src)
        .unwrap();
    eprintln!(
        "apply int4-g32-sym to {params} weights: {:.2} s (test profile)",
        t.elapsed().as_secs_f64()
    );
    assert_rest_unchanged(&src, &sym);
    let m = sym.memory();
    assert_eq!(m.linear_params, params);
    assert_eq!(m.linear.codes, params / 2);
    assert_eq!(m.linear.scales, params / 32 * 2);
    assert_eq!(m.linear.zeros, 0);
    assert_eq!(m.bits_per_weight, 4.5);
    assert_eq!(m.other_bytes, before.other_bytes);

    let asym = QuantConfig::rtn(lq(4, Granularity::Group(32), false))
        .apply(&src)
        .unwrap();
    let m = asym.memory();
    assert_eq!(m.linear.codes, params / 2);
    assert_eq!(m.linear.scales, params / 32 * 2);
    assert_eq!(m.linear.zeros, params / 32 / 2);
    assert_eq!(m.bits_per_weight, 4.625);
}

#[test]
fn real_model_per_row_int8_costs_16_bits_per_row() {
    let src = real_model();
    let out = QuantConfig::rtn(lq(8, Granularity::PerRow, true))
        .apply(&src)
        .unwrap();
    let mut rows = 0;
    for l in out.linears() {
        assert_eq!(
            l.w.bits_per_weight(),
            8.0 + 16.0 / l.w.cols as f64,
            "{}",
            l.name
        );
        rows += l.w.rows;
    }
    let m = out.memory();
    let params = m.linear_params as f64;
    assert_eq!(m.linear.scales, 2 * rows);
    // Exact in f64: every term is a small multiple of a power of two over `params`.
    assert_eq!(m.bits_per_weight, 8.0 + 16.0 * rows as f64 / params);
}

/// Mean squared difference between the block linears of two models, over the named layers.
fn linear_mse(a: &ModelWeights, b: &ModelWeights, layers: &[usize]) -> f64 {
    let (mut s, mut n) = (0f64, 0usize);
    for &i in layers {
        for (x, y) in a.layers[i].linears().iter().zip(b.layers[i].linears()) {
            let (x, y) = (x.w.dequantize().unwrap(), y.w.dequantize().unwrap());
            s += x
                .iter()
                .zip(&y)
                .map(|(p, q)| ((p - q) as f64).powi(2))
                .sum::<f64>();
            n += x.len();
        }
    }
    s / n as f64
}

/// Each extra bit should roughly quarter the error; demand at least this factor.
const MIN_GAIN_PER_BIT: f64 = 2.0;

#[test]
fn real_model_error_falls_with_bits_and_overrides_select_layers() {
    let src = real_model();
    // Quantize only the first and last block: the rest is kept through a catch-all override.
    let layers = [0usize, 29];
    let mut errs = Vec::new();
    for bits in [2u8, 3, 4, 5, 8] {
        let cfg = QuantConfig::rtn(lq(bits, Granularity::Group(64), true))
            .with_override("*", None)
            .with_override("blk.0.*", Some(lq(bits, Granularity::Group(64), true)))
            .with_override("blk.29.*", Some(lq(bits, Granularity::Group(64), true)));
        assert!(cfg.unmatched_patterns(&src).is_empty());
        let out = cfg.apply(&src).unwrap();
        for (a, b) in src.linears().zip(out.linears()) {
            let quantized = b.name.starts_with("blk.0.") || b.name.starts_with("blk.29.");
            assert_eq!(a.w == b.w, !quantized, "{}", b.name);
        }
        errs.push((bits, linear_mse(&src, &out, &layers)));
    }
    eprintln!("mse by bits (int-g64-sym, blocks 0 and 29): {errs:?}");
    for p in errs.windows(2) {
        let ((b0, e0), (b1, e1)) = (p[0], p[1]);
        let need = MIN_GAIN_PER_BIT.powi((b1 - b0) as i32);
        assert!(
            e1 * need < e0,
            "{b1} bits: mse {e1} not {need}× below {b0} bits: {e0}"
        );
    }

    let ffn8 = QuantConfig::rtn(lq(4, Granularity::Group(32), true))
        .with_override("*.ffn_down.weight", Some(lq(8, Granularity::PerRow, true)))
        .with_override("blk.30.*", None);
    assert_eq!(ffn8.unmatched_patterns(&src), vec!["blk.30.*"]);
    let out = ffn8.apply(&src).unwrap();
    let mut want = 0usize;
    for l in out.linears() {
        let spec = if l.name.ends_with(".ffn_down.weight") {
            lq(8, Granularity::PerRow, true).spec()
        } else {
            lq(4, Granularity::Group(32), true).spec()
        };
        assert_eq!(l.w.format, Format::Int(spec), "{}", l.name);
        want += Format::Int(spec)
            .storage(l.w.rows, l.w.cols)
            .unwrap()
            .total();
    }
    assert_eq!(out.memory().linear.total(), want);
}
