//! The `Cmpq` family: channel-wise mixed precision (CMPQ, arXiv 2410.13056; docs/methods.md §3).
//! Every input column `j` has a class: `lo` bits, `hi = lo + 1` bits, or an f16 column
//! (outlier extraction A). `n_lo + n_hi + n_f16 = cols`. Sections in this order, each 4-byte
//! aligned (`cmpq_layout` gives their offsets, for the CPU and the GPU decoder alike):
//!   map     : `cols` u16, `class << 14 | index` (class 0 lo, 1 hi, 2 f16; index = the column's
//!             position among the columns of its class, so at most `MAX_CMPQ_COLS` columns)
//!   lo books: `n_lo` tables of `2^lo` f16 levels, in class-index order, levels in code order
//!   hi books: `n_hi` tables of `2^hi` f16 levels
//!   lo codes: `rows × n_lo` codes of `lo` bits, row-major over the lo columns, packed like `Int`
//!   hi codes: `rows × n_hi` codes of `hi` bits, likewise
//!   f16 cols: `rows × n_f16` f16 values, row-major over the f16 columns
//! Storage counts the map and the codebooks as `scales`, codes and f16 columns as `codes`.
//! Sparse outliers (extraction B) are the ordinary `AddOns.outliers`.
//! GPU decoder: shaders/fmt_cmpq.wgsl.

use super::packed::{
    align4, code_range, entry_range, packed_bytes, pad4, random_codes, random_f16s, unpack_code,
};
use super::{
    gpu_check_bits, gpu_too_big, Draw, Family, Format, Fragment, GpuDecoder, LevelGroup, Storage,
};
use crate::{Error, Result};
use half::f16;

/// Most columns a `Cmpq` tensor may have (the map's 14-bit index).
pub const MAX_CMPQ_COLS: usize = 1 << 14;

/// Byte offsets of the sections of a `Cmpq` tensor (see the module comment); `end` is the total.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmpqLayout {
    pub n_lo: usize,
    pub n_hi: usize,
    pub n_f16: usize,
    pub lo_books: usize,
    pub hi_books: usize,
    pub lo_codes: usize,
    pub hi_codes: usize,
    pub f16_cols: usize,
    pub end: usize,
}

/// The section offsets of a `Cmpq { lo, n_hi, n_f16 }` tensor of `rows × cols`, or an error
/// naming the field that is out of range.
pub fn cmpq_layout(
    lo: u8,
    n_hi: usize,
    n_f16: usize,
    rows: usize,
    cols: usize,
) -> Result<CmpqLayout> {
    if !(1..=7).contains(&lo) {
        return Err(Error::config("cmpq.lo", format!("{lo} is outside 1..=7")));
    }
    if rows == 0 || cols == 0 {
        return Err(Error::config(
            "cmpq.shape",
            format!("{rows}×{cols}: a CMPQ tensor has at least one row and one column"),
        ));
    }
    if cols > MAX_CMPQ_COLS {
        return Err(Error::config(
            "cmpq.cols",
            format!("{cols} columns, more than the map holds ({MAX_CMPQ_COLS})"),
        ));
    }
    let n_lo = cols
        .checked_sub(n_hi)
        .and_then(|r| r.checked_sub(n_f16))
        .ok_or_else(|| {
            Error::config(
                "cmpq.columns",
                format!("{n_hi} hi + {n_f16} f16 columns exceed the {cols} columns"),
            )
        })?;
    let hi = lo + 1;
    let lo_books = align4(2 * cols);
    // 2^lo f16 levels are at least 4 bytes (lo ≥ 1), so every table is word aligned.
    let hi_books = lo_books + 2 * (n_lo << lo);
    let lo_codes = hi_books + 2 * (n_hi << hi);
    let hi_codes = lo_codes + packed_bytes(rows * n_lo, lo);
    let f16_cols = hi_codes + packed_bytes(rows * n_hi, hi);
    let end = f16_cols + align4(2 * rows * n_f16);
    Ok(CmpqLayout {
        n_lo,
        n_hi,
        n_f16,
        lo_books,
        hi_books,
        lo_codes,
        hi_codes,
        f16_cols,
        end,
    })
}

