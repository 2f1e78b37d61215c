//! Scale transforms folded into the model before the weights are rounded: the first axis of the
//! W4A8 pipeline (docs/w4a8.md). Each moves difficulty between a site's activations and the
//! weights that read it, `X·Wᵀ = (X·diag(s)⁻¹)·(W·diag(s))ᵀ`, with `1/s` folded exactly into the
//! op that produces the site (`awq::fold`, as the topology says; an opaque producer leaves the
//! site unscaled):
//!
//! * **SmoothQuant** (Xiao et al., arXiv 2211.10438 §4): `s_j = max|X_j|^α / max|W_:,j|^(1−α)`,
//!   α given (0.5 by default), the max over every linear that reads the site.
//! * **AWQ's scales** (Lin et al., arXiv 2306.00978 §3.2): `s_j = mean|x_j|^α`, α searched on a
//!   grid for the weight quantizer alone (`awq::search`), without AWQ's clip search (that belongs
//!   to the rounding, which here is whatever `method` says).
//! * **AQAS** (Lee et al., "Enhancing Computation Efficiency in LLMs with W4A8", arXiv
//!   2311.05161 §3.1): SmoothQuant's form, with α searched (0, step, …, 1) per group of linears
//!   sharing an input, minimising the output error with BOTH quantizers active,
//!   `Σ_l ‖Q_a(X·diag(s)⁻¹)·Q_w(W_l·diag(s))ᵀ − X·W_lᵀ‖²`, on the calibration samples
//!   (`SiteStats::samples`; activation quantization is not linear, so the Gram cannot stand in
//!   for them). `Q_w` is RTN on the configured integer grid; `Q_a` is the configured activation
//!   quantizer (with a static scale, the one calibration would give the scaled site).
//!
//! After a fold the site's statistics are rescaled (`X → X·diag(s)⁻¹`: Gram, per-channel
//! statistics, samples), so the rounding that follows (RTN, GPTQ) and the static activation
//! scales see the model as it is stored. Sites are handled from the last of a block to the first,
//! as AWQ does, so each search sees the weights the later folds produced (v after o's fold).
//! A group in which a linear is kept as loaded (an override) is not scaled: the fold would
//! rewrite a weight the user asked to keep. Folded linears are stored in f32 until rounded.

use crate::format::act::{self, qmax, ActGranularity, ActQuantSpec, ActScale};
use crate::format::{IntSpec, QTensor};
use crate::linalg::sgemm;
use crate::model::arch::{Producer, Topology};
use crate::model::weights::ModelWeights;
use crate::quant::awq;
use crate::quant::calib::{Calibration, SiteStats};
use crate::quant::config::MAX_AWQ_GRID;
use crate::quant::rtn::{self, RtnOptions};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Default SmoothQuant migration strength (the paper's default for most models).
pub const DEFAULT_ALPHA: f32 = 0.5;
/// Default AQAS grid step (arXiv 2311.05161: 0 … 1 in steps of 0.05).
pub const DEFAULT_STEP: f32 = 0.05;
/// Smallest AQAS step (at most 1000 points, each a quantization of the group).
pub const MIN_STEP: f32 = 0.001;
/// Floor of a scale: an all-zero channel would otherwise divide by zero.
const MIN_SCALE: f32 = 1e-5;

/// Which scale transform runs before the weights are rounded.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Smooth {
    /// SmoothQuant with a fixed α.
    Smoothquant { alpha: f32 },
    /// AWQ's `mean|x|^α` scales, α searched on `grid` points for the weight quantizer.
    Awq { grid: usize },
    /// AQAS: SmoothQuant's form, α searched in steps of `step` with both quantizers active.
    Aqas { step: f32 },
}

