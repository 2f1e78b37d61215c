//! `quantlab export` and `quantlab binarize`: a quantized model written to a file the user keeps
//! (QuantLab's model file, `model::qlab`), which `eval`, `generate`, `info` and the page load;
//! or, with `export --to gguf`, a GGUF file for llama.cpp (`model::gguf_export`), with a
//! per-tensor report of which tensors are exact and which fell back to F16.

use super::{
    calibrate, device, held_out, load_on, quant_config, read_text, BackendArg, CalibArgs, EvalArgs,
};
use clap::{Args, ValueEnum};
use quantlab::model::eval::{EvalOptions, Protocol};
use quantlab::model::gguf_export::TensorExport;
use quantlab::model::weights::ModelWeights;
use quantlab::playground::session::Session;
use quantlab::quant::binary::OneBitOptions;
use quantlab::quant::binarymos::BinaryMosOptions;
use quantlab::quant::config::{LayerQuant, Method, QuantConfig};
use quantlab::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `export` writes.
#[derive(Clone, Copy, ValueEnum)]
pub(super) enum ExportTo {
    /// QuantLab's own file (.qlab): every tensor in its storage format, bit-exact.
    Quantlab,
    /// GGUF for llama.cpp: each block linear in the ggml type that holds its grid exactly
    /// (checked by decoding), F16 where none does; no activation quantization.
    Gguf,
    /// A Hugging Face checkpoint directory (config.json, model.safetensors in f16 of the
    /// dequantized weights, tokenizer.json, tokenizer_config.json) that transformers loads.
    Hf,
}

#[derive(Args)]
pub(super) struct ExportArgs {
    #[command(flatten)]
    pub q: EvalArgs,
    #[arg(long, value_enum, default_value_t = ExportTo::Quantlab)]
    pub to: ExportTo,
    /// The file to write (replaced only once the whole file is written).
    #[arg(long)]
    pub out: PathBuf,
}

/// The 1-bit methods `binarize` trains or fits.
#[derive(Clone, Copy, ValueEnum)]
pub(super) enum BinMethod {
    Sign,
    Onebit,
    Binarymos,
}

/// How BinaryMoS is trained.
#[derive(Clone, Copy, ValueEnum)]
pub(super) enum BinMode {
    /// Signs frozen; each linear's scale experts and router fitted to its own output on cached
    /// calibration activations (`quant::binarymos`).
    Lite,
    /// The paper's distillation of the whole model from the model as loaded: KL on the logits
    /// plus 10 × the hidden states' MSE, latent weights through the straight-through
    /// estimator, AdamW with a cosine schedule (`quantlab::train`; CPU; Llama family, OPT, GPT-2).
    Full,
}

#[derive(Args)]
pub(super) struct BinarizeArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// Calibration text: its last calib-n × calib-len tokens are used (evaluate on its start,
    /// or on another text, to keep the two apart).
    #[arg(long)]
    pub text: PathBuf,
    #[arg(long, value_enum, default_value_t = BinMethod::Binarymos)]
    pub method: BinMethod,
    /// BinaryMoS: scale experts per linear (1..=16).
    #[arg(long, default_value_t = 4)]
    pub experts: usize,
    #[arg(long, value_enum, default_value_t = BinMode::Lite)]
    pub mode: BinMode,
    /// BinaryMoS: training steps per linear (lite) or of the whole model (full).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// BinaryMoS: lite: Adam's step relative to each table's mean magnitude (default 0.01);
    /// full: AdamW's peak learning rate (default 2e-5, the authors').
    #[arg(long)]
    pub lr: Option<f32>,
    /// OneBit: least-squares refits of both value vectors on calibration after SVID.
    #[arg(long, default_value_t = 0)]
    pub onebit_fit: usize,
    #[command(flatten)]
    pub calib: CalibArgs,
    #[command(flatten)]
    pub full: super::distil::FullArgs,
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    pub backend: BackendArg,
    /// The .qlab file to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// Write `bytes` to `path` through a temporary file beside it, so an interrupted write never
