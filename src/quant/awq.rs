//! AWQ: "AWQ: Activation-aware Weight Quantization for LLM Compression and Acceleration",
//! Lin et al., arXiv 2306.00978 (§3.2–3.3), as restated in docs/methods.md §2.
//!
//! Salient input channels (large `mean|x_j|`) are protected by scaling them up before
//! quantization: `W' = W·diag(s)`, `x' = diag(s)⁻¹x`, with `s_j = mean|x_j|^α` (clamped to ≥
//! 1e-4, then divided by `√(max s · min s)` as the paper's code does). α is searched on a grid
//! of `grid` points over [0, 1] (α = 0 is plain RTN) minimising the output error of the linears
//! that share the input, `Σ_l ‖Q(W_l·diag(s))·diag(s)⁻¹x − W_l x‖²`, computed exactly from the
//! calibration Gram `XᵀX` (`quant::calib::output_error`), without the clip search. Then each
//! group's clipping range is searched (`clip`), weighting each weight's squared error by
//! `diag(X'ᵀX')` — the paper measures each group's output error on sample inputs; weighting by
//! the diagonal keeps the per-channel activation scale and drops cross-channel terms.
//!
//! The `1/s` is folded into the operation that produces the input, as the architecture's
//! topology says (`model::arch::Producer`), so the stored model is a standard one:
//! * a norm (Llama's q/k/v into `attn_norm`): its weight, and a LayerNorm's bias, are divided;
//! * rows of a linear, through an op that commutes with a positive per-channel scale (Llama's
//!   down into the rows of `up`, `silu(g) ⊙ (u/s) = (silu(g) ⊙ u)/s`; OPT's fc2 into fc1
//!   through ReLU; o into the rows of `v`: attention mixes positions but not channels). The
//!   producer's bias rows are divided too. With grouped-query attention a v row feeds
//!   `n_head / n_kv_head` query heads, so `s` is tied across the heads that share a KV head
//!   (`mean|x|` averaged over them) — legal for any GQA ratio, and exact when it is 1;
//! * nothing, where no scale passes exactly (GPT-2's GELU, post-LayerNorm OPT's residual
//!   stream): that group is not scaled.
//!
//! Scales are searched and folded from the last site of a block to the first, each search
//! seeing the weights as already modified by the folds before it (v after o's fold, up after
//! down's): a producing linear always reads an earlier site.
//! A group in which some linear is kept as loaded (a config override) is not scaled: a fold would
//! have to rewrite a weight the user asked to keep.

use crate::format::{Granularity, IntSpec, QTensor};
use crate::model::arch::{Producer, Topology};
use crate::model::weights::LayerWeights;
use crate::quant::calib::{output_error, SiteStats};
use crate::quant::rtn::{self, GroupGrid, RtnOptions};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// AWQ's parameters beyond the storage format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwqOptions {
    /// Points of the α grid over [0, 1].
    pub grid: usize,
    /// Search each group's clipping range after scaling.
    pub clip: bool,
}

impl Default for AwqOptions {
    fn default() -> Self {
        AwqOptions {
            grid: 20,
            clip: true,
        }
    }
}

/// The per-input-channel scales chosen for one layer (1 where a group was not scaled), indexed
/// by site (`Topology::sites`): what a report needs to express the quantized weights in the
/// original basis.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerScales {
    pub s: Vec<Vec<f32>>,
    pub alpha: Vec<f32>,
}

/// `s_j = max(mean|x_j|, ·)^α`, normalised; `tie` > 1 averages `mean|x|` over the query heads
/// sharing a KV head (`hd` channels per head).
pub(crate) fn scales_for(
    mean_abs: &[f32],
    alpha: f32,
    tie: Option<(usize, usize, usize)>,
) -> Vec<f32> {
    let m: Vec<f32> = match tie {
        Some((n_head, n_kv, hd)) if n_head != n_kv => {
            let rep = n_head / n_kv;
            let mut t = vec![0f32; mean_abs.len()];
            for g in 0..n_kv {
                for i in 0..hd {
                    let avg = (0..rep)
                        .map(|r| mean_abs[(g * rep + r) * hd + i])
                        .sum::<f32>()
                        / rep as f32;
                    for r in 0..rep {
                        t[(g * rep + r) * hd + i] = avg;
                    }
                }
            }
            t
        }
        _ => mean_abs.to_vec(),
    };
    let s: Vec<f32> = m
        .iter()
        .map(|&v| v.max(0.0).powf(alpha).max(1e-4))
        .collect();
    let (lo, hi) = s
        .iter()
        .fold((f32::INFINITY, 0f32), |(a, b), &v| (a.min(v), b.max(v)));
    let norm = (lo * hi).sqrt();
    s.iter().map(|&v| v / norm).collect()
}