impl Smooth {
    pub fn name(&self) -> &'static str {
        match self {
            Smooth::Smoothquant { .. } => "smoothquant",
            Smooth::Awq { .. } => "awq",
            Smooth::Aqas { .. } => "aqas",
        }
    }

    pub fn validate(&self) -> Result<()> {
        match *self {
            Smooth::Smoothquant { alpha }
                if !(alpha.is_finite() && (0.0..=1.0).contains(&alpha)) =>
            {
                Err(Error::config(
                    "smooth.alpha",
                    format!("{alpha} is outside 0..=1"),
                ))
            }
            Smooth::Awq { grid } if !(1..=MAX_AWQ_GRID).contains(&grid) => Err(Error::config(
                "smooth.grid",
                format!("{grid} is outside 1..={}", MAX_AWQ_GRID),
            )),
            Smooth::Aqas { step } if !(step.is_finite() && (MIN_STEP..=1.0).contains(&step)) => {
                Err(Error::config(
                    "smooth.step",
                    format!("{step} is outside {MIN_STEP}..=1"),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Does this transform need `SiteStats::samples`?
    pub fn needs_samples(&self) -> bool {
        matches!(self, Smooth::Aqas { .. })
    }
}

/// What the transform chose: `alpha[layer][site]`, `None` where the site was not scaled
/// (opaque producer, or a linear kept as loaded).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SmoothReport {
    pub method: String,
    pub alpha: Vec<Vec<Option<f32>>>,
    /// `scales[layer][site]`: the per-channel `s` folded in (empty where unscaled), to show a
    /// site's channel ranges before (`max|x_j|`) and after (`max|x_j| / s_j`) smoothing. Not in
    /// the JSON (tens of thousands of numbers).
    #[serde(skip)]
    pub scales: Vec<Vec<Vec<f32>>>,
}

/// How the activations will be quantized, for AQAS's objective: bits, granularity, and for a
/// static scale the percentile of per-token absmax it is calibrated at (`None`: the max).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActTarget {
    pub bits: u8,
    pub gran: ActGranularity,
    pub static_scale: bool,
    pub percentile: Option<f32>,
}

impl ActTarget {
    /// Quantize-dequantize `x` (rows of `cols`) as the model will. A static scale is the one
    /// calibration will give: from `absmax` (the max over every calibration token, which the
    /// samples alone would underestimate) or, with a percentile, from the samples, as
    /// `quant::act` computes them.
    fn apply(&self, x: &mut [f32], cols: usize, absmax: f32) -> Result<()> {
        let scale = if self.static_scale {
            let s = match self.percentile {
                None => absmax / qmax(self.bits),
                Some(_) => static_scale(x, cols, self.bits, self.percentile),
            };
            ActScale::Static(s)
        } else {
            ActScale::Dynamic
        };
        let gran = if self.static_scale {
            ActGranularity::PerTensor
        } else {
            self.gran
        };
        act::fake_quant(
            x,
            cols,
            &ActQuantSpec {
                bits: self.bits,
                gran,
                scale,
            },
        )
    }
}

/// The static per-tensor scale of activations `x` (rows of `cols`): `absmax / qmax`, with the
/// absmax the `p`-th percentile of the rows' absmax when `p` is given (clipping rare outlier
/// tokens), else the max.
pub fn static_scale(x: &[f32], cols: usize, bits: u8, p: Option<f32>) -> f32 {
    let qmax = qmax(bits);
    let mut rows: Vec<f32> = x
        .chunks_exact(cols.max(1))
        .map(|r| r.iter().fold(0f32, |m, v| m.max(v.abs())))
        .collect();
    let absmax = match p {
        None => rows.iter().fold(0f32, |m, &v| m.max(v)),
        Some(p) => percentile(&mut rows, p),
    };
    absmax / qmax
}

/// The `p`-th percentile (0..=100, nearest rank) of `v` (reordered); 0 for an empty slice.
pub fn percentile(v: &mut [f32], p: f32) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f32::total_cmp);
    let rank = ((p / 100.0) * v.len() as f32).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Averages `s` over the query heads that share a KV head, so the scale can be folded into the
/// shared value rows (`awq::fold`'s requirement under grouped-query attention).
fn tie_heads(s: &mut [f32], heads: Option<(usize, usize, usize)>) {
    let Some((n_head, n_kv, hd)) = heads else {
        return;
    };
    if n_head == n_kv || n_kv == 0 {
        return;
    }
    let rep = n_head / n_kv;
    for g in 0..n_kv {
        for i in 0..hd {
            let at = |r: usize| (g * rep + r) * hd + i;
            let avg = (0..rep).map(|r| s[at(r)]).sum::<f32>() / rep as f32;
            (0..rep).for_each(|r| s[at(r)] = avg);
        }
    }
}

/// SmoothQuant's scales for one site: `max|X_j|^α / max_l max_i |W_l[i, j]|^(1−α)`.
fn smoothquant_scales(
    max_x: &[f32],
    consumers: &[&[f32]],
    alpha: f32,
    heads: Option<(usize, usize, usize)>,
) -> Vec<f32> {
    let d = max_x.len();
    let mut max_w = vec![0f32; d];
    for w in consumers {
        for row in w.chunks_exact(d) {
            for (m, v) in max_w.iter_mut().zip(row) {
                *m = m.max(v.abs());
            }
        }
    }
    let mut s: Vec<f32> = max_x
        .iter()
        .zip(&max_w)
        .map(|(&x, &w)| {
            let num = x.max(MIN_SCALE).powf(alpha);
            let den = w.max(MIN_SCALE).powf(1.0 - alpha);
            (num / den).max(MIN_SCALE)
        })
        .collect();
    tie_heads(&mut s, heads);
    s
}

/// `c (n × rows) = x (n × d) · wᵀ (w: rows × d)`.
fn matmul_t(x: &[f32], w: &[f32], n: usize, d: usize, rows: usize) -> Vec<f32> {
    let mut c = vec![0f32; n * rows];
    sgemm(n, d, rows, x, d, 1, w, 1, d, &mut c, rows);
    c
}

/// AQAS: the α of `0, step, …, 1` minimising the summed output error of the consumers with both
/// quantizers active, on the site's samples. α = 0 wins ties (the least change).
fn aqas_search(
    st: &SiteStats,
    consumers: &[(&[f32], usize, IntSpec, &str)],
    step: f32,
    act: Option<&ActTarget>,
    heads: Option<(usize, usize, usize)>,
) -> Result<(f32, Vec<f32>)> {
    let (d, n) = (st.dim, st.sample_rows());
    if n == 0 {
        return Err(Error::config(
            "smooth",
            "AQAS needs activation samples from calibration; calibrate again",
        ));
    }
    let x = &st.samples[..n * d];
    let refs: Vec<Vec<f32>> = consumers
        .iter()
        .map(|&(w, rows, _, _)| matmul_t(x, w, n, d, rows))
        .collect();
    let points = (1.0 / step).round() as usize;
    let ws: Vec<&[f32]> = consumers.iter().map(|c| c.0).collect();
    let mut best: Option<(f64, f32, Vec<f32>)> = None;
    for i in 0..=points {
        let alpha = (i as f32 * step).min(1.0);
        let s = smoothquant_scales(&st.max_abs, &ws, alpha, heads);
        let mut xs: Vec<f32> = x.to_vec();
        for row in xs.chunks_exact_mut(d) {
            row.iter_mut().zip(&s).for_each(|(v, &f)| *v /= f);
        }
        if let Some(a) = act {
            let absmax = st
                .max_abs
                .iter()
                .zip(&s)
                .fold(0f32, |m, (&x, &f)| m.max(x / f));
            a.apply(&mut xs, d, absmax)?;
        }
        let mut err = 0f64;
        for (&(w, rows, spec, name), y_ref) in consumers.iter().zip(&refs) {
            let mut w_s = w.to_vec();
            for row in w_s.chunks_exact_mut(d) {
                row.iter_mut().zip(&s).for_each(|(v, &f)| *v *= f);
            }
            let q = rtn::quantize(&w_s, rows, d, spec, &RtnOptions::default(), name)?;
            let y = matmul_t(&xs, &q.dequantize()?, n, d, rows);
            err += y
                .iter()
                .zip(y_ref)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>();
        }
        if !err.is_finite() {
            return Err(Error::config(
                "smooth",
                format!(
                    "AQAS: the output error of {} went non-finite at α = {alpha}",
                    consumers.first().map_or("a site", |c| c.3)
                ),
            ));
        }
        if best.as_ref().is_none_or(|b| err < b.0) {
            best = Some((err, alpha, s));
        }
    }
    best.map(|(_, a, s)| (a, s))
        .ok_or_else(|| Error::config("smooth.step", "no α to try"))
}

/// Rescale a site's statistics for `X → X·diag(s)⁻¹`.
fn rescale_stats(st: &mut SiteStats, s: &[f32]) {
    let d = st.dim;
    for (i, row) in st.gram.chunks_exact_mut(d).enumerate() {
        for (j, g) in row.iter_mut().enumerate() {
            *g /= s[i] * s[j];
        }
    }
    for v in [&mut st.mean_abs, &mut st.max_abs, &mut st.l2] {
        v.iter_mut().zip(s).for_each(|(x, &f)| *x /= f);
    }
    // Scales are positive: dividing keeps each max a max and each min a min.
    for row in st
        .samples
        .chunks_exact_mut(d)
        .chain(st.pos_max.chunks_exact_mut(d))
        .chain(st.pos_min.chunks_exact_mut(d))
    {
        row.iter_mut().zip(s).for_each(|(x, &f)| *x /= f);
    }
}

/// Apply `smooth` to every block of `src`: returns the transformed model (folded linears in
/// f32), the calibration rescaled to it, and the α chosen per layer and site. `plan(name)` is
/// the integer grid a linear will be rounded to (`None`: kept as loaded, which blocks its
/// group); `act` the activation quantizer AQAS searches with.
pub fn smooth_model(
    src: &ModelWeights,
    calib: &Calibration,
    smooth: &Smooth,
    plan: &dyn Fn(&str) -> Option<IntSpec>,
    act: Option<&ActTarget>,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<(ModelWeights, Calibration, SmoothReport)> {
    smooth.validate()?;
    let topo = src.topology();
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
    let mut out = src.clone();
    let mut cal = calib.clone();
    let mut report = SmoothReport {
        method: smooth.name().to_string(),
        alpha: Vec::with_capacity(src.layers.len()),
        scales: Vec::with_capacity(src.layers.len()),
    };
    let n_layer = out.layers.len();
    for (li, (layer, stats)) in out.layers.iter_mut().zip(cal.layers.iter_mut()).enumerate() {
        if !progress(li, n_layer) {
            return Err(Error::Cancelled);
        }
        let (alphas, scales) = smooth_layer(layer, &topo, stats, smooth, plan, act)?;
        report.alpha.push(alphas);
        report.scales.push(scales);
    }
    if !progress(n_layer, n_layer) {
        return Err(Error::Cancelled);
    }
    Ok((out, cal, report))
}

/// One block's choice: α per site (`None`: unscaled) and the scales folded in (empty: none).
type LayerChoice = (Vec<Option<f32>>, Vec<Vec<f32>>);

fn smooth_layer(
    layer: &mut crate::model::weights::LayerWeights,
    topo: &Topology,
    stats: &mut [SiteStats],
    smooth: &Smooth,
    plan: &dyn Fn(&str) -> Option<IntSpec>,
    act: Option<&ActTarget>,
) -> Result<LayerChoice> {
    if stats.len() != topo.sites.len() || layer.linears.len() != topo.linears.len() {
        return Err(Error::config(
            "calibration",
            format!(
                "{} site statistics for a block of {} sites",
                stats.len(),
                topo.sites.len()
            ),
        ));
    }
    let specs: Vec<Option<IntSpec>> = layer.linears.iter().map(|l| plan(&l.name)).collect();
    let rows: Vec<usize> = layer.linears.iter().map(|l| l.w.rows).collect();
    let names: Vec<String> = layer.linears.iter().map(|l| l.name.clone()).collect();
    for (k, l) in layer.linears.iter().enumerate() {
        let st = &stats[topo.site_of(k)];
        st.check_width(&l.name, l.w.cols)?;
    }
    let mut w: Vec<Vec<f32>> = layer
        .linears
        .iter()
        .map(|l| l.w.dequantize())
        .collect::<Result<_>>()?;
    let mut touched = vec![false; w.len()];
    let mut alphas = vec![None; topo.sites.len()];
    let mut scales = vec![Vec::new(); topo.sites.len()];
    for site in (0..topo.sites.len()).rev() {
        let producer = match topo.sites[site].producer {
            Producer::Opaque(_) => continue,
            Producer::Linear { linear, .. } => Some(linear),
            Producer::Norm(_) => None,
        };
        let consumers = topo.consumers(site);
        if !consumers
            .iter()
            .chain(producer.iter())
            .all(|&k| specs[k].is_some())
        {
            continue;
        }
        let heads = topo.sites[site].heads;
        let st = &stats[site];
        let (alpha, s) = match *smooth {
            Smooth::Smoothquant { alpha } => {
                let ws: Vec<&[f32]> = consumers.iter().map(|&k| &w[k][..]).collect();
                (alpha, smoothquant_scales(&st.max_abs, &ws, alpha, heads))
            }
            Smooth::Awq { grid } => {
                let members: Vec<(&[f32], usize, IntSpec, &str)> = consumers
                    .iter()
                    .filter_map(|&k| specs[k].map(|sp| (&w[k][..], rows[k], sp, names[k].as_str())))
                    .collect();
                awq::search_scales(&members, st, grid, heads)?
            }
            Smooth::Aqas { step } => {
                let members: Vec<(&[f32], usize, IntSpec, &str)> = consumers
                    .iter()
                    .filter_map(|&k| specs[k].map(|sp| (&w[k][..], rows[k], sp, names[k].as_str())))
                    .collect();
                aqas_search(st, &members, step, act, heads)?
            }
        };
        if awq::fold(&mut w, &rows, layer, topo, site, &s) {
            for &k in consumers.iter().chain(producer.iter()) {
                touched[k] = true;
            }
            rescale_stats(&mut stats[site], &s);
            alphas[site] = Some(alpha);
            scales[site] = s;
        }
    }
    for (k, lin) in layer.linears.iter_mut().enumerate() {
        if touched[k] {
            lin.w = QTensor::from_f32(rows[k], lin.w.cols, &w[k]);
        }
    }
    Ok((alphas, scales))
}

#[cfg(test)]
mod tests;
