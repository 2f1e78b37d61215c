//! KL statistics (`model::klstats`, llama.cpp's `--kl-divergence` summary) on the tiny Llama
//! checkpoint quantized to RTN 3-bit, against an independent computation: every scored token's
//! KL(reference ‖ quantized) and argmax recomputed here from the two models' logits in f64, and
//! the statistics of those values computed by numpy (mean, `std/sqrt(n−1)`, `np.percentile`'s
//! linear interpolation, max). Also `quantlab eval --json` prints the same statistics.

use crate::cli;

use quantlab::io::tokenizer::TokenizerFiles;
use quantlab::model::backend::Backend;
use quantlab::model::cpu::Cpu;
use quantlab::model::eval::{self, EvalOptions, Protocol};
use quantlab::model::klstats::KlStats;
use quantlab::model::net::Model;
use quantlab::playground::session::Session;
use quantlab::quant::config::{LayerQuant, Method, QuantConfig};
use std::path::PathBuf;

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny/llama");
const TEXT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/wikitext-2-raw-test.txt"
);
const DEFAULT_PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/.venv/bin/python");

/// Relative difference allowed between a KL statistic and the recomputation: the evaluation
/// takes log-softmax in f32 (each log-prob off by ~1e-7 relative), the recomputation in f64 from
/// the same f32 logits; on this case the largest difference seen was 4e-8 relative (the 90 %
/// percentile), so 1e-6 leaves room for other summation orders, not for a wrong formula.
const KL_REL_TOL: f64 = 1e-6;
/// Absolute floor under `KL_REL_TOL` for statistics near zero.
const KL_ABS_TOL: f64 = 1e-8;

const CTX: usize = 64;
const WINDOWS: usize = 8;

fn tiny() -> Session {
    let read =
        |f: &str| std::fs::read(format!("{TINY}/{f}")).unwrap_or_else(|e| panic!("{f}: {e}"));
    let tok = read("tokenizer.json");
    Session::load_hf(
        "tiny-llama",
        &read("config.json"),
        TokenizerFiles::Json(&tok),
        &[("model.safetensors", &read("model.safetensors"))],
    )
    .unwrap()
}

fn rtn3() -> QuantConfig {
    QuantConfig {
        method: Method::Rtn,
        default: LayerQuant {
            bits: 3,
            ..LayerQuant::default()
        },
        ..QuantConfig::default()
    }
}

fn opts() -> EvalOptions {
    EvalOptions {
        protocol: Protocol::Llamacpp,
        ctx: CTX,
        max_windows: Some(WINDOWS),
        kl: true,
    }
}

/// Log-softmax of f32 logits, in f64.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let lse = max
        + logits
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
    logits.iter().map(|&x| x as f64 - lse).collect()
}

fn argmax(v: &[f64]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// Every scored token's KL(reference ‖ quantized) and whether the argmaxes agree, recomputed
/// window by window from the logits of one forward pass per model.
fn per_token(s: &Session, tokens: &[u32]) -> (Vec<f64>, Vec<bool>) {
    let reference = Model::load(&Cpu, s.source()).unwrap();
    let quant = Model::load(
        &Cpu,
        s.quantized_weights()
            .expect("read back")
            .expect("quantized"),
    )
    .unwrap();
    let (mut kls, mut agree) = (Vec::new(), Vec::new());
    for w in eval::windows(tokens, s.bos(), &opts()).unwrap() {
        let xr = reference.forward(&Cpu, &w.tokens).unwrap();
        let xq = quant.forward(&Cpu, &w.tokens).unwrap();
        for row in w.from..w.from + w.targets.len() {
            let p = log_softmax(&Cpu.logits_row(&xr, reference.head(), row).unwrap());
            let q = log_softmax(&Cpu.logits_row(&xq, quant.head(), row).unwrap());
            kls.push(p.iter().zip(&q).map(|(a, b)| a.exp() * (a - b)).sum());
            agree.push(argmax(&p) == argmax(&q));
        }
    }
    (kls, agree)
}

/// numpy's statistics of the per-token values, in `KlStats`' field order.
fn numpy_stats(kls: &[f64], agree: &[bool]) -> Vec<f64> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kl-stats");
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("values.txt");
    let lines: Vec<String> = kls
        .iter()
        .zip(agree)
        .map(|(k, a)| format!("{k:e} {}", *a as u8))
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let python = std::env::var("QUANTLAB_PYTHON").unwrap_or_else(|_| DEFAULT_PYTHON.into());
    let script = r#"
import sys, numpy as np
d = np.loadtxt(sys.argv[1], ndmin=2)
kl, a = d[:, 0], d[:, 1]
n = len(kl)
p = a.mean()
out = [kl.mean(), kl.std() / np.sqrt(n - 1), *np.percentile(kl, [50, 90, 95, 99, 99.9]),
       kl.max(), p, np.sqrt(p * (1 - p) / (n - 1))]
print(" ".join(repr(float(x)) for x in out))
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script, data.to_str().unwrap()])
        .output()
        .unwrap_or_else(|e| {
            panic!("{python}: {e}; run scripts/ci-setup.sh (it creates tests/.venv with numpy) or set QUANTLAB_PYTHON")
        });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect()
}