/// Multiply column j of a row-major `rows × cols` matrix by `s[j]`.
fn scale_cols(w: &mut [f32], s: &[f32]) {
    for r in w.chunks_exact_mut(s.len()) {
        r.iter_mut().zip(s).for_each(|(v, &f)| *v *= f);
    }
}

/// Quantize `w` with RTN, clip range chosen by importance-weighted error when `imp` is given.
pub(crate) fn quantize_weighted(
    w: &[f32],
    rows: usize,
    cols: usize,
    spec: IntSpec,
    imp: Option<&[f32]>,
    name: &str,
) -> Result<QTensor> {
    let imp = match imp {
        None => return rtn::quantize(w, rows, cols, spec, &RtnOptions::default(), name),
        Some(i) => i,
    };
    let g = spec.gran.group_len(rows, cols, name)?;
    if spec.gran == Granularity::PerTensor {
        let tiled: Vec<f32> = (0..rows * cols).map(|i| imp[i % cols]).collect();
        let grid = GroupGrid::choose_weighted(w, &tiled, spec, name)?;
        let codes: Vec<u8> = w.iter().map(|&x| grid.code(x)).collect();
        return QTensor::from_int_parts(spec, rows, cols, &codes, &[grid.scale()], &[grid.zero()]);
    }
    let mut codes = vec![0u8; rows * cols];
    let mut scales = Vec::with_capacity(rows * cols / g);
    let mut zeros = Vec::with_capacity(rows * cols / g);
    for (k, (wg, cg)) in w.chunks(g).zip(codes.chunks_mut(g)).enumerate() {
        let c0 = (k * g) % cols;
        let grid = GroupGrid::choose_weighted(wg, &imp[c0..c0 + g], spec, name)?;
        for (c, &x) in cg.iter_mut().zip(wg) {
            *c = grid.code(x);
        }
        scales.push(grid.scale());
        zeros.push(grid.zero());
    }
    let zeros: &[u8] = if spec.sym { &[] } else { &zeros };
    QTensor::from_int_parts(spec, rows, cols, &codes, &scales, zeros)
}

/// One linear of a group sharing an input: its weights (current), shape and format.
struct Member {
    w: Vec<f32>,
    rows: usize,
    spec: IntSpec,
    name: String,
}

/// The α of the grid minimising the group's output error; returns (α, s).
fn search(
    members: &[Member],
    st: &SiteStats,
    grid: usize,
    tie: Option<(usize, usize, usize)>,
) -> Result<(f32, Vec<f32>)> {
    let cols = st.dim;
    let mut best: Option<(f64, f32, Vec<f32>)> = None;
    for i in 0..grid {
        let alpha = if grid > 1 {
            i as f32 / (grid - 1) as f32
        } else {
            0.0
        };
        let s = scales_for(&st.mean_abs, alpha, tie);
        let mut err = 0f64;
        for m in members {
            let mut ws = m.w.clone();
            scale_cols(&mut ws, &s);
            let q = rtn::quantize(&ws, m.rows, cols, m.spec, &RtnOptions::default(), &m.name)?;
            let mut eff = q.dequantize()?;
            let inv: Vec<f32> = s.iter().map(|v| 1.0 / v).collect();
            scale_cols(&mut eff, &inv);
            err += output_error(&m.w, &eff, cols, &st.gram)?;
        }
        // Strictly better only: α = 0 (plain RTN) wins ties.
        if best.as_ref().is_none_or(|b| err < b.0) {
            best = Some((err, alpha, s));
        }
    }
    best.map(|(_, a, s)| (a, s))
        .ok_or_else(|| Error::config("awq.grid", "needs at least one point"))
}

/// AWQ's scale search for a group of linears `(weights, rows, grid, name)` sharing the input
/// `st`: `(α, s)` (`quant::smooth` uses it as one of its transforms).
pub(crate) fn search_scales(
    members: &[(&[f32], usize, IntSpec, &str)],
    st: &SiteStats,
    grid: usize,
    tie: Option<(usize, usize, usize)>,
) -> Result<(f32, Vec<f32>)> {
    let members: Vec<Member> = members
        .iter()
        .map(|&(w, rows, spec, name)| Member {
            w: w.to_vec(),
            rows,
            spec,
            name: name.to_string(),
        })
        .collect();
    search(&members, st, grid, tie)
}

