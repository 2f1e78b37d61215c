//! THE table of storage formats (architecture principle 2).
//!
//! Every way QuantLab stores a weight tensor is one `Format` variant, and this file alone says
//! how many bytes it costs (by component), how its bytes are laid out and how to expand it back
//! to f32. Memory accounting, the CPU reference and (later) the GPU upload all read this table;
//! nothing else computes a size. A quantized tensor is a `QTensor`: a format, a shape and one
//! byte blob whose length is exactly `format.storage(rows, cols).total()`.
//!
//! Layout of the `Int` family (RTN, GPTQ, ...), all little-endian, sections 4-byte aligned:
//!   codes  : `rows*cols` codes of `bits` bits, row-major, packed into u32 words from bit 0 up
//!   scales : one f16 per group, groups in row-major order
//!   zeros  : (asymmetric only) one `bits`-bit integer zero point per group, packed like codes
//! A symmetric code `c` means `(c - 2^(b-1)) * s`; for `b = 1` it means `±s` (sign
//! binarization, `c = 1` is `+s`). An asymmetric code `c` means `(c - z) * s`.
//!
//! Layout of `Codebook` (non-uniform levels; docs/methods.md §1):
//!   codes  : `rows*cols` codes of `bits` bits, packed like `Int`
//!   scales : learned tables: `2^bits` f16 levels per row (`PerRow`) or per column (`PerColumn`),
//!            tables in row/column order, levels in code order; fixed tables (NF4, FP4 E2M1): one
//!            f16 absmax scale per group of the granularity, code `c` means `TABLE[c] * s`.
//!
//! Layout of `Cmpq` (channel-wise mixed precision, CMPQ, arXiv 2410.13056; docs/methods.md §3).
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
//!
//! Add-ons (`AddOns`) any base format can carry, appended after the base bytes, 4-byte aligned:
//!   outliers: `count` u32 row-major indices, strictly increasing, then `count` f16 values that
//!             replace the base value at those positions (dense-and-sparse, SqueezeLLM-style);
//!   lowrank : LoRC (ZeroQuant-V2) factors `Û` (`rows × r`) then `V̂` (`r × cols`), added as
//!             `Ŵ + ÛV̂`; f16 values, or int8 with one f16 absmax scale per row of `Û` and per
//!             row of `V̂` (scales after the codes of each factor).

use crate::quant::ggml::{self, GgmlType};
use crate::{Error, Result};
use half::f16;
use serde::{Deserialize, Serialize};

/// How many weights share one scale in the `Int` family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    PerTensor,
    PerRow,
    /// `g` consecutive input weights within a row; `g` must divide the row length.
    Group(usize),
}

impl Granularity {
    /// Group sizes the UI offers (methods.md §1).
    pub const GROUP_SIZES: [usize; 6] = [16, 32, 64, 128, 192, 256];

    /// Weights per group for a `rows × cols` tensor, or an error naming the tensor.
    pub fn group_len(self, rows: usize, cols: usize, tensor: &str) -> Result<usize> {
        match self {
            Granularity::PerTensor => Ok(rows * cols),
            Granularity::PerRow => Ok(cols),
            Granularity::Group(g) => {
                if g == 0 || !cols.is_multiple_of(g) {
                    Err(Error::config(
                        "group",
                        format!("group size {g} does not divide the row length {cols} of {tensor}"),
                    ))
                } else {
                    Ok(g)
                }
            }
        }
    }
}

/// Parameters of the uniform integer format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IntSpec {
    pub bits: u8,
    pub gran: Granularity,
    pub sym: bool,
}

/// Which table of levels a `Codebook` tensor uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codebook {
    /// Learned: `2^bits` levels per output row.
    PerRow,
    /// Learned: `2^bits` levels per input column.
    PerColumn,
    /// NormalFloat-4 (QLoRA, arXiv 2305.14314 §3): 4 bits, `NF4[c] · absmax` per group.
    Nf4(Granularity),
    /// FP4 E2M1: 4 bits (sign, 2 exponent, 1 mantissa), `E2M1[c] · absmax/6` per group.
    Fp4(Granularity),
}

