//! The sweep loop: for each config of a grid not yet in the journal, quantize the loaded model
//! (one calibration shared by every calibrated method), evaluate it, append its row, and rewrite
//! the CSV, the table and the plot (`sweep::report`, `sweep::plot`).
//!
//! The models run on the requested device. A format the GPU backend cannot run (it refuses such
//! weights with `Error::Unsupported` when they are loaded: codebooks and add-ons until their
//! kernels exist) is evaluated on a CPU copy instead, and the row records the backend that ran it.
//! Calibration observes activations where the models run: on the GPU for a GPU device
//! (`gpu::calib`, as `Session::calibrate` does natively), otherwise on the CPU backend.

use crate::model::cpu::Cpu;
use crate::model::eval::{EvalOptions, EvalProgress};
use crate::model::net::Model;
use crate::model::weights::ModelWeights;
use crate::playground::engine::{Device, Engine};
use crate::quant::calib::{self, CalibOptions, Calibration};
use crate::quant::config::{Method, QuantConfig};
use crate::sweep::grid::Columns;
use crate::sweep::plot;
use crate::sweep::report::{self, Journal, OutFiles, Row};
use crate::{Error, Result};
use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

/// What the sweep evaluates on.
pub struct SweepInputs<'a> {
    /// The model as loaded (the reference for KL, the source every config quantizes).
    pub model: &'a ModelWeights,
    /// BOS that replaces each window's first token, when the model wants one.
    pub bos: Option<u32>,
    /// The evaluation token stream.
    pub tokens: &'a [u32],
    /// The stream calibration sequences are cut from (`calib.range`).
    pub calib_tokens: &'a [u32],
}

/// How the sweep evaluates.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    pub eval: EvalOptions,
    pub calib: CalibOptions,
    /// Calibrate on the CPU backend even on a GPU device (the CPU's statistics, so the
    /// calibrated methods give the CPU's weights bit for bit).
    pub calib_cpu: bool,
    /// The plot's title.
    pub title: String,
}

