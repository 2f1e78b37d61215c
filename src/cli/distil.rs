//! `quantlab binarize --mode full`: BinaryMoS trained by the paper's full distillation
//! (`quantlab::train`, arXiv 2406.12311), its large products on the CPU or, with `--backend gpu`,
//! on the GPU (`gpu::TrainGemm`), with checkpoints and resume, written as a
//! QuantLab model file that `eval`, `generate` and the page load. The training tokens come from
//! the end of `--text`, after the first `--keep-first` tokens that evaluation reads (by default
//! those of `eval --windows 40` at 512 tokens), and the file records which.

use super::export::{write_atomically, BinarizeArgs};
use super::{device, load_on, read_text, BackendArg};
use clap::Args;
use quantlab::quant::binarymos::BinaryMosOptions;
use quantlab::quant::config::{LayerQuant, Method, QuantConfig};
use quantlab::train::full::{FullOptions, Trainer};
use quantlab::{Error, Result};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// The tokens `eval --windows 40` reads at its default context: kept out of training.
const EVAL_TOKENS: usize = 40 * 512;

/// Full distillation's flags.
#[derive(Args)]
pub(super) struct FullArgs {
    /// Full: tokens per training sequence.
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Full: sequences per step.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Full: warm-up steps (default 3 % of --steps, as the authors).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Full: seed of the order the training sequences are read in.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Full: tokens of the text's end to train on (they must lie after --keep-first).
    #[arg(long, default_value_t = 131_072)]
    pub train_tokens: usize,
    /// Full: tokens at the start of --text that training never reads (the evaluated windows).
    #[arg(long, default_value_t = EVAL_TOKENS)]
    pub keep_first: usize,
    /// Full: write a checkpoint every K steps (0: only with --checkpoint, at the end).
    #[arg(long, default_value_t = 0)]
    pub checkpoint_every: usize,
    /// Full: the folder checkpoints go to (step-NNNNNN.ckpt).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Full: continue the run saved in this checkpoint (same model, text and options).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Full: stop before a step that would end past this many minutes of training (judged by
    /// the mean step so far) and write what is trained; the cosine schedule stays the one of
    /// --steps, and the file records both.
    #[arg(long)]
    pub max_minutes: Option<f64>,
}

