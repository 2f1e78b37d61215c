//! What the page's Tender pictures draw (Lee et al., "Tender: Accelerating Large Language Models
//! via Tensor Decomposition and Runtime Requantization", arXiv 2406.12930, ISCA 2024;
//! docs/methods.md §6; `format::tender` is the reference every number here comes from):
//!
//! - `channels`: one site's channels sorted by their largest deviation from the chunk's bias,
//!   `a_j = max_t |x_tj − β_j|`, with the power-of-two thresholds `θ_i` and each channel's group;
//! - `identity`: the shift-accumulate identity on one row and one output: the integer partial
//!   sums `P_i` of the groups, `acc` after each shift from the largest group down, and the final
//!   `acc · s_0 · sw_j + (β·ŵ)_j` beside the float products `x·wᵀ` and `x̂·ŵᵀ`.
//!
//! Both read the rows of chunk position 0 of the current text: the first `T` tokens (BOS first,
//! as evaluation windows start), run through the model as loaded on the CPU up to the chosen
//! site, divided by the current scale transform's per-channel factors when the session applied
//! the same transform (the rows the activation quantizer sees). The decomposition is the one
//! dynamic Tender computes from those rows (`TenderChunk::from_rows`); a static plan would use
//! calibration's ranges at that position instead. Plain serde data; no drawing here.

use crate::format::tender::{self, TenderChunk, TenderCodes, TenderSpec};
use crate::format::{Granularity, IntSpec};
use crate::model::cpu::Cpu;
use crate::model::net::Model;
use crate::playground::session::Session;
use crate::quant::config::{Method, QuantConfig};
use crate::quant::rtn::{self, RtnOptions};
use crate::{Error, Result};
use serde::Serialize;

/// `value` against the fake-quant float `x̂·ŵᵀ`, relative to `Σ_j |x̂_j ŵ_j|`: both sides add
/// the same exact products; `value` rounds `s_0 · sw` and the result to f32 once each, and each
/// `x̂_j` is one f32 rounding of `β_j + q_j s_j` (a few f32 ulps, 2⁻²⁴ ≈ 6·10⁻⁸, of the sum).
pub const IDENTITY_REL_TOL: f64 = 1e-6;

/// Weight bits the identity uses when the config leaves the weights unquantized (or its
/// weights are not a 2–8-bit integer grid): INT8, Tender's W8.
pub const DEFAULT_WEIGHT_BITS: u8 = 8;

/// One site's channels in the first chunk, largest deviation first.
#[derive(Clone, Debug, Serialize)]
pub struct TenderChannels {
    pub layer: usize,
    pub site: usize,
    pub site_name: &'static str,
    /// Rows of the chunk (tokens; at most `T`) and channels.
    pub rows: usize,
    pub cols: usize,
    pub spec: TenderSpec,
    /// Channel ids sorted by `a_j`, largest first (ties by id).
    pub channels: Vec<usize>,
    /// `a_j = max_t |x_tj − β_j|` in the same order.
    pub deviation: Vec<f32>,
    /// The group of each channel, in the same order.
    pub group: Vec<u8>,
    /// `β_j` by channel id.
    pub bias: Vec<f32>,
    pub tmax: f32,
    /// `θ_i = tmax · 2^(i−(k−1))`, `i = 0..k` (each twice the one before).
    pub thresholds: Vec<f32>,
    /// Channels in each group, `0..k`.
    pub group_sizes: Vec<usize>,
    /// The rows were divided by the session's scale-transform factors.
    pub smoothed: bool,
}

/// The shift-accumulate identity on row 0 of the chunk and output `out_row` of `linear`.
#[derive(Clone, Debug, Serialize)]
pub struct TenderIdentity {
    /// The first linear reading the site (its weight row `out_row`).
    pub linear: String,
    pub out_row: usize,
    /// Per-row symmetric RTN bits of that weight row.
    pub w_bits: u8,
    pub groups: u8,
    /// `P_i = Σ_{g_j = i} q_j · qw_j`, `i = 0..k`.
    pub partials: Vec<i64>,
    /// `acc` after each step `acc ← 2·acc + P_i`, for `i = k−1` down to 0.
    pub steps: Vec<i64>,
    /// The final `acc` (`= Σ_i 2^i P_i`), as `format::tender::tender_linear` computed it.
    pub acc: i64,
    /// `s_0 = θ_0 / qmax`, the weight row's scale `sw`, and their product (rounded to f32).
    pub s0: f32,
    pub sw: f32,
    pub s0_sw: f32,
    /// `(β·ŵ)_j`, the bias term added once per chunk.
    pub beta_w: f64,
    /// `acc · s_0 · sw + (β·ŵ)_j` (`tender_linear`'s output, without the layer's own bias).
    pub value: f32,
    /// `x̂·ŵᵀ` in f64: the fake-quantized row against the quantized weight row.
    pub fake_quant: f64,
    /// `x·wᵀ` in f64: the row and the weight row unquantized.
    pub float: f64,
    /// `Σ_j |x̂_j ŵ_j|`, and the bound `IDENTITY_REL_TOL · Σ` on `|value − fake_quant|`.
    pub abs_sum: f64,
    pub tolerance: f64,
}

