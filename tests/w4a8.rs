//! W4A8 (issue 13; arXiv 2311.05161) on every architecture's tiny model: activations quantized at
//! every block linear input in the forward pass, on the CPU and the GPU (lavapipe without a GPU)
//! alike; the composable pipeline (scale transform → weight rounding → activation quantizer)
//! through `QuantConfig`, its share link, and static scales calibrated from the statistics.

use crate::gpu_check;

use gpu_check::{close, gpu, read};
use quantlab::format::act::ActGranularity;
use quantlab::format::Granularity;
use quantlab::model::cpu::Cpu;
use quantlab::model::eval::{self, EvalOptions, Protocol};
use quantlab::model::net::Model;
use quantlab::model::weights::ModelWeights;
use quantlab::quant::act::{ActConfig, ActScaleKind};
use quantlab::quant::calib::{calibrate, CalibFrom, CalibOptions, Calibration};
use quantlab::quant::config::{LayerQuant, Method, QuantConfig};
use quantlab::quant::gptq::GptqOptions;
use quantlab::quant::smooth::Smooth;
use quantlab::testkit::{tiny_model, tiny_variants, tokens};

/// Final hidden states, GPU against CPU, relative to the largest value (as tests/arch_all.rs):
/// f32 kernels summing in other orders. With activation quantization a value sitting on a
/// rounding boundary may round differently on the two backends, one step of the grid; the
/// bound covers a few such steps among the T·d values.
const HIDDEN_TOL: f32 = 2e-3;
/// At 4 bits one grid step is a seventh of a row's absmax, so a single value that rounds the
/// other way on one backend (its input differing in the last bit) moves its row by a whole
/// step, and every later 4-bit quantizer turns that into more such flips. A4 outputs are
/// therefore compared as a whole: the backends must agree far better than A4 agrees with f32
/// (the kernel itself is compared value by value in tests/gpu_kernels.rs).
const A4_AGREEMENT: f32 = 0.5;
/// Perplexity, GPU against CPU, relative. The GPU's division may put a value on the other side
/// of a rounding boundary (one code step, in about 1e-3 of positions: tests/gpu_intmm.rs), and
/// these random tiny models are so confidently wrong (PPL in the thousands over a vocabulary of
/// 48) that such flips move their perplexity by tenths of a percent (seen: GPT-2 W4A8 AQAS,
/// 2828.3 vs 2840.5, 0.43 %); tests/arch_cli.rs saw ~1 % from GPTQ's flips.
const PPL_REL_TOL: f64 = 1e-2;

fn lq(bits: u8, gran: Granularity) -> LayerQuant {
    LayerQuant {
        bits,
        gran,
        sym: true,
        clip_search: false,
        grid: Default::default(),
    }
}

fn act(bits: u8, gran: ActGranularity, scale: ActScaleKind) -> ActConfig {
    ActConfig {
        bits,
        gran,
        scale,
        percentile: None,
        tender: None,
    }
}

fn calib_of(w: &ModelWeights, toks: &[u32]) -> Calibration {
    let opts = CalibOptions {
        n_seq: 6,
        seq_len: 32,
        from: CalibFrom::Offset(0),
    };
    calibrate(
        &Model::load(&Cpu, w).unwrap(),
        toks,
        None,
        &opts,
        &mut |_, _| true,
    )
    .unwrap()
}

fn ppl(w: &ModelWeights, toks: &[u32], gpu_too: bool) -> (f64, Option<f64>) {
    let opts = EvalOptions {
        protocol: Protocol::Llamacpp,
        ctx: 32,
        max_windows: None,
        kl: false,
    };
    let clock = || 0.0;
    let c = Model::load(&Cpu, w).unwrap();
    let rc = eval::ready(eval::evaluate(
        &Cpu,
        &c,
        None,
        toks,
        None,
        &opts,
        &clock,
        &mut |_| true,
    ))
    .unwrap();
    let rg = gpu_too.then(|| {
        let g = gpu();
        let m = Model::load(&g, w).unwrap();
        eval::ready(eval::evaluate(
            &g,
            &m,
            None,
            toks,
            None,
            &opts,
            &clock,
            &mut |_| true,
        ))
        .unwrap()
        .ppl
    });
    (rc.ppl, rg)
}

