//! CMPQ — channel-wise mixed-precision quantization (Chen et al., arXiv 2410.13056), as restated
//! in docs/methods.md §3: weight-only, any fractional budget of effective bits.
//!
//! 1. A magnitude `a_j` per input column from calibration (`mean|x_j|` by default).
//! 2. Allocation (`cmpq_alloc`): the highest-`a_j` columns get `lo + 1` bits, the rest `lo`, with
//!    as many at `lo + 1` as make the stored tensor's effective bits hit the budget.
//! 3. Each code column gets its own 1-D k-means codebook of `2^b` levels (`codebook::kmeans_1d`).
//! 4. Outlier extraction A: the `round(f_A · cols)` columns with the very largest `a_j` are kept
//!    in f16 (their bits come out of the budget like everything else).
//! 5. Outlier extraction B: after step 3, the `round(f_B · rows · cols)` code-column weights with
//!    the largest `|W − Q(W)| · a_j` are kept as sparse f16 outliers (`AddOns.outliers`), and every
//!    column that lost weights to them is re-clustered without them.
//! 6. Reconstruction is `Format::Cmpq`'s decoder (codebook lookup, f16 columns) plus the sparse
//!    outliers (format.rs).
//!
//! Ablations (methods.md §3): `kmeans = false` replaces the k-means levels by a uniform grid from
//! the column's min to max (same storage, so the same bits); `act_alloc = false` spreads the
//! `lo + 1` columns evenly by index instead of by activation; the outlier fractions switch each
//! outlier kind off at 0. Defaults marked **unverified** in methods.md are parameters here.

use crate::quant::calib::SiteStats;
use crate::quant::cmpq_alloc::{allocate, check_budget, Allocation};
use crate::quant::codebook::{kmeans_1d, outlier_bytes};
use crate::quant::format::{pack_codes, AddOns, QTensor};
use crate::{Error, Result};
use half::f16;
use serde::{Deserialize, Serialize};

#[cfg(not(target_arch = "wasm32"))]
use rayon::prelude::*;

/// Largest fraction of columns kept in f16 (extraction A).
pub const MAX_OUTLIER_COLS: f32 = 0.1;
/// Largest fraction of weights kept as sparse outliers (extraction B).
pub const MAX_OUTLIER_SPARSE: f32 = 0.05;

/// Which calibration statistic is a column's magnitude `a_j`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActStat {
    #[default]
    MeanAbs,
    L2,
    MaxAbs,
}

/// CMPQ parameters (the whole method; `LayerQuant.bits`/`gran` are not used).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CmpqOptions {
    /// Effective bits per weight, everything stored counted (2.00..=4.00, steps of 0.05).
    pub budget: f32,
    /// Fraction of columns kept in f16 (extraction A; default 0.5 %, unverified).
    pub outlier_cols: f32,
    /// Fraction of weights kept as sparse f16 (extraction B; default 0.25 %, unverified).
    pub outlier_sparse: f32,
    pub act: ActStat,
    /// Allocate `lo + 1` bits by activation (else evenly by column index): ablation switch.
    pub act_alloc: bool,
    /// k-means codebooks (else a uniform grid per column): ablation switch.
    pub kmeans: bool,
}

impl Default for CmpqOptions {
    fn default() -> Self {
        CmpqOptions {
            budget: 3.0,
            outlier_cols: 0.005,
            outlier_sparse: 0.0025,
            act: ActStat::MeanAbs,
            act_alloc: true,
            kmeans: true,
        }
    }
}

/// The named ablations of methods.md §3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ablation {
    /// Everything on.
    Full,
    /// Activation-guided widths with uniform grids, no outliers.
    AllocationOnly,
    /// k-means codebooks with widths spread by index, no outliers.
    CodebooksOnly,
    /// Full without the f16 columns (extraction A).
    NoOutlierCols,
    /// Full without the sparse outliers (extraction B).
    NoOutlierSparse,
}

impl CmpqOptions {
    /// These options with one ablation applied.
    pub fn ablate(mut self, a: Ablation) -> Self {
        match a {
            Ablation::Full => {}
            Ablation::AllocationOnly => {
                self.kmeans = false;
                self.outlier_cols = 0.0;
                self.outlier_sparse = 0.0;
            }
            Ablation::CodebooksOnly => {
                self.act_alloc = false;
                self.outlier_cols = 0.0;
                self.outlier_sparse = 0.0;
            }
            Ablation::NoOutlierCols => self.outlier_cols = 0.0,
            Ablation::NoOutlierSparse => self.outlier_sparse = 0.0,
        }
        self
    }