/// leaves a truncated file where a good one was.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::config("--out", format!("{} is not a file name", path.display())))?;
    let tmp = path.with_file_name(format!(".{}.part", name.to_string_lossy()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(tmp.display(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path.display(), e))
}

/// One line per tensor: name, format, shape, bytes, effective bits.
fn report(w: &ModelWeights) {
    let print = |name: &str, q: &quantlab::format::QTensor| {
        println!(
            "  {name:<28} {:<22} {:>5}×{:<5} {:>10} B  {:>7.4} bits",
            q.format.name(),
            q.rows,
            q.cols,
            q.data.len(),
            q.bits_per_weight()
        );
    };
    print("token_embd.weight", &w.token_embd);
    if let Some(o) = &w.output {
        print("output.weight", o);
    }
    for l in w.globals.iter().chain(w.linears()) {
        print(&l.name, &l.w);
    }
}

fn save(s: &Session, out: &Path, extra: serde_json::Value) -> Result<()> {
    let bytes = s.save_qlab(extra)?;
    let w = s.quantized_weights()?.unwrap_or(s.source());
    report(w);
    let mem = w.memory();
    write_atomically(out, &bytes)?;
    println!(
        "wrote {} ({} bytes): block linears {:.4} bits/weight, {} bytes in all{}",
        out.display(),
        bytes.len(),
        mem.bits_per_weight,
        mem.total_bytes,
        mem.act
            .map(|a| format!(", activations {a}"))
            .unwrap_or_default()
    );
    Ok(())
}

/// Calibration for `export`: `--calib-text`, else the end of `--text` (nothing is evaluated
/// here; evaluating the file on the start of the same text keeps the two apart), else the
/// built-in calibration text.
fn export_calibration(s: &mut Session, a: &EvalArgs) -> Result<()> {
    let opts = EvalOptions {
        protocol: Protocol::Llamacpp,
        ctx: 512,
        max_windows: Some(0),
        kl: false,
    };
    let text = match (&a.calib.calib_text, a.text.as_deref()) {
        (None, Some(path)) => read_text(path)?,
        _ => String::new(),
    };
    let need = a.calib.calib_n.saturating_mul(a.calib.calib_len);
    let tail = if text.is_empty() {
        None
    } else {
        let t = s.tokenizer().encode_tail(&text, need)?;
        Some((t.tokens, t.span))
    };
    let name = a.text.as_ref().map(|p| p.display().to_string());
    let ev = held_out::EvalText {
        name: name.as_deref().unwrap_or("--text"),
        text: &text,
        stream: &[],
        tail: tail.as_ref().map(|(t, b)| (&t[..], b.clone())),
    };
    calibrate(s, &a.calib, &ev, &opts).map(|_| ())
}

pub(super) fn export(a: &ExportArgs) -> Result<()> {
    let cfg = quant_config(&a.q)?;
    let t = Instant::now();
    let mut s = load_on(&a.q.model, &device(a.q.backend)?)?;
    if cfg.needs_calibration() {
        export_calibration(&mut s, &a.q)?;
    }
    s.set_quant(&cfg)?;
    eprintln!(
        "quantized in {:.1} s: {}",
        t.elapsed().as_secs_f64(),
        cfg.to_json()
    );
    match a.to {
        ExportTo::Quantlab => save(&s, &a.out, serde_json::Value::Null),
        ExportTo::Gguf => save_gguf(&s, &a.out),
        ExportTo::Hf => save_hf(&s, &a.out),
    }
}

/// Write the session's current model as a Hugging Face checkpoint directory `out` (created if
/// missing; each file written through a temporary file).
fn save_hf(s: &Session, out: &Path) -> Result<()> {
    let w = s.quantized_weights()?.unwrap_or(s.source());
    let files = s.export_hf()?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out.display(), e))?;
    for (name, bytes) in &files {
        write_atomically(&out.join(name), bytes)?;
        println!("  {name:<24} {:>12} bytes", bytes.len());
    }
    println!(
        "wrote {}: f16 weights (the quantized grid up to f16 rounding of each weight), {:.4} \
         bits/weight as quantized",
        out.display(),
        w.memory().bits_per_weight
    );
    Ok(())
}