#[test]
fn activation_quantization_runs_in_the_forward_on_cpu_and_gpu_alike() {
    let g = gpu();
    for (label, cfg) in tiny_variants() {
        let w = tiny_model(cfg.clone(), 7);
        let toks = tokens(48, cfg.vocab, 3);
        let calib = calib_of(&w, &tokens(8 * 32, cfg.vocab, 5));
        let float = Model::load(&Cpu, &w)
            .unwrap()
            .forward_batch(&Cpu, &toks, 24)
            .unwrap();
        let mut errs = Vec::new();
        for a in [
            act(8, ActGranularity::PerToken, ActScaleKind::Dynamic),
            act(8, ActGranularity::PerTensor, ActScaleKind::Dynamic),
            act(8, ActGranularity::PerTensor, ActScaleKind::Static),
            act(4, ActGranularity::PerToken, ActScaleKind::Dynamic),
        ] {
            let what = format!("{label} {a:?}");
            let cfg = QuantConfig {
                act: Some(a),
                ..QuantConfig::default()
            };
            let q = cfg
                .apply_calibrated(&w, Some(&calib), &mut |_, _| true)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(q.act.as_ref().map(|p| p.bits), Some(a.bits), "{what}");
            // The weights are untouched: only the forward pass changes.
            assert_eq!(q.layers[0].linears[0].w, w.layers[0].linears[0].w, "{what}");
            let c = Model::load(&Cpu, &q).unwrap();
            let want = c.forward_batch(&Cpu, &toks, 24).unwrap();
            let m = Model::load(&g, &q).unwrap();
            let got = read(&g, &m.forward_batch(&g, &toks, 24).unwrap());
            // Quantization happened, and costs more at 4 bits than at 8.
            let e = rel(&want.data, &float.data);
            if a.bits == 8 {
                close(&got, &want.data, HIDDEN_TOL, &what);
            } else {
                let d = rel(&got, &want.data);
                assert!(
                    d < A4_AGREEMENT * e,
                    "{what}: GPU vs CPU relative L2 {d}, CPU A4 vs f32 {e}"
                );
            }
            assert!(e > 0.0, "{what}: the output did not change");
            errs.push((a.bits, e));
        }
        let e8 = errs[0].1;
        let e4 = errs[3].1;
        assert!(e8 < 0.05, "{label}: A8 per token moved the output by {e8}");
        assert!(e4 > e8, "{label}: A4 ({e4}) not worse than A8 ({e8})");
    }
}

fn rel(a: &[f32], b: &[f32]) -> f32 {
    let num: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f32 = b.iter().map(|y| y * y).sum();
    (num / den.max(1e-30)).sqrt()
}

#[test]
fn static_scales_are_the_calibrated_absmax_over_qmax() {
    let (label, cfg) = tiny_variants().remove(0);
    let w = tiny_model(cfg.clone(), 8);
    let calib = calib_of(&w, &tokens(8 * 32, cfg.vocab, 5));
    let c = QuantConfig {
        act: Some(act(8, ActGranularity::PerTensor, ActScaleKind::Static)),
        ..QuantConfig::default()
    };
    let q = c
        .apply_calibrated(&w, Some(&calib), &mut |_, _| true)
        .unwrap();
    let scales = q.act.unwrap().scales.unwrap();
    for (l, layer) in calib.layers.iter().enumerate() {
        for (s, st) in layer.iter().enumerate() {
            let absmax = st.max_abs.iter().fold(0f32, |m, &v| m.max(v));
            assert_eq!(scales[l][s], absmax / 127.0, "{label} layer {l} site {s}");
        }
    }
    // A percentile below 100 clips: never above the max.
    let p = QuantConfig {
        act: Some(ActConfig {
            percentile: Some(90.0),
            ..act(8, ActGranularity::PerTensor, ActScaleKind::Static)
        }),
        ..QuantConfig::default()
    };
    let qp = p
        .apply_calibrated(&w, Some(&calib), &mut |_, _| true)
        .unwrap();
    let sp = qp.act.unwrap().scales.unwrap();
    let mut below = 0;
    for (a, b) in sp.iter().flatten().zip(scales.iter().flatten()) {
        assert!(a <= b, "percentile scale {a} above the max {b}");
        below += (a < b) as usize;
    }
    assert!(below > 0, "the 90th percentile never clipped");
    // Static scales without calibration are an error naming what is missing.
    let e = c.apply(&w).unwrap_err().to_string();
    assert!(e.contains("calibrat"), "{e}");
}

