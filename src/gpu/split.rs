//! Large tensors: a weight whose packed bytes exceed the device's largest storage binding is
//! cut by rows into parts, each a `QTensor` of the same format covering rows `r0..r1`, each
//! uploaded and multiplied on its own (`matmul.rs` places each part's output columns). WebGPU
//! guarantees only 128 MiB per binding, so a vocabulary-sized table on a weak device needs this.
//!
//! A part re-packs its rows as its format's module says (`QTensor::row_slice`, src/format/):
//! codes and per-row or per-group scales are sliced; what the whole tensor shares (a per-tensor
//! scale and zero point, per-column codebook tables, CMPQ's map and books, LoRC's `V̂`) is
//! repeated in every part, so a split tensor may hold a few bytes more than the table's total;
//! `Mat::bytes` reports what is really held.

use crate::format::QTensor;
use crate::{Error, Result};

/// Row ranges of `w` whose parts each fit `limit` bytes (padded to words), or an error naming
/// the bytes of the thinnest allowed part (one row, or the LoRC rank) against the limit.
pub(crate) fn plan(w: &QTensor, limit: u64) -> Result<Vec<(usize, usize)>> {
    let fits = |r0: usize, r1: usize| -> Result<bool> {
        let part = w.row_slice(r0, r1)?;
        Ok((part.data.len().div_ceil(4) * 4) as u64 <= limit)
    };
    // A part carries the tensor's LoRC factors, and the table caps their rank at the rows.
    let min_rows = w.addons.lowrank.map_or(1, |l| l.rank).min(w.rows);
    let total = w.data.len().max(1) as u64;
    let mut out = Vec::new();
    let mut r0 = 0;
    // First guess from the average bytes per row, then shrink until the part fits.
    let mut per = ((limit as u128 * w.rows as u128 / total as u128) as usize).clamp(1, w.rows);
    while r0 < w.rows {
        let mut r1 = (r0 + per.max(min_rows)).min(w.rows);
        loop {
            // Never leave a remainder thinner than a part may be.
            if w.rows - r1 > 0 && w.rows - r1 < min_rows {
                r1 = w.rows - min_rows;
            }
            if r1 >= r0 + min_rows && fits(r0, r1)? {
                break;
            }
            if r1 <= r0 + min_rows {
                let one = w.row_slice(r0, (r0 + min_rows).min(w.rows))?.data.len();
                return Err(Error::unsupported(
                    "gpu",
                    "tensor",
                    format!(
                        "{min_rows} row(s) of this {}×{} {} tensor take {one} bytes, more than \
                         the device's largest storage binding of {limit} bytes",
                        w.rows,
                        w.cols,
                        w.format.name()
                    ),
                ));
            }
            r1 = (r0 + (r1 - r0) * 7 / 8).max(r0 + min_rows);
        }
        per = r1 - r0;
        out.push((r0, r1));
        r0 = r1;
    }
    Ok(out)
}
