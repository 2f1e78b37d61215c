//! GGUF export (`model::gguf_export`): on the default model, each quantization lands in the ggml
//! type that holds its grid exactly (or in F16, said so), and the file read back — by QuantLab's
//! own parser and by gguf-py, the reader maintained with llama.cpp — decodes to QuantLab's
//! weights bit for bit (exact tensors) or to their f16 rounding (fallbacks). On the tiny models:
//! GPT-2 and the Hugging Face RoPE-layout permutation evaluate the same after the round trip, and
//! what llama.cpp cannot run is refused with the reason.

use quantlab::format::act::ActGranularity;
use quantlab::format::GgmlType;
use quantlab::format::{Format, Granularity, QTensor};
use quantlab::io::gguf::Gguf;
use quantlab::io::tokenizer::{GgufTokenizerMeta, Tokenizer, TokenizerFiles};
use quantlab::model::arch::Arch;
use quantlab::model::config::RopeStyle;
use quantlab::model::eval::{EvalOptions, Protocol};
use quantlab::model::gguf_export::{export_gguf, TensorExport};
use quantlab::model::weights::ModelWeights;
use quantlab::playground::session::Session;
use quantlab::quant::act::{ActConfig, ActScaleKind};
use quantlab::quant::config::{ggml_code_bits, LayerQuant, Method, QuantConfig};
use quantlab::tensor::TensorSource;
use quantlab::testkit;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
);
const TEXT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/wikitext-2-raw-test.txt"
);
const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny");
/// The outside reference (gguf-py) and the environment it runs in.
const READBACK: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/reference/gguf_readback.py"
);
const DEFAULT_PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/.venv/bin/python");

/// Relative perplexity difference allowed where the forward pass itself changes (the permuted
/// RoPE layout sums the head dimensions of q·k in another order): far below what a wrong
/// permutation does (the control in `half_rope_rows_are_permuted...` checks that).
const PERMUTED_PPL_RTOL: f64 = 1e-5;

fn smollm() -> Session {
    let bytes = std::fs::read(MODEL).unwrap_or_else(|e| {
        panic!("{MODEL}: {e}; run scripts/fetch-model.sh to fetch the default model")
    });
    Session::load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", bytes).expect("default model loads")
}

fn rtn(bits: u8, gran: Granularity, sym: bool) -> QuantConfig {
    QuantConfig {
        method: Method::Rtn,
        default: LayerQuant {
            bits,
            gran,
            sym,
            ..LayerQuant::default()
        },
        ..QuantConfig::default()
    }
}

fn nf4() -> QuantConfig {
    QuantConfig {
        method: Method::Nf4,
        ..rtn(4, Granularity::Group(32), true)
    }
}

/// ggml's K-quant `t` (`Method::Ggml`) on the ffn_down linears, the only ones of the default
/// model whose rows (1536) are whole 256-weight super-blocks; the others (rows of 576) are kept
/// as loaded (Q4_1).
fn ggml_k_on_ffn_down(t: GgmlType) -> QuantConfig {
    let q = LayerQuant {
        bits: ggml_code_bits(t),
        ..LayerQuant::default()
    };
    QuantConfig {
        method: Method::Ggml(t),
        default: q,
        ..QuantConfig::default()
    }
    .with_override("*", None)
    .with_override("*.ffn_down.weight", Some(q))
}

