//! CMPQ packing (the last phase of `cmpq_fit`'s pipeline): a tensor's column fits, f16 columns
//! and sparse outliers laid out as `Format::Cmpq` (src/format/cmpq.rs) plus the outlier add-on.
//!
//! Every budget step packs the whole model again (codes are stored row-major, so one changed
//! column moves every row's bits), so this is one of the few passes over all weights a step
//! makes. It is written for that: codes are gathered a tile of rows at a time (a column's codes
//! are one contiguous read per tile, instead of one scattered load per weight), and the tensor's
//! bytes are written once into a buffer of their final size (no growing copies and no second
//! buffer per class, whose fresh pages the kernel had to clear).

use crate::format::{storage_with, AddOns, QTensor};
use crate::quant::cmpq::Class;
use crate::quant::cmpq_alloc::Allocation;
use crate::quant::cmpq_fit::Fit;
use crate::{Error, Result};
use half::f16;

/// Rows per tile: a tile of `TILE × columns` codes (24 KiB at 1536 columns) stays in L1.
const TILE: usize = 16;

/// Append the codes of one class's columns (`fits`, in class order), row-major, packed at
/// `bits`: the layout of `format::pack_codes` (code `i` at bit `i · bits`, LSB first, u32
/// little-endian words; a test checks both give the same bytes). A code a fit lacks is 0.
pub(crate) fn pack_class(rows: usize, fits: &[&Fit], bits: u8, out: &mut Vec<u8>) {
    let n = fits.len();
    let start = out.len();
    out.resize(start + 4 * (rows * n * bits as usize).div_ceil(32), 0);
    // Whole words into the bytes already there: no length or capacity update per word.
    let mut words = out[start..].chunks_exact_mut(4);
    let mut put = |word: u32| {
        if let Some(d) = words.next() {
            d.copy_from_slice(&word.to_le_bytes());
        }
    };
    let mask = (1u64 << bits) - 1;
    let (mut acc, mut fill) = (0u64, 0u32);
    let mut tile = vec![0u8; TILE * n];
    for r0 in (0..rows).step_by(TILE) {
        let h = TILE.min(rows - r0);
        for (i, f) in fits.iter().enumerate() {
            let len = f.codes.len();
            let src = &f.codes[r0.min(len)..(r0 + h).min(len)];
            for (t, &c) in src.iter().enumerate() {
                tile[t * n + i] = c;
            }
            for t in src.len()..h {
                tile[t * n + i] = 0;
            }
        }
        for &c in &tile[..h * n] {
            acc |= (c as u64 & mask) << fill;
            fill += bits as u32;
            if fill >= 32 {
                put(acc as u32);
                acc >>= 32;
                fill -= 32;
            }
        }
    }
    if fill > 0 {
        put(acc as u32);
    }
}

/// Lay the parts out as `Format::Cmpq` (src/format/cmpq.rs) plus the sparse-outlier add-on,
/// from the column-major weights `wt` (`Job`'s layout) and the sorted flat row-major positions
/// `sparse` of the outliers.
pub(crate) fn assemble(
    wt: &[f32],
    rows: usize,
    cols: usize,
    alloc: &Allocation,
    class: &[Class],
    fits: &[Option<&Fit>],
    sparse: &[usize],
) -> Result<QTensor> {
    let (n_lo, n_hi, n_f16) = (alloc.n_lo(cols), alloc.n_hi, alloc.n_f16);
    let addons = AddOns {
        outliers: sparse.len(),
        lowrank: None,
    };
    let mut data = Vec::with_capacity(storage_with(alloc.format(), addons, rows, cols)?.total());
    let mut members: [Vec<usize>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for (j, &c) in class.iter().enumerate() {
        let k = match c {
            Class::Lo => 0,
            Class::Hi => 1,
            Class::F16 => 2,
        };
        let e = ((k << 14) | members[k].len()) as u16;
        data.extend_from_slice(&e.to_le_bytes());
        members[k].push(j);
    }
    if [n_lo, n_hi, n_f16] != [members[0].len(), members[1].len(), members[2].len()] {
        return Err(Error::config(
            "cmpq",
            "column classes do not match the allocation",
        ));
    }
    data.resize(data.len().div_ceil(4) * 4, 0);
    let half = |v: f32| f16::from_f32(v).to_le_bytes();
    let fit = |j: usize| -> Result<&Fit> {
        fits.get(j)
            .copied()
            .flatten()
            .ok_or_else(|| Error::config("cmpq", format!("column {j} has no codebook")))
    };
    let class_fits = [
        members[0]
            .iter()
            .map(|&j| fit(j))
            .collect::<Result<Vec<_>>>()?,
        members[1]
            .iter()
            .map(|&j| fit(j))
            .collect::<Result<Vec<_>>>()?,
    ];
    for f in class_fits.iter().flatten() {
        f.levels
            .iter()
            .for_each(|&v| data.extend_from_slice(&half(v)));
    }
    for (fs, bits) in class_fits.iter().zip([alloc.lo, alloc.lo + 1]) {
        pack_class(rows, fs, bits, &mut data);
    }
    let at = |i: usize| wt.get((i % cols) * rows + i / cols).copied().unwrap_or(0.0);
    let start = data.len();
    for r in 0..rows {
        for &j in &members[2] {
            data.extend_from_slice(&half(at(r * cols + j)));
        }
    }
    data.resize(start + (data.len() - start).div_ceil(4) * 4, 0);
    // The outlier add-on as `codebook::outlier_bytes` writes it: the u32 positions, then their
    // f16 values, padded to 4 bytes (the quantize tests read it back through the format).
    let start = data.len();
    sparse
        .iter()
        .for_each(|&i| data.extend_from_slice(&(i as u32).to_le_bytes()));
    sparse
        .iter()
        .for_each(|&i| data.extend_from_slice(&half(at(i))));
    data.resize(start + (data.len() - start).div_ceil(4) * 4, 0);
    QTensor::with_addons(alloc.format(), addons, rows, cols, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack_codes;
    use crate::quant::testutil::lcg;

    #[test]
    fn tiled_packing_equals_the_format_table() {
        // Row counts around the tile (16) and columns up to the widest tensor's, every width.
        for bits in 1..=8u8 {
            for (rows, m) in [(1, 1), (3, 5), (7, 33), (16, 3), (17, 9), (64, 70), (5, 0)] {
                check(rows, m, bits, rows);
            }
        }
        check(45, 1536, 3, 45);
        // Fits with too few codes pack zeros in their place.
        check(40, 7, 4, 21);
    }

    fn check(rows: usize, m: usize, bits: u8, have: usize) {
        let fits: Vec<Fit> = (0..m)
            .map(|j| Fit {
                levels: Vec::new(),
                codes: lcg(j as u64 + 100 * bits as u64, have)
                    .iter()
                    .map(|x| ((x + 0.5) * 256.0) as u8 & ((1u16 << bits) - 1) as u8)
                    .collect(),
            })
            .collect();
        let refs: Vec<&Fit> = fits.iter().collect();
        let matrix: Vec<u8> = (0..rows)
            .flat_map(|r| {
                fits.iter()
                    .map(move |f| f.codes.get(r).copied().unwrap_or(0))
            })
            .collect();
        let mut out = vec![7u8; 3];
        pack_class(rows, &refs, bits, &mut out);
        assert_eq!(out[..3], [7, 7, 7], "appends");
        assert_eq!(
            out[3..],
            pack_codes(&matrix, bits),
            "{bits} bits, {rows}×{m}"
        );
    }
}
