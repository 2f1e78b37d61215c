//! Add-ons (`AddOns`) any base format can carry, appended after the base bytes, each section
//! 4-byte aligned (the base itself may end mid-word after ggml blocks, so the kernels take byte
//! offsets):
//!   outliers: `count` u32 row-major indices, strictly increasing, then `count` f16 values that
//!             replace the base value at those positions (dense-and-sparse, SqueezeLLM arXiv
//!             2306.07629 §4);
//!   lowrank : LoRC (ZeroQuant-V2, arXiv 2303.08302 §4) factors `Û` (`rows × r`) then `V̂`
//!             (`r × cols`), added as `Ŵ + ÛV̂`; f16 values, or int8 with one f16 absmax scale
//!             per row of `Û` and per row of `V̂` (scales after the codes of each factor).
//! `AddOns::offsets` gives the byte offsets of every section, for the CPU decoder, row slicing
//! and the GPU kernels (shaders/outliers.wgsl, shaders/lowrank.wgsl) alike.

use super::packed::{align4, entry_range, pad4, random_bytes, random_f16s};
use super::Draw;
use crate::{Error, Result};
use half::f16;
use serde::{Deserialize, Serialize};

/// LoRC factors carried by a tensor (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LowRankSpec {
    pub rank: usize,
    /// int8 factors with f16 row scales instead of f16 values.
    pub bits8: bool,
}

/// Extras stored after a tensor's base format (see the module comment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AddOns {
    /// Number of sparse f16 outliers.
    pub outliers: usize,
    pub lowrank: Option<LowRankSpec>,
}

/// Byte offsets of the add-on sections from where the add-ons start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddonOffsets {
    /// Outlier indices (u32) and values (f16).
    pub idx: usize,
    pub val: usize,
    pub lowrank: Option<LowRankOffsets>,
}

/// Byte offsets of the LoRC sections: `Û`'s values and row scales, `V̂`'s values and row
/// scales (the scales are 0 for f16 factors, which have none), and the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LowRankOffsets {
    pub u: usize,
    pub us: usize,
    pub v: usize,
    pub vs: usize,
    pub end: usize,
}

impl LowRankSpec {
    /// The offsets of factors for a `rows × cols` tensor starting at byte `start`.
    fn offsets(self, rows: usize, cols: usize, start: usize) -> LowRankOffsets {
        let r = self.rank;
        if self.bits8 {
            let us = start + align4(r * rows);
            let v = us + align4(2 * rows);
            let vs = v + align4(r * cols);
            LowRankOffsets {
                u: start,
                us,
                v,
                vs,
                end: vs + align4(2 * r),
            }
        } else {
            let v = start + align4(2 * r * rows);
            LowRankOffsets {
                u: start,
                us: 0,
                v,
                vs: 0,
                end: v + align4(2 * r * cols),
            }
        }
    }
}

impl AddOns {
    pub fn is_empty(&self) -> bool {
        self.outliers == 0 && self.lowrank.is_none()
    }

    /// Byte offsets of the sections for a `rows × cols` tensor, counted from `start`.
    pub fn offsets(&self, rows: usize, cols: usize, start: usize) -> AddonOffsets {
        let k = self.outliers;
        let val = start + 4 * k;
        let lr = val + align4(2 * k);
        AddonOffsets {
            idx: start,
            val,
            lowrank: self.lowrank.map(|l| l.offsets(rows, cols, lr)),
        }
    }

    /// Bytes of `(outliers, lowrank)` for a `rows × cols` tensor.
    pub(super) fn bytes(&self, rows: usize, cols: usize) -> (usize, usize) {
        let o = self.offsets(rows, cols, 0);
        let lr_start = o.val + align4(2 * self.outliers);
        (lr_start, o.lowrank.map_or(0, |l| l.end - lr_start))
    }