    /// Checks that need no model: the budget slider and the outlier fractions.
    pub fn validate(&self) -> Result<()> {
        check_budget(self.budget)?;
        let frac = |v: f32, max: f32, field: &str| {
            if (0.0..=max).contains(&v) {
                Ok(())
            } else {
                Err(Error::config(field, format!("{v} is outside 0..={max}")))
            }
        };
        frac(self.outlier_cols, MAX_OUTLIER_COLS, "cmpq.outlier_cols")?;
        frac(
            self.outlier_sparse,
            MAX_OUTLIER_SPARSE,
            "cmpq.outlier_sparse",
        )
    }

    /// `a_j` from one site's statistics.
    pub fn magnitudes<'a>(&self, s: &'a SiteStats) -> &'a [f32] {
        match self.act {
            ActStat::MeanAbs => &s.mean_abs,
            ActStat::L2 => &s.l2,
            ActStat::MaxAbs => &s.max_abs,
        }
    }
}

/// What each column became: `Class::F16`, or codes of `bits` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Lo,
    Hi,
    F16,
}

/// Column classes for an allocation: f16 for the `n_f16` highest `a_j`, then `lo + 1` for the
/// next `n_hi` (or, without `act_alloc`, for `n_hi` of the remaining columns spread evenly by
/// index), `lo` for the rest. Ties in `a_j` go to the lower column index.
pub fn classes(a: &[f32], alloc: &Allocation, act_alloc: bool) -> Vec<Class> {
    let cols = a.len();
    let mut order: Vec<usize> = (0..cols).collect();
    order.sort_by(|&x, &y| a[y].total_cmp(&a[x]).then(x.cmp(&y)));
    let mut class = vec![Class::Lo; cols];
    order
        .iter()
        .take(alloc.n_f16)
        .for_each(|&j| class[j] = Class::F16);
    if act_alloc {
        order
            .iter()
            .skip(alloc.n_f16)
            .take(alloc.n_hi)
            .for_each(|&j| class[j] = Class::Hi);
    } else {
        let rest: Vec<usize> = (0..cols).filter(|&j| class[j] != Class::F16).collect();
        let m = rest.len().max(1);
        for (i, &j) in rest.iter().enumerate() {
            if (i + 1) * alloc.n_hi / m > i * alloc.n_hi / m {
                class[j] = Class::Hi;
            }
        }
    }
    class
}

/// Sorted `2^bits` levels for `values`: k-means, or a uniform grid from min to max; f16-rounded.
pub fn fit_levels(values: &[f32], bits: u8, kmeans: bool) -> Vec<f32> {
    let k = 1usize << bits;
    if kmeans {
        return kmeans_1d(values, k);
    }
    let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
    (0..k)
        .map(|i| {
            let v = lo + (hi - lo) * i as f32 / (k - 1) as f32;
            f16::from_f32(v).to_f32()
        })
        .collect()
}

/// Index of the level nearest to `x` in sorted `levels` (ties to the lower index).
#[inline]
pub fn nearest(levels: &[f32], x: f32) -> u8 {
    let i = levels.partition_point(|&l| l < x);
    if i == 0 {
        return 0;
    }
    if i == levels.len() {
        return (levels.len() - 1) as u8;
    }
    if x - levels[i - 1] <= levels[i] - x {
        (i - 1) as u8
    } else {
        i as u8
    }
}

/// One code column: its levels and its `rows` codes.
#[derive(Clone)]
pub(crate) struct Fit {
    levels: Vec<f32>,
    codes: Vec<u8>,
}

fn fit_column(col: &[f32], keep: impl Fn(usize) -> bool, bits: u8, kmeans: bool) -> Fit {
    let vals: Vec<f32> = (0..col.len())
        .filter(|&r| keep(r))
        .map(|r| col[r])
        .collect();
    let levels = fit_levels(&vals, bits, kmeans);
    let codes = col.iter().map(|&x| nearest(&levels, x)).collect();
    Fit { levels, codes }
}

fn par_map<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    #[cfg(not(target_arch = "wasm32"))]
    return (0..n).into_par_iter().map(f).collect();
    #[cfg(target_arch = "wasm32")]
    return (0..n).map(f).collect();
}