#[test]
fn the_pipeline_composes_on_every_architecture_and_both_backends_agree() {
    let w4a8 = |smooth: Option<Smooth>, method: Method| QuantConfig {
        method,
        default: lq(4, Granularity::PerRow),
        smooth,
        act: Some(act(8, ActGranularity::PerTensor, ActScaleKind::Static)),
        ..QuantConfig::default()
    };
    let configs = [
        ("W4A8 RTN", w4a8(None, Method::Rtn)),
        (
            "W4A8 SmoothQuant",
            w4a8(Some(Smooth::Smoothquant { alpha: 0.5 }), Method::Rtn),
        ),
        ("W4A8 AWQ", w4a8(Some(Smooth::Awq { grid: 5 }), Method::Rtn)),
        (
            "W4A8 AQAS",
            w4a8(Some(Smooth::Aqas { step: 0.25 }), Method::Rtn),
        ),
        (
            "W4A8 AQAS+GPTQ",
            w4a8(
                Some(Smooth::Aqas { step: 0.25 }),
                Method::Gptq(GptqOptions::default()),
            ),
        ),
    ];
    for (label, cfg) in tiny_variants() {
        let w = tiny_model(cfg.clone(), 12);
        let toks = tokens(4 * 32, cfg.vocab, 6);
        let calib = calib_of(&w, &tokens(8 * 32, cfg.vocab, 5));
        for (name, c) in &configs {
            let what = format!("{label} {name}");
            assert_eq!(c.wa_label(), "W4A8", "{what}");
            let (q, report) = c
                .apply_reported(&w, Some(&calib), &mut |_, _| true)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(report.is_some(), c.smooth.is_some(), "{what}");
            if let Some(r) = &report {
                assert_eq!(r.alpha.len(), w.layers.len(), "{what}");
                assert!(
                    r.alpha.iter().flatten().any(|a| a.is_some()),
                    "{what}: no site was scaled"
                );
            }
            let mem = q.memory();
            assert!(mem.bits_per_weight < 5.0, "{what}: {}", mem.bits_per_weight);
            assert_eq!(
                mem.act.as_deref(),
                Some("A8 (static, per tensor)"),
                "{what}"
            );
            let (pc, pg) = ppl(&q, &toks, true);
            let pg = pg.unwrap();
            assert!(pc.is_finite() && pc > 1.0, "{what}: PPL {pc}");
            assert!(
                ((pc - pg) / pc).abs() < PPL_REL_TOL,
                "{what}: CPU {pc} vs GPU {pg}"
            );
        }
    }
}

#[test]
fn configs_with_both_axes_survive_the_share_link_and_bad_ones_name_the_field() {
    let c = QuantConfig {
        method: Method::Gptq(GptqOptions::default()),
        default: lq(4, Granularity::PerRow),
        smooth: Some(Smooth::Aqas { step: 0.05 }),
        act: Some(ActConfig {
            percentile: Some(99.9),
            ..act(8, ActGranularity::PerTensor, ActScaleKind::Static)
        }),
        ..QuantConfig::default()
    };
    let back = QuantConfig::from_url(&c.to_url()).unwrap();
    assert_eq!(back, c);
    assert!(c.needs_calibration());
    // Old links (no smooth, no act) still read, and write no new keys.
    let old = QuantConfig::rtn(lq(4, Granularity::Group(32)));
    assert!(!old.to_json().contains("act") && !old.to_json().contains("smooth"));
    for (bad, field) in [
        (
            r#"{"version":1,"method":"rtn","default":{"bits":4,"gran":"per_row","sym":true},"act":{"bits":9,"gran":"per_token"}}"#,
            "act.bits",
        ),
        (
            r#"{"version":1,"method":"rtn","default":{"bits":4,"gran":"per_row","sym":true},"act":{"bits":8,"gran":"per_token","scale":"static"}}"#,
            "act.gran",
        ),
        (
            r#"{"version":1,"method":"rtn","default":{"bits":4,"gran":"per_row","sym":true},"act":{"bits":8,"gran":"per_tensor","percentile":99}}"#,
            "act.percentile",
        ),
        (
            r#"{"version":1,"method":"rtn","default":{"bits":4,"gran":"per_row","sym":true},"smooth":{"smoothquant":{"alpha":2}}}"#,
            "smooth.alpha",
        ),
        (
            r#"{"version":1,"method":"none","default":{"bits":4,"gran":"per_row","sym":true},"smooth":{"aqas":{"step":0.05}}}"#,
            "smooth",
        ),
    ] {
        let e = QuantConfig::from_json(bad).unwrap_err().to_string();
        assert!(e.contains(field), "{bad}: {e}");
        assert!(!e.contains("  "), "a run of spaces in the message: {e}");
    }
}

