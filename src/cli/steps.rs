//! `bench --rtn-step` and `bench --cmpq-step`: the page's sliders as benchmarks (issue 17: an RTN
//! step within 0.15 s and a CMPQ budget step within 0.25 s on a GPU), each step split into the
//! parts it spends its time on, so that a change shows what it moved.

use super::rtn_g32_sym;
use quantlab::format::{Format, QTensor};
use quantlab::model::eval::{EvalOptions, EvalResult, Protocol};
use quantlab::model::weights::ModelWeights;
use quantlab::playground::engine::Engine;
use quantlab::playground::session::Session;
use quantlab::quant::calib::CalibOptions;
use quantlab::quant::cmpq::CmpqOptions;
use quantlab::quant::cmpq_cache::CmpqCache;
use quantlab::quant::config::{Method, QuantConfig};
use quantlab::{Error, Result};
use std::time::Instant;

fn step_eval(ctx: usize, windows: usize) -> EvalOptions {
    EvalOptions {
        protocol: Protocol::Llamacpp,
        ctx,
        max_windows: Some(windows),
        kl: false,
    }
}

/// `bench --rtn-step`: the page's bits slider with RTN (issue 17: re-quantize + 8 windows), on
/// the same `Session::set_quant` path the page uses, so the number is what a user waits for.
/// The first configuration is timed too but is not the step: it includes one-off work. On a GPU
/// the second line splits `set_quant` into `Engine::rtn_on_device`'s parts; the bytes stay on
/// the device, and what reading them back would cost (export, inspection) is timed after the
/// steps, outside them.
pub(super) fn bench_rtn_step(
    s: &mut Session,
    tokens: &[u32],
    ctx: usize,
    windows: usize,
) -> Result<()> {
    let opts = step_eval(ctx, windows);
    for (what, bits) in [("first", 4u8), ("step", 3), ("step", 4)] {
        let cfg = rtn_g32_sym(bits);
        let t = Instant::now();
        let mem = s.set_quant(&cfg)?;
        let tq = t.elapsed().as_secs_f64();
        let r = s.evaluate_tokens(tokens, &opts, &mut |_| true)?;
        let te = t.elapsed().as_secs_f64() - tq;
        println!(
            "rtn {what} int{bits} g32: quantize+load {tq:.3} s · eval {} windows {te:.3} s · \
             total {:.3} s · PPL {:.4} · {:.4} bits/weight",
            r.windows,
            tq + te,
            r.ppl,
            mem.bits_per_weight
        );
        if let Some(p) = s.device_rtn_times() {
            println!(
                "  {what} parts: plan {:.3} s · RTN on the device {:.3} s ({} tensors) · \
                 assemble {:.3} s · rest of set_quant {:.3} s · eval {te:.3} s · read-back 0",
                p.plan,
                p.quantize,
                p.tensors,
                p.assemble,
                (tq - p.plan - p.quantize - p.assemble).max(0.0)
            );
        }
    }
    if s.device_rtn_times().is_some() {
        // Off the step now: what the first consumer of the bytes (save, export, inspection)
        // waits for once.
        let t = Instant::now();
        let q = s.quantized_weights()?;
        let bytes: usize = q.map_or(0, |w| w.linears().map(|l| l.w.data.len()).sum());
        println!(
            "read-back on first use (not in the step): {:.3} s for {:.1} MB of linears",
            t.elapsed().as_secs_f64(),
            bytes as f64 / 1e6
        );
    }
    Ok(())
}