fn check_input(w: &[f32], rows: usize, cols: usize, a: &[f32], name: &str) -> Result<()> {
    if rows == 0 || cols == 0 || rows.checked_mul(cols) != Some(w.len()) {
        return Err(Error::config(
            "shape",
            format!("{name}: {} values for a {rows}×{cols} tensor", w.len()),
        ));
    }
    if a.len() != cols {
        return Err(Error::config(
            "calibration",
            format!(
                "{name}: {} activation magnitudes for {cols} columns",
                a.len()
            ),
        ));
    }
    let f16_max = f16::MAX.to_f32();
    if let Some(i) = w.iter().position(|x| !x.is_finite() || x.abs() > f16_max) {
        return Err(Error::format(
            name,
            "weights",
            format!("value {} at index {i} is not a finite f16", w[i]),
        ));
    }
    if let Some(j) = a.iter().position(|x| !x.is_finite() || *x < 0.0) {
        return Err(Error::config(
            "calibration",
            format!(
                "{name}: magnitude {} of column {j} is not finite and ≥ 0",
                a[j]
            ),
        ));
    }
    Ok(())
}

/// Quantize `w` (`rows × cols`, row-major) with CMPQ, given the per-column magnitudes `a`.
pub fn quantize(
    w: &[f32],
    rows: usize,
    cols: usize,
    a: &[f32],
    opts: &CmpqOptions,
    name: &str,
) -> Result<QTensor> {
    quantize_cached(w, rows, cols, a, opts, name, &mut FitCache::default())
}

/// Column fits of one tensor kept between calls (`cmpq_cache`): a fit depends only on the
/// column's values, its width, the fitting rule and the rows left out as sparse outliers, so
/// moving the budget re-fits only the columns whose width or outliers changed. The caller
/// owns the invalidation: one `FitCache` per tensor, cleared when its weights change.
#[derive(Default)]
pub struct FitCache {
    fits: std::collections::HashMap<FitKey, Fit>,
    /// Keys used by the last call; re-fits (with outliers) not among them are dropped.
    used: std::collections::HashSet<FitKey>,
}

/// (column, bits, k-means, rows left out).
type FitKey = (usize, u8, bool, Vec<u32>);

impl FitCache {
    /// Fits held.
    pub fn len(&self) -> usize {
        self.fits.len()
    }
    pub fn is_empty(&self) -> bool {
        self.fits.is_empty()
    }

    /// The fits for `keys`, computing (in parallel) those not held.
    fn get_all(
        &mut self,
        keys: Vec<Option<FitKey>>,
        fit: impl Fn(&FitKey) -> Fit + Sync + Send,
    ) -> Vec<Option<Fit>> {
        let missing: Vec<&FitKey> = keys
            .iter()
            .flatten()
            .filter(|k| !self.fits.contains_key(*k))
            .collect();
        let new = par_map(missing.len(), |i| fit(missing[i]));
        for (k, f) in missing.into_iter().zip(new) {
            self.fits.insert(k.clone(), f);
        }
        keys.into_iter()
            .map(|k| {
                k.and_then(|k| {
                    let f = self.fits.get(&k).cloned();
                    self.used.insert(k);
                    f
                })
            })
            .collect()
    }

    /// Drop re-fits that the last call did not use (plain fits stay for the next budget).
    fn end_call(&mut self) {
        let used = std::mem::take(&mut self.used);
        self.fits.retain(|k, _| k.3.is_empty() || used.contains(k));
    }
}

