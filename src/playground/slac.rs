//! SLAC, the calibration-length study of W4A8 (Lee et al., arXiv 2311.05161 §3.2; docs/w4a8.md):
//! static activation scales calibrated on sequences of each length `L`, each quantized model
//! evaluated at each context length, so that a table shows which calibration length matches which
//! context. The number of calibration tokens is the same for every `L` (`n = tokens / L`
//! sequences), so only the length differs, and every context length is evaluated on the same
//! number of tokens (`windows = tokens / ctx`).

use crate::model::eval::{EvalOptions, Protocol};
use crate::playground::session::Session;
use crate::quant::calib::{CalibFrom, CalibOptions};
use crate::quant::config::QuantConfig;
use crate::{Error, Result};
use serde::Serialize;

/// Shortest and longest calibration length offered (the 16 … 1024).
pub const MIN_LEN: usize = 2;
/// Most lengths or contexts in one study.
pub const MAX_POINTS: usize = 16;

/// What to run.
#[derive(Clone, Debug)]
pub struct SlacOptions {
    /// Calibration sequence lengths.
    pub lens: Vec<usize>,
    /// Calibration tokens per length (split into `tokens / len` sequences).
    pub calib_tokens: usize,
    /// Evaluation context lengths.
    pub ctxs: Vec<usize>,
    /// Tokens evaluated per context length.
    pub eval_tokens: usize,
    /// Calibrate on the CPU backend even when the session runs on a GPU.
    pub calib_cpu: bool,
}

/// One cell: a calibration length, a context, the perplexity.
#[derive(Clone, Debug, Serialize)]
pub struct SlacCell {
    pub calib_len: usize,
    pub calib_seqs: usize,
    pub ctx: usize,
    pub windows: usize,
    pub ppl: f64,
}

/// The study: as-loaded perplexity per context, then one cell per (length, context).
#[derive(Clone, Debug, Serialize)]
pub struct SlacReport {
    pub config: String,
    pub loaded: Vec<(usize, f64)>,
    pub cells: Vec<SlacCell>,
}

impl SlacOptions {
    pub fn validate(&self, cfg: &QuantConfig) -> Result<()> {
        if !cfg.act.is_some_and(|a| a.needs_calibration()) {
            return Err(Error::config(
                "config.act",
                "SLAC compares static activation scales calibrated at different lengths: the \
                 config needs act with scale static",
            ));
        }
        for (field, v) in [("lens", &self.lens), ("ctxs", &self.ctxs)] {
            if v.is_empty() || v.len() > MAX_POINTS {
                return Err(Error::config(
                    field,
                    format!("{} values, expected 1..={MAX_POINTS}", v.len()),
                ));
            }
            let max = crate::model::eval::MAX_CTX;
            if let Some(&x) = v.iter().find(|&&x| !(MIN_LEN..=max).contains(&x)) {
                return Err(Error::config(
                    field,
                    format!("{x} is outside {MIN_LEN}..={max}"),
                ));
            }
        }
        for (field, n, per) in [
            ("calib_tokens", self.calib_tokens, &self.lens),
            ("eval_tokens", self.eval_tokens, &self.ctxs),
        ] {
            if let Some(&x) = per.iter().find(|&&x| x > n) {
                return Err(Error::config(
                    field,
                    format!("{n} tokens hold no sequence of {x}"),
                ));
            }
        }
        Ok(())
    }
}

/// Run the study on `s`: calibration from the end of `calib` (a token stream), evaluation from
/// the start of `eval`. `progress(done, total)` counts evaluations; false cancels. The session
/// is left holding the last configuration.
pub fn run(
    s: &mut Session,
    cfg: &QuantConfig,
    eval: &[u32],
    calib: &[u32],
    o: &SlacOptions,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<SlacReport> {
    cfg.validate()?;
    o.validate(cfg)?;
    let total = o.ctxs.len() * (o.lens.len() + 1);
    let mut done = 0;
    let mut step = |done: &mut usize| {
        *done += 1;
        if progress(*done, total) {
            Ok(())
        } else {
            Err(Error::Cancelled)
        }
    };
    let eval_opts = |ctx: usize| EvalOptions {
        protocol: Protocol::Llamacpp,
        ctx,
        max_windows: Some((o.eval_tokens / ctx).max(1)),
        kl: false,
    };
    let mut report = SlacReport {
        config: cfg.to_url(),
        loaded: Vec::new(),
        cells: Vec::new(),
    };
    s.set_quant(&QuantConfig::default())?;
    for &ctx in &o.ctxs {
        let r = s.evaluate_tokens(eval, &eval_opts(ctx), &mut |_| true)?;
        report.loaded.push((ctx, r.ppl));
        step(&mut done)?;
    }
    for &len in &o.lens {
        let copts = CalibOptions {
            n_seq: (o.calib_tokens / len).max(1),
            seq_len: len,
            from: CalibFrom::Tail,
        };
        crate::quant::config::validate_calib(&copts)?;
        pollster::block_on(s.calibrate_async(calib, &copts, o.calib_cpu, &mut |_, _| true))?;
        s.set_quant(cfg)?;
        for &ctx in &o.ctxs {
            let r = s.evaluate_tokens(eval, &eval_opts(ctx), &mut |_| true)?;
            if !r.ppl.is_finite() {
                return Err(Error::config(
                    "slac",
                    format!(
                        "calibration length {len}, context {ctx}: perplexity {}",
                        r.ppl
                    ),
                ));
            }
            report.cells.push(SlacCell {
                calib_len: len,
                calib_seqs: copts.n_seq,
                ctx,
                windows: r.windows,
                ppl: r.ppl,
            });
            step(&mut done)?;
        }
    }
    Ok(report)
}

/// The report as a Markdown table: one row per calibration length, one column per context,
/// the as-loaded row first.
pub fn table(r: &SlacReport) -> String {
    let ctxs: Vec<usize> = r.loaded.iter().map(|&(c, _)| c).collect();
    let mut t = String::from("| calibration length |");
    for c in &ctxs {
        t.push_str(&format!(" PPL @ ctx {c} |"));
    }
    t.push_str("\n|---|");
    t.push_str(&"---|".repeat(ctxs.len()));
    t.push_str("\n| as loaded |");
    for (_, p) in &r.loaded {
        t.push_str(&format!(" {p:.4} |"));
    }
    let mut lens: Vec<usize> = r.cells.iter().map(|c| c.calib_len).collect();
    lens.dedup();
    for len in lens {
        let seqs = r
            .cells
            .iter()
            .find(|c| c.calib_len == len)
            .map_or(0, |c| c.calib_seqs);
        t.push_str(&format!("\n| {len} ({seqs} seqs) |"));
        for c in &ctxs {
            let p = r
                .cells
                .iter()
                .find(|x| x.calib_len == len && x.ctx == *c)
                .map_or(f64::NAN, |x| x.ppl);
            t.push_str(&format!(" {p:.4} |"));
        }
    }
    t.push('\n');
    t
}