pub(super) fn full(a: &BinarizeArgs) -> Result<()> {
    let f = &a.full;
    if !matches!(a.method, super::export::BinMethod::Binarymos) {
        return Err(Error::config(
            "--mode full",
            "full distillation trains BinaryMoS; give --method binarymos",
        ));
    }
    if super::PRECISION.get() == Some(&super::PrecisionArg::F16) {
        return Err(Error::config(
            "--precision",
            "full distillation trains in f32 (its GPU products are f32); leave --precision out",
        ));
    }
    let lr = a.lr.unwrap_or(2e-5);
    let mut opts = FullOptions::paper(a.experts, a.steps, lr, f.seq_len, f.batch);
    if let Some(w) = f.warmup {
        opts.warmup = w;
    }
    opts.seed = f.seed;
    let s = load_on(&a.model, &device(BackendArg::Cpu)?)?;
    opts.validate(s.source().config.max_ctx)?;
    let info = s.info();
    let model_id = info
        .identity
        .sha256
        .clone()
        .unwrap_or_else(|| info.identity.name.clone());

    // The training tokens: the end of the text, after the evaluated start.
    let text = read_text(&a.text)?;
    let tok = s.tokenizer();
    let head = tok.encode_head(&text, f.keep_first)?;
    let (tokens, range) = if head.whole {
        // A small text, encoded whole: the last --train-tokens after the first --keep-first.
        let n = head.tokens.len();
        let from = f.keep_first.max(n.saturating_sub(f.train_tokens)).min(n);
        (
            head.tokens[from..].to_vec(),
            serde_json::json!({ "tokens": [from, n], "of_tokens": n }),
        )
    } else {
        let tail = tok.encode_tail(&text, f.train_tokens)?;
        if tail.span.start < head.span.end {
            return Err(Error::config(
                "--train-tokens",
                format!(
                    "the last {} tokens of {} reach into its first {} (--keep-first, bytes \
                     0..{}); ask for fewer",
                    f.train_tokens,
                    a.text.display(),
                    f.keep_first,
                    head.span.end
                ),
            ));
        }
        let n = tail.tokens.len().min(f.train_tokens);
        (
            tail.tokens[tail.tokens.len() - n..].to_vec(),
            serde_json::json!({
                "bytes": [tail.span.start, tail.span.end],
                "of_bytes": text.len(),
                "kept_bytes": [0, head.span.end],
            }),
        )
    };
    let text_name = a.text.file_name().map(|n| n.to_string_lossy().to_string());
    drop(text);
    if tokens.len() < opts.seq_len {
        return Err(Error::config(
            "--text",
            format!(
                "{} tokens remain after the first {} (--keep-first), fewer than one --seq-len {}",
                tokens.len(),
                f.keep_first,
                opts.seq_len
            ),
        ));
    }
    let n_tokens = tokens.len();
    eprintln!(
        "training on {n_tokens} tokens of {} ({range}), its first {} tokens left out",
        text_name.as_deref().unwrap_or("?"),
        f.keep_first
    );

    let mut t = match &f.resume {
        Some(p) => {
            let b = std::fs::read(p).map_err(|e| Error::io(p.display(), e))?;
            let label = p.display().to_string();
            Trainer::resume(s.source(), &model_id, tokens, opts.clone(), &label, &b)?
        }
        None => Trainer::new(s.source(), &model_id, tokens, opts.clone())?,
    };
    if matches!(a.backend, BackendArg::Gpu) {
        // The model stays on the CPU (attention, norms and AdamW run there); the GPU runs the
        // large products (docs/binarymos.md "Training on the GPU").
        let gpu = std::rc::Rc::new(pollster::block_on(quantlab::gpu::Gpu::create())?);
        t.set_gemm(Box::new(quantlab::gpu::TrainGemm::new(gpu)?));
    }
    eprintln!("matrix products on {}", t.backend());
    if let Some(dir) = &f.checkpoint {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
    }
    let save_checkpoint = |t: &Trainer| -> Result<()> {
        let Some(dir) = &f.checkpoint else {
            return Ok(());
        };
        let path = dir.join(format!("step-{:06}.ckpt", t.steps_done()));
        let bytes = t.checkpoint()?;
        write_atomically(&path, &bytes)?;
        eprintln!("checkpoint {} ({} bytes)", path.display(), bytes.len());
        Ok(())
    };
    let wall = Instant::now();
    let first = t.steps_done();
    let mut stopped = false;
    while t.steps_done() < opts.steps {
        if let Some(m) = f.max_minutes {
            let done = t.steps_done() - first;
            let spent = wall.elapsed().as_secs_f64();
            if done > 0 && spent + spent / done as f64 > 60.0 * m {
                eprintln!("stopping after {done} steps: --max-minutes {m}");
                stopped = true;
                break;
            }
        }
        let log = t.step()?;
        let done = t.steps_done() - first;
        let per = wall.elapsed().as_secs_f64() / done as f64;
        eprintln!(
            "step {}/{}: loss {:.5} (KL {:.5}, hidden {:.5}), lr {:.3e}, |g| {:.3e}, {:.2} s/step, \
             {:.0} tokens/s",
            log.step,
            opts.steps,
            log.loss,
            log.kl,
            log.hidden,
            log.lr,
            log.grad_norm,
            per,
            opts.tokens_per_step() as f64 / per
        );
        if let Some(s) = t.product_seconds() {
            // The GPU's share of a step (uploads, kernels, read-backs); the rest is the CPU's.
            eprintln!("  products {:.2} s/step on the GPU", s / done as f64);
        }
        let _ = std::io::stderr().flush();
        let k = f.checkpoint_every;
        if k > 0 && t.steps_done() % k == 0 && t.steps_done() < opts.steps {
            save_checkpoint(&t)?;
        }
    }
    save_checkpoint(&t)?;

    let cfg = QuantConfig {
        method: Method::BinaryMos(BinaryMosOptions {
            experts: a.experts,
            steps: 0,
            lr,
        }),
        default: LayerQuant {
            bits: 1,
            ..LayerQuant::default()
        },
        ..QuantConfig::default()
    };
    let log = t.log();
    let extra = serde_json::json!({
        "binarize": {
            "method": "binarymos",
            "mode": "full",
            "backend": t.backend(),
            "steps": t.steps_done(),
            "stopped_early": stopped.then(|| format!("--max-minutes {:?} of {} planned steps", f.max_minutes, opts.steps)),
            "tokens_seen": t.steps_done() * opts.tokens_per_step(),
            "seconds": t.seconds(),
            "options": opts,
            "data": {
                "text": text_name,
                "range": range,
                "tokens": n_tokens,
                "left_out": format!(
                    "the first {} tokens of the text, what eval --windows {} reads at 512",
                    f.keep_first,
                    f.keep_first / 512
                ),
            },
            "resumed_from": f.resume.as_ref().map(|p| p.display().to_string()),
            "loss_first": log.first().map(|l| l.loss),
            "loss_last": log.last().map(|l| l.loss),
            "log": log,
        }
    });
    let w = t.weights(s.source())?;
    let steps_done = t.steps_done();
    drop(t);
    let bytes = s.save_trained_qlab(&w, &cfg, extra)?;
    write_atomically(&a.out, &bytes)?;
    let mem = w.memory();
    println!(
        "wrote {} ({} bytes): BinaryMoS N={} full distillation, {} of {} steps, block linears \
         {:.4} bits/weight",
        a.out.display(),
        bytes.len(),
        a.experts,
        steps_done,
        opts.steps,
        mem.bits_per_weight
    );
    Ok(())
}
