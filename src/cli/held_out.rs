//! Calibration for every command that calibrates (eval, sweep, generate, export, binarize, slac):
//! the flags, the choice of tokens held out from evaluation (`quant::calib_source`, issue 18)
//! and the run with its progress line.

use super::read_text;
use clap::Args;
use quantlab::model::eval::EvalOptions;
use quantlab::playground::session::Session;
use quantlab::quant::calib::{eval_overlap, CalibFrom, CalibOptions};
use quantlab::quant::calib_source::{
    builtin_text, fit_to, held_out_tail, source, CalibKind, CalibSource,
};
use quantlab::Result;
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Instant;

/// Calibration flags, one definition for every command that calibrates (eval, sweep, generate,
/// export, binarize, bench --method).
#[derive(Args, Clone)]
pub(super) struct CalibArgs {
    /// Calibration text. Default: held out from evaluation — the end of the evaluation text when
    /// it lies past every evaluated window, else the built-in calibration text (www/texts/, the
    /// ones the evaluation text does not contain), with fewer sequences if it is too short.
    #[arg(long)]
    pub calib_text: Option<PathBuf>,
    /// Calibration sequences.
    #[arg(long, default_value_t = 32)]
    pub calib_n: usize,
    /// Tokens per calibration sequence.
    #[arg(long, default_value_t = 512)]
    pub calib_len: usize,
    /// Calibrate on the CPU even with --backend gpu: the CPU's statistics, so GPTQ, AWQ and CMPQ
    /// give the same weights, bit for bit, as with --backend cpu (the GPU's statistics differ
    /// by f32 rounding, which can flip rounding decisions).
    #[arg(long)]
    pub calib_cpu: bool,
    /// Allow calibration on the end of the evaluation text even where it overlaps evaluated
    /// windows (the perplexity is then optimistic; a warning says how many tokens are shared).
    #[arg(long)]
    pub calib_overlap: bool,
}

impl CalibArgs {
    pub(super) fn options(&self) -> CalibOptions {
        CalibOptions {
            n_seq: self.calib_n,
            seq_len: self.calib_len,
            ..CalibOptions::default()
        }
    }
}

/// The evaluation text as the command tokenized it: the stream the windows are cut from (the
/// whole text, or its start) and, when its end was tokenized apart for calibration, that piece
/// with its byte range (after the start's, so disjoint from every window).
pub(super) struct EvalText<'a> {
    /// The text's name in reports (its path).
    pub name: &'a str,
    pub text: &'a str,
    pub stream: &'a [u32],
    pub tail: Option<(&'a [u32], Range<usize>)>,
}

/// Calibration tokens and what they are.
pub(super) struct Picked {
    pub tokens: Vec<u32>,
    pub source: CalibSource,
}

/// Choose the calibration tokens for evaluating `eval` on `ev` (see `quant::calib_source`).
pub(super) fn pick(
    s: &Session,
    c: &CalibArgs,
    ev: &EvalText,
    eval: &EvalOptions,
) -> Result<Picked> {
    let asked = c.options();
    if let Some(p) = &c.calib_text {
        let t = read_text(p)?;
        let tokens = s.tokenize(&t)?;
        let name = p.display().to_string();
        let source = source(
            CalibKind::File,
            name,
            tokens.len(),
            0..t.len(),
            &asked,
            &asked,
            0,
        )?;
        return Ok(Picked { tokens, source });
    }
    let whole = 0..ev.text.len();
    if let Some((tail, bytes)) = ev
        .tail
        .as_ref()
        .filter(|(t, _)| asked.range(t.len()).is_ok())
    {
        let name = format!("the end of {}", ev.name);
        let source = source(
            CalibKind::EvalTail,
            name,
            tail.len(),
            bytes.clone(),
            &asked,
            &asked,
            0,
        )?;
        return Ok(Picked {
            tokens: tail.to_vec(),
            source,
        });
    }
    let n = ev.stream.len();
    let name = ev.name.to_string();
    if let Some(r) = held_out_tail(n, eval, &asked) {
        let opts = CalibOptions {
            from: CalibFrom::Offset(r.start),
            ..asked
        };
        let source = source(CalibKind::EvalTail, name, n, whole, &opts, &asked, 0)?;
        return Ok(Picked {
            tokens: ev.stream.to_vec(),
            source,
        });
    }
    if c.calib_overlap {
        let r = asked.range(n)?;
        let shared = eval_overlap(r, n, eval);
        let source = source(
            CalibKind::EvalOverlap,
            name,
            n,
            whole,
            &asked,
            &asked,
            shared,
        )?;
        return Ok(Picked {
            tokens: ev.stream.to_vec(),
            source,
        });
    }
    let (name, text) = builtin_text(ev.text);
    let tokens = s.tokenize(&text)?;
    let opts = fit_to(tokens.len(), &asked)?;
    let source = source(
        CalibKind::Builtin,
        name,
        tokens.len(),
        0..text.len(),
        &opts,
        &asked,
        0,
    )?;
    Ok(Picked { tokens, source })
}

/// Say what calibration uses (stderr), then calibrate the session on it.
pub(super) fn run(s: &mut Session, p: &Picked, cpu: bool) -> Result<()> {
    eprintln!("{}", p.source.describe());
    if let Some(w) = p.source.warning() {
        eprintln!("{w}");
    }
    let t = Instant::now();
    pollster::block_on(
        s.calibrate_async(&p.tokens, &p.source.options(), cpu, &mut |d, n| {
            eprint!("\rcalibrating {d}/{n}   ");
            let _ = std::io::stderr().flush();
            true
        }),
    )?;
    eprintln!("\rcalibrated in {:.2} s", t.elapsed().as_secs_f64());
    Ok(())
}
