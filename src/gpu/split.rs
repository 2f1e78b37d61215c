//! Large tensors: a weight whose packed bytes exceed the device's largest storage binding is
//! cut by rows into parts, each a `QTensor` of the same format covering rows `r0..r1`, each
//! uploaded and multiplied on its own (`matmul.rs` places each part's output columns). WebGPU
//! guarantees only 128 MiB per binding, so a vocabulary-sized table on a weak device needs this.
//!
//! A part re-packs its rows with the format table's layout (format.rs): codes and per-row or
//! per-group scales are sliced; what the whole tensor shares (a per-tensor scale and zero point,
//! per-column codebook tables, LoRC's `V̂`) is repeated in every part, so a split tensor may hold
//! a few bytes more than the table's total; `Mat::bytes` reports what is really held.

use crate::quant::format::{
    pack_codes, storage_with, unpack_code, AddOns, Codebook, Format, Granularity, LowRankSpec,
    QTensor,
};
use crate::{Error, Result};

fn pad4(mut v: Vec<u8>) -> Vec<u8> {
    v.resize(v.len().div_ceil(4) * 4, 0);
    v
}

/// Codes `a..b` of a `bits`-bit packed stream, re-packed from bit 0.
fn codes(packed: &[u8], a: usize, b: usize, bits: u8) -> Vec<u8> {
    let c: Vec<u8> = (a..b).map(|i| unpack_code(packed, i, bits) as u8).collect();
    pack_codes(&c, bits)
}

/// Entries `a..b` of an array of `size`-byte entries, padded to whole words.
fn entries(bytes: &[u8], a: usize, b: usize, size: usize) -> Vec<u8> {
    pad4(bytes[a * size..b * size].to_vec())
}

/// Groups `a..b` of the groups of rows `r0..r1` for a granularity (a per-tensor group is the
/// whole tensor: every part keeps it).
fn group_range(
    g: Granularity,
    rows: usize,
    cols: usize,
    r0: usize,
    r1: usize,
) -> Result<(usize, usize)> {
    let len = g.group_len(rows, cols, "tensor")?;
    Ok(match g {
        Granularity::PerTensor => (0, 1),
        _ => (r0 * cols / len, r1 * cols / len),
    })
}

/// Rows `r0..r1` of `w` as a tensor of the same format and add-ons (outliers of those rows).
pub(crate) fn row_slice(w: &QTensor, r0: usize, r1: usize) -> Result<QTensor> {
    let (rows, cols) = (w.rows, w.cols);
    let n = r1 - r0;
    let st = w.format.storage(rows, cols)?;
    let base = &w.data[..st.codes + st.scales + st.zeros];
    let (code_b, rest) = base.split_at(st.codes);
    let (scale_b, zero_b) = rest.split_at(st.scales);
    let mut data = match w.format {
        Format::F32 => base[4 * r0 * cols..4 * r1 * cols].to_vec(),
        Format::F16 | Format::BF16 => base[2 * r0 * cols..2 * r1 * cols].to_vec(),
        Format::Ggml(t) => {
            let row = cols / t.block_size() * t.type_size();
            base[r0 * row..r1 * row].to_vec()
        }
        Format::Int(s) => {
            let (ga, gb) = group_range(s.gran, rows, cols, r0, r1)?;
            let mut d = codes(code_b, r0 * cols, r1 * cols, s.bits);
            d.extend(entries(scale_b, ga, gb, 2));
            if !s.sym {
                d.extend(codes(zero_b, ga, gb, s.bits));
            }
            d
        }
        Format::Codebook { bits, table } => {
            let levels = 1usize << bits;
            let mut d = codes(code_b, r0 * cols, r1 * cols, bits);
            d.extend(match table {
                Codebook::PerRow => entries(scale_b, r0 * levels, r1 * levels, 2),
                Codebook::PerColumn => scale_b.to_vec(),
                Codebook::Nf4(g) | Codebook::Fp4(g) => {
                    let (ga, gb) = group_range(g, rows, cols, r0, r1)?;
                    entries(scale_b, ga, gb, 2)
                }
            });
            d
        }
        Format::Cmpq { .. } => {
            // CMPQ's class sections would each need slicing (and its tensors are a few bits
            // per weight, far below any binding limit at the model sizes the page runs).
            return Err(Error::unsupported(
                "gpu",
                "split",
                format!(
                    "a {rows}×{cols} {} tensor is larger than the GPU's storage binding limit; \
                     CMPQ tensors are not split across bindings",
                    w.format.name()
                ),
            ));
        }
    };
    // A part keeps the base format's shape rule: a per-tensor group becomes the part's tensor.
    let extra = &w.data[base.len()..];
    let mut addons = AddOns::default();
    let full = storage_with(w.format, w.addons, rows, cols)?;
    let (out_b, lr_b) = extra.split_at(full.outliers.min(extra.len()));
    let k = w.addons.outliers;
    let (lo, hi) = ((r0 * cols) as u32, (r1 * cols) as u32);
    let mut idx = Vec::new();
    let mut vals = Vec::new();
    for i in 0..k {
        let b = &out_b[4 * i..4 * i + 4];
        let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if (lo..hi).contains(&v) {
            idx.extend_from_slice(&(v - lo).to_le_bytes());
            vals.extend_from_slice(&out_b[4 * k + 2 * i..4 * k + 2 * i + 2]);
        }
    }
    addons.outliers = idx.len() / 4;
    data.extend(idx);
    data.extend(pad4(vals));
    if let Some(l) = w.addons.lowrank {
        // A part's rank stays the tensor's (Û is rows × rank); the table caps rank at
        // min(rows, cols), so a part thinner than the rank cannot carry it (`plan` avoids it).
        if n < l.rank {
            return Err(Error::unsupported(
                "gpu",
                "split",
                format!("a part of {n} rows cannot carry rank-{} factors", l.rank),
            ));
        }
        let (u_vals, u_sc, v_part) = if l.bits8 {
            let us = (l.rank * rows).div_ceil(4) * 4;
            let vb = us + (2 * rows).div_ceil(4) * 4;
            (
                entries(lr_b, r0 * l.rank, r1 * l.rank, 1),
                entries(&lr_b[us..], r0, r1, 2),
                lr_b[vb..].to_vec(),
            )
        } else {
            let vb = (2 * l.rank * rows).div_ceil(4) * 4;
            (
                entries(lr_b, r0 * l.rank, r1 * l.rank, 2),
                Vec::new(),
                lr_b[vb..].to_vec(),
            )
        };
        data.extend(u_vals);
        data.extend(u_sc);
        data.extend(v_part);
        addons.lowrank = Some(LowRankSpec {
            rank: l.rank,
            bits8: l.bits8,
        });
    }
    QTensor::with_addons(w.format, addons, n, cols, data)
}

/// Row ranges of `w` whose parts each fit `limit` bytes (padded to words), or an error naming
/// the bytes of the thinnest allowed part (one row, or the LoRC rank) against the limit.
pub(crate) fn plan(w: &QTensor, limit: u64) -> Result<Vec<(usize, usize)>> {
    let fits = |r0: usize, r1: usize| -> Result<bool> {
        let part = row_slice(w, r0, r1)?;
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
                let one = row_slice(w, r0, (r0 + min_rows).min(w.rows))?.data.len();
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