fn fields(k: &KlStats) -> Vec<(&'static str, f64)> {
    vec![
        ("mean", k.mean),
        ("mean_err", k.mean_err),
        ("median", k.median),
        ("p90", k.p90),
        ("p95", k.p95),
        ("p99", k.p99),
        ("p99_9", k.p99_9),
        ("max", k.max),
        ("top1", k.top1),
        ("top1_err", k.top1_err),
    ]
}

#[test]
fn kl_statistics_match_a_per_token_recomputation_and_numpy() {
    let mut s = tiny();
    let text = std::fs::read_to_string(TEXT).unwrap();
    let tokens = s.tokenize(&text[..40_000]).unwrap();
    s.set_quant(&rtn3()).unwrap();
    let r = s.evaluate_tokens(&tokens, &opts(), &mut |_| true).unwrap();
    let k = r.kl_stats.clone().expect("statistics with a reference");
    assert_eq!(k.n, r.tokens_scored);
    assert_eq!(k.n, WINDOWS * (CTX / 2 - 1));
    assert_eq!((r.kl, r.top1), (Some(k.mean), Some(k.top1)));

    let (kls, agree) = per_token(&s, &tokens);
    assert_eq!(kls.len(), k.n);
    let want = numpy_stats(&kls, &agree);
    // A quantization that does something: the statistics are not all zero or all equal.
    assert!(
        k.median > 1e-4 && k.max > k.p99 && k.p99 > k.median,
        "{k:?}"
    );
    assert!(k.top1 > 0.0 && k.top1 < 1.0, "{k:?}");
    for ((name, got), want) in fields(&k).into_iter().zip(want) {
        let tol = KL_ABS_TOL + KL_REL_TOL * want.abs();
        assert!(
            (got - want).abs() <= tol,
            "{name}: QuantLab {got} vs recomputed + numpy {want} (tolerance {tol})"
        );
    }
}

#[test]
fn eval_json_and_text_print_the_statistics() {
    let text = format!("{}/kl-stats-text.txt", env!("CARGO_TARGET_TMPDIR"));
    let full = std::fs::read_to_string(TEXT).unwrap();
    std::fs::write(&text, &full[..20_000]).unwrap();
    let (out, _) = cli::quantlab(&[
        "eval",
        "--model",
        TINY,
        "--text",
        &text,
        "--ctx",
        "64",
        "--windows",
        "4",
        "--bits",
        "3",
        "--json",
    ]);
    let line = out
        .lines()
        .find(|l| l.starts_with("KL = "))
        .unwrap_or_else(|| panic!("no KL line in:\n{out}"));
    let j = cli::last_json(&out);
    let k: KlStats = serde_json::from_value(j["kl_stats"].clone()).expect("kl_stats object");
    assert_eq!(j["kl"].as_f64(), Some(k.mean));
    assert_eq!(k.n as u64, j["tokens_scored"].as_u64().unwrap());
    // The text line shows the same numbers, rounded as printed.
    for v in [
        k.mean, k.mean_err, k.median, k.p90, k.p95, k.p99, k.p99_9, k.max,
    ] {
        assert!(line.contains(&format!("{v:.5}")), "{v:.5} not in {line}");
    }
    assert!(
        line.contains(&format!(
            "{:.2} ± {:.2} %",
            100.0 * k.top1,
            100.0 * k.top1_err
        )),
        "{line}"
    );
}