/// The consumer input channel whose scale row `r` (counted from the producer's `offset`) of
/// `site`'s producer carries: the same index, except for attention's output under GQA, where v
/// row `g·hd + i` feeds channel `h·hd + i` of every query head `h` of KV group `g` (heads
/// `g·rep .. g·rep + rep`), whose scales are tied, so the first one's.
fn producer_channel(topo: &Topology, site: usize, r: usize) -> usize {
    match topo.sites[site].heads {
        Some((n_head, n_kv, hd)) => {
            let hd = hd.max(1);
            let rep = n_head / n_kv.max(1);
            (r / hd) * rep * hd + r % hd
        }
        None => r,
    }
}

/// The rows of a producing linear that carry `site` (`(linear, offset, rows)`), if its producer
/// is a linear.
fn producer_rows(topo: &Topology, site: usize) -> Option<(usize, usize, usize)> {
    let st = &topo.sites[site];
    match st.producer {
        Producer::Linear { linear, offset, .. } => {
            let rows = match st.heads {
                Some((_, n_kv, hd)) => n_kv * hd,
                None => st.width,
            };
            Some((linear, offset, rows))
        }
        _ => None,
    }
}

/// Scale the input channels of `site`'s consumers by `s` and fold `1/s` into its producer (rows
/// and bias of a linear, or a norm's weight and bias). `w` holds the block linears' f32 weights
/// (`rows[k]` rows each). For attention's output under GQA, `s` must be tied across the heads
/// sharing a KV head. Returns false (and changes nothing) when the producer is opaque.
pub(crate) fn fold(
    w: &mut [Vec<f32>],
    rows: &[usize],
    layer: &mut LayerWeights,
    topo: &Topology,
    site: usize,
    s: &[f32],
) -> bool {
    let producer = topo.sites[site].producer;
    if matches!(producer, Producer::Opaque(_)) {
        return false;
    }
    for k in topo.consumers(site) {
        scale_cols(&mut w[k], s);
    }
    match producer {
        Producer::Linear { linear: p, .. } => {
            let (_, offset, n) = producer_rows(topo, site).unwrap_or((p, 0, 0));
            let cols = w[p].len() / rows[p].max(1);
            let factor = |r: usize| s[producer_channel(topo, site, r - offset)];
            for (r, row) in w[p].chunks_exact_mut(cols).enumerate() {
                if (offset..offset + n).contains(&r) {
                    let f = factor(r);
                    row.iter_mut().for_each(|v| *v /= f);
                }
            }
            if let Some(b) = layer.linears[p].bias.as_mut() {
                for (r, v) in b.iter_mut().enumerate().skip(offset).take(n) {
                    *v /= factor(r);
                }
            }
        }
        Producer::Norm(n) => {
            let norm = &mut layer.norms[n];
            norm.weight.iter_mut().zip(s).for_each(|(v, &f)| *v /= f);
            if let Some(b) = norm.bias.as_mut() {
                b.iter_mut().zip(s).for_each(|(v, &f)| *v /= f);
            }
        }
        Producer::Opaque(_) => {}
    }
    true
}