#[test]
fn the_activation_view_shows_channel_ranges_before_and_after_smoothing() {
    use quantlab::io::tokenizer::TokenizerFiles;
    use quantlab::playground::inspect;
    use quantlab::playground::session::Session;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/llama");
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let (config, tok, shard) = (
        read("config.json"),
        read("tokenizer.json"),
        read("model.safetensors"),
    );
    let mut s = Session::load_hf(
        "tiny-llama",
        &config,
        TokenizerFiles::Json(&tok),
        &[("model.safetensors", &shard)],
    )
    .unwrap();
    let text = std::fs::read_to_string(dir.join("../../../../www/texts/prose.txt")).unwrap();
    let tokens = s.tokenize(&text).unwrap();
    let opts = CalibOptions {
        n_seq: 4,
        seq_len: 32,
        from: CalibFrom::Offset(0),
    };
    s.calibrate(&tokens, &opts, &mut |_, _| true).unwrap();
    let cfg = QuantConfig {
        method: Method::Rtn,
        default: lq(8, Granularity::PerRow),
        smooth: Some(Smooth::Smoothquant { alpha: 0.5 }),
        act: Some(act(8, ActGranularity::PerTensor, ActScaleKind::Static)),
        ..QuantConfig::default()
    };
    s.set_quant(&cfg).unwrap();
    let a = inspect::activations(&mut s, &text, 1).unwrap();
    for site in &a.sites {
        // Llama's four sites all have foldable producers: every one is smoothed.
        let after = site
            .smoothed_max_abs
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no smoothed ranges", site.site));
        assert_eq!(site.alpha, Some(0.5), "{}", site.site);
        assert_eq!(after.len(), site.max_abs.len());
        // SmoothQuant at α = 0.5 evens the channels out: the spread of channel maxima shrinks.
        let spread = |v: &[f32]| {
            let (lo, hi) = v
                .iter()
                .fold((f32::INFINITY, 0f32), |(l, h), &x| (l.min(x), h.max(x)));
            hi / lo.max(1e-12)
        };
        assert!(
            spread(after) < spread(&site.max_abs),
            "{}: spread {} after vs {} before",
            site.site,
            spread(after),
            spread(&site.max_abs)
        );
    }
    // Without a transform the view has no "after".
    s.set_quant(&QuantConfig::rtn(lq(4, Granularity::PerRow)))
        .unwrap();
    let a = inspect::activations(&mut s, &text, 1).unwrap();
    assert!(a.sites.iter().all(|x| x.smoothed_max_abs.is_none()));
}

#[test]
fn a_w4a8_model_on_the_gpu_multiplies_in_integers_and_matches_the_float_path() {
    use quantlab::gpu::IntMatmul;
    for (label, cfg) in tiny_variants() {
        let w = tiny_model(cfg.clone(), 13);
        let toks = tokens(48, cfg.vocab, 4);
        let calib = calib_of(&w, &tokens(8 * 32, cfg.vocab, 5));
        let c = QuantConfig {
            method: Method::Rtn,
            default: lq(4, Granularity::PerRow),
            act: Some(act(8, ActGranularity::PerToken, ActScaleKind::Dynamic)),
            ..QuantConfig::default()
        };
        let q = c
            .apply_calibrated(&w, Some(&calib), &mut |_, _| true)
            .unwrap();
        let g = gpu();
        let m = Model::load(&g, &q).unwrap();
        let run = |mode: IntMatmul| {
            g.force_int_matmul(Some(mode));
            let before = g.int_products();
            let out = read(&g, &m.forward_batch(&g, &toks, 24).unwrap());
            (out, g.int_products() - before)
        };
        let (float, n_off) = run(IntMatmul::Off);
        let (int, n_int) = run(IntMatmul::Emulated);
        assert_eq!(n_off, 0, "{label}");
        // Every block linear reads a quantized site: 7 (Llama), 6 (OPT), 4 (GPT-2) per layer.
        let per_layer = q.topology().linears.len();
        assert_eq!(n_int, per_layer * q.layers.len(), "{label}");
        // Integer sums are exact; only the order of the float roundings after them differs.
        close(&int, &float, HIDDEN_TOL, label);
        let cpu = Model::load(&Cpu, &q)
            .unwrap()
            .forward_batch(&Cpu, &toks, 24)
            .unwrap();
        close(&int, &cpu.data, HIDDEN_TOL, label);
    }
}