/// The cases on the default model, and the block-linear types each may give.
fn cases() -> Vec<(&'static str, QuantConfig, &'static [&'static str])> {
    vec![
        (
            "rtn4-g32-sym",
            rtn(4, Granularity::Group(32), true),
            &["Q4_0"],
        ),
        (
            "rtn8-g32-sym",
            rtn(8, Granularity::Group(32), true),
            &["Q8_0"],
        ),
        // Q4_1 where m = −zero·scale is an f16 in every block, else Q5_0 (module comment).
        (
            "rtn4-g32-asym",
            rtn(4, Granularity::Group(32), false),
            &["Q4_1", "Q5_0"],
        ),
        ("nf4-g32", nf4(), &["F16"]),
        // A K-quant is written as itself, bytes copied (the rest as loaded).
        (
            "ggml-q4_k-ffn_down",
            ggml_k_on_ffn_down(GgmlType::Q4_K),
            &["Q4_K", "Q4_1"],
        ),
    ]
}

fn eval_opts() -> EvalOptions {
    EvalOptions {
        protocol: Protocol::Llamacpp,
        ctx: 128,
        max_windows: Some(2),
        kl: false,
    }
}

fn report_of(r: &[TensorExport]) -> HashMap<&str, &TensorExport> {
    r.iter().map(|t| (t.name.as_str(), t)).collect()
}

/// What the GGUF tensor must decode to: QuantLab's weights, or their f16 rounding.
fn expected(q: &QTensor, exact: bool) -> Vec<f32> {
    let v = q.dequantize().expect("dequantize");
    if exact {
        v
    } else {
        v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
    }
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn read_back(bytes: &[u8]) -> ModelWeights {
    let g = Gguf::parse("export.gguf", bytes).expect("our parser reads the export");
    let cfg = g.model_config().expect("config");
    ModelWeights::from_source(cfg, &g as &dyn TensorSource).expect("weights")
}

/// Every tensor read back is QuantLab's, exactly or to f16 rounding as the report says.
fn assert_weights(what: &str, ours: &ModelWeights, back: &ModelWeights, report: &[TensorExport]) {
    let rep = report_of(report);
    assert_eq!(ours.config, back.config, "{what}: config");
    assert_eq!(
        ours.token_embd, back.token_embd,
        "{what}: token_embd copied"
    );
    assert_eq!(ours.output, back.output, "{what}: output");
    assert_eq!(ours.output_norm, back.output_norm, "{what}: output_norm");
    assert_eq!(ours.linears().count(), back.linears().count());
    for (a, b) in ours.layers.iter().zip(&back.layers) {
        assert_eq!(a.norms, b.norms, "{what}: norms");
    }
    for (a, b) in ours.linears().zip(back.linears()) {
        assert_eq!(a.name, b.name);
        let r = rep[a.name.as_str()];
        // Format names are lower case for float formats ("f16"), ggml's upper case.
        assert_eq!(
            b.w.format.name().to_uppercase(),
            r.to,
            "{what}: {} stored type",
            a.name
        );
        let got = b.w.dequantize().unwrap();
        assert!(
            same_bits(&got, &expected(&a.w, r.exact)),
            "{what}: {} ({} → {}, exact {}) decodes differently",
            a.name,
            r.from,
            r.to,
            r.exact
        );
        assert_eq!(a.bias, b.bias, "{what}: {} bias", a.name);
    }
}

fn wikitext_ids(s: &Session) -> Vec<u32> {
    let text = std::fs::read_to_string(TEXT).expect("wikitext");
    let head: String = text.chars().take(4000).collect();
    let ids = s.tokenize(&head).expect("tokenize");
    assert!(ids.len() > 2 * 128 + 1, "{} tokens", ids.len());
    ids
}

/// Each case once (quantizing the default model is most of this test's time): QuantLab's own
/// checks, then gguf-py on the written file. gguf-py runs in its own process, one per file,
/// while the next case quantizes; its answers are compared at the end
/// (`gguf_py_decodes_every_tensor_as_quantlab_does`).
#[test]
fn default_model_exports_each_grid_exactly_or_says_why_not() {
    let python = readback_python();
    let dir = std::env::temp_dir().join(format!("quantlab-gguf-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut readbacks = Vec::new();
    let mut s = smollm();
    let ids = wikitext_ids(&s);
    for (what, cfg, types) in cases() {
        s.set_quant(&cfg).unwrap_or_else(|e| panic!("{what}: {e}"));
        let w = s
            .quantized_weights()
            .expect("read back")
            .expect("quantized");
        let (bytes, report) = export_gguf(w, s.tokenizer(), what).expect(what);
        let rep = report_of(&report);
        // Every tensor of the model is in the report once, and in the file.
        let g = Gguf::parse("export.gguf", &bytes).unwrap();
        assert_eq!(g.tensors().len(), report.len(), "{what}");
        assert_eq!(g.tensors().len(), 272, "{what}: SmolLM2's 272 tensors");
        let listed: Vec<TensorExport> =
            serde_json::from_str(g.get_str("quantlab.export.report").unwrap().unwrap()).unwrap();
        assert_eq!(listed, report, "{what}: quantlab.export.report");
        assert_eq!(g.get_str("general.architecture").unwrap(), Some("llama"));
        assert_eq!(g.get_str("general.name").unwrap(), Some(what));
        assert!(g.get_str("quantlab.export.source").unwrap().is_some());
        assert_eq!(
            rep["token_embd.weight"].to, "Q8_0",
            "{what}: embedding as loaded"
        );
        for l in w.linears() {
            let r = rep[l.name.as_str()];
            if let Format::Ggml(t) = l.w.format {
                // A ggml type (as loaded or made by Method::Ggml) is written byte for byte.
                assert_eq!(r.to, t.name(), "{what}: {}", l.name);
                let stored = g.tensor(&l.name).unwrap();
                assert_eq!(stored.data, l.w.data, "{what}: {} bytes", l.name);
            }
            if what.starts_with("ggml-q4_k") {
                let want = if l.name.ends_with("ffn_down.weight") {
                    "Q4_K"
                } else {
                    "Q4_1"
                };
                assert_eq!(r.to, want, "{what}: {}", l.name);
            }
            assert!(
                types.contains(&r.to.as_str()),
                "{what}: {} went to {} ({})",
                l.name,
                r.to,
                r.why
            );
            assert_eq!(r.from, l.w.format.name());
            if r.to == "F16" {
                assert!(
                    r.is_fallback() && !r.exact && r.why.contains("NF4"),
                    "{what}: {}",
                    r.why
                );
            } else {
                assert!(r.exact && !r.is_fallback(), "{what}: {} {}", l.name, r.why);
            }
            if r.to == "Q5_0" {
                assert!(
                    r.why.contains("Q4_1: m = −zero·scale"),
                    "{what}: a Q5_0 says why not Q4_1: {}",
                    r.why
                );
            }
        }
        let file_type = g.get_u32("general.file_type").unwrap().unwrap();
        let want_ft = match types[0] {
            "Q4_0" => 2,
            "Q8_0" => 7,
            "F16" => 1,
            _ => file_type,
        };
        assert_eq!(file_type, want_ft, "{what}: general.file_type");

        let back = read_back(&bytes);
        assert_weights(what, w, &back, &report);

        let path = dir.join(format!("{what}.gguf"));
        std::fs::write(&path, &bytes).unwrap();
        let child = Command::new(&python)
            .arg(READBACK)
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}; run scripts/ci-setup.sh", python.display()));
        readbacks.push((path, expected_hashes(w, &report), child));

        // An all-exact export is the same model: the same perplexity to the last bit.
        if report.iter().all(|r| r.exact) {
            let want = s
                .evaluate_tokens(&ids, &eval_opts(), &mut |_| true)
                .unwrap();
            let t = Session::load_gguf("back.gguf", bytes).expect("export loads as a session");
            assert_eq!(
                t.tokenize("Hello world").unwrap(),
                s.tokenize("Hello world").unwrap()
            );
            assert_eq!(t.bos(), s.bos(), "{what}: bos");
            let got = t
                .evaluate_tokens(&ids, &eval_opts(), &mut |_| true)
                .unwrap();
            assert_eq!(
                got.ppl.to_bits(),
                want.ppl.to_bits(),
                "{what}: ppl {} after export, {} before",
                got.ppl,
                want.ppl
            );
        }
    }
    let results: Vec<_> = readbacks
        .into_iter()
        .map(|(path, want, child)| {
            let out = child.wait_with_output().expect("gguf_readback.py");
            (path, want, out)
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    for (path, want, out) in results {
        gguf_py_decodes_every_tensor_as_quantlab_does(&path, &want, &out);
    }
}

#[test]
fn the_model_as_loaded_exports_byte_for_byte() {
    let s = smollm();
    let (bytes, report) = export_gguf(s.source(), s.tokenizer(), "as-loaded").unwrap();
    assert!(report.iter().all(|r| r.exact), "as loaded: all copied");
    let orig = std::fs::read(MODEL).unwrap();
    let a = Gguf::parse("orig", &orig).unwrap();
    let b = Gguf::parse("export", &bytes).unwrap();
    for t in a.tensors() {
        let (x, y) = (a.tensor(&t.name).unwrap(), b.tensor(&t.name).unwrap());
        assert_eq!((&x.dims, x.dtype), (&y.dims, y.dtype), "{}", t.name);
        assert_eq!(x.data, y.data, "{}: bytes", t.name);
    }
    assert_eq!(a.tensors().len(), b.tensors().len());
    assert_eq!(
        a.tokenizer_meta().unwrap().tokens,
        b.tokenizer_meta().unwrap().tokens
    );
    assert_eq!(a.model_config().unwrap(), b.model_config().unwrap());
    assert_eq!(
        b.get_u32("general.file_type").unwrap(),
        Some(3),
        "mostly Q4_1"
    );
}

/// The Python that runs gguf-py (tests/.venv, made by scripts/ci-setup.sh, or QUANTLAB_PYTHON).
fn readback_python() -> PathBuf {
    let python = std::env::var_os("QUANTLAB_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PYTHON));
    assert!(
        python.exists(),
        "{}: no Python environment for the gguf-py reference; run scripts/ci-setup.sh (it \
         creates tests/.venv with the pinned gguf and numpy), or point QUANTLAB_PYTHON at a \
         Python that has gguf==0.19.0 and numpy",
        python.display()
    );
    python
}

/// gguf-py (`GGUFReader` + `gguf.quants.dequantize`), run by `tests/reference/gguf_readback.py`
/// on one export (`out`: what it printed), read every tensor with the type and shape QuantLab
/// wrote and decoded it to QuantLab's weights (exact tensors) or their f16 rounding
/// (fallbacks): SHA-256 of the f32 values, every tensor.
fn gguf_py_decodes_every_tensor_as_quantlab_does(
    path: &std::path::Path,
    want: &Expected,
    out: &std::process::Output,
) {
    let key = path.display().to_string();
    assert!(
        out.status.success(),
        "gguf_readback.py {key} failed ({}); run scripts/ci-setup.sh if gguf is missing:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("readback JSON");
    let doc = &got[&key];
    let m = &doc["metadata"];
    assert_eq!(m["general.architecture"], "llama", "{key}");
    assert_eq!(m["general.alignment"], 32, "{key}");
    assert_eq!(m["tokenizer.ggml.tokens"], 49152, "{key}");
    assert_eq!(m["tokenizer.ggml.model"], "gpt2", "{key}");
    let tensors = doc["tensors"].as_array().expect("tensors");
    assert_eq!(tensors.len(), want.len(), "{key}: tensor count");
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let (ty, shape, hash) = want
            .get(name)
            .unwrap_or_else(|| panic!("{key}: gguf-py found {name}, not exported"));
        assert_eq!(t["type"], ty.as_str(), "{key}: {name} type");
        let s: Vec<u64> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(&s, shape, "{key}: {name} shape (innermost first)");
        assert_eq!(t["sha256"], hash.as_str(), "{key}: {name} values differ");
    }
}

fn sha256_f32(v: &[f32]) -> String {
    let mut h = Sha256::new();
    // Chunks of bytes, not one update per value (135M values per model).
    let mut buf = Vec::with_capacity(4 * 4096);
    for c in v.chunks(4096) {
        buf.clear();
        buf.extend(c.iter().flat_map(|x| x.to_le_bytes()));
        h.update(&buf);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Tensor name → (ggml type, GGUF shape innermost first, SHA-256 of the values gguf-py must
/// decode).
type Expected = HashMap<String, (String, Vec<u64>, String)>;

fn expected_hashes(w: &ModelWeights, report: &[TensorExport]) -> Expected {
    let rep = report_of(report);
    let mut m = HashMap::new();
    let mut matrix = |name: &str, q: &QTensor| {
        let r = rep[name];
        m.insert(
            name.to_string(),
            (
                r.to.clone(),
                vec![q.cols as u64, q.rows as u64],
                sha256_f32(&expected(q, r.exact)),
            ),
        );
    };
    matrix("token_embd.weight", &w.token_embd);
    if let Some(o) = &w.output {
        matrix("output.weight", o);
    }
    for l in w.linears() {
        matrix(&l.name, &l.w);
    }
    let norms = w
        .layers
        .iter()
        .flat_map(|l| &l.norms)
        .chain(w.output_norm.as_ref());
    for n in norms {
        m.insert(
            n.name.clone(),
            (
                "F32".into(),
                vec![n.weight.len() as u64],
                sha256_f32(&n.weight),
            ),
        );
    }
    m
}

fn read_tiny(name: &str, file: &str) -> Vec<u8> {
    let p = format!("{TINY}/{name}/{file}");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    testkit::tokens(n, vocab, 11)
}

fn tiny_opts() -> EvalOptions {
    EvalOptions {
        protocol: Protocol::Llamacpp,
        ctx: 32,
        max_windows: Some(2),
        kl: false,
    }
}

/// The tiny GPT-2 that llama.cpp's converter wrote: exported as `gpt2` (learned positions, fused
/// qkv, LayerNorm biases), it reads back as the same model with the same perplexity.
#[test]
fn gpt2_round_trips_with_the_same_perplexity() {
    let mut s = Session::load_gguf("model-f32.gguf", read_tiny("gpt2", "model-f32.gguf")).unwrap();
    s.set_quant(&rtn(4, Granularity::Group(32), true)).unwrap();
    let w = s.quantized_weights().unwrap().unwrap();
    let (bytes, report) = export_gguf(w, s.tokenizer(), "tiny-gpt2").unwrap();
    for l in w.linears() {
        let r = report.iter().find(|r| r.name == l.name).unwrap();
        assert_eq!(
            (r.to.as_str(), r.exact),
            ("Q4_0", true),
            "{}: {}",
            l.name,
            r.why
        );
    }
    let g = Gguf::parse("tiny.gguf", &bytes).unwrap();
    assert_eq!(g.get_str("general.architecture").unwrap(), Some("gpt2"));
    assert!(g
        .get_f32("gpt2.attention.layer_norm_epsilon")
        .unwrap()
        .is_some());
    assert!(g.tensor("position_embd.weight").is_some());
    assert!(g.tensor("blk.0.attn_qkv.bias").is_some());
    assert!(g.tensor("output_norm.bias").is_some());
    let back = read_back(&bytes);
    assert_weights("tiny gpt2", w, &back, &report);
    assert_eq!(w.globals[0].w, back.globals[0].w, "position_embd copied");
    let ids = tokens(65, w.config.vocab);
    let want = s
        .evaluate_tokens(&ids, &tiny_opts(), &mut |_| true)
        .unwrap();
    let t = Session::load_gguf("back.gguf", bytes).unwrap();
    let got = t
        .evaluate_tokens(&ids, &tiny_opts(), &mut |_| true)
        .unwrap();
    assert_eq!(
        got.ppl.to_bits(),
        want.ppl.to_bits(),
        "{} vs {}",
        got.ppl,
        want.ppl
    );
}

/// A GGUF vocabulary of `n` plain tokens (GPT-2 style, no merges): what a tiny synthetic model
/// needs to be exported; nothing is encoded with it.
fn plain_vocab(n: usize) -> Tokenizer {
    let meta = GgufTokenizerMeta {
        model: "gpt2".into(),
        pre: Some("gpt-2".into()),
        tokens: (0..n).map(|i| format!("t{i}")).collect(),
        token_types: vec![1; n],
        eos: Some(0),
        ..Default::default()
    };
    Tokenizer::from_gguf(&meta).expect("plain vocabulary")
}

/// A Llama in Hugging Face's half-split RoPE layout is written with q/k rows permuted into
/// llama.cpp's interleaved layout (as convert_hf_to_gguf.py does): read back as a GGUF llama
/// (interleaved RoPE), it computes the same function. The control writes the rows unpermuted
/// and shows the check would catch a missing or wrong permutation.
#[test]
fn half_rope_rows_are_permuted_into_llama_cpp_layout() {
    let cfg = testkit::tiny_config(Arch::Llama, 0);
    assert_eq!(cfg.rope_style, RopeStyle::Half);
    let vocab = cfg.vocab;
    let w = testkit::tiny_model(cfg, 5);
    let mut s = Session::from_parts("tiny-llama", w, plain_vocab(vocab)).unwrap();
    s.set_quant(&rtn(4, Granularity::Group(32), true)).unwrap();
    let ids = tokens(65, vocab);
    let want = s
        .evaluate_tokens(&ids, &tiny_opts(), &mut |_| true)
        .unwrap()
        .ppl;
    let w = s.quantized_weights().unwrap().unwrap();
    let (bytes, report) = export_gguf(w, s.tokenizer(), "tiny-llama").unwrap();
    let q = report
        .iter()
        .find(|r| r.name == "blk.0.attn_q.weight")
        .unwrap();
    assert!(q.exact && q.why.contains("permuted"), "{}", q.why);
    let back = read_back(&bytes);
    assert_eq!(back.config.rope_style, RopeStyle::Interleaved);
    let ppl = |bytes: Vec<u8>| {
        let t = Session::load_gguf("back.gguf", bytes).unwrap();
        t.evaluate_tokens(&ids, &tiny_opts(), &mut |_| true)
            .unwrap()
            .ppl
    };
    let got = ppl(bytes);
    assert!(
        ((got - want) / want).abs() < PERMUTED_PPL_RTOL,
        "permuted export: ppl {got}, QuantLab {want}"
    );
    // Control: claiming the rows are already interleaved skips the permutation.
    let mut unpermuted = w.clone();
    unpermuted.config.rope_style = RopeStyle::Interleaved;
    let (bytes, _) = export_gguf(&unpermuted, s.tokenizer(), "control").unwrap();
    let bad = ppl(bytes);
    assert!(
        ((bad - want) / want).abs() > 100.0 * PERMUTED_PPL_RTOL,
        "the control should change the model: {bad} vs {want}"
    );
}

#[test]
fn what_llama_cpp_cannot_run_is_refused_with_the_reason() {
    // Activation quantization.
    let mut s = Session::load_gguf("model-f32.gguf", read_tiny("gpt2", "model-f32.gguf")).unwrap();
    let mut cfg = rtn(8, Granularity::PerRow, true);
    cfg.act = Some(ActConfig {
        bits: 8,
        gran: ActGranularity::PerToken,
        scale: ActScaleKind::Dynamic,
        percentile: None,
        tender: None,
    });
    s.set_quant(&cfg).unwrap();
    let e = export_gguf(s.quantized_weights().unwrap().unwrap(), s.tokenizer(), "a8")
        .unwrap_err()
        .to_string();
    assert!(e.contains("activation") && e.contains("llama.cpp"), "{e}");

    // A tokenizer.json tokenizer (the tiny Llama checkpoint).
    let hf = |name: &str| {
        let tok = read_tiny(name, "tokenizer.json");
        Session::load_hf(
            name,
            &read_tiny(name, "config.json"),
            TokenizerFiles::Json(&tok),
            &[("model.safetensors", &read_tiny(name, "model.safetensors"))],
        )
        .unwrap()
    };
    let s = hf("llama");
    let e = export_gguf(s.source(), s.tokenizer(), "hf")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tokenizer.json"), "{e}");

    // OPT.
    let s = hf("opt-pre");
    let e = export_gguf(s.source(), s.tokenizer(), "opt")
        .unwrap_err()
        .to_string();
    assert!(e.contains("OPT") && e.contains("llama.cpp"), "{e}");
}

/// Fallbacks say what could not be represented: BinaryMoS names its token-adaptive scales,
/// and a grid whose blocks mix scales says so; such a file still reads back (to f16 rounding).
#[test]
fn fallbacks_explain_themselves() {
    let mut s = Session::load_gguf("model-f32.gguf", read_tiny("gpt2", "model-f32.gguf")).unwrap();
    for (cfg, needle) in [
        (rtn(4, Granularity::Group(16), true), "share one scale"),
        (
            QuantConfig {
                method: Method::BinaryMos(quantlab::quant::binarymos::BinaryMosOptions {
                    experts: 2,
                    steps: 2,
                    lr: 0.01,
                }),
                ..rtn(1, Granularity::PerRow, true)
            },
            "token-adaptive scales",
        ),
    ] {
        if cfg.needs_calibration() {
            let ids = tokens(64, s.source().config.vocab);
            let opts = quantlab::quant::calib::CalibOptions {
                n_seq: 2,
                seq_len: 16,
                ..Default::default()
            };
            s.calibrate(&ids, &opts, &mut |_, _| true).unwrap();
        }
        s.set_quant(&cfg).unwrap();
        let w = s.quantized_weights().unwrap().unwrap();
        let (bytes, report) = export_gguf(w, s.tokenizer(), "fallback").unwrap();
        for l in w.linears() {
            let r = report.iter().find(|r| r.name == l.name).unwrap();
            assert_eq!(r.to, "F16", "{}", r.why);
            assert!(
                r.is_fallback() && !r.exact && r.why.contains(needle),
                "{}",
                r.why
            );
        }
        let back = read_back(&bytes);
        assert_weights("fallback", w, &back, &report);
        assert!(matches!(back.layers[0].linears[0].w.format, Format::F16));
    }
}