/// Both pictures from one pass of the model.
#[derive(Clone, Debug, Serialize)]
pub struct TenderView {
    pub channels: TenderChannels,
    pub identity: TenderIdentity,
}

/// The channel picture of `rows` (row-major, `cols` wide: one chunk).
pub fn channels_of(
    rows: &[f32],
    cols: usize,
    chunk: &TenderChunk,
) -> Result<(Vec<usize>, Vec<f32>, Vec<u8>)> {
    if cols == 0
        || rows.is_empty()
        || !rows.len().is_multiple_of(cols)
        || chunk.bias.len() != cols
        || chunk.group.len() != cols
    {
        return Err(Error::config(
            "tender view",
            format!(
                "{} values and a chunk of {} channels are not rows of {cols}",
                rows.len(),
                chunk.bias.len()
            ),
        ));
    }
    let mut dev = vec![0f32; cols];
    for r in rows.chunks_exact(cols) {
        for (j, (&v, d)) in r.iter().zip(dev.iter_mut()).enumerate() {
            *d = d.max((v - chunk.bias[j]).abs());
        }
    }
    let mut order: Vec<usize> = (0..cols).collect();
    order.sort_by(|&a, &b| dev[b].total_cmp(&dev[a]).then(a.cmp(&b)));
    let deviation = order.iter().map(|&j| dev[j]).collect();
    let group = order.iter().map(|&j| chunk.group[j]).collect();
    Ok((order, deviation, group))
}

/// Weight bits of the identity for `cfg`: the config's default bits when it quantizes the
/// weights to 2–8 bits, else `DEFAULT_WEIGHT_BITS`.
pub fn weight_bits(cfg: &QuantConfig) -> u8 {
    match cfg.method {
        Method::None => DEFAULT_WEIGHT_BITS,
        _ if (2..=8).contains(&cfg.default.bits) => cfg.default.bits,
        _ => DEFAULT_WEIGHT_BITS,
    }
}

/// The identity on row 0 of `rows` (one chunk, `cols` wide, decomposed by `codes`' chunk 0)
/// against the weight row `w` (length `cols`, unquantized) quantized per-row symmetric at
/// `w_bits`.
pub fn identity_of(
    rows: &[f32],
    cols: usize,
    spec: &TenderSpec,
    w: &[f32],
    w_bits: u8,
    linear: &str,
    out_row: usize,
) -> Result<TenderIdentity> {
    if w.len() != cols || rows.len() < cols {
        return Err(Error::config(
            "tender view",
            format!(
                "a weight row of {} for rows of {cols} ({} values)",
                w.len(),
                rows.len()
            ),
        ));
    }
    let n = rows.len() / cols;
    let codes = tender::quantize(&rows[..n * cols], cols, n, spec, None)?;
    let wq = rtn::quantize(
        w,
        1,
        cols,
        IntSpec {
            bits: w_bits,
            gran: Granularity::PerRow,
            sym: true,
        },
        &RtnOptions { clip_search: false },
        linear,
    )?;
    let chunk = codes.chunks[0].clone();
    let one = TenderCodes {
        spec: *spec,
        rows: 1,
        cols,
        codes: codes.codes[..cols].to_vec(),
        chunks: vec![chunk.clone()],
        chunk_of_row: vec![0],
    };
    let (y, accs) = tender::tender_linear(&one, &wq, None)?;
    let (qw, sw) = tender::weight_codes(&wq)?;
    let k = spec.groups as usize;
    let mut partials = vec![0i64; k];
    for (j, (&q, &g)) in one.codes.iter().zip(&chunk.group).enumerate() {
        partials[g as usize] += q as i64 * qw[j] as i64;
    }
    let mut steps = Vec::with_capacity(k);
    let mut acc = 0i64;
    for &p in partials.iter().rev() {
        acc = (acc << 1) + p;
        steps.push(acc);
    }
    let w_hat = wq.dequantize()?;
    let x_hat = one.values();
    let beta_w: f64 = chunk
        .bias
        .iter()
        .zip(&w_hat)
        .map(|(&b, &v)| b as f64 * v as f64)
        .sum();
    let fake_quant: f64 = x_hat
        .iter()
        .zip(&w_hat)
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum();
    let abs_sum: f64 = x_hat
        .iter()
        .zip(&w_hat)
        .map(|(&a, &b)| (a as f64 * b as f64).abs())
        .sum();
    let float: f64 = rows[..cols]
        .iter()
        .zip(w)
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum();
    let s0 = spec.scale(chunk.tmax, 0);
    Ok(TenderIdentity {
        linear: linear.to_string(),
        out_row,
        w_bits,
        groups: spec.groups,
        partials,
        steps,
        acc: accs[0],
        s0,
        sw: sw[0],
        s0_sw: s0 * sw[0],
        beta_w,
        value: y[0],
        fake_quant,
        float,
        abs_sum,
        tolerance: IDENTITY_REL_TOL * abs_sum,
    })
}

