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
//!    outliers (src/format/addons.rs).
//!
//! The pipeline itself (steps 3, 5 and packing, over one or many tensors) is in `cmpq_fit` (its
//! packing in `cmpq_pack`), the selection of step 5 in `cmpq_outliers`, the allocation in
//! `cmpq_alloc`.
//!
//! Ablations (methods.md §3): `kmeans = false` replaces the k-means levels by a uniform grid from
//! the column's min to max (same storage, so the same bits); `act_alloc = false` spreads the
//! `lo + 1` columns evenly by index instead of by activation; the outlier fractions switch each
//! outlier kind off at 0. Defaults marked **unverified** in methods.md are parameters here.

use crate::format::QTensor;
use crate::quant::calib::SiteStats;
use crate::quant::cmpq_alloc::{allocate, check_budget, Allocation};
use crate::quant::cmpq_fit::{quantize_jobs, transpose, Job};
use crate::quant::codebook::kmeans_1d;
use crate::{Error, Result};
use half::f16;
use serde::{Deserialize, Serialize};

pub use crate::quant::cmpq_fit::{FitCache, PhaseTimes};

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
    // What `partition_point(|&l| l < x)` finds in sorted levels, as a count without branches:
    // a column's codes call this once per row, and the binary search's branches mispredicted.
    let i = levels.iter().map(|&l| (l < x) as usize).sum::<usize>();
    if i == 0 {
        return 0;
    }
    if i == levels.len() {
        return (levels.len() - 1) as u8;
    }
    // Ties to the lower level; a subtraction rather than a branch (a coin flip per row).
    let down = x - levels[i - 1] <= levels[i] - x;
    (i - down as usize) as u8
}

/// `nearest` for each of `xs`. The usual level counts get a copy with the count fixed at compile
/// time, which unrolls the comparison count: at 8 levels 3.3 ns a value against 8.7 for the
/// loop of unknown length (a fit codes every row of its column).
pub(crate) fn codes(levels: &[f32], xs: &[f32]) -> Vec<u8> {
    fn fixed<const K: usize>(levels: &[f32; K], xs: &[f32]) -> Vec<u8> {
        xs.iter().map(|&x| nearest(levels, x)).collect()
    }
    if let Ok(l) = <&[f32; 4]>::try_from(levels) {
        return fixed(l, xs);
    }
    if let Ok(l) = <&[f32; 8]>::try_from(levels) {
        return fixed(l, xs);
    }
    if let Ok(l) = <&[f32; 16]>::try_from(levels) {
        return fixed(l, xs);
    }
    if let Ok(l) = <&[f32; 2]>::try_from(levels) {
        return fixed(l, xs);
    }
    xs.iter().map(|&x| nearest(levels, x)).collect()
}

/// `w` holds `rows × cols` finite f16-range values.
pub(crate) fn check_weights(w: &[f32], rows: usize, cols: usize, name: &str) -> Result<()> {
    if rows == 0 || cols == 0 || rows.checked_mul(cols) != Some(w.len()) {
        return Err(Error::config(
            "shape",
            format!("{name}: {} values for a {rows}×{cols} tensor", w.len()),
        ));
    }
    let f16_max = f16::MAX.to_f32();
    if let Some((i, x)) = w
        .iter()
        .enumerate()
        .find(|(_, x)| !x.is_finite() || x.abs() > f16_max)
    {
        return Err(Error::format(
            name,
            "weights",
            format!("value {x} at index {i} is not a finite f16"),
        ));
    }
    Ok(())
}

/// `a` holds `cols` finite magnitudes ≥ 0.
pub(crate) fn check_magnitudes(a: &[f32], cols: usize, name: &str) -> Result<()> {
    if a.len() != cols {
        return Err(Error::config(
            "calibration",
            format!(
                "{name}: {} activation magnitudes for {cols} columns",
                a.len()
            ),
        ));
    }
    if let Some((j, x)) = a
        .iter()
        .enumerate()
        .find(|(_, x)| !x.is_finite() || **x < 0.0)
    {
        return Err(Error::config(
            "calibration",
            format!("{name}: magnitude {x} of column {j} is not finite and ≥ 0"),
        ));
    }
    Ok(())
}

/// A tensor's allocation and the class of each of its columns.
pub(crate) struct Plan {
    pub alloc: Allocation,
    pub class: Vec<Class>,
}

impl Plan {
    /// Code width of column `j` (`lo` for f16 columns, which have no codes).
    pub fn bits(&self, j: usize) -> u8 {
        match self.class.get(j) {
            Some(Class::Hi) => self.alloc.lo + 1,
            _ => self.alloc.lo,
        }
    }
}

/// Steps 1, 2 and 4: the outlier counts, the allocation that hits the budget, the classes.
pub(crate) fn plan(
    rows: usize,
    cols: usize,
    a: &[f32],
    opts: &CmpqOptions,
    name: &str,
) -> Result<Plan> {
    let n_f16 = ((opts.outlier_cols as f64) * cols as f64).round() as usize;
    let n_sparse = ((opts.outlier_sparse as f64) * (rows * cols) as f64).round() as usize;
    let n_sparse = n_sparse.min(rows * (cols - n_f16.min(cols)));
    let alloc = allocate(opts.budget as f64, rows, cols, n_f16, n_sparse)
        .map_err(|e| Error::config("cmpq.budget", format!("{name}: {e}")))?;
    let class = classes(a, &alloc, opts.act_alloc);
    Ok(Plan { alloc, class })
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
    check_weights(w, rows, cols, name)?;
    check_magnitudes(a, cols, name)?;
    let wt = transpose(w, rows, cols);
    let mut jobs = [Job {
        wt: &wt,
        rows,
        cols,
        a,
        opts,
        name,
        cache,
    }];
    quantize_jobs(&mut jobs, &mut PhaseTimes::default())?
        .pop()
        .ok_or_else(|| Error::config("cmpq", format!("{name}: nothing quantized")))
}
