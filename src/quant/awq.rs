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
//! The `1/s` is folded into the previous operation, so the stored model is a standard one:
//! * q, k, v: into `attn_norm` (an RMSNorm weight multiplies each channel);
//! * gate, up: into `ffn_norm`;
//! * down: into the rows of `up` (`silu(g) ⊙ (u/s) = (silu(g) ⊙ u)/s`);
//! * o: into the rows of `v`. Attention mixes positions but not channels, so scaling a row of v
//!   scales that channel of the attention output. With grouped-query attention a v row feeds
//!   `n_head / n_kv_head` query heads, so `s` is tied across the heads that share a KV head
//!   (`mean|x|` averaged over them) — legal for any GQA ratio, and exact when it is 1.
//!
//! Scales are searched and folded in the order o, qkv, down, gate/up, each search seeing the
//! weights as already modified by the folds before it (v after o's fold, up after down's).
//! A group in which some linear is kept as loaded (a config override) is not scaled: a fold would
//! have to rewrite a weight the user asked to keep.

use crate::model::config::ModelConfig;
use crate::model::llama::Site;
use crate::model::weights::LayerWeights;
use crate::quant::calib::{output_error, SiteStats};
use crate::quant::format::{Granularity, IntSpec, QTensor};
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
/// by `Site::index()`: what a report needs to express the quantized weights in the original basis.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerScales {
    pub s: [Vec<f32>; 4],
    pub alpha: [f32; 4],
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

/// The consumer input channel whose scale row `r` of `site`'s producer carries: for up → down
/// the same index; for v → o, v row `g·hd + i` feeds channel `h·hd + i` of every query head `h`
/// of KV group `g` (heads `g·rep .. g·rep + rep`), whose scales are tied, so the first one's.
fn producer_channel(site: Site, r: usize, cfg: &ModelConfig) -> usize {
    if site == Site::AttnOut {
        let hd = cfg.head_dim.max(1);
        let rep = cfg.n_head / cfg.n_kv_head.max(1);
        (r / hd) * rep * hd + r % hd
    } else {
        r
    }
}

/// The linears (indices into `LayerWeights::linears()`) that read `site`, and the one whose rows
/// produce it (`None`: the RMSNorm before it).
fn members_of(site: Site) -> (&'static [usize], Option<usize>) {
    match site {
        Site::AttnIn => (&[0, 1, 2], None),
        Site::AttnOut => (&[3], Some(2)),
        Site::FfnIn => (&[4, 5], None),
        Site::DownIn => (&[6], Some(5)),
    }
}

/// Scale the input channels of `site`'s consumers by `s` and fold `1/s` into its producer (the
/// rows of v or up, or the norm weight). `w` holds the seven linears' f32 weights (`rows[k]` rows
/// each). For `Site::AttnOut` under GQA, `s` must be tied across the heads sharing a KV head;
/// `cfg` says how v rows map to attention-output channels.
pub(crate) fn fold(
    w: &mut [Vec<f32>],
    rows: &[usize],
    layer: &mut LayerWeights,
    cfg: &ModelConfig,
    site: Site,
    s: &[f32],
) {
    let (consumers, producer) = members_of(site);
    for &k in consumers {
        scale_cols(&mut w[k], s);
    }
    match producer {
        Some(p) => {
            let cols = w[p].len() / rows[p].max(1);
            for (r, row) in w[p].chunks_exact_mut(cols).enumerate() {
                let f = s[producer_channel(site, r, cfg)];
                row.iter_mut().for_each(|v| *v /= f);
            }
        }
        None => {
            let norm = if site == Site::AttnIn {
                &mut layer.attn_norm
            } else {
                &mut layer.ffn_norm
            };
            norm.iter_mut().zip(s).for_each(|(v, &f)| *v /= f);
        }
    }
}

/// AWQ for one block: search and fold scales, then quantize the seven linears with the formats
/// `plan(name)` gives (`None`: keep as loaded). Returns the scales used.
pub fn quantize_layer(
    layer: &mut LayerWeights,
    cfg: &ModelConfig,
    stats: &[SiteStats; 4],
    plan: &dyn Fn(&str) -> Option<IntSpec>,
    opts: &AwqOptions,
) -> Result<LayerScales> {
    if opts.grid == 0 || opts.grid > 1000 {
        return Err(Error::config(
            "awq.grid",
            format!("{} is outside 1..=1000", opts.grid),
        ));
    }
    let tie = Some((cfg.n_head, cfg.n_kv_head, cfg.head_dim));
    let mut out = LayerScales {
        s: Site::ALL.map(|s| vec![1.0; stats[s.index()].dim]),
        alpha: [0.0; 4],
    };
    // Current f32 weights of q, k, v, o, gate, up, down.
    let mut w: Vec<Vec<f32>> = layer
        .linears()
        .iter()
        .map(|l| l.w.dequantize())
        .collect::<Result<_>>()?;
    let specs: Vec<Option<IntSpec>> = layer.linears().iter().map(|l| plan(&l.name)).collect();
    for (k, l) in layer.linears().iter().enumerate() {
        let st = &stats[Site::of_linear(k).index()];
        if st.dim != l.w.cols || st.gram.len() != st.dim * st.dim {
            return Err(Error::config(
                "calibration",
                format!(
                    "{}: statistics of width {} for {} inputs",
                    l.name, st.dim, l.w.cols
                ),
            ));
        }
    }
    let rows: Vec<usize> = layer.linears().iter().map(|l| l.w.rows).collect();
    let names: Vec<String> = layer.linears().iter().map(|l| l.name.clone()).collect();
    for site in [Site::AttnOut, Site::AttnIn, Site::DownIn, Site::FfnIn] {
        let (consumers, producer) = members_of(site);
        let all_quantized = consumers
            .iter()
            .chain(producer.iter())
            .all(|&k| specs[k].is_some());
        if !all_quantized {
            continue;
        }
        let st = &stats[site.index()];
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
        let site_tie = if site == Site::AttnOut { tie } else { None };
        let (alpha, s) = search(&members, st, opts.grid, site_tie)?;
        fold(&mut w, &rows, layer, cfg, site, &s);
        out.alpha[site.index()] = alpha;
        out.s[site.index()] = s;
    }
    // Quantize with the clip search weighted by the scaled inputs' energy diag(XᵀX)/s².
    for (k, lin) in layer.linears_mut().into_iter().enumerate() {
        let Some(spec) = specs[k] else { continue };
        let site = Site::of_linear(k).index();
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
/// and, for the producers v and up, rows multiplied back by the scale folded into them. Compare
/// with the original weights on the original calibration Gram.
pub fn effective_weights(
    q: &[f32],
    k: usize,
    cols: usize,
    scales: &LayerScales,
    cfg: &ModelConfig,
) -> Vec<f32> {
    let s_in = &scales.s[Site::of_linear(k).index()];
    let s_out = match k {
        2 => Some(Site::AttnOut),
        5 => Some(Site::DownIn),
        _ => None,
    };
    let mut e = q.to_vec();
    for (r, row) in e.chunks_exact_mut(cols).enumerate() {
        let f = s_out.map_or(1.0, |site| {
            scales.s[site.index()][producer_channel(site, r, cfg)]
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
    cfg: &ModelConfig,
) -> Vec<f32> {
    let ones = LayerScales {
        s: scales
            .s
            .clone()
            .map(|v| v.iter().map(|x| 1.0 / x).collect()),
        alpha: scales.alpha,
    };
    effective_weights(w, k, cols, &ones, cfg)
}

#[cfg(test)]
mod tests;
