//! One row of one weight tensor, quantized before your eyes (issue 19, item 2): the row's weights,
//! the values they were stored as, the levels each group of columns can take (read from the
//! format module itself, `QTensor::row_levels`, never re-derived here or in the page), which
//! weights were clipped and which the format keeps as exact outliers, and the row's error.
//! Plain serde data; the page draws it (www/rowview.js).

use crate::format::{LevelGroup, QTensor};
use crate::model::weights::ModelWeights;
use crate::playground::session::Session;
use crate::quant::awq::{scaled_weights, LayerScales};
use crate::quant::config::Method;
use crate::{Error, Result};
use serde::Serialize;

/// Most weights one view lists (the error is always over the whole row).
pub const MAX_POINTS: usize = 4096;

#[derive(Clone, Debug, Serialize)]
pub struct RowView {
    pub name: String,
    pub row: usize,
    /// Columns of the whole row.
    pub cols: usize,
    pub format: String,
    pub bits_per_weight: f64,
    /// The window listed: columns `start .. start + weights.len()`.
    pub start: usize,
    /// The weights the quantizer rounded: as loaded, or after the config's scale transform
    /// (`basis`).
    pub weights: Vec<f32>,
    /// What the stored tensor decodes to (outliers and low-rank terms included).
    pub quantized: Vec<f32>,
    /// The level groups that meet the window (columns counted from the row's start); empty when
    /// the format has no level grid (`has_levels` false: floats, ggml blocks as loaded).
    pub groups: Vec<LevelGroup>,
    pub has_levels: bool,
    /// Per listed weight: clipped (see `clipped`), kept exactly as a sparse outlier.
    pub clipped: Vec<bool>,
    pub outlier: Vec<bool>,
    /// A LoRC low-rank term is added after the levels: values sit off the grid by design.
    pub lowrank: bool,
    /// Over the whole row: mean squared and largest absolute error, clipped and outlier counts.
    pub mse: f64,
    pub max_abs: f64,
    pub n_clipped: usize,
    pub n_outliers: usize,
    /// "loaded"; "smoothed" when a scale transform (SmoothQuant, AQAS) was folded in first and
    /// the weights are shown after it; "awq-unscaled" for AWQ, which keeps no scales: the weights
    /// are as loaded while the stored row is in AWQ's scaled basis, so the error is not the
    /// rounding error alone.
    pub basis: &'static str,
}

/// Is `w` clipped by a group of `levels`: beyond the outermost level by more than half the step
/// to its neighbour (rounding alone leaves a weight within half a step, and an absmax scale
/// stored in f16 puts the extreme weight a hair outside its level without clipping it).
fn clipped(w: f32, levels: &[f32]) -> bool {
    let mut l: Vec<f32> = levels.iter().copied().filter(|v| v.is_finite()).collect();
    l.sort_by(f32::total_cmp);
    l.dedup();
    match l.len() {
        0 => false,
        1 => w != l[0],
        n => w < l[0] - (l[1] - l[0]) / 2.0 || w > l[n - 1] + (l[n - 1] - l[n - 2]) / 2.0,
    }
}

/// The linear `name`'s layer, its index among the layer's linears, and its tensor.
fn locate<'a>(w: &'a ModelWeights, name: &str) -> Result<(usize, usize, &'a QTensor)> {
    w.layers
        .iter()
        .enumerate()
        .find_map(|(li, l)| {
            let k = l.linears().iter().position(|x| x.name == name)?;
            Some((li, k, &l.linears()[k].w))
        })
        .ok_or_else(|| Error::config("tensor", format!("no block linear named \"{name}\"")))
}

/// Row `row` of tensor `name` in the session's current quantization, listing at most
/// `max_points` weights from column `start`.
pub fn row_view(
    s: &Session,
    name: &str,
    row: usize,
    start: usize,
    max_points: usize,
) -> Result<RowView> {
    if !(1..=MAX_POINTS).contains(&max_points) {
        return Err(Error::config(
            "max_points",
            format!("{max_points} is outside 1..={MAX_POINTS}"),
        ));
    }
    let (li, k, a) = locate(s.source(), name)?;
    let b = match s.quantized_weights()? {
        Some(q) => locate(q, name)?.2,
        None => a,
    };
    if row >= a.rows || start >= a.cols {
        return Err(Error::config(
            "row",
            format!(
                "row {row} from column {start} is outside {name} ({} rows × {} columns)",
                a.rows, a.cols
            ),
        ));
    }
    let cols = a.cols;
    // The transform rescales a row by its neighbours' channels, so it needs the whole tensor.
    let scales = s
        .smooth_report()
        .and_then(|r| r.scales.get(li))
        .filter(|l| l.iter().any(|v| !v.is_empty()));
    let (weights, basis) = match scales {
        Some(sc) => {
            let ls = LayerScales {
                s: sc.clone(),
                alpha: Vec::new(),
            };
            let w = scaled_weights(&a.dequantize()?, k, cols, &ls, &s.source().topology());
            (w[row * cols..(row + 1) * cols].to_vec(), "smoothed")
        }
        None => (
            a.row_slice(row, row + 1)?.dequantize()?,
            if matches!(s.quant().method, Method::Awq(_)) {
                "awq-unscaled"
            } else {
                "loaded"
            },
        ),
    };
    let one = b.row_slice(row, row + 1)?;
    let quantized = one.dequantize()?;
    let levels = one.row_levels(0)?;
    let outliers = one.outlier_indices()?;
    let mut is_outlier = vec![false; cols];
    outliers.iter().for_each(|&i| is_outlier[i] = true);
    let mut is_clipped = vec![false; cols];
    for g in levels.iter().flatten() {
        for c in g.start..g.end {
            is_clipped[c] = !is_outlier[c] && g.bits < 16 && clipped(weights[c], &g.levels);
        }
    }
    let (mut sq, mut max_abs) = (0f64, 0f64);
    for (&w, &q) in weights.iter().zip(&quantized) {
        let d = (w - q) as f64;
        sq += d * d;
        max_abs = max_abs.max(d.abs());
    }
    let end = (start + max_points).min(cols);
    Ok(RowView {
        name: name.to_string(),
        row,
        cols,
        format: b.format.name(),
        bits_per_weight: b.bits_per_weight(),
        start,
        weights: weights[start..end].to_vec(),
        quantized: quantized[start..end].to_vec(),
        has_levels: levels.is_some(),
        groups: levels
            .into_iter()
            .flatten()
            .filter(|g| g.end > start && g.start < end)
            .collect(),
        clipped: is_clipped[start..end].to_vec(),
        outlier: is_outlier[start..end].to_vec(),
        lowrank: b.addons.lowrank.is_some(),
        mse: sq / cols as f64,
        max_abs,
        n_clipped: is_clipped.iter().filter(|&&c| c).count(),
        n_outliers: outliers.len(),
        basis,
    })
}

#[cfg(test)]
mod tests;
