//! Non-uniform (codebook) weight quantization, docs/methods.md §1–2:
//! * learned: a 1-D k-means codebook of `2^b` levels per output row or per input column, the
//!   "k-means / SqueezeLLM-lite" baseline (SqueezeLLM, Kim et al., arXiv 2306.07629, without its
//!   Fisher weighting), optionally with dense-and-sparse outliers: the largest-magnitude fraction
//!   of the weights is kept exactly (f16, sparse) and left out of the fit;
//! * fixed: NF4 (QLoRA, arXiv 2305.14314), FP4 E2M1 and dINT (W4A8, arXiv 2311.05161;
//!   docs/dint.md), scaled by each group's absmax.
//!
//! k-means is deterministic: values sorted, levels initialised at the quantiles `(k + ½)/K`
//! (or, when the set has at most K distinct values, at exactly those values, so it is then
//! reproduced exactly), then `KMEANS_ITERS` Lloyd iterations (assignment to the nearest level,
//! ties to the lower; an empty cluster keeps its level). Levels are rounded to f16 (what the
//! format stores) before the final assignment, so every code is the nearest stored level.
//!
//! Activation-weighted k-means (`kmeans_weighted`): plain k-means minimises the weight error
//! `Σ (w − ŵ)²`, but what matters is the layer's output error `‖X(W − Ŵ)ᵀ‖²`, whose diagonal
//! part is `Σ_j H_jj (w_ij − ŵ_ij)²` with `H = XᵀX` from calibration. Weighting each weight of a
//! row by its input channel's `H_jj` — SqueezeLLM's sensitivity-weighted k-means with the Fisher
//! diagonal replaced by this Hessian diagonal (SqueezeLLM §3.1 relates the two) — keeps the
//! levels near the weights of high-energy channels. Initialisation is at the weighted quantiles,
//! then the same Lloyd iterations with weighted means. Only per-row codebooks are affected: within
//! one column every weight has the same `H_jj`.

use crate::format::{check_bits, AddOns, Codebook, Format, Granularity, QTensor, E2M1, NF4};
use crate::quant::rtn::f16_ceil;
use crate::{Error, Result};
use half::f16;
use serde::{Deserialize, Serialize};

/// Lloyd iterations of the k-means fit.
pub const KMEANS_ITERS: usize = 20;
/// Largest outlier fraction accepted.
pub const MAX_OUTLIER_FRAC: f32 = 0.1;

/// Which axis gets its own codebook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    Row,
    Column,
}

/// k-means parameters beyond the bit width.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KmeansOptions {
    pub per: Per,
    /// Fraction of weights (largest |w|) kept as sparse f16 outliers; 0 for none.
    pub outlier_frac: f32,
    /// Weight each row's fit by the calibration Hessian diagonal (`kmeans_weighted`); needs
    /// calibration. Left out of the JSON when false, so older share links keep their meaning.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub weighted: bool,
}

impl Default for KmeansOptions {
    fn default() -> Self {
        KmeansOptions {
            per: Per::Row,
            outlier_frac: 0.0,
            weighted: false,
        }
    }
}

/// Sorted levels of a 1-D k-means fit of `values` (any order) with `k` levels, f16-rounded.
pub fn kmeans_1d(values: &[f32], k: usize) -> Vec<f32> {
    kmeans_1d_by(values, k, lloyd)
}