/// `bench --cmpq-step`: the interactive budget slider as a benchmark (issue 6: one step of 0.05
/// bit, re-quantized and re-evaluated on 8 windows of 512 tokens). Calibration runs once (the
/// session keeps it); `CmpqCache` keeps the column fits, so the step re-fits only the columns
/// whose width or sparse outliers changed, and keeps the dequantized source and each column's
/// largest errors. A second line per step breaks the quantize time down by phase. Last, the
/// evaluation's cost by weight format: the step's model, the same budget without sparse
/// outliers, and RTN int3 g32, each evaluated twice on the same engine (the second, timed, with
/// its pipelines compiled), to say whether CMPQ's windows cost its decoder or its outliers.
pub(super) fn bench_cmpq_step(
    s: &mut Session,
    tokens: &[u32],
    ctx: usize,
    windows: usize,
    copts: &CalibOptions,
) -> Result<()> {
    let t = Instant::now();
    s.calibrate(tokens, copts, &mut |_, _| true)?;
    println!(
        "calibrate {} × {} tokens (once): {:.2} s",
        copts.n_seq,
        copts.seq_len,
        t.elapsed().as_secs_f64()
    );
    let calib = s
        .calibration()
        .ok_or_else(|| Error::config("calibration", "missing after calibrate"))?;
    let mut engine = Engine::load(&s.device(), s.source())?;
    let opts = step_eval(ctx, windows);
    let eval = |engine: &Engine| -> Result<EvalResult> {
        let t = Instant::now();
        let clock = || t.elapsed().as_secs_f64();
        pollster::block_on(engine.evaluate(tokens, s.bos(), &opts, &clock, &mut |_| true))
    };
    let cmpq = |budget: f32, outlier_sparse: Option<f32>| {
        let mut o = CmpqOptions {
            budget,
            ..CmpqOptions::default()
        };
        o.outlier_sparse = outlier_sparse.unwrap_or(o.outlier_sparse);
        QuantConfig {
            method: Method::Cmpq(o),
            ..QuantConfig::default()
        }
    };
    let mut cache = CmpqCache::default();
    for (what, budget) in [("first", 3.0f32), ("step", 3.05)] {
        let cfg = cmpq(budget, None);
        let t = Instant::now();
        let q = cache.apply(&cfg, s.source(), calib)?;
        let tq = t.elapsed().as_secs_f64();
        let t = Instant::now();
        engine.set_quantized_from(s.source(), Some(&q))?;
        let tl = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let r = eval(&engine)?;
        let te = t.elapsed().as_secs_f64();
        println!(
            "cmpq {what} {budget:.2} bits: quantize {tq:.2} s ({} column fits cached) · load {tl:.2} s · \
             eval {} windows {te:.2} s · total {:.2} s · PPL {:.4} · {:.4} bits/weight",
            cache.fits(),
            r.windows,
            tq + tl + te,
            r.ppl,
            q.memory().bits_per_weight
        );
        // What the quantize time above was spent on (CmpqCache's phases, wall clock).
        let p = cache.times();
        println!(
            "  {what} phases: source {:.2} s · alloc {:.2} s · fits {:.2} s ({} new) · outliers \
             {:.2} s ({} error lists) · refits {:.2} s ({} new) · pack {:.2} s · model {:.2} s · \
             load {tl:.2} s · eval {te:.2} s",
            p.source,
            p.alloc,
            p.fits,
            p.new_fits,
            p.outliers,
            p.new_err_lists,
            p.refits,
            p.new_refits,
            p.pack,
            p.model
        );
    }
    // The windows by weight format, on the same engine and tokens: the stepped model, its exact
    // values stored as plain f16 (CMPQ's levels, f16 columns and outliers are all f16, so the
    // products are the same: equal PPL), the budget without sparse outliers, and RTN int3.
    let stepped = cache.apply(&cmpq(3.05, None), s.source(), calib)?;
    let as_f16 = to_f16(&stepped)?;
    let without_sparse = CmpqCache::default().apply(&cmpq(3.05, Some(0.0)), s.source(), calib)?;
    let rtn3 = rtn_g32_sym(3).apply(s.source())?;
    let models: [(&str, &ModelWeights); 4] = [
        ("cmpq 3.05", &stepped),
        ("cmpq 3.05 stored as f16 (same values)", &as_f16),
        ("cmpq 3.05 without sparse outliers", &without_sparse),
        ("rtn int3 g32", &rtn3),
    ];
    for (what, q) in models {
        engine.set_quantized_from(s.source(), Some(q))?;
        eval(&engine)?;
        let t = Instant::now();
        let r = eval(&engine)?;
        println!(
            "  eval {} windows, {what}: {:.3} s · PPL {:.4}",
            r.windows,
            t.elapsed().as_secs_f64(),
            r.ppl
        );
    }
    Ok(())
}

/// `q` with every CMPQ linear stored as plain f16, the same values: refused if one is not an
/// f16 value (CMPQ stores only f16 levels, f16 columns and f16 outliers, so none should be).
fn to_f16(q: &ModelWeights) -> Result<ModelWeights> {
    let mut out = q.clone();
    for layer in out.layers.iter_mut() {
        for lin in layer.linears_mut() {
            if !matches!(lin.w.format, Format::Cmpq { .. }) {
                continue;
            }
            let w = lin.w.dequantize()?;
            let mut data = Vec::with_capacity(2 * w.len());
            for v in w {
                let h = half::f16::from_f32(v);
                if h.to_f32() != v {
                    return Err(Error::config(
                        "cmpq",
                        format!("{}: {v} is not an f16 value", lin.name),
                    ));
                }
                data.extend(h.to_le_bytes());
            }
            lin.w = QTensor::new(Format::F16, lin.w.rows, lin.w.cols, data)?;
        }
    }
    Ok(out)
}