/// Write the session's current model as GGUF, then print what each tensor became.
fn save_gguf(s: &Session, out: &Path) -> Result<()> {
    let w = s.quantized_weights()?.unwrap_or(s.source());
    // general.name: the file's name without its extension, as llama.cpp shows it.
    let name = out
        .file_stem()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| s.info().identity.name);
    let (bytes, report) = s.export_gguf(&name)?;
    for r in &report {
        let how = match (r.is_fallback(), r.exact) {
            (false, _) => "exact",
            (true, true) => "fallback, lossless",
            (true, false) => "fallback, f16-rounded",
        };
        println!(
            "  {:<28} {:<18} → {:<5} {how:<21} {}",
            r.name, r.from, r.to, r.why
        );
    }
    write_atomically(out, &bytes)?;
    let count = |f: &dyn Fn(&TensorExport) -> bool| report.iter().filter(|r| f(r)).count();
    let is_linear = |r: &TensorExport| w.linears().any(|l| l.name == r.name);
    println!(
        "wrote {} ({} bytes, {:.1} MB, GGUF v3): {} tensors, {} stored as they are or in the \
         ggml type that holds their grid exactly, {} fallbacks to F16/F32 ({} of them \
         f16-rounded); block linears: {} of {} in an exact ggml type",
        out.display(),
        bytes.len(),
        bytes.len() as f64 / 1e6,
        report.len(),
        count(&|r| !r.is_fallback()),
        count(&|r| r.is_fallback()),
        count(&|r| !r.exact),
        count(&|r| is_linear(r) && !r.is_fallback()),
        count(&is_linear),
    );
    Ok(())
}

pub(super) fn binarize(a: &BinarizeArgs) -> Result<()> {
    if matches!(a.mode, BinMode::Full) {
        return super::distil::full(a);
    }
    let method = match a.method {
        BinMethod::Sign => Method::Sign,
        BinMethod::Onebit => Method::OneBit(OneBitOptions { fit: a.onebit_fit }),
        BinMethod::Binarymos => Method::BinaryMos(BinaryMosOptions {
            experts: a.experts,
            steps: a.steps,
            lr: a.lr.unwrap_or(BinaryMosOptions::default().lr),
        }),
    };
    let cfg = QuantConfig {
        method,
        default: LayerQuant {
            bits: 1,
            ..LayerQuant::default()
        },
        ..QuantConfig::default()
    };
    cfg.validate()?;
    let copts = a.calib.options();
    if cfg.needs_calibration() {
        quantlab::quant::config::validate_calib(&copts)?;
    }
    let mut s = load_on(&a.model, &device(a.backend)?)?;
    let text = read_text(&a.text)?;
    let t = Instant::now();
    let mut used = None;
    if cfg.needs_calibration() {
        // Nothing is evaluated here: the end of --text (or --calib-text, or the built-in text).
        let opts = EvalOptions {
            protocol: Protocol::Llamacpp,
            ctx: 512,
            max_windows: Some(0),
            kl: false,
        };
        let need = a.calib.calib_n.saturating_mul(a.calib.calib_len);
        let tail = s.tokenizer().encode_tail(&text, need)?;
        let ev = held_out::EvalText {
            name: &a.text.display().to_string(),
            text: &text,
            stream: &[],
            tail: Some((&tail.tokens, tail.span.clone())),
        };
        used = Some(calibrate(&mut s, &a.calib, &ev, &opts)?);
    }
    drop(text);
    let mut done = 0;
    s.set_quant_with(&cfg, &mut |d, n| {
        if d > done {
            done = d;
            eprint!(
                "\rbinarizing {d}/{n} linears, {:.0} s   ",
                t.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
        true
    })?;
    let seconds = t.elapsed().as_secs_f64();
    eprintln!("\rbinarized in {seconds:.1} s                  ");
    let extra = serde_json::json!({
        "binarize": {
            "method": cfg.method.name(),
            "config": serde_json::to_value(&cfg).unwrap_or_default(),
            "mode": "lite",
            "calibration": used,
            "seconds": seconds,
        }
    });
    save(&s, &a.out, extra)
}