    /// Check against a `rows × cols` tensor: outliers ≤ elements, rank ≤ min(rows, cols).
    pub(super) fn check(&self, rows: usize, cols: usize) -> Result<()> {
        if self.outliers > rows * cols {
            return Err(Error::config(
                "outliers",
                format!("{} outliers in a {rows}×{cols} tensor", self.outliers),
            ));
        }
        if let Some(l) = self.lowrank {
            if l.rank == 0 || l.rank > rows.min(cols) {
                return Err(Error::config(
                    "lorc.rank",
                    format!(
                        "{} is outside 1..={} for a {rows}×{cols} tensor",
                        l.rank,
                        rows.min(cols)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The outlier indices in `extra` (the add-on bytes), checked strictly increasing and
    /// inside the `n` elements: the CPU writes at them, the GPU kernel binary-searches them.
    pub fn outlier_indices(&self, extra: &[u8], n: usize) -> Result<Vec<usize>> {
        let mut out: Vec<usize> = Vec::with_capacity(self.outliers);
        for (i, b) in extra[..4 * self.outliers].chunks_exact(4).enumerate() {
            let idx = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
            if idx >= n || out.last().is_some_and(|&p| idx <= p) {
                return Err(Error::format(
                    "tensor",
                    "outliers",
                    format!("index {idx} at {i} is out of range or out of order (size {n})"),
                ));
            }
            out.push(idx);
        }
        Ok(out)
    }

    /// Apply to the dequantized base `out` (`rows × cols`) from the add-on bytes `extra`.
    pub(super) fn apply(
        &self,
        extra: &[u8],
        rows: usize,
        cols: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let o = self.offsets(rows, cols, 0);
        for (i, idx) in self
            .outlier_indices(extra, rows * cols)?
            .into_iter()
            .enumerate()
        {
            let v = &extra[o.val + 2 * i..o.val + 2 * i + 2];
            out[idx] = f16::from_le_bytes([v[0], v[1]]).to_f32();
        }
        if let Some(l) = self.lowrank {
            let (u, v) = lowrank_factors(&extra[self.bytes(rows, cols).0..], rows, cols, l);
            // out += U (rows × r) · V (r × cols), in f32 (the CPU reference expands at load).
            for (r, orow) in out.chunks_exact_mut(cols).enumerate() {
                for (k, vrow) in v.chunks_exact(cols).enumerate() {
                    let a = u[r * l.rank + k];
                    orow.iter_mut().zip(vrow).for_each(|(o, &b)| *o += a * b);
                }
            }
        }
        Ok(())
    }

    /// The add-ons of rows `r0..r1` and their bytes: the outliers in those rows (indices made
    /// relative to the slice), the rows of `Û` and its scales, and all of `V̂` (every row of the
    /// tensor shares it).
    pub(super) fn row_slice(
        &self,
        extra: &[u8],
        rows: usize,
        cols: usize,
        r0: usize,
        r1: usize,
    ) -> Result<(AddOns, Vec<u8>)> {
        let o = self.offsets(rows, cols, 0);
        let (lo, hi) = (r0 * cols, r1 * cols);
        let mut idx = Vec::new();
        let mut vals = Vec::new();
        for (i, p) in self
            .outlier_indices(extra, rows * cols)?
            .into_iter()
            .enumerate()
        {
            if (lo..hi).contains(&p) {
                idx.extend_from_slice(&((p - lo) as u32).to_le_bytes());
                vals.extend_from_slice(&extra[o.val + 2 * i..o.val + 2 * i + 2]);
            }
        }
        let mut addons = AddOns {
            outliers: idx.len() / 4,
            lowrank: None,
        };
        let mut data = idx;
        data.extend(pad4(vals));
        if let (Some(l), Some(lo)) = (self.lowrank, o.lowrank) {
            let n = r1 - r0;
            // A part's rank stays the tensor's (Û is rows × rank); the table caps rank at
            // min(rows, cols), so a part thinner than the rank cannot carry it.
            if n < l.rank {
                return Err(Error::unsupported(
                    "tensor",
                    "split",
                    format!("a part of {n} rows cannot carry rank-{} factors", l.rank),
                ));
            }
            let size = if l.bits8 { 1 } else { 2 };
            data.extend(entry_range(&extra[lo.u..], r0 * l.rank, r1 * l.rank, size));
            if l.bits8 {
                data.extend(entry_range(&extra[lo.us..], r0, r1, 2));
            }
            data.extend_from_slice(&extra[lo.v..lo.end]);
            addons.lowrank = Some(l);
        }
        Ok((addons, data))
    }
}

impl AddOns {
    /// Add-on bytes of seeded random content for a `rows × cols` tensor: distinct sorted
    /// outlier positions with f16 values in ±4, and LoRC factors (f16 in ±0.5, or int8 codes
    /// with f16 row scales near 0.01).
    pub fn random(&self, rows: usize, cols: usize, next: Draw) -> Result<Vec<u8>> {
        self.check(rows, cols)?;
        let n = rows * cols;
        // A partial Fisher–Yates shuffle picks distinct positions.
        let mut pos: Vec<u32> = (0..n as u32).collect();
        for i in 0..self.outliers {
            let j = i + next() as usize % (n - i);
            pos.swap(i, j);
        }
        let mut idx = pos[..self.outliers].to_vec();
        idx.sort_unstable();
        let mut out: Vec<u8> = idx.iter().flat_map(|i| i.to_le_bytes()).collect();
        out.extend(random_f16s(self.outliers, 0.0, 4.0, next));
        if let Some(l) = self.lowrank {
            let k = l.rank;
            if l.bits8 {
                out.extend(pad4(random_bytes(rows * k, next)));
                out.extend(random_f16s(rows, 0.0, 0.01, next));
                out.extend(pad4(random_bytes(k * cols, next)));
                out.extend(random_f16s(k, 0.0, 0.01, next));
            } else {
                out.extend(random_f16s(rows * k, 0.0, 0.5, next));
                out.extend(random_f16s(k * cols, 0.0, 0.5, next));
            }
        }
        Ok(out)
    }
}

/// Decode LoRC factors `(Û, V̂)` (row-major `rows × r`, `r × cols`) from their bytes.
pub fn lowrank_factors(
    blob: &[u8],
    rows: usize,
    cols: usize,
    l: LowRankSpec,
) -> (Vec<f32>, Vec<f32>) {
    let o = l.offsets(rows, cols, 0);
    let r = l.rank;
    let h = |b: &[u8], i: usize| f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32();
    if !l.bits8 {
        let u = (0..rows * r).map(|i| h(&blob[o.u..], i)).collect();
        let v = (0..r * cols).map(|i| h(&blob[o.v..], i)).collect();
        return (u, v);
    }
    let int8 = |codes: &[u8], scales: &[u8], n_rows: usize, n_cols: usize| -> Vec<f32> {
        (0..n_rows * n_cols)
            .map(|i| codes[i] as i8 as f32 * h(scales, i / n_cols))
            .collect()
    };
    (
        int8(&blob[o.u..], &blob[o.us..], rows, r),
        int8(&blob[o.v..], &blob[o.vs..], r, cols),
    )
}