/// AWQ for one block: search and fold scales, then quantize the seven linears with the formats
/// `plan(name)` gives (`None`: keep as loaded). Returns the scales used.
pub fn quantize_layer(
    layer: &mut LayerWeights,
    topo: &Topology,
    stats: &[SiteStats],
    plan: &dyn Fn(&str) -> Option<IntSpec>,
    opts: &AwqOptions,
) -> Result<LayerScales> {
    if opts.grid == 0 || opts.grid > 1000 {
        return Err(Error::config(
            "awq.grid",
            format!("{} is outside 1..=1000", opts.grid),
        ));
    }
    if stats.len() != topo.sites.len() || layer.linears.len() != topo.linears.len() {
        return Err(Error::config(
            "calibration",
            format!(
                "{} site statistics and {} linears for a block of {} sites and {} linears",
                stats.len(),
                layer.linears.len(),
                topo.sites.len(),
                topo.linears.len()
            ),
        ));
    }
    let mut out = LayerScales {
        s: stats.iter().map(|st| vec![1.0; st.dim]).collect(),
        alpha: vec![0.0; stats.len()],
    };
    // Current f32 weights of the block linears.
    let mut w: Vec<Vec<f32>> = layer
        .linears()
        .iter()
        .map(|l| l.w.dequantize())
        .collect::<Result<_>>()?;
    let specs: Vec<Option<IntSpec>> = layer.linears().iter().map(|l| plan(&l.name)).collect();
    for (k, l) in layer.linears().iter().enumerate() {
        let st = &stats[topo.site_of(k)];
        st.check_width(&l.name, l.w.cols)?;
    }
    let rows: Vec<usize> = layer.linears().iter().map(|l| l.w.rows).collect();
    let names: Vec<String> = layer.linears().iter().map(|l| l.name.clone()).collect();
    for site in (0..topo.sites.len()).rev() {
        let consumers = topo.consumers(site);
        let producer = match topo.sites[site].producer {
            Producer::Opaque(_) => continue,
            Producer::Linear { linear, .. } => Some(linear),
            Producer::Norm(_) => None,
        };
        let all_quantized = consumers
            .iter()
            .chain(producer.iter())
            .all(|&k| specs[k].is_some());
        if !all_quantized {
            continue;
        }
        let st = &stats[site];
        let members: Vec<Member> = consumers
            .iter()
            .filter_map(|&k| {
                specs[k].map(|spec| Member {
                    w: w[k].clone(),
                    rows: rows[k],
                    spec,
                    name: names[k].clone(),
                })
            })
            .collect();
        let (alpha, s) = search(&members, st, opts.grid, topo.sites[site].heads)?;
        fold(&mut w, &rows, layer, topo, site, &s);
        out.alpha[site] = alpha;
        out.s[site] = s;
    }
    // Quantize with the clip search weighted by the scaled inputs' energy diag(XᵀX)/s².
    for (k, lin) in layer.linears_mut().iter_mut().enumerate() {
        let Some(spec) = specs[k] else { continue };
        let site = topo.site_of(k);
        let st = &stats[site];
        let imp: Vec<f32> = (0..st.dim)
            .map(|j| st.gram[j * st.dim + j] / (out.s[site][j] * out.s[site][j]))
            .collect();
        lin.w = quantize_weighted(
            &w[k],
            rows[k],
            st.dim,
            spec,
            opts.clip.then_some(&imp[..]),
            &names[k],
        )?;
    }
    Ok(out)
}

/// The dequantized weights `ŵ` of linear `k` (of `LayerWeights::linears()`, `rows × cols`)
/// expressed in the original model's basis: input channels divided by the scale of their site,
/// and, for a producing linear (v, up), the rows it produces multiplied back by the scale
/// folded into them. Compare with the original weights on the original calibration Gram.
pub fn effective_weights(
    q: &[f32],
    k: usize,
    cols: usize,
    scales: &LayerScales,
    topo: &Topology,
) -> Vec<f32> {
    let s_in = &scales.s[topo.site_of(k)];
    // Sites whose producer is this linear, with the rows they cover.
    let produced: Vec<(usize, usize, usize)> = (0..topo.sites.len())
        .filter_map(|site| {
            producer_rows(topo, site)
                .filter(|&(p, _, _)| p == k)
                .map(|(_, offset, n)| (site, offset, n))
        })
        .collect();
    let mut e = q.to_vec();
    for (r, row) in e.chunks_exact_mut(cols).enumerate() {
        let f = produced
            .iter()
            .find(|&&(_, offset, n)| (offset..offset + n).contains(&r))
            .map_or(1.0, |&(site, offset, _)| {
                scales.s[site][producer_channel(topo, site, r - offset)]
            });
        row.iter_mut().zip(s_in).for_each(|(v, &si)| *v *= f / si);
    }
    e
}

/// The inverse of `effective_weights`: original weights `w` of linear `k` in the scaled basis
/// the stored model uses (what LoRC compensates against after AWQ).
pub fn scaled_weights(
    w: &[f32],
    k: usize,
    cols: usize,
    scales: &LayerScales,
    topo: &Topology,
) -> Vec<f32> {
    let ones = LayerScales {
        s: scales
            .s
            .iter()
            .map(|v| v.iter().map(|x| 1.0 / x).collect())
            .collect(),
        alpha: scales.alpha.clone(),
    };
    effective_weights(w, k, cols, &ones, topo)
}

#[cfg(test)]
mod tests;