/// NF4 levels in code order: quantiles of a standard normal, rescaled to [-1, 1] with an exact 0
/// (QLoRA, arXiv 2305.14314, Appendix E).
pub const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// FP4 E2M1 values in code order: code `sign·8 + e·2 + m`, magnitudes 0, 0.5 (subnormal), 1,
/// 1.5, 2, 3, 4, 6 (the OCP Microscaling spec's E2M1; methods.md §1).
pub const E2M1: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    F32,
    F16,
    BF16,
    /// A ggml block format, as loaded from GGUF (not produced by QuantLab's quantizers).
    Ggml(GgmlType),
    /// Uniform integer codes with f16 scales (and zero points when asymmetric).
    Int(IntSpec),
    /// Codes into a table of non-uniform levels.
    Codebook {
        bits: u8,
        table: Codebook,
    },
    /// CMPQ: per input column `lo` or `lo + 1` bits with its own codebook, or f16.
    Cmpq {
        lo: u8,
        n_hi: u32,
        n_f16: u32,
    },
}

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

/// LoRC factors carried by a tensor (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LowRankSpec {
    pub rank: usize,
    /// int8 factors with f16 row scales instead of f16 values.
    pub bits8: bool,
}

/// Extras stored after a tensor's base format (see the module comment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AddOns {
    /// Number of sparse f16 outliers.
    pub outliers: usize,
    pub lowrank: Option<LowRankSpec>,
}

impl AddOns {
    pub fn is_empty(&self) -> bool {
        self.outliers == 0 && self.lowrank.is_none()
    }

    /// Bytes of `(outliers, lowrank)` for a `rows × cols` tensor.
    fn bytes(&self, rows: usize, cols: usize) -> (usize, usize) {
        let out = self.outliers * 4 + align4(self.outliers * 2);
        let lr = match self.lowrank {
            None => 0,
            Some(l) if l.bits8 => {
                align4(l.rank * rows)
                    + align4(2 * rows)
                    + align4(l.rank * cols)
                    + align4(2 * l.rank)
            }
            Some(l) => align4(2 * l.rank * rows) + align4(2 * l.rank * cols),
        };
        (out, lr)
    }

