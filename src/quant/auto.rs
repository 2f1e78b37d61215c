//! Automatic per-layer allocation: measure how much error each block linear adds in each
//! candidate format, then choose one format per linear that minimises the total predicted error
//! with the model's effective bits (every stored byte of the block linears — codes, scales, zero
//! points, block headers — as the format modules account for them) at most a budget.
//!
//! The measurement is the layer's output error on the calibration tokens,
//! `‖X Wᵀ − X Ŵᵀ‖² / n` for the `n` calibration rows `X` of the linear's input, computed
//! exactly from the calibration Gram `XᵀX` as `tr(E XᵀX Eᵀ) / n` with `E = W − Ŵ` (the
//! quantity GPTQ, arXiv 2210.17323 §3, minimises per layer), against the weights as loaded. It
//! needs one quantization of every linear per candidate and no forward pass, so it is cheap
//! enough for a browser. Errors of different linears are added as if independent (the
//! additivity assumption of HAWQ-V2, arXiv 1911.03852, and of ExLlamaV3's measured recipes);
//! `ErrorKind::Relative` divides each by the layer's output energy `‖X Wᵀ‖² / n` instead,
//! weighting all linears alike.
//!
//! The choice is an exact multiple-choice knapsack (`solve`), then verified (`verify`): it
//! competes with the uniform candidates that fit the budget on the calibration text's NLL, and
//! the best scoring allocation is kept. The measurement is cached
//! (`AutoCache`), so a change of budget or error kind only solves again (microseconds to a
//! second) and re-quantizes.

pub mod candidate;
pub mod solve;
pub mod verify;

pub use candidate::Candidate;

use crate::model::weights::ModelWeights;
use crate::quant::calib::Calibration;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use solve::Choice;

/// Largest budget accepted (bits per weight; f32 weights are 32, anything above keeps all).
pub const MAX_BUDGET: f64 = 32.0;
/// The page's budget slider: its range and step (the CLI takes any fraction).
pub const SLIDER_MIN: f64 = 2.0;
pub const SLIDER_MAX: f64 = 8.5;
pub const SLIDER_STEP: f64 = 0.05;
/// The default candidates: RTN integers at 2 bits (asymmetric: a symmetric 2-bit grid has only
/// 3 levels, and SmolLM2-135M collapsed to perplexity 1.2 M at 2.5 bits when auto could choose
/// it; docs/auto.md), 3, 4 and 8 bits with groups of 32 or 64 or a scale per row, and NF4
/// (about 2.03 to 8.03 effective bits). A scale per row fits every shape; 32 and 64 divide the
/// widths of every model QuantLab runs; the per-row int3 lets a budget of 3.0 avoid most
/// 2-bit linears.
pub const DEFAULT_CANDIDATES: &str =
    "int2g32asym,int2g64asym,int3row,int3g64,int3g32,int4row,int4g64,nf4g64,int8row";

/// How the measured errors of different linears are weighed against each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// `‖X(W − Ŵ)ᵀ‖² / n`, as measured.
    Output,
    /// The same divided by `‖XWᵀ‖² / n`: the default, because raw output errors grow with
    /// depth (the residual stream does) and would send the early layers to 2 bits (on
    /// SmolLM2-135M at 3.0 bits, 8 windows: perplexity 77,463 with `Output`, 52,407 with
    /// `Relative`; docs/auto.md).
    #[default]
    Relative,
}

/// `Method::Auto`'s options: the budget and the formats to choose among.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoOptions {
    /// Effective bits per weight of the block linears, everything stored counted (any fraction).
    pub budget: f64,
    /// The candidates, comma-separated (`candidate::parse_list`).
    pub candidates: String,
    pub error: ErrorKind,
    /// Calibration sequences on which the knapsack's choice is scored against the uniform
    /// candidates (`verify`); 0 keeps the knapsack's choice unscored. A config without the key
    /// means 0 and 0 is not written, so links and sweep rows made before verification existed
    /// keep their meaning; the CLI and the page start from `DEFAULT_VERIFY`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub verify: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Calibration sequences verification scores by default: 4 × 512 tokens on the CLI's default