/// What the sweep reports while it runs.
pub enum Event<'a> {
    /// `(configs already in the journal, configs to run)`.
    Start(usize, usize),
    Calibrating(usize, usize),
    Calibrated(f64),
    /// `(index among the configs to run, count, columns)`.
    Quantizing(usize, usize, &'a Columns),
    Window(&'a EvalProgress),
    /// A config the GPU cannot run goes to the CPU; the message says why.
    Fallback(&'a str),
    /// What automatic allocation chose for the config being quantized.
    Auto(&'a crate::quant::auto::AutoReport),
    Row(&'a Row),
}

/// Check every config against the model before any work: settings and group sizes (a group that
/// does not divide a row would otherwise fail only when its turn comes, hours in).
pub fn precheck(model: &ModelWeights, configs: &[QuantConfig]) -> Result<()> {
    for cfg in configs {
        cfg.validate()?;
        // Their own formats: k-means ignores the granularity, auto checks each candidate's fit.
        if matches!(cfg.method, Method::Kmeans(_) | Method::Auto(_)) {
            continue;
        }
        for l in model.linears() {
            if let Some(q) = cfg.layer_quant(&l.name) {
                q.gran
                    .group_len(l.w.rows, l.w.cols, &l.name)
                    .map_err(|e| Error::config("grid", format!("{}: {e}", cfg.to_url())))?;
            }
        }
    }
    Ok(())
}

/// The configs of `configs` whose rows are not in `done`, in order.
pub fn pending<'a>(configs: &'a [QuantConfig], done: &[Row]) -> Vec<&'a QuantConfig> {
    let keys: HashSet<&str> = done.iter().map(|r| r.config.as_str()).collect();
    configs
        .iter()
        .filter(|c| !keys.contains(c.to_url().as_str()))
        .collect()
}

/// Rewrite `results.csv`, `table.md` and `plot.svg` from the rows.
pub fn write_outputs(out: &OutFiles, rows: &[Row], title: &str) -> Result<()> {
    report::write_atomic(&out.csv(), &report::csv(rows))?;
    report::write_atomic(&out.table(), &report::table(rows))?;
    report::write_atomic(&out.plot(), &plot::svg(rows, title)?)
}

/// Run the configs not yet in `out_dir/results.jsonl`; returns every row of the journal.
pub fn run(
    inputs: &SweepInputs,
    configs: &[QuantConfig],
    device: &Device,
    opts: &SweepOptions,
    out_dir: &Path,
    event: &mut dyn FnMut(Event),
) -> Result<Vec<Row>> {
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir.display(), e))?;
    let out = OutFiles {
        dir: out_dir.to_path_buf(),
    };
    let (mut journal, mut rows) = Journal::open(&out.jsonl())?;
    // The readable columns are derived from the config: recompute them, so tables and plot
    // series follow this build's labels also for rows an older build wrote.
    for r in &mut rows {
        if let Ok(c) = QuantConfig::from_url(&r.config) {
            r.columns = Columns::of(&c);
        }
    }
    // Rows are keyed by config alone, so rows measured under another protocol must not mix in.
    let windows = crate::model::eval::windows(inputs.tokens, inputs.bos, &opts.eval)?.len();
    let protocol = crate::model::eval::describe(&opts.eval, windows, inputs.bos);
    if let Some(r) = rows.iter().find(|r| r.protocol != protocol) {
        return Err(Error::config(
            "out",
            format!(
                "{} holds rows measured as \"{}\", not \"{protocol}\"; use another output directory",
                out.jsonl().display(),
                r.protocol
            ),
        ));
    }
    let todo = pending(configs, &rows);
    let todo: Vec<QuantConfig> = todo.into_iter().cloned().collect();
    precheck(inputs.model, &todo)?;
    event(Event::Start(configs.len() - todo.len(), todo.len()));
    if todo.is_empty() {
        write_outputs(&out, &rows, &opts.title)?;
        return Ok(rows);
    }
    let t0 = Instant::now();
    let clock = move || t0.elapsed().as_secs_f64();
    let mut primary = Engine::load(device, inputs.model)?;
    let mut fallback: Option<Engine> = None;
    let mut calibration: Option<(Calibration, f64)> = None;
    // Automatic allocation measures once per sweep; later budgets only solve again.
    let mut auto = crate::quant::auto::AutoCache::default();
    for (i, cfg) in todo.iter().enumerate() {
        let cols = Columns::of(cfg);
        let calib_s = if cfg.needs_calibration() {
            if calibration.is_none() {
                let t = Instant::now();
                let mut progress = |d, n| {
                    event(Event::Calibrating(d, n));
                    true
                };
                let (tokens, bos) = (inputs.calib_tokens, inputs.bos);
                // On a GPU device the statistics are gathered there (gpu::calib), as a GPU
                // session does; otherwise on the CPU backend.
                let c = match primary.gpu_loaded().filter(|_| !opts.calib_cpu) {
                    Some((g, m)) => pollster::block_on(crate::gpu::calib::calibrate(
                        g,
                        m,
                        tokens,
                        bos,
                        &opts.calib,
                        &mut progress,
                    ))?,
                    None => {
                        let temp;
                        let model = match primary.cpu_loaded() {
                            Some(m) => m,
                            None => {
                                temp = Model::load(&Cpu, inputs.model)?;
                                &temp
                            }
                        };
                        calib::calibrate(model, tokens, bos, &opts.calib, &mut progress)?
                    }
                };
                let s = t.elapsed().as_secs_f64();
                event(Event::Calibrated(s));
                calibration = Some((c, s));
            }
            calibration.as_ref().map_or(0.0, |(_, s)| *s)
        } else {
            0.0
        };
        event(Event::Quantizing(i, todo.len(), &cols));
        let t = Instant::now();
        let q = match (&cfg.method, &calibration) {
            (Method::None, _) if cfg.act.is_none() => None,
            (Method::Auto(o), Some((c, _))) => {
                let mut w = auto.apply(
                    o,
                    inputs.model,
                    c,
                    crate::quant::auto::default_clock,
                    &mut |_, _| true,
                )?;
                w.act = cfg.act.map(|a| a.plan(Some(c))).transpose()?;
                if let Some(r) = auto.report() {
                    event(Event::Auto(r));
                }
                Some(w)
            }
            _ => Some(cfg.apply_calibrated(
                inputs.model,
                calibration.as_ref().map(|(c, _)| c),
                &mut |_, _| true,
            )?),
        };
        let quant_s = t.elapsed().as_secs_f64();
        let note = match cfg.method {
            Method::Auto(_) => auto.report().and_then(|r| r.verdict()),
            _ => None,
        };
        let mem = q
            .as_ref()
            .map_or_else(|| inputs.model.memory(), |w| w.memory());
        let engine = match primary.set_quantized(q.as_ref()) {
            Ok(()) => &primary,
            Err(e @ Error::Unsupported { .. }) if !matches!(device, Device::Cpu) => {
                event(Event::Fallback(&e.to_string()));
                let cpu = match &mut fallback {
                    Some(f) => f,
                    None => fallback.insert(Engine::load(&Device::Cpu, inputs.model)?),
                };
                cpu.set_quantized(q.as_ref())?;
                &*cpu
            }
            Err(e) => return Err(e),
        };
        drop(q);
        let r = pollster::block_on(engine.evaluate(
            inputs.tokens,
            inputs.bos,
            &opts.eval,
            &clock,
            &mut |p| {
                event(Event::Window(p));
                true
            },
        ))?;
        let info = engine.info();
        let row = Row {
            config: cfg.to_url(),
            columns: cols,
            eff_bits: mem.bits_per_weight,
            linear_bytes: mem.linear.total(),
            ppl: r.ppl,
            ppl_err: r.ppl_err,
            kl: r.kl,
            top1: r.top1,
            kl_stats: r.kl_stats,
            calib_s,
            quant_s,
            eval_s: r.seconds,
            backend: info.backend,
            adapter: info.adapter,
            windows: r.windows,
            tokens_scored: r.tokens_scored,
            ctx: r.ctx,
            protocol: r.protocol,
            note,
        };
        // Free the quantized weights before the next config quantizes.
        primary.set_quantized(None)?;
        if let Some(f) = &mut fallback {
            f.set_quantized(None)?;
        }
        journal.append(&row)?;
        event(Event::Row(&row));
        rows.push(row);
        write_outputs(&out, &rows, &opts.title)?;
    }
    Ok(rows)
}
