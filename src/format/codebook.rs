//! The `Codebook` family: codes into a table of non-uniform levels (docs/methods.md §1).
//!   codes  : `rows*cols` codes of `bits` bits, packed like `Int` (int.rs)
//!   scales : learned tables: `2^bits` f16 levels per row (`PerRow`) or per column (`PerColumn`),
//!            tables in row/column order, levels in code order; fixed tables (NF4, QLoRA arXiv
//!            2305.14314; FP4 E2M1, OCP Microscaling spec v1.0): one f16 absmax scale per group
//!            of the granularity, code `c` means `TABLE[c] * s`.
//! GPU decoders: shaders/fmt_cb_row.wgsl, fmt_cb_col.wgsl, fmt_nf4.wgsl, fmt_fp4.wgsl.

use super::packed::{
    align4, check_bits, code_range, entry_range, packed_bytes, random_codes, random_f16s,
    unpack_code,
};
use super::Granularity;
use super::{gpu_check_bits, gpu_u32, Draw, Family, Format, Fragment, GpuDecoder, Storage};
use crate::{Error, Result};
use half::f16;
use serde::{Deserialize, Serialize};

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

/// `Format::Codebook`'s fields.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CodebookFormat {
    pub(crate) bits: u8,
    pub(crate) table: Codebook,
}

impl CodebookFormat {
    /// f16 entries of the scales section: levels of the learned tables, or group scales.
    fn tables(&self, rows: usize, cols: usize) -> Result<usize> {
        let levels = 1usize << self.bits;
        Ok(match self.table {
            Codebook::PerRow => rows * levels,
            Codebook::PerColumn => cols * levels,
            Codebook::Nf4(g) | Codebook::Fp4(g) => {
                if self.bits != 4 {
                    return Err(Error::config(
                        "bits",
                        format!("{} has 4-bit codes, not {}", self.name(), self.bits),
                    ));
                }
                rows * cols / g.group_len(rows, cols, "tensor")?
            }
        })
    }
}

impl Family for CodebookFormat {
    fn name(&self) -> String {
        let bits = self.bits;
        match self.table {
            Codebook::PerRow => format!("kmeans{bits}-row"),
            Codebook::PerColumn => format!("kmeans{bits}-col"),
            Codebook::Nf4(g) => format!("nf4-{}", g.name()),
            Codebook::Fp4(g) => format!("fp4-{}", g.name()),
        }
    }

    fn storage(&self, rows: usize, cols: usize) -> Result<Storage> {
        check_bits(self.bits)?;
        Ok(Storage {
            codes: packed_bytes(rows * cols, self.bits),
            scales: align4(2 * self.tables(rows, cols)?),
            ..Default::default()
        })
    }

    fn dequantize(&self, blob: &[u8], rows: usize, cols: usize, out: &mut [f32]) -> Result<()> {
        let (codes, scales) = blob.split_at(packed_bytes(rows * cols, self.bits));
        let h = |i: usize| f16::from_le_bytes([scales[2 * i], scales[2 * i + 1]]).to_f32();
        let bits = self.bits;
        let levels = 1usize << bits;
        match self.table {
            Codebook::PerRow | Codebook::PerColumn => {
                for (i, o) in out.iter_mut().enumerate() {
                    let c = unpack_code(codes, i, bits) as usize;
                    let t = if self.table == Codebook::PerRow {
                        i / cols
                    } else {
                        i % cols
                    };
                    *o = h(t * levels + c);
                }
            }
            Codebook::Nf4(g) | Codebook::Fp4(g) => {
                let g = g.group_len(rows, cols, "tensor")?;
                let lut = if matches!(self.table, Codebook::Nf4(_)) {
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
        Ok(())
    }

    fn row_slice(
        &self,
        blob: &[u8],
        rows: usize,
        cols: usize,
        r0: usize,
        r1: usize,
    ) -> Result<Vec<u8>> {
        let (codes, scales) = blob.split_at(packed_bytes(rows * cols, self.bits));
        let levels = 1usize << self.bits;
        let mut d = code_range(codes, r0 * cols, r1 * cols, self.bits);
        d.extend(match self.table {
            Codebook::PerRow => entry_range(scales, r0 * levels, r1 * levels, 2),
            Codebook::PerColumn => scales.to_vec(),
            Codebook::Nf4(g) | Codebook::Fp4(g) => {
                let (ga, gb) = g.group_range(rows, cols, r0, r1)?;
                entry_range(scales, ga, gb, 2)
            }
        });
        Ok(d)
    }

    fn gpu(&self, rows: usize, cols: usize) -> Result<GpuDecoder> {
        let st = self.storage(rows, cols)?;
        gpu_check_bits(rows, cols, self.bits as u32)?;
        let (fragment, group) = match self.table {
            Codebook::PerRow => ("fmt_cb_row", cols),
            Codebook::PerColumn => ("fmt_cb_col", cols),
            Codebook::Nf4(g) => ("fmt_nf4", g.group_len(rows, cols, "tensor")?),
            Codebook::Fp4(g) => ("fmt_fp4", g.group_len(rows, cols, "tensor")?),
        };
        Ok(GpuDecoder {
            fragment,
            bits: self.bits as u32,
            group: gpu_u32(group, rows, cols)?,
            sym: 0,
            // Tables (or group scales) follow the 4-byte aligned codes.
            scale_off: (st.codes / 4) as u32,
            zero_off: 0,
        })
    }

    fn random(&self, rows: usize, cols: usize, next: Draw) -> Result<Vec<u8>> {
        let mut d = random_codes(rows * cols, self.bits, next);
        d.extend(random_f16s(self.tables(rows, cols)?, 0.0, 1.0, next));
        Ok(d)
    }
}

pub(super) fn fragments() -> Vec<Fragment> {
    vec![
        ("fmt_cb_row", include_str!("../../shaders/fmt_cb_row.wgsl")),
        ("fmt_cb_col", include_str!("../../shaders/fmt_cb_col.wgsl")),
        ("fmt_nf4", include_str!("../../shaders/fmt_nf4.wgsl")),
        ("fmt_fp4", include_str!("../../shaders/fmt_fp4.wgsl")),
    ]
}

pub(super) fn examples() -> Vec<Format> {
    let mut v = Vec::new();
    for bits in 1..=8u8 {
        for table in [Codebook::PerRow, Codebook::PerColumn] {
            v.push(Format::Codebook { bits, table });
        }
    }
    for gran in [
        Granularity::PerTensor,
        Granularity::PerRow,
        Granularity::Group(32),
        // Not a multiple of the 8 codes per word, and groups split `w_load4`'s four weights.
        Granularity::Group(6),
    ] {
        for table in [Codebook::Nf4(gran), Codebook::Fp4(gran)] {
            v.push(Format::Codebook { bits: 4, table });
        }
    }
    v
}