/// calibration, 2,044 scored tokens, about 10 s per contender on a 2-core CPU for SmolLM2-135M.
pub const DEFAULT_VERIFY: usize = 4;

impl Default for AutoOptions {
    fn default() -> Self {
        AutoOptions {
            budget: 3.0,
            candidates: DEFAULT_CANDIDATES.to_string(),
            error: ErrorKind::Relative,
            verify: DEFAULT_VERIFY,
        }
    }
}

impl AutoOptions {
    /// Checks that need no model: a finite positive budget and a valid candidate list.
    pub fn validate(&self) -> Result<()> {
        if !(self.budget.is_finite() && self.budget > 0.0 && self.budget <= MAX_BUDGET) {
            return Err(Error::config(
                "auto.budget",
                format!(
                    "{} is outside (0, {MAX_BUDGET}] bits per weight",
                    self.budget
                ),
            ));
        }
        if self.verify > verify::MAX_VERIFY {
            return Err(Error::config(
                "auto.verify",
                format!(
                    "{} calibration sequences, over the limit of {}",
                    self.verify,
                    verify::MAX_VERIFY
                ),
            ));
        }
        self.candidate_list().map(|_| ())
    }

    pub fn candidate_list(&self) -> Result<Vec<Candidate>> {
        candidate::parse_list(&self.candidates)
    }
}

/// One block linear's measurement: per candidate (`None`: the format does not fit its shape),
/// the stored bits and the output error.
#[derive(Clone, Debug, Serialize)]
pub struct LinearSens {
    pub name: String,
    pub layer: usize,
    /// Index into the topology's linears.
    pub kind: usize,
    pub params: usize,
    pub bits: Vec<Option<u64>>,
    pub error: Vec<Option<f64>>,
    /// `‖XWᵀ‖² / n` of the loaded weights.
    pub energy: f64,
}

/// Every block linear's measurement, in model order.
#[derive(Clone, Debug, Serialize)]
pub struct Sensitivity {
    pub candidates: Vec<String>,
    pub linears: Vec<LinearSens>,
    /// Seconds the measurement took (by the caller's clock).
    pub seconds: f64,
}

impl Sensitivity {
    /// Weights of all the block linears.
    pub fn params(&self) -> usize {
        self.linears.iter().map(|l| l.params).sum()
    }
}

/// Stored bits a budget allows: ≤ budget · weights, in integers (the exact feasibility test).
fn capacity(table: &Sensitivity, budget: f64) -> u64 {
    (budget * table.params() as f64).floor() as u64
}

/// `tr(E G Eᵀ) / n` for a `rows × cols` matrix `e` and the `cols × cols` Gram `g` of `n`
/// rows: the mean squared output error per calibration row.
fn output_error(e: &[f32], rows: usize, cols: usize, g: &[f32], n: usize) -> f64 {
    let mut p = vec![0f32; rows * cols];
    crate::linalg::sgemm(rows, cols, cols, e, cols, 1, g, cols, 1, &mut p, cols);
    let s: f64 = e.iter().zip(&p).map(|(&a, &b)| a as f64 * b as f64).sum();
    s / n.max(1) as f64
}