/// The input of `site` of block `layer` for the first `spec.chunk` tokens of `text` (BOS first
/// when the model asks for it), from the model as loaded on the CPU; the pass stops there.
fn site_rows(
    s: &Session,
    text: &str,
    layer: usize,
    site: usize,
    t: usize,
) -> Result<(Vec<f32>, usize)> {
    let src = s.source();
    let n_layer = src.layers.len();
    let n_site = src.topology().sites.len();
    if layer >= n_layer || site >= n_site {
        return Err(Error::config(
            "tender view",
            format!("layer {layer} site {site} is outside {n_layer} layers of {n_site} sites"),
        ));
    }
    let mut tokens = s.tokenize(text)?;
    tokens.truncate(t.min(src.config.max_ctx.max(1)));
    if tokens.len() < 2 {
        return Err(Error::config(
            "text",
            "too short to observe activations (fewer than 2 tokens)",
        ));
    }
    if let Some(b) = s.bos() {
        tokens[0] = b;
    }
    let cpu_copy;
    let model = match s.cpu_loaded() {
        Some(m) => m,
        None => {
            cpu_copy = Model::load(&Cpu, src)?;
            &cpu_copy
        }
    };
    let mut got: Option<(Vec<f32>, usize)> = None;
    let r = model.forward_observed(&Cpu, &tokens, &mut |l, st, x| {
        if l == layer && st == site {
            got = Some((x.data.clone(), x.cols));
            // Nothing later is needed: stop the pass here.
            return Err(Error::Cancelled);
        }
        Ok(())
    });
    match (r, got) {
        (_, Some(g)) => Ok(g),
        (Err(e), None) => Err(e),
        (Ok(_), None) => Err(Error::config(
            "tender view",
            format!("the forward pass never reached layer {layer} site {site}"),
        )),
    }
}

/// Both Tender pictures for `layer` and `site` under `cfg` (its `act.tender` and bits, its
/// weight bits), on the first chunk of `text`; `out_row` picks the weight row of the identity.
pub fn view(
    s: &Session,
    cfg: &QuantConfig,
    text: &str,
    layer: usize,
    site: usize,
    out_row: usize,
) -> Result<TenderView> {
    cfg.validate()?;
    let (act, t) = match cfg.act.as_ref().and_then(|a| a.tender.map(|t| (a, t))) {
        Some(x) => x,
        None => {
            return Err(Error::config(
                "act.tender",
                "choose Tender as the activation method to see its decomposition",
            ))
        }
    };
    let spec = act.tender_spec(&t);
    let (mut rows, cols) = site_rows(s, text, layer, site, spec.chunk)?;
    // The transform's factors, when the session holds this config's transform.
    let scales = s
        .smooth_report()
        .filter(|_| cfg.smooth.is_some() && s.quant().smooth == cfg.smooth)
        .and_then(|r| r.scales.get(layer))
        .and_then(|l| l.get(site))
        .filter(|v| v.len() == cols)
        .cloned();
    if let Some(f) = &scales {
        for r in rows.chunks_exact_mut(cols) {
            r.iter_mut().zip(f).for_each(|(x, s)| *x /= s);
        }
    }
    let chunk = TenderChunk::from_rows(&rows, cols, &spec)?;
    let (channels, deviation, group) = channels_of(&rows, cols, &chunk)?;
    let topo = s.source().topology();
    let k = *topo
        .consumers(site)
        .first()
        .ok_or_else(|| Error::config("tender view", format!("no linear reads site {site}")))?;
    let lin = &s.source().layers[layer].linears()[k];
    if lin.w.cols != cols || out_row >= lin.w.rows {
        return Err(Error::config(
            "output row",
            format!(
                "{out_row} is outside {} (rows {} × {} columns for {cols} channels)",
                lin.name, lin.w.rows, lin.w.cols
            ),
        ));
    }
    let w = lin.w.dequantize()?;
    let mut w_row = w[out_row * cols..(out_row + 1) * cols].to_vec();
    // The transform moves the factors into the weight's columns: x/s · (w·s)ᵀ = x·wᵀ.
    if let Some(f) = &scales {
        w_row.iter_mut().zip(f).for_each(|(w, s)| *w *= s);
    }
    let identity = identity_of(
        &rows,
        cols,
        &spec,
        &w_row,
        weight_bits(cfg),
        &lin.name,
        out_row,
    )?;
    let n = rows.len() / cols;
    Ok(TenderView {
        channels: TenderChannels {
            layer,
            site,
            site_name: topo.sites[site].name,
            rows: n,
            cols,
            spec,
            channels,
            deviation,
            group,
            bias: chunk.bias.clone(),
            tmax: chunk.tmax,
            thresholds: (0..spec.groups)
                .map(|i| spec.threshold(chunk.tmax, i))
                .collect(),
            group_sizes: chunk.group_sizes(spec.groups),
            smoothed: scales.is_some(),
        },
        identity,
    })
}
