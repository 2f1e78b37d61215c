//! CMPQ bit allocation (channel-wise mixed precision, arXiv 2410.13056; docs/methods.md §3,
//! step 2): two adjacent widths `lo` and `lo + 1` over the input columns, with as many columns
//! at `lo + 1` as make the tensor's **effective** bits per weight hit the budget.
//!
//! The effective bits are read from the format table (`format::storage_with` of a
//! `Format::Cmpq` plus its sparse outliers), never from a second formula, so the column map,
//! the per-column codebooks, the f16 columns and the sparse outliers with their indices are all
//! paid for out of the budget. Because every column carries a codebook of `2^b` f16 levels, a
//! budget of `b̄` bits usually cannot give every column `⌊b̄⌋` bits of codes: `lo` is the widest
//! width whose all-`lo` layout still fits the budget (methods.md's `⌊b̄⌋` before overheads).

use crate::format::{storage_with, AddOns, Format};
use crate::{Error, Result};

/// How far the effective bits of an allocation may be from the budget.
pub const BUDGET_TOL: f64 = 0.01;
/// The budget slider (UI and CLI): 2.00..=4.00 in steps of 0.05.
pub const BUDGET_MIN: f32 = 2.0;
pub const BUDGET_MAX: f32 = 4.0;
pub const BUDGET_STEP: f32 = 0.05;
/// Widest `lo` (so `hi = lo + 1` stays within the format's 8 bits).
pub const MAX_LO: u8 = 7;

/// Is `budget` a point of the slider (2.00..=4.00, a multiple of 0.05)?
pub fn check_budget(budget: f32) -> Result<()> {
    let steps = (budget - BUDGET_MIN) / BUDGET_STEP;
    if !(BUDGET_MIN..=BUDGET_MAX).contains(&budget) || (steps - steps.round()).abs() > 1e-3 {
        return Err(Error::config(
            "cmpq.budget",
            format!("{budget} is not in {BUDGET_MIN}..={BUDGET_MAX} in steps of {BUDGET_STEP}"),
        ));
    }
    Ok(())
}

/// How many columns get each width, and what that costs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Allocation {
    pub lo: u8,
    /// Columns at `lo + 1` bits.
    pub n_hi: usize,
    /// Columns kept in f16 (outlier extraction A).
    pub n_f16: usize,
    /// Sparse f16 outliers (outlier extraction B).
    pub n_sparse: usize,
    /// Effective bits per weight of the whole stored tensor.
    pub bits: f64,
}

impl Allocation {
    pub fn format(&self) -> Format {
        Format::Cmpq {
            lo: self.lo,
            n_hi: self.n_hi as u32,
            n_f16: self.n_f16 as u32,
        }
    }
    /// Columns at `lo` bits.
    pub fn n_lo(&self, cols: usize) -> usize {
        cols - self.n_hi - self.n_f16
    }
}

/// Effective bits per weight of a `rows × cols` CMPQ tensor with these counts.
pub fn effective_bits(
    lo: u8,
    n_hi: usize,
    n_f16: usize,
    n_sparse: usize,
    rows: usize,
    cols: usize,
) -> Result<f64> {
    let format = Format::Cmpq {
        lo,
        n_hi: u32::try_from(n_hi).unwrap_or(u32::MAX),
        n_f16: u32::try_from(n_f16).unwrap_or(u32::MAX),
    };
    let addons = AddOns {
        outliers: n_sparse,
        lowrank: None,
    };
    let st = storage_with(format, addons, rows, cols)?;
    Ok(8.0 * st.total() as f64 / (rows * cols) as f64)
}

/// The allocation of a `rows × cols` tensor with `n_f16` f16 columns and `n_sparse` sparse
/// outliers whose effective bits are nearest to `budget`; an error when that is more than
/// `BUDGET_TOL` away (a budget below what 1-bit codes cost, or a tensor too small for one
/// column's step to be fine enough).
pub fn allocate(
    budget: f64,
    rows: usize,
    cols: usize,
    n_f16: usize,
    n_sparse: usize,
) -> Result<Allocation> {
    let code_cols = cols.checked_sub(n_f16).ok_or_else(|| {
        Error::config(
            "cmpq.outlier_cols",
            format!("{n_f16} f16 columns in a tensor of {cols}"),
        )
    })?;
    let bits = |lo: u8, n_hi: usize| effective_bits(lo, n_hi, n_f16, n_sparse, rows, cols);
    let mut chosen: Option<(u8, usize, f64)> = None;
    for lo in (1..=MAX_LO).rev() {
        let floor = bits(lo, 0)?;
        if floor > budget + BUDGET_TOL && lo > 1 {
            continue;
        }
        // The largest n_hi whose bits do not exceed the budget (bits grow with n_hi), then
        // whichever of it and the next one is nearer.
        let (mut a, mut b) = (0usize, code_cols);
        if bits(lo, b)? <= budget {
            a = b;
        } else {
            while b - a > 1 {
                let m = (a + b) / 2;
                if bits(lo, m)? <= budget {
                    a = m;
                } else {
                    b = m;
                }
            }
        }
        let mut best = (a, bits(lo, a)?);
        if a < code_cols {
            let up = bits(lo, a + 1)?;
            if (up - budget).abs() < (best.1 - budget).abs() {
                best = (a + 1, up);
            }
        }
        chosen = Some((lo, best.0, best.1));
        break;
    }
    let (lo, n_hi, got) = chosen.ok_or_else(|| Error::config("cmpq.budget", "no width"))?;
    if (got - budget).abs() > BUDGET_TOL {
        return Err(Error::config(
            "cmpq.budget",
            format!(
                "{budget} bits cannot be met within {BUDGET_TOL} for a {rows}×{cols} tensor \
                 with {n_f16} f16 columns and {n_sparse} sparse outliers (nearest: {got:.4})"
            ),
        ));
    }
    Ok(Allocation {
        lo,
        n_hi,
        n_f16,
        n_sparse,
        bits: got,
    })
}