/// As `quantize`, reusing and filling `cache` (which must belong to this `w`).
pub fn quantize_cached(
    w: &[f32],
    rows: usize,
    cols: usize,
    a: &[f32],
    opts: &CmpqOptions,
    name: &str,
    cache: &mut FitCache,
) -> Result<QTensor> {
    opts.validate()?;
    check_input(w, rows, cols, a, name)?;
    let n_f16 = ((opts.outlier_cols as f64) * cols as f64).round() as usize;
    let n_sparse = ((opts.outlier_sparse as f64) * (rows * cols) as f64).round() as usize;
    let n_sparse = n_sparse.min(rows * (cols - n_f16.min(cols)));
    let alloc = allocate(opts.budget as f64, rows, cols, n_f16, n_sparse)
        .map_err(|e| Error::config("cmpq.budget", format!("{name}: {e}")))?;
    let class = classes(a, &alloc, opts.act_alloc);
    let bits_of = |c: Class| {
        if c == Class::Hi {
            alloc.lo + 1
        } else {
            alloc.lo
        }
    };
    let fit = |k: &FitKey| -> Fit {
        let (j, bits, kmeans, out) = k;
        let col: Vec<f32> = (0..rows).map(|r| w[r * cols + j]).collect();
        let mut skip = vec![false; rows];
        out.iter().for_each(|&r| skip[r as usize] = true);
        fit_column(&col, |r| !skip[r], *bits, *kmeans)
    };
    // Step 3: every code column fitted on all its values.
    let keys = (0..cols)
        .map(|j| (class[j] != Class::F16).then(|| (j, bits_of(class[j]), opts.kmeans, vec![])))
        .collect();
    let mut fits = cache.get_all(keys, fit);
    // Step 5: the largest activation-weighted errors become sparse outliers.
    let sparse = if alloc.n_sparse > 0 {
        let mut err: Vec<(f32, usize)> = Vec::with_capacity(rows * cols);
        for (j, f) in fits.iter().enumerate() {
            if let Some(f) = f {
                for r in 0..rows {
                    let q = f.levels[f.codes[r] as usize];
                    err.push(((w[r * cols + j] - q).abs() * a[j], r * cols + j));
                }
            }
        }
        let k = alloc.n_sparse.min(err.len());
        let by_err = |x: &(f32, usize), y: &(f32, usize)| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1));
        if k < err.len() {
            err.select_nth_unstable_by(k, by_err);
        }
        let mut pos: Vec<usize> = err[..k].iter().map(|e| e.1).collect();
        pos.sort_unstable();
        // Re-cluster the columns that lost weights, without them.
        let mut out_rows: Vec<Vec<u32>> = vec![Vec::new(); cols];
        pos.iter()
            .for_each(|&i| out_rows[i % cols].push((i / cols) as u32));
        let keys = out_rows
            .into_iter()
            .enumerate()
            .map(|(j, rs)| (!rs.is_empty()).then(|| (j, bits_of(class[j]), opts.kmeans, rs)))
            .collect();
        for (j, f) in cache.get_all(keys, fit).into_iter().enumerate() {
            if f.is_some() {
                fits[j] = f;
            }
        }
        pos
    } else {
        Vec::new()
    };
    cache.end_call();
    assemble(w, rows, cols, &alloc, &class, &fits, &sparse)
}

/// Lay the parts out as `Format::Cmpq` (format.rs) plus the sparse-outlier add-on.
fn assemble(
    w: &[f32],
    rows: usize,
    cols: usize,
    alloc: &Allocation,
    class: &[Class],
    fits: &[Option<Fit>],
    sparse: &[usize],
) -> Result<QTensor> {
    let (n_lo, n_hi, n_f16) = (alloc.n_lo(cols), alloc.n_hi, alloc.n_f16);
    let mut map = Vec::with_capacity(2 * cols);
    let mut members: [Vec<usize>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for (j, &c) in class.iter().enumerate() {
        let k = match c {
            Class::Lo => 0,
            Class::Hi => 1,
            Class::F16 => 2,
        };
        let e = ((k << 14) | members[k].len()) as u16;
        map.extend_from_slice(&e.to_le_bytes());
        members[k].push(j);
    }
    if [n_lo, n_hi, n_f16] != [members[0].len(), members[1].len(), members[2].len()] {
        return Err(Error::config(
            "cmpq",
            "column classes do not match the allocation",
        ));
    }
    map.resize(map.len().div_ceil(4) * 4, 0);
    let mut data = map;
    let half = |v: f32| f16::from_f32(v).to_le_bytes();
    let fit = |j: usize| -> Result<&Fit> {
        fits.get(j)
            .and_then(|f| f.as_ref())
            .ok_or_else(|| Error::config("cmpq", format!("column {j} has no codebook")))
    };
    for m in &members[..2] {
        for &j in m {
            fit(j)?
                .levels
                .iter()
                .for_each(|&v| data.extend_from_slice(&half(v)));
        }
    }
    for (k, bits) in [(0, alloc.lo), (1, alloc.lo + 1)] {
        let m = &members[k];
        let mut codes = vec![0u8; rows * m.len()];
        for (i, &j) in m.iter().enumerate() {
            let f = fit(j)?;
            for r in 0..rows {
                codes[r * m.len() + i] = f.codes[r];
            }
        }
        data.extend_from_slice(&pack_codes(&codes, bits));
    }
    let start = data.len();
    for r in 0..rows {
        for &j in &members[2] {
            data.extend_from_slice(&half(w[r * cols + j]));
        }
    }
    data.resize(start + (data.len() - start).div_ceil(4) * 4, 0);
    data.extend_from_slice(&outlier_bytes(w, sparse));
    let addons = AddOns {
        outliers: sparse.len(),
        lowrank: None,
    };
    QTensor::with_addons(alloc.format(), addons, rows, cols, data)
}