/// The map's `(class, index)` per column, each checked against its class's count.
fn column_map(blob: &[u8], l: &CmpqLayout, cols: usize) -> Result<Vec<(usize, usize)>> {
    let mut map = Vec::with_capacity(cols);
    for c in 0..cols {
        let e = u16::from_le_bytes([blob[2 * c], blob[2 * c + 1]]) as usize;
        let (class, idx) = (e >> 14, e & (MAX_CMPQ_COLS - 1));
        let count = [l.n_lo, l.n_hi, l.n_f16].get(class).copied().unwrap_or(0);
        if idx >= count {
            return Err(Error::format(
                "tensor",
                "cmpq.map",
                format!("column {c}: class {class} index {idx}, but the class has {count} columns"),
            ));
        }
        map.push((class, idx));
    }
    Ok(map)
}

/// `Format::Cmpq`'s fields.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CmpqFormat {
    pub(crate) lo: u8,
    pub(crate) n_hi: u32,
    pub(crate) n_f16: u32,
}

impl CmpqFormat {
    fn layout(&self, rows: usize, cols: usize) -> Result<CmpqLayout> {
        cmpq_layout(self.lo, self.n_hi as usize, self.n_f16 as usize, rows, cols)
    }
}

impl Family for CmpqFormat {
    fn name(&self) -> String {
        let (lo, n_hi, n_f16) = (self.lo, self.n_hi, self.n_f16);
        format!("cmpq{lo}/{}-hi{n_hi}-f16x{n_f16}", lo + 1)
    }

    fn storage(&self, rows: usize, cols: usize) -> Result<Storage> {
        let l = self.layout(rows, cols)?;
        Ok(Storage {
            codes: l.end - l.lo_codes,
            scales: l.lo_codes,
            ..Default::default()
        })
    }

    /// The map comes from the file, so every class and index is checked before it is used.
    fn dequantize(&self, blob: &[u8], rows: usize, cols: usize, out: &mut [f32]) -> Result<()> {
        let l = self.layout(rows, cols)?;
        let lo = self.lo;
        let half = |i: usize| f16::from_le_bytes([blob[2 * i], blob[2 * i + 1]]).to_f32();
        let hi = lo + 1;
        let map = column_map(blob, &l, cols)?;
        // Row-major, so the output is written in order.
        for (r, orow) in out.chunks_exact_mut(cols).enumerate() {
            for (o, &(class, idx)) in orow.iter_mut().zip(&map) {
                *o = match class {
                    0 => {
                        let q = unpack_code(&blob[l.lo_codes..], r * l.n_lo + idx, lo) as usize;
                        half(l.lo_books / 2 + (idx << lo) + q)
                    }
                    1 => {
                        let q = unpack_code(&blob[l.hi_codes..], r * l.n_hi + idx, hi) as usize;
                        half(l.hi_books / 2 + (idx << hi) + q)
                    }
                    _ => half(l.f16_cols / 2 + r * l.n_f16 + idx),
                };
            }
        }
        Ok(())
    }

    /// One group a column: its own `lo`- or `hi`-bit codebook, or (an f16 column) the stored
    /// value itself.
    fn row_levels(
        &self,
        blob: &[u8],
        rows: usize,
        cols: usize,
        row: usize,
    ) -> Result<Option<Vec<LevelGroup>>> {
        let l = self.layout(rows, cols)?;
        let half = |i: usize| f16::from_le_bytes([blob[2 * i], blob[2 * i + 1]]).to_f32();
        let (lo, hi) = (self.lo, self.lo + 1);
        let book = |at: usize, idx: usize, b: u8| {
            let first = at / 2 + (idx << b);
            (first..first + (1 << b)).map(half).collect()
        };
        let groups = column_map(blob, &l, cols)?
            .into_iter()
            .enumerate()
            .map(|(c, (class, idx))| {
                let (bits, levels) = match class {
                    0 => (lo, book(l.lo_books, idx, lo)),
                    1 => (hi, book(l.hi_books, idx, hi)),
                    _ => (16, vec![half(l.f16_cols / 2 + row * l.n_f16 + idx)]),
                };
                LevelGroup {
                    start: c,
                    end: c + 1,
                    bits,
                    levels,
                }
            })
            .collect();
        Ok(Some(groups))
    }