/// Measure every block linear of `src` in every candidate against the calibration statistics.
/// `progress(done, total)` counts linears and cancels with `false`.
pub fn measure(
    src: &ModelWeights,
    calib: &Calibration,
    candidates: &[Candidate],
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Sensitivity> {
    if calib.layers.len() != src.layers.len() {
        return Err(Error::config(
            "calibration",
            format!(
                "statistics for {} layers, the model has {}",
                calib.layers.len(),
                src.layers.len()
            ),
        ));
    }
    let topo = src.topology();
    let total = src.layers.len() * topo.linears.len();
    let mut linears = Vec::with_capacity(total);
    for (li, layer) in src.layers.iter().enumerate() {
        for (k, lin) in layer.linears().iter().enumerate() {
            if !progress(linears.len(), total) {
                return Err(Error::Cancelled);
            }
            let (rows, cols) = (lin.w.rows, lin.w.cols);
            let st = calib.site(li, topo.site_of(k))?;
            st.check_width(&lin.name, cols)?;
            let w = lin.w.dequantize()?;
            let energy = output_error(&w, rows, cols, &st.gram, st.rows);
            let per: Vec<Result<Option<(u64, f64)>>> = crate::par::map(candidates, |c| {
                if !c.fits(rows, cols) {
                    return Ok(None);
                }
                if *c == Candidate::Keep {
                    return Ok(Some((8 * lin.w.storage().total() as u64, 0.0)));
                }
                let q = c.quantize(lin)?;
                let mut e = q.dequantize()?;
                for (d, &x) in e.iter_mut().zip(&w) {
                    *d = x - *d;
                }
                let err = output_error(&e, rows, cols, &st.gram, st.rows);
                Ok(Some((8 * q.storage().total() as u64, err)))
            });
            let per = per.into_iter().collect::<Result<Vec<_>>>()?;
            if per.iter().all(Option::is_none) {
                return Err(Error::config(
                    "auto.candidates",
                    format!(
                        "no candidate fits {} ({rows}×{cols}): add one whose groups divide {cols} \
                         (e.g. int4row) or keep",
                        lin.name
                    ),
                ));
            }
            linears.push(LinearSens {
                name: lin.name.clone(),
                layer: li,
                kind: k,
                params: rows * cols,
                bits: per.iter().map(|p| p.map(|x| x.0)).collect(),
                error: per.iter().map(|p| p.map(|x| x.1)).collect(),
                energy,
            });
        }
    }
    if !progress(total, total) {
        return Err(Error::Cancelled);
    }
    Ok(Sensitivity {
        candidates: candidates.iter().map(|c| c.name()).collect(),
        linears,
        seconds: 0.0,
    })
}

/// One linear's chosen format.
#[derive(Clone, Debug, Serialize)]
pub struct AutoLayer {
    pub name: String,
    pub layer: usize,
    pub kind: usize,
    pub format: String,
    pub bits_per_weight: f64,
    /// The predicted error of the chosen format (in the options' `ErrorKind`).
    pub error: f64,
    /// The predicted error of every candidate (`None`: does not fit), in the candidates' order.
    pub sensitivity: Vec<Option<f64>>,
}

/// What the allocation chose, for `eval --json` and the page.
#[derive(Clone, Debug, Serialize)]
pub struct AutoReport {
    pub budget: f64,
    /// Effective bits per weight of the chosen formats (≤ `budget`).
    pub bits_per_weight: f64,
    /// The least and the most any choice among these candidates stores.
    pub min_bits: f64,
    pub max_bits: f64,
    pub error_kind: ErrorKind,
    /// Total predicted error of the choice.
    pub predicted_error: f64,
    /// The knapsack search finished (the choice is the best one).
    pub optimal: bool,
    /// No choice has a total predicted error below this (the LP relaxation's).
    pub lower_bound: f64,
    pub nodes: usize,
    pub measure_seconds: f64,
    /// True when the measurement came from the cache (its seconds are those it took then).
    pub measure_cached: bool,
    pub choose_seconds: f64,
    pub candidates: Vec<String>,
    pub layers: Vec<AutoLayer>,
    /// The knapsack's choice scored against the uniform candidates (`verify`); the layers,
    /// bits and predicted error above are the winner's. `None` when `verify` is 0.
    pub verification: Option<verify::Verification>,
}

impl AutoReport {
    /// The verification in one line: which allocation was kept, and every contender's mean
    /// NLL on the calibration tokens.
    pub fn verdict(&self) -> Option<String> {
        let v = self.verification.as_ref()?;
        let scores: Vec<String> = v
            .contenders
            .iter()
            .map(|c| {
                let nll = c.nll.map_or("not finite".into(), |x| format!("{x:.4}"));
                format!("{} {:.3} bits {nll}", c.name, c.bits_per_weight)
            })
            .collect();
        Some(format!(
            "kept {}; NLL on {} calibration tokens: {}",
            v.contenders[v.winner].name,
            v.tokens,
            scores.join(", ")
        ))
    }
}

/// The predicted errors `solve` weighs, per linear and candidate.
fn weighed(l: &LinearSens, kind: ErrorKind) -> Vec<Option<f64>> {
    l.error
        .iter()
        .map(|e| {
            e.map(|e| match kind {
                ErrorKind::Output => e,
                ErrorKind::Relative if l.energy > 0.0 => e / l.energy,
                ErrorKind::Relative => 0.0,
            })
        })
        .collect()
}

/// Choose one candidate per linear (indices into the candidates) for `o`'s budget and error
/// kind. An infeasible budget is an error naming the least achievable.
pub fn choose(table: &Sensitivity, o: &AutoOptions) -> Result<(Vec<usize>, AutoReport)> {
    let params = table.params();
    let per_weight = |bits: u64| bits as f64 / params.max(1) as f64;
    let mut items: Vec<Vec<Choice>> = Vec::with_capacity(table.linears.len());
    // Per item: its options' candidate indices.
    let mut which: Vec<Vec<usize>> = Vec::with_capacity(table.linears.len());
    let mut weighed_all = Vec::with_capacity(table.linears.len());
    for l in &table.linears {
        let w = weighed(l, o.error);
        let (mut opts, mut idx) = (Vec::new(), Vec::new());
        for (c, (b, e)) in l.bits.iter().zip(&w).enumerate() {
            if let (Some(b), Some(e)) = (b, e) {
                opts.push(Choice {
                    cost: *b,
                    error: *e,
                });
                idx.push(c);
            }
        }
        items.push(opts);
        which.push(idx);
        weighed_all.push(w);
    }
    let min = solve::min_cost(&items).unwrap_or(u64::MAX);
    let max: u64 = items
        .iter()
        .map(|o| o.iter().map(|c| c.cost).max().unwrap_or(0))
        .sum();
    let capacity = capacity(table, o.budget);
    if min > capacity {
        return Err(Error::config(
            "auto.budget",
            format!(
                "{} bits per weight is below the least these candidates can store, {:.4} \
                 (every linear at its smallest fitting candidate); raise the budget to at least \
                 that or add smaller candidates",
                o.budget,
                per_weight(min)
            ),
        ));
    }
    let sol = solve::solve(&items, capacity, solve::NODE_LIMIT)
        .ok_or_else(|| Error::config("auto.budget", format!("no choice fits {} bits", o.budget)))?;
    let pick: Vec<usize> = sol.pick.iter().zip(&which).map(|(&p, w)| w[p]).collect();
    let report = AutoReport {
        budget: o.budget,
        bits_per_weight: per_weight(sol.cost),
        min_bits: per_weight(min),
        max_bits: per_weight(max),
        error_kind: o.error,
        predicted_error: sol.error,
        optimal: sol.optimal,
        lower_bound: sol.bound,
        nodes: sol.nodes,
        measure_seconds: table.seconds,
        measure_cached: false,
        choose_seconds: 0.0,
        candidates: table.candidates.clone(),
        layers: layers(table, &pick, weighed_all),
        verification: None,
    };
    Ok((pick, report))
}

/// The report's per-linear rows for a choice, with the predicted errors `weighed` gives.
fn layers(
    table: &Sensitivity,
    pick: &[usize],
    weighed_all: Vec<Vec<Option<f64>>>,
) -> Vec<AutoLayer> {
    table
        .linears
        .iter()
        .zip(pick)
        .zip(weighed_all)
        .map(|((l, &c), w)| AutoLayer {
            name: l.name.clone(),
            layer: l.layer,
            kind: l.kind,
            format: table.candidates[c].clone(),
            bits_per_weight: l.bits[c].unwrap_or(0) as f64 / l.params.max(1) as f64,
            error: w[c].unwrap_or(0.0),
            sensitivity: w,
        })
        .collect()
}

/// The model with every block linear in its chosen candidate, checked against the budget by
/// the model's own memory accounting.
pub fn build(
    src: &ModelWeights,
    candidates: &[Candidate],
    pick: &[usize],
    budget: f64,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<ModelWeights> {
    let mut out = src.clone();
    let total = pick.len();
    let mut i = 0;
    for layer in out.layers.iter_mut() {
        for lin in layer.linears_mut() {
            if !progress(i, total) {
                return Err(Error::Cancelled);
            }
            let c = pick
                .get(i)
                .and_then(|&p| candidates.get(p))
                .ok_or_else(|| Error::config("auto", format!("no choice for {}", lin.name)))?;
            lin.w = c.quantize(lin)?;
            i += 1;
        }
    }
    let mem = out.memory();
    if 8 * mem.linear.total() as u64 > (budget * mem.linear_params as f64).floor() as u64 {
        return Err(Error::config(
            "auto.budget",
            format!(
                "the chosen formats store {:.4} bits per weight, over the budget of {budget}",
                mem.bits_per_weight
            ),
        ));
    }
    if !progress(total, total) {
        return Err(Error::Cancelled);
    }
    Ok(out)
}

/// The measurement kept between allocations of one model with one calibration: its owner
/// clears it when either changes (`clear`).
#[derive(Default)]
pub struct AutoCache {
    table: Option<Sensitivity>,
    report: Option<AutoReport>,
}

impl AutoCache {
    pub fn clear(&mut self) {
        *self = AutoCache::default();
    }

    /// The last allocation's report.
    pub fn report(&self) -> Option<&AutoReport> {
        self.report.as_ref()
    }

    /// The measurement for `o`'s candidates, measured now unless cached.
    pub fn sensitivity(
        &mut self,
        o: &AutoOptions,
        src: &ModelWeights,
        calib: &Calibration,
        clock: fn() -> f64,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<(&Sensitivity, bool)> {
        let list = o.candidate_list()?;
        let names: Vec<String> = list.iter().map(|c| c.name()).collect();
        let cached = self.table.as_ref().is_some_and(|t| t.candidates == names);
        if !cached {
            self.table = None;
            let t0 = clock();
            let mut t = measure(src, calib, &list, progress)?;
            t.seconds = (clock() - t0).max(0.0);
            self.table = Some(t);
        }
        match &self.table {
            Some(t) => Ok((t, cached)),
            None => Err(Error::Cancelled),
        }
    }

    /// Measure (or reuse the measurement), choose and build: `Method::Auto` applied.
    pub fn apply(
        &mut self,
        o: &AutoOptions,
        src: &ModelWeights,
        calib: &Calibration,
        clock: fn() -> f64,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<ModelWeights> {
        o.validate()?;
        self.report = None;
        let (table, cached) = self.sensitivity(o, src, calib, clock, progress)?;
        let t0 = clock();
        let (pick, mut report) = choose(table, o)?;
        report.choose_seconds = (clock() - t0).max(0.0);
        report.measure_cached = cached;
        let list = o.candidate_list()?;
        if o.verify == 0 {
            let out = build(src, &list, &pick, o.budget, progress)?;
            self.report = Some(report);
            return Ok(out);
        }
        let (pick, out, v) = verify::verify(table, o, &list, pick, src, calib, clock, progress)?;
        // The report describes the winner.
        if v.winner != 0 {
            let w: Vec<_> = table.linears.iter().map(|l| weighed(l, o.error)).collect();
            report.layers = layers(table, &pick, w);
            report.predicted_error = report.layers.iter().map(|l| l.error).sum();
            report.bits_per_weight = verify::cost(table, &pick) as f64 / table.params() as f64;
        }
        report.verification = Some(v);
        self.report = Some(report);
        Ok(out)
    }
}

/// Seconds since the first call, natively; 0 in wasm32 (no clock in its std: the session
/// passes the page's).
pub fn default_clock() -> f64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        use std::time::Instant;
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_secs_f64()
    }
    #[cfg(target_arch = "wasm32")]
    {
        0.0
    }
}

#[cfg(test)]
mod tests;