    /// Check against a `rows × cols` tensor: outliers ≤ elements, rank ≤ min(rows, cols).
    fn check(&self, rows: usize, cols: usize) -> Result<()> {
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

    /// Apply to the dequantized base `out` (`rows × cols`) from the add-on bytes `blob`.
    fn apply(&self, blob: &[u8], rows: usize, cols: usize, out: &mut [f32]) -> Result<()> {
        let (ob, _) = self.bytes(rows, cols);
        let (outl, lr) = blob.split_at(ob.min(blob.len()));
        let k = self.outliers;
        let n = rows * cols;
        let mut prev: Option<usize> = None;
        for i in 0..k {
            let b = &outl[4 * i..4 * i + 4];
            let idx = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
            if idx >= n || prev.is_some_and(|p| idx <= p) {
                return Err(Error::format(
                    "tensor",
                    "outliers",
                    format!("index {idx} at {i} is out of range or out of order (size {n})"),
                ));
            }
            prev = Some(idx);
            let v = &outl[4 * k + 2 * i..4 * k + 2 * i + 2];
            out[idx] = f16::from_le_bytes([v[0], v[1]]).to_f32();
        }
        if let Some(l) = self.lowrank {
            let (u, v) = lowrank_factors(lr, rows, cols, l);
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
}

/// Decode LoRC factors `(Û, V̂)` (row-major `rows × r`, `r × cols`) from their bytes.
pub fn lowrank_factors(
    blob: &[u8],
    rows: usize,
    cols: usize,
    l: LowRankSpec,
) -> (Vec<f32>, Vec<f32>) {
    let r = l.rank;
    let h = |b: &[u8], i: usize| f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32();
    if !l.bits8 {
        let ub = align4(2 * r * rows);
        let u = (0..rows * r).map(|i| h(blob, i)).collect();
        let v = (0..r * cols).map(|i| h(&blob[ub..], i)).collect();
        return (u, v);
    }
    let int8 = |codes: &[u8], scales: &[u8], n_rows: usize, n_cols: usize| -> Vec<f32> {
        (0..n_rows * n_cols)
            .map(|i| codes[i] as i8 as f32 * h(scales, i / n_cols))
            .collect()
    };
    let (uc, rest) = blob.split_at(align4(r * rows));
    let (us, rest) = rest.split_at(align4(2 * rows));
    let (vc, vs) = rest.split_at(align4(r * cols));
    (int8(uc, us, rows, r), int8(vc, vs, r, cols))
}

/// Bytes of a stored tensor by component, for memory reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage {
    /// Quantized codes or plain values.
    pub codes: usize,
    /// Scales (and, for ggml blocks, the per-block minimums they carry).
    pub scales: usize,
    /// Zero points.
    pub zeros: usize,
    /// Sparse outliers: indices and values.
    #[serde(default)]
    pub outliers: usize,
    /// Low-rank (LoRC) factors.
    #[serde(default)]
    pub lowrank: usize,
}

impl Storage {
    pub fn total(&self) -> usize {
        self.codes + self.scales + self.zeros + self.outliers + self.lowrank
    }
    pub fn add(&mut self, o: Storage) {
        self.codes += o.codes;
        self.scales += o.scales;
        self.zeros += o.zeros;
        self.outliers += o.outliers;
        self.lowrank += o.lowrank;
    }
}

fn gran_name(g: Granularity) -> String {
    match g {
        Granularity::PerTensor => "tensor".to_string(),
        Granularity::PerRow => "row".to_string(),
        Granularity::Group(g) => format!("g{g}"),
    }
}

/// Bytes needed for `n` codes of `bits` bits packed into u32 words.
pub fn packed_bytes(n: usize, bits: u8) -> usize {
    (n * bits as usize).div_ceil(32) * 4
}

fn align4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

impl Format {
    pub fn name(&self) -> String {
        match self {
            Format::F32 => "f32".into(),
            Format::F16 => "f16".into(),
            Format::BF16 => "bf16".into(),
            Format::Ggml(t) => t.name().to_string(),
            Format::Int(s) => {
                let g = gran_name(s.gran);
                format!("int{}-{}-{}", s.bits, g, if s.sym { "sym" } else { "asym" })
            }
            Format::Codebook { bits, table } => match table {
                Codebook::PerRow => format!("kmeans{bits}-row"),
                Codebook::PerColumn => format!("kmeans{bits}-col"),
                Codebook::Nf4(g) => format!("nf4-{}", gran_name(*g)),
                Codebook::Fp4(g) => format!("fp4-{}", gran_name(*g)),
            },
            Format::Cmpq { lo, n_hi, n_f16 } => {
                format!("cmpq{lo}/{}-hi{n_hi}-f16x{n_f16}", lo + 1)
            }
        }
    }

    /// Bytes this format needs for a `rows × cols` tensor, by component.
    pub fn storage(&self, rows: usize, cols: usize) -> Result<Storage> {
        let n = rows * cols;
        Ok(match *self {
            Format::F32 => Storage {
                codes: 4 * n,
                ..Default::default()
            },
            Format::F16 | Format::BF16 => Storage {
                codes: 2 * n,
                ..Default::default()
            },
            Format::Ggml(t) => {
                if !cols.is_multiple_of(t.block_size()) {
                    return Err(Error::config(
                        "format",
                        format!(
                            "{} needs rows that are a multiple of {}, got {cols}",
                            t.name(),
                            t.block_size()
                        ),
                    ));
                }
                let blocks = n / t.block_size();
                let scale_bytes = t.scale_bytes_per_block();
                Storage {
                    codes: blocks * (t.type_size() - scale_bytes),
                    scales: blocks * scale_bytes,
                    ..Default::default()
                }
            }
            Format::Int(s) => {
                check_bits(s.bits)?;
                let g = s.gran.group_len(rows, cols, "tensor")?;
                let groups = n / g;
                Storage {
                    codes: packed_bytes(n, s.bits),
                    scales: align4(2 * groups),
                    zeros: if s.sym {
                        0
                    } else {
                        packed_bytes(groups, s.bits)
                    },
                    ..Default::default()
                }
            }
            Format::Codebook { bits, table } => {
                check_bits(bits)?;
                let levels = 1usize << bits;
                let tables = match table {
                    Codebook::PerRow => rows * levels,
                    Codebook::PerColumn => cols * levels,
                    Codebook::Nf4(g) | Codebook::Fp4(g) => {
                        if bits != 4 {
                            return Err(Error::config(
                                "bits",
                                format!("{} has 4-bit codes, not {bits}", self.name()),
                            ));
                        }
                        n / g.group_len(rows, cols, "tensor")?
                    }
                };
                Storage {
                    codes: packed_bytes(n, bits),
                    scales: align4(2 * tables),
                    ..Default::default()
                }
            }
            Format::Cmpq { lo, n_hi, n_f16 } => {
                let l = cmpq_layout(lo, n_hi as usize, n_f16 as usize, rows, cols)?;
                Storage {
                    codes: l.end - l.lo_codes,
                    scales: l.lo_codes,
                    ..Default::default()
                }
            }
        })
    }

    /// Expand a stored blob to f32, row-major `rows × cols`.
    pub fn dequantize(&self, blob: &[u8], rows: usize, cols: usize) -> Result<Vec<f32>> {
        let st = self.storage(rows, cols)?;
        if blob.len() != st.total() {
            return Err(Error::format(
                "tensor",
                "data",
                format!(
                    "{} bytes for {} {rows}×{cols}, expected {}",
                    blob.len(),
                    self.name(),
                    st.total()
                ),
            ));
        }
        let n = rows * cols;
        let mut out = vec![0f32; n];
        match *self {
            Format::F32 => {
                for (o, c) in out.iter_mut().zip(blob.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            Format::F16 => {
                for (o, c) in out.iter_mut().zip(blob.chunks_exact(2)) {
                    *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            Format::BF16 => {
                for (o, c) in out.iter_mut().zip(blob.chunks_exact(2)) {
                    *o = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            Format::Ggml(t) => ggml::dequantize(t, blob, &mut out)?,
            Format::Int(s) => {
                let g = s.gran.group_len(rows, cols, "tensor")?;
                let codes = &blob[..st.codes];
                let scales = &blob[st.codes..st.codes + st.scales];
                let zeros = &blob[st.codes + st.scales..];
                let half_range = 1i32 << (s.bits - 1);
                for (gi, chunk) in out.chunks_mut(g).enumerate() {
                    let sc = f16::from_le_bytes([scales[2 * gi], scales[2 * gi + 1]]).to_f32();
                    let z = if s.sym {
                        half_range
                    } else {
                        unpack_code(zeros, gi, s.bits) as i32
                    };
                    for (k, o) in chunk.iter_mut().enumerate() {
                        let c = unpack_code(codes, gi * g + k, s.bits) as i32;
                        *o = if s.sym && s.bits == 1 {
                            if c == 1 {
                                sc
                            } else {
                                -sc
                            }
                        } else {
                            (c - z) as f32 * sc
                        };
                    }
                }
            }
            Format::Codebook { bits, table } => {
                let codes = &blob[..st.codes];
                let scales = &blob[st.codes..st.codes + st.scales];
                let h = |i: usize| f16::from_le_bytes([scales[2 * i], scales[2 * i + 1]]).to_f32();
                let levels = 1usize << bits;
                match table {
                    Codebook::PerRow | Codebook::PerColumn => {
                        for (i, o) in out.iter_mut().enumerate() {
                            let c = unpack_code(codes, i, bits) as usize;
                            let t = if table == Codebook::PerRow {
                                i / cols
                            } else {
                                i % cols
                            };
                            *o = h(t * levels + c);
                        }
                    }
                    Codebook::Nf4(g) | Codebook::Fp4(g) => {
                        let g = g.group_len(rows, cols, "tensor")?;
                        let lut = if matches!(table, Codebook::Nf4(_)) {
                            &NF4
                        } else {
                            &E2M1
                        };
                        for (i, o) in out.iter_mut().enumerate() {
                            let c = unpack_code(codes, i, bits) as usize;
                            *o = lut[c] * h(i / g);
                        }
                    }
                }
            }
            Format::Cmpq { lo, n_hi, n_f16 } => {
                let l = cmpq_layout(lo, n_hi as usize, n_f16 as usize, rows, cols)?;
                cmpq_dequantize(blob, &l, lo, cols, &mut out)?;
            }
        }
        Ok(out)
    }
}

/// The CPU reference decoder of `Format::Cmpq` (`blob` has exactly `l.end` bytes). The map
/// comes from the file, so every class and index is checked before it is used.
fn cmpq_dequantize(
    blob: &[u8],
    l: &CmpqLayout,
    lo: u8,
    cols: usize,
    out: &mut [f32],
) -> Result<()> {
    let half = |i: usize| f16::from_le_bytes([blob[2 * i], blob[2 * i + 1]]).to_f32();
    let hi = lo + 1;
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

pub fn check_bits(bits: u8) -> Result<()> {
    if !(1..=8).contains(&bits) {
        return Err(Error::config("bits", format!("{bits} is outside 1..=8")));
    }
    Ok(())
}

/// Read code `i` of `bits` bits from a u32-word-packed little-endian stream.
#[inline]
pub fn unpack_code(packed: &[u8], i: usize, bits: u8) -> u32 {
    let bit = i * bits as usize;
    let word = bit / 32;
    let off = bit % 32;
    let w = |k: usize| -> u64 {
        let b = &packed[4 * k..4 * k + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64
    };
    let mut v = w(word) >> off;
    if off + bits as usize > 32 {
        v |= w(word + 1) << (32 - off);
    }
    (v as u32) & ((1u32 << bits) - 1)
}

/// Pack codes (each `< 2^bits`) into u32 words, little-endian.
pub fn pack_codes(codes: &[u8], bits: u8) -> Vec<u8> {
    let mut words = vec![0u32; (codes.len() * bits as usize).div_ceil(32)];
    for (i, &c) in codes.iter().enumerate() {
        let bit = i * bits as usize;
        let (word, off) = (bit / 32, bit % 32);
        let v = (c as u64 & ((1u64 << bits) - 1)) << off;
        words[word] |= v as u32;
        if off + bits as usize > 32 {
            words[word + 1] |= (v >> 32) as u32;
        }
    }
    bytemuck::cast_slice(&words).to_vec()
}

/// A stored tensor: its format, add-ons, shape (`rows × cols`, row-major) and bytes (the base
/// format's, then the add-ons').
#[derive(Clone, Debug, PartialEq)]
pub struct QTensor {
    pub format: Format,
    pub addons: AddOns,
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<u8>,
}

/// Bytes of a tensor of `format` with `addons`, by component.
pub fn storage_with(format: Format, addons: AddOns, rows: usize, cols: usize) -> Result<Storage> {
    let mut st = format.storage(rows, cols)?;
    addons.check(rows, cols)?;
    let (o, l) = addons.bytes(rows, cols);
    st.outliers = o;
    st.lowrank = l;
    Ok(st)
}

impl QTensor {
    /// Build from parts, checking the blob length against the table.
    pub fn new(format: Format, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self> {
        Self::with_addons(format, AddOns::default(), rows, cols, data)
    }

    /// As `new`, with add-ons whose bytes follow the base format's in `data`.
    pub fn with_addons(
        format: Format,
        addons: AddOns,
        rows: usize,
        cols: usize,
        data: Vec<u8>,
    ) -> Result<Self> {
        let want = storage_with(format, addons, rows, cols)?.total();
        if data.len() != want {
            return Err(Error::format(
                "tensor",
                "data",
                format!(
                    "{} bytes for {} {rows}×{cols}, expected {want}",
                    data.len(),
                    format.name()
                ),
            ));
        }
        Ok(QTensor {
            format,
            addons,
            rows,
            cols,
            data,
        })
    }

    /// Plain f32 storage of a dense matrix.
    pub fn from_f32(rows: usize, cols: usize, values: &[f32]) -> Self {
        QTensor {
            format: Format::F32,
            addons: AddOns::default(),
            rows,
            cols,
            data: bytemuck::cast_slice(values).to_vec(),
        }
    }

    /// Assemble an `Int` tensor from codes, scales and (asymmetric) zero points.
    pub fn from_int_parts(
        spec: IntSpec,
        rows: usize,
        cols: usize,
        codes: &[u8],
        scales: &[f32],
        zeros: &[u8],
    ) -> Result<Self> {
        let mut data = pack_codes(codes, spec.bits);
        let mut sc: Vec<u8> = scales
            .iter()
            .flat_map(|s| f16::from_f32(*s).to_le_bytes())
            .collect();
        sc.resize(align4(sc.len()), 0);
        data.extend_from_slice(&sc);
        if !spec.sym {
            data.extend_from_slice(&pack_codes(zeros, spec.bits));
        }
        QTensor::new(Format::Int(spec), rows, cols, data)
    }

    pub fn numel(&self) -> usize {
        self.rows * self.cols
    }
    pub fn storage(&self) -> Storage {
        // new() checked the format accepts this shape.
        storage_with(self.format, self.addons, self.rows, self.cols).unwrap_or_default()
    }
    /// The dense f32 values: base format, then outliers replaced, then `+ ÛV̂`.
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        let st = storage_with(self.format, self.addons, self.rows, self.cols)?;
        if self.data.len() != st.total() {
            return Err(Error::format(
                "tensor",
                "data",
                format!("{} bytes, expected {}", self.data.len(), st.total()),
            ));
        }
        let base = st.codes + st.scales + st.zeros;
        let (b, extra) = self.data.split_at(base);
        let mut out = self.format.dequantize(b, self.rows, self.cols)?;
        if !self.addons.is_empty() {
            self.addons.apply(extra, self.rows, self.cols, &mut out)?;
        }
        Ok(out)
    }

    /// This tensor with add-ons appended (replacing any it had).
    pub fn with_extra(&self, addons: AddOns, bytes: &[u8]) -> Result<QTensor> {
        let base = self.format.storage(self.rows, self.cols)?.total();
        let mut data = self.data[..base.min(self.data.len())].to_vec();
        data.extend_from_slice(bytes);
        QTensor::with_addons(self.format, addons, self.rows, self.cols, data)
    }
    /// Effective bits per weight: every stored bit over the number of weights.
    pub fn bits_per_weight(&self) -> f64 {
        8.0 * self.data.len() as f64 / self.numel().max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_roundtrip_all_widths() {
        for bits in 1..=8u8 {
            let codes: Vec<u8> = (0..1000u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8 & ((1u16 << bits) - 1) as u8)
                .collect();
            let packed = pack_codes(&codes, bits);
            assert_eq!(packed.len(), packed_bytes(codes.len(), bits));
            for (i, &c) in codes.iter().enumerate() {
                assert_eq!(
                    unpack_code(&packed, i, bits),
                    c as u32,
                    "bits {bits} index {i}"
                );
            }
        }
    }

    #[test]
    fn storage_counts_every_component() {
        let f = Format::Int(IntSpec {
            bits: 4,
            gran: Granularity::Group(32),
            sym: false,
        });
        let s = f.storage(8, 64).unwrap();
        assert_eq!(s.codes, 8 * 64 / 2);
        assert_eq!(s.scales, 16 * 2);
        assert_eq!(s.zeros, 8); // 16 zero points × 4 bits = 64 bits
        let bad = Format::Int(IntSpec {
            bits: 4,
            gran: Granularity::Group(48),
            sym: true,
        });
        assert!(bad.storage(8, 64).is_err());
    }
}