    /// The map and the codebooks are per column: every slice keeps them; the codes and f16
    /// columns are row-major per class, so each class is sliced on its own.
    fn row_slice(
        &self,
        blob: &[u8],
        rows: usize,
        cols: usize,
        r0: usize,
        r1: usize,
    ) -> Result<Vec<u8>> {
        let l = self.layout(rows, cols)?;
        let (lo, hi) = (self.lo, self.lo + 1);
        let mut d = blob[..l.lo_codes].to_vec();
        d.extend(code_range(
            &blob[l.lo_codes..l.hi_codes],
            r0 * l.n_lo,
            r1 * l.n_lo,
            lo,
        ));
        d.extend(code_range(
            &blob[l.hi_codes..l.f16_cols],
            r0 * l.n_hi,
            r1 * l.n_hi,
            hi,
        ));
        d.extend(entry_range(
            &blob[l.f16_cols..],
            r0 * l.n_f16,
            r1 * l.n_f16,
            2,
        ));
        Ok(d)
    }

    fn gpu(&self, rows: usize, cols: usize) -> Result<GpuDecoder> {
        let l = self.layout(rows, cols)?;
        gpu_check_bits(rows, cols, self.lo as u32 + 1)?;
        if l.end / 4 > u32::MAX as usize {
            return Err(gpu_too_big(rows, cols));
        }
        // fmt_cmpq reads the section offsets (in words) from the format fields; it derives the
        // class counts from them (shaders/fmt_cmpq.wgsl).
        Ok(GpuDecoder {
            fragment: "fmt_cmpq",
            bits: self.lo as u32,
            group: (l.hi_books / 4) as u32,
            sym: (l.lo_codes / 4) as u32,
            scale_off: (l.hi_codes / 4) as u32,
            zero_off: (l.f16_cols / 4) as u32,
            decode_first: true,
        })
    }

    fn random(&self, rows: usize, cols: usize, next: Draw) -> Result<Vec<u8>> {
        let l = self.layout(rows, cols)?;
        // Classes in a random order (Fisher–Yates), each column numbered within its class.
        let mut class: Vec<u16> = [(0u16, l.n_lo), (1, l.n_hi), (2, l.n_f16)]
            .iter()
            .flat_map(|&(c, n)| std::iter::repeat_n(c, n))
            .collect();
        for i in (1..cols).rev() {
            class.swap(i, next() as usize % (i + 1));
        }
        let mut count = [0u16; 3];
        let map: Vec<u8> = class
            .iter()
            .flat_map(|&c| {
                let e = c << 14 | count[c as usize];
                count[c as usize] += 1;
                e.to_le_bytes()
            })
            .collect();
        let (lo, hi) = (self.lo, self.lo + 1);
        let mut d = pad4(map);
        d.extend(random_f16s(l.n_lo << lo, 0.0, 1.0, next));
        d.extend(random_f16s(l.n_hi << hi, 0.0, 1.0, next));
        d.extend(random_codes(rows * l.n_lo, lo, next));
        d.extend(random_codes(rows * l.n_hi, hi, next));
        d.extend(random_f16s(rows * l.n_f16, 0.0, 2.0, next));
        Ok(d)
    }
}

pub(super) fn fragments() -> Vec<Fragment> {
    vec![("fmt_cmpq", include_str!("../../shaders/fmt_cmpq.wgsl"))]
}

pub(super) fn examples() -> Vec<Format> {
    [
        (1, 0, 0),
        (2, 10, 3),
        (3, 20, 0),
        (4, 0, 5),
        (7, 1, 1),
        (2, 0, 96),
    ]
    .into_iter()
    .map(|(lo, n_hi, n_f16)| Format::Cmpq { lo, n_hi, n_f16 })
    .collect()
}