/// `kmeans_1d` with the Lloyd loop given (tests compare `lloyd` with the loop it replaced).
pub(crate) fn kmeans_1d_by(values: &[f32], k: usize, iterate: fn(&[f32], &mut [f32])) -> Vec<f32> {
    let v = sorted(values);
    let mut distinct = v.clone();
    distinct.dedup();
    if distinct.len() <= k {
        // At most k distinct values: they are the levels, and the fit is exact.
        let last = distinct.last().copied().unwrap_or(0.0);
        let mut l = distinct;
        l.resize(k, last);
        return l.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
    }
    let quantiles = |src: &[f32]| -> Vec<f32> {
        (0..k)
            .map(|i| src[((2 * i + 1) * src.len() / (2 * k)).min(src.len() - 1)])
            .collect()
    };
    let mut levels = quantiles(&v);
    if distinct_count(&levels) < k {
        // A value so frequent that two quantiles coincide would waste a level for good (its
        // twin's cluster stays empty); take the quantiles of the distinct values instead.
        levels = quantiles(&distinct);
    }
    iterate(&v, &mut levels);
    levels.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

/// `values` in the order of `f32::total_cmp` (−0 before +0), by a radix sort on the same key
/// `total_cmp` compares: equal keys are equal bits, so the result is the comparison sort's.
pub(crate) fn sorted(values: &[f32]) -> Vec<f32> {
    let mut v = values.to_vec();
    radsort::sort_by_key(&mut v, |x| {
        let b = x.to_bits() as i32;
        b ^ (((b >> 31) as u32) >> 1) as i32
    });
    v
}

/// `KMEANS_ITERS` Lloyd iterations on sorted `v` from sorted `levels`. Values and levels are
/// sorted, so clusters are runs of `v`: the rule is one sweep that moves on from level `c` at
/// the first value nearer (or as near) to level `c + 1`, and each level becomes the f64 sum of
/// its run in increasing order over its count. Two things make it cheap without changing a bit
/// of that: a run's end is found by testing only that rule (no sums while scanning), and a
/// run's sum is kept while its bounds stay put (the same values summed in the same order), so
/// once the levels settle an iteration adds up only the runs whose bounds moved. The profile of
/// a CMPQ budget step had this loop first (one f64 sum carried through memory per value, every
/// iteration).
fn lloyd(v: &[f32], levels: &mut [f32]) {
    let (n, k) = (v.len(), levels.len());
    // Run c is v[ends[c - 1]..ends[c]]; its sum, cached with the bounds it was taken over.
    let mut ends = vec![0usize; k];
    let mut kept: Vec<Option<(usize, usize, f64)>> = vec![None; k];
    let span = v[0].abs().max(v[n - 1].abs());
    for _ in 0..KMEANS_ITERS {
        let mut start = 0;
        for c in 0..k {
            let end = if c + 1 == k {
                n
            } else {
                let (lo, hi) = (levels[c], levels[c + 1]);
                let nearer_hi = |x: f32| (x - hi).abs() <= (x - lo).abs();
                let rest = &v[start..];
                start
                    + if ordered_rule(lo, hi, span) {
                        rest.partition_point(|&x| !nearer_hi(x))
                    } else {
                        rest.iter()
                            .position(|&x| nearer_hi(x))
                            .unwrap_or(rest.len())
                    }
            };
            ends[c] = end;
            start = end;
        }
        let mut changed = false;
        let mut a = 0;
        for c in 0..k {
            let b = ends[c];
            if b > a {
                let sum = match kept[c] {
                    Some((ka, kb, s)) if (ka, kb) == (a, b) => s,
                    _ => {
                        let s = v[a..b].iter().fold(0f64, |s, &x| s + x as f64);
                        kept[c] = Some((a, b, s));
                        s
                    }
                };
                let m = (sum / (b - a) as f64) as f32;
                changed |= m != levels[c];
                levels[c] = m;
            }
            a = b;
        }
        if !changed {
            break;
        }
        // An empty cluster's level may now sit out of order; the sweep needs them sorted.
        levels.sort_by(f32::total_cmp);
    }
}

/// Whether "`x` is as near to `hi` as to `lo`" (rounded distances) is false then true along
/// sorted values of magnitude ≤ `span`, so that a binary search finds where it turns. Between
/// `lo` and `hi` and above `hi` it is (rounding is monotone); below `lo` the two distances
/// `lo − x < hi − x` can only round to the same float when `hi − lo` is under an ulp of `hi − x`
/// ≤ 2^-23 · 2·span (levels lie within the values, up to the rounding of a mean). Levels at
/// least 2^-20 · span apart (a margin of 4 over that bound) rule it out; nearer ones, or
/// levels out of order, take the linear scan.
fn ordered_rule(lo: f32, hi: f32, span: f32) -> bool {
    lo <= hi && (hi - lo) >= span * (1.0 / (1u32 << 20) as f32)
}

fn distinct_count(sorted: &[f32]) -> usize {
    let mut d = sorted.to_vec();
    d.dedup();
    d.len()
}

/// Index of the level nearest to `x` in sorted `levels` (ties to the lower index).
#[inline]
fn nearest(levels: &[f32], x: f32) -> u8 {
    let mut best = 0;
    let mut bd = f32::INFINITY;
    for (i, &l) in levels.iter().enumerate() {
        let d = (x - l).abs();
        if d < bd {
            bd = d;
            best = i;
        }
    }
    best as u8
}

fn check_input(w: &[f32], rows: usize, cols: usize, name: &str) -> Result<()> {
    if rows == 0 || cols == 0 || rows.checked_mul(cols) != Some(w.len()) {
        return Err(Error::config(
            "shape",
            format!("{name}: {} values for a {rows}×{cols} tensor", w.len()),
        ));
    }
    if let Some(i) = w.iter().position(|x| !x.is_finite()) {
        return Err(Error::format(
            name,
            "weights",
            format!("value {} at index {i} is not finite", w[i]),
        ));
    }
    Ok(())
}

/// Positions (ascending) of the `round(frac·n)` largest-magnitude weights (ties to the lower index).
pub fn outlier_positions(w: &[f32], frac: f32) -> Vec<usize> {
    let k = ((frac as f64) * w.len() as f64).round() as usize;
    let mut idx: Vec<usize> = (0..w.len()).collect();
    idx.sort_by(|&a, &b| w[b].abs().total_cmp(&w[a].abs()).then(a.cmp(&b)));
    let mut top: Vec<usize> = idx.into_iter().take(k.min(w.len())).collect();
    top.sort_unstable();
    top
}

/// The outlier add-on bytes: u32 indices, then f16 values (4-byte aligned).
pub(crate) fn outlier_bytes(w: &[f32], pos: &[usize]) -> Vec<u8> {
    let mut b: Vec<u8> = pos.iter().flat_map(|&i| (i as u32).to_le_bytes()).collect();
    for &i in pos {
        b.extend_from_slice(&f16::from_f32(w[i]).to_le_bytes());
    }
    b.resize(b.len().div_ceil(4) * 4, 0);
    b
}

/// Quantize with a learned k-means codebook of `2^bits` levels per row or column.
pub fn kmeans(
    w: &[f32],
    rows: usize,
    cols: usize,
    bits: u8,
    opts: &KmeansOptions,
    name: &str,
) -> Result<QTensor> {
    kmeans_impl(w, rows, cols, bits, opts, None, name)
}

/// `kmeans` with each weight of column `j` weighted by `col_weight[j]` (the calibration
/// Hessian's diagonal `H_jj = ‖x_j‖²`; see the module comment). Per-column codebooks are
/// unaffected by such weights and come out as `kmeans` makes them.
pub fn kmeans_weighted(
    w: &[f32],
    rows: usize,
    cols: usize,
    bits: u8,
    opts: &KmeansOptions,
    col_weight: &[f32],
    name: &str,
) -> Result<QTensor> {
    if col_weight.len() != cols {
        return Err(Error::config(
            "calibration",
            format!(
                "{name}: {} channel weights for {cols} inputs",
                col_weight.len()
            ),
        ));
    }
    if let Some(i) = col_weight
        .iter()
        .position(|h| !(h.is_finite() && *h >= 0.0))
    {
        return Err(Error::config(
            "calibration",
            format!(
                "{name}: channel weight {} at {i} is not finite and ≥ 0",
                col_weight[i]
            ),
        ));
    }
    kmeans_impl(w, rows, cols, bits, opts, Some(col_weight), name)
}

/// Sorted levels of a weighted 1-D k-means fit of `(value, weight)` pairs with `k` levels,
/// f16-rounded: weighted-quantile initialisation, then Lloyd iterations with weighted means.
/// All-zero weights fall back to the unweighted fit.
pub fn kmeans_1d_weighted(values: &[f32], weights: &[f32], k: usize) -> Vec<f32> {
    let total: f64 = weights.iter().map(|&h| h as f64).sum();
    if values.len() != weights.len() || total <= 0.0 || !total.is_finite() {
        return kmeans_1d(values, k);
    }
    let mut v: Vec<(f32, f64)> = values
        .iter()
        .zip(weights)
        .map(|(&x, &h)| (x, h as f64))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let xs: Vec<f32> = v.iter().map(|p| p.0).collect();
    let mut distinct = xs.clone();
    distinct.dedup();
    if distinct.len() <= k {
        return kmeans_1d(values, k);
    }
    // Weighted quantiles (k + ½)/K: the first value whose cumulative weight reaches them.
    let mut levels = Vec::with_capacity(k);
    let (mut cum, mut j) = (0f64, 0usize);
    for i in 0..k {
        let target = (2 * i + 1) as f64 / (2 * k) as f64 * total;
        while j < v.len() && cum + v[j].1 < target {
            cum += v[j].1;
            j += 1;
        }
        levels.push(xs[j.min(xs.len() - 1)]);
    }
    if distinct_count(&levels) < k {
        // Coinciding quantiles (one heavy value) would waste levels: spread them as the
        // unweighted fit does.
        let q =
            |i: usize| distinct[((2 * i + 1) * distinct.len() / (2 * k)).min(distinct.len() - 1)];
        levels = (0..k).map(q).collect();
    }
    let mut sums = vec![0f64; k];
    let mut mass = vec![0f64; k];
    for _ in 0..KMEANS_ITERS {
        sums.iter_mut().for_each(|s| *s = 0.0);
        mass.iter_mut().for_each(|c| *c = 0.0);
        let mut c = 0;
        for &(x, h) in &v {
            while c + 1 < k && (x - levels[c + 1]).abs() <= (x - levels[c]).abs() {
                c += 1;
            }
            sums[c] += h * x as f64;
            mass[c] += h;
        }
        let mut changed = false;
        for i in 0..k {
            if mass[i] > 0.0 {
                let m = (sums[i] / mass[i]) as f32;
                changed |= m != levels[i];
                levels[i] = m;
            }
        }
        if !changed {
            break;
        }
        levels.sort_by(f32::total_cmp);
    }
    levels.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

fn kmeans_impl(
    w: &[f32],
    rows: usize,
    cols: usize,
    bits: u8,
    opts: &KmeansOptions,
    col_weight: Option<&[f32]>,
    name: &str,
) -> Result<QTensor> {
    check_bits(bits)
        .map_err(|_| Error::config("bits", format!("{name}: {bits} is outside 1..=8")))?;
    check_input(w, rows, cols, name)?;
    if !(0.0..=MAX_OUTLIER_FRAC).contains(&opts.outlier_frac) {
        return Err(Error::config(
            "outlier_frac",
            format!("{} is outside 0..={MAX_OUTLIER_FRAC}", opts.outlier_frac),
        ));
    }
    let k = 1usize << bits;
    let pos = outlier_positions(w, opts.outlier_frac);
    let mut is_out = vec![false; w.len()];
    pos.iter().for_each(|&i| is_out[i] = true);
    let (lines, len, stride, step) = match opts.per {
        Per::Row => (rows, cols, cols, 1),
        Per::Column => (cols, rows, 1, cols),
    };
    // One line (row or column) at a time: fit on its non-outlier values, then encode.
    let fit = |t: usize| -> (Vec<f32>, Vec<u8>) {
        let at = |i: usize| t * stride + i * step;
        let keep = (0..len).filter(|&i| !is_out[at(i)]);
        let vals: Vec<f32> = keep.clone().map(|i| w[at(i)]).collect();
        let levels = match (col_weight, opts.per) {
            (Some(h), Per::Row) => {
                let hs: Vec<f32> = keep.map(|i| h[i]).collect();
                kmeans_1d_weighted(&vals, &hs, k)
            }
            _ => kmeans_1d(&vals, k),
        };
        let codes = (0..len).map(|i| nearest(&levels, w[at(i)])).collect();
        (levels, codes)
    };
    let fitted: Vec<(Vec<f32>, Vec<u8>)> = crate::par::map(0..lines, fit);
    let mut codes = vec![0u8; rows * cols];
    let mut levels = Vec::with_capacity(lines * k);
    for (t, (l, c)) in fitted.into_iter().enumerate() {
        levels.extend(l);
        for (i, ci) in c.into_iter().enumerate() {
            codes[t * stride + i * step] = ci;
        }
    }
    let table = match opts.per {
        Per::Row => Codebook::PerRow,
        Per::Column => Codebook::PerColumn,
    };
    let addons = AddOns {
        outliers: pos.len(),
        lowrank: None,
    };
    assemble(
        Format::Codebook { bits, table },
        addons,
        rows,
        cols,
        &codes,
        &levels,
        &outlier_bytes(w, &pos),
    )
}

/// A fixed table's levels in code order (units of the group scale), the magnitude the group's
/// absmax maps to, and its granularity; an error for a learned table or bad dINT parameters.
fn fixed_table(table: Codebook, name: &str) -> Result<(Vec<f32>, f32, Granularity)> {
    Ok(match table {
        Codebook::Nf4(g) => (NF4.to_vec(), 1.0, g),
        Codebook::Fp4(g) => (E2M1.to_vec(), 6.0, g),
        Codebook::Dint(g, p) => (p.levels()?, p.max as f32, g),
        _ => {
            return Err(Error::config(
                "codebook",
                format!("{name}: {table:?} is a learned table, not a fixed one"),
            ))
        }
    })
}

/// One group's grid on a fixed table (NF4, FP4, dINT): the f16 scale and the scaled levels in
/// code order. RTN (`fixed`) and GPTQ (which picks a group's grid when the group starts, then
/// rounds one weight at a time) share it, so both round by the same rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct TableGrid {
    s: f32,
    levels: [f32; 16],
    n: usize,
    /// dINT: ties go to the level of smaller magnitude (so rounding is symmetric in sign and a
    /// weight exactly halfway between 0 and the denormal rounds to 0). NF4/FP4 keep their
    /// original rule, ties to the lower code.
    ties_small: bool,
}

impl TableGrid {
    /// The grid for the group `w`: scale `absmax / top` rounded *up* to f16, so that no `|w|/s`
    /// exceeds the table's largest magnitude.
    pub(crate) fn choose(w: &[f32], table: Codebook, name: &str) -> Result<Self> {
        let (lut, top, _) = fixed_table(table, name)?;
        let amax = w.iter().fold(0f32, |m, x| m.max(x.abs()));
        let s = f16_ceil(amax / top);
        if !s.is_finite() {
            return Err(Error::config(
                "scale",
                format!("{name}: absmax {amax:e} exceeds the f16 range"),
            ));
        }
        let mut levels = [0f32; 16];
        for (l, &t) in levels.iter_mut().zip(&lut) {
            *l = t * s;
        }
        Ok(TableGrid {
            s,
            levels,
            n: lut.len(),
            ties_small: matches!(table, Codebook::Dint(..)),
        })
    }

    /// The code of the level nearest to `x`.
    #[inline]
    pub(crate) fn code(&self, x: f32) -> u8 {
        let levels = &self.levels[..self.n];
        if !self.ties_small {
            return nearest(levels, x);
        }
        let mut best = 0;
        let mut bd = f32::INFINITY;
        for (i, &l) in levels.iter().enumerate() {
            let d = (x - l).abs();
            if d < bd || (d == bd && l.abs() < levels[best].abs()) {
                bd = d;
                best = i;
            }
        }
        best as u8
    }

    /// What code `c` dequantizes to.
    #[inline]
    pub(crate) fn level(&self, c: u8) -> f32 {
        self.levels[c as usize]
    }

    /// The stored (f16-exact) scale.
    pub(crate) fn scale(&self) -> f32 {
        self.s
    }
}

/// Quantize with a fixed table (NF4, FP4 or dINT) and an f16 scale per group of its granularity
/// (absmax for NF4, absmax/6 for FP4, absmax/max for dINT): every weight to the nearest level.
/// Ties go to the lower code for NF4/FP4 and to the smaller magnitude for dINT (`TableGrid`).
pub fn fixed(w: &[f32], rows: usize, cols: usize, table: Codebook, name: &str) -> Result<QTensor> {
    check_input(w, rows, cols, name)?;
    let (_, _, gran) = fixed_table(table, name)?;
    let g = gran.group_len(rows, cols, name)?;
    let mut codes = vec![0u8; rows * cols];
    let mut scales = Vec::with_capacity(rows * cols / g);
    for (wg, cg) in w.chunks(g).zip(codes.chunks_mut(g)) {
        let grid = TableGrid::choose(wg, table, name)?;
        for (c, &x) in cg.iter_mut().zip(wg) {
            *c = grid.code(x);
        }
        scales.push(grid.scale());
    }
    assemble(
        Format::Codebook { bits: 4, table },
        AddOns::default(),
        rows,
        cols,
        &codes,
        &scales,
        &[],
    )
}

/// Pack codes, f16 tables/scales and add-on bytes into a checked tensor.
pub(crate) fn assemble(
    format: Format,
    addons: AddOns,
    rows: usize,
    cols: usize,
    codes: &[u8],
    halves: &[f32],
    extra: &[u8],
) -> Result<QTensor> {
    let bits = match format {
        Format::Codebook { bits, .. } => bits,
        _ => 8,
    };
    let mut data = crate::format::pack_codes(codes, bits);
    let mut sc: Vec<u8> = halves
        .iter()
        .flat_map(|v| f16::from_f32(*v).to_le_bytes())
        .collect();
    sc.resize(sc.len().div_ceil(4) * 4, 0);
    data.extend_from_slice(&sc);
    data.extend_from_slice(extra);
    QTensor::with_addons(format, addons, rows, cols, data)
}

#[cfg(test)]
mod tests;
