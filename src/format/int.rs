//! The `Int` family: QuantLab's uniform integer codes (RTN, GPTQ, AWQ, ...), 1–8 bits, with f16
//! scales per tensor, row or group. All little-endian, sections 4-byte aligned:
//!   codes  : `rows*cols` codes of `bits` bits, row-major, packed into u32 words from bit 0 up
//!   scales : one f16 per group, groups in row-major order
//!   zeros  : (asymmetric only) one `bits`-bit integer zero point per group, packed like codes
//! A symmetric code `c` means `(c - 2^(b-1)) * s`; for `b = 1` it means `±s` (sign
//! binarization, `c = 1` is `+s`). An asymmetric code `c` means `(c - z) * s`.
//! GPU decoder: shaders/fmt_int.wgsl.

use super::packed::{
    align4, check_bits, code_range, entry_range, pack_codes, packed_bytes, random_codes,
    random_f16s, unpack_code,
};
use super::{
    gpu_check_bits, gpu_u32, row_groups, Draw, Family, Format, Fragment, GpuDecoder, LevelGroup,
    QTensor, Storage,
};
use crate::{Error, Result};
use half::f16;
use serde::{Deserialize, Serialize};

/// How many weights share one scale in the `Int` family (and NF4/FP4).
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

    /// The name part of a format using this granularity.
    pub(super) fn name(self) -> String {
        match self {
            Granularity::PerTensor => "tensor".to_string(),
            Granularity::PerRow => "row".to_string(),
            Granularity::Group(g) => format!("g{g}"),
        }
    }

    /// The groups that rows `r0..r1` use (a per-tensor group is the whole tensor: every row
    /// slice keeps it).
    pub(super) fn group_range(
        self,
        rows: usize,
        cols: usize,
        r0: usize,
        r1: usize,
    ) -> Result<(usize, usize)> {
        let len = self.group_len(rows, cols, "tensor")?;
        Ok(match self {
            Granularity::PerTensor => (0, 1),
            _ => (r0 * cols / len, r1 * cols / len),
        })
    }
}

/// Parameters of the uniform integer format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IntSpec {
    pub bits: u8,
    pub gran: Granularity,
    pub sym: bool,
}

impl IntSpec {
    /// Group `gi`'s zero point: stored when asymmetric, `2^(b-1)` when symmetric.
    fn zero(&self, zeros: &[u8], gi: usize) -> i32 {
        if self.sym {
            1i32 << (self.bits - 1)
        } else {
            unpack_code(zeros, gi, self.bits) as i32
        }
    }

    /// What code `c` means with zero point `z` and scale `sc` (the module comment).
    fn value(&self, c: i32, z: i32, sc: f32) -> f32 {
        if self.sym && self.bits == 1 {
            if c == 1 {
                sc
            } else {
                -sc
            }
        } else {
            (c - z) as f32 * sc
        }
    }
}

impl Family for IntSpec {
    fn name(&self) -> String {
        let sym = if self.sym { "sym" } else { "asym" };
        format!("int{}-{}-{sym}", self.bits, self.gran.name())
    }

    fn storage(&self, rows: usize, cols: usize) -> Result<Storage> {
        check_bits(self.bits)?;
        let n = rows * cols;
        let groups = n / self.gran.group_len(rows, cols, "tensor")?;
        Ok(Storage {
            codes: packed_bytes(n, self.bits),
            scales: align4(2 * groups),
            zeros: if self.sym {
                0
            } else {
                packed_bytes(groups, self.bits)
            },
            ..Default::default()
        })
    }

    fn dequantize(&self, blob: &[u8], rows: usize, cols: usize, out: &mut [f32]) -> Result<()> {
        let st = self.storage(rows, cols)?;
        let g = self.gran.group_len(rows, cols, "tensor")?;
        let (codes, rest) = blob.split_at(st.codes);
        let (scales, zeros) = rest.split_at(st.scales);
        for (gi, chunk) in out.chunks_mut(g).enumerate() {
            let sc = f16::from_le_bytes([scales[2 * gi], scales[2 * gi + 1]]).to_f32();
            let z = self.zero(zeros, gi);
            for (k, o) in chunk.iter_mut().enumerate() {
                *o = self.value(unpack_code(codes, gi * g + k, self.bits) as i32, z, sc);
            }
        }
        Ok(())
    }

    /// Every code's value in each group of the row, by `value` as the decoder computes it.
    fn row_levels(
        &self,
        blob: &[u8],
        rows: usize,
        cols: usize,
        row: usize,
    ) -> Result<Option<Vec<LevelGroup>>> {
        let st = self.storage(rows, cols)?;
        let g = self.gran.group_len(rows, cols, "tensor")?;
        let (scales, zeros) = blob[st.codes..].split_at(st.scales);
        let groups = row_groups(row, cols, g)
            .into_iter()
            .map(|(gi, start, end)| {
                let sc = f16::from_le_bytes([scales[2 * gi], scales[2 * gi + 1]]).to_f32();
                let z = self.zero(zeros, gi);
                LevelGroup {
                    start,
                    end,
                    bits: self.bits,
                    levels: (0..1i32 << self.bits)
                        .map(|c| self.value(c, z, sc))
                        .collect(),
                }
            })
            .collect();
        Ok(Some(groups))
    }

    fn row_slice(
        &self,
        blob: &[u8],
        rows: usize,
        cols: usize,
        r0: usize,
        r1: usize,
    ) -> Result<Vec<u8>> {
        let st = self.storage(rows, cols)?;
        let (codes, rest) = blob.split_at(st.codes);
        let (scales, zeros) = rest.split_at(st.scales);
        let (ga, gb) = self.gran.group_range(rows, cols, r0, r1)?;
        let mut d = code_range(codes, r0 * cols, r1 * cols, self.bits);
        d.extend(entry_range(scales, ga, gb, 2));
        if !self.sym {
            d.extend(code_range(zeros, ga, gb, self.bits));
        }
        Ok(d)
    }

    fn gpu(&self, rows: usize, cols: usize) -> Result<GpuDecoder> {
        let st = self.storage(rows, cols)?;
        gpu_check_bits(rows, cols, self.bits as u32)?;
        Ok(GpuDecoder {
            fragment: "fmt_int",
            bits: self.bits as u32,
            group: gpu_u32(self.gran.group_len(rows, cols, "tensor")?, rows, cols)?,
            sym: self.sym as u32,
            // Sections are 4-byte aligned, so these are whole words.
            scale_off: (st.codes / 4) as u32,
            zero_off: ((st.codes + st.scales) / 4) as u32,
            decode_first: false,
        })
    }

    fn random(&self, rows: usize, cols: usize, next: Draw) -> Result<Vec<u8>> {
        let groups = rows * cols / self.gran.group_len(rows, cols, "tensor")?;
        let mut d = random_codes(rows * cols, self.bits, next);
        d.extend(random_f16s(groups, 0.05, 0.02, next));
        if !self.sym {
            d.extend(random_codes(groups, self.bits, next));
        }
        Ok(d)
    }
}

impl QTensor {
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
}

pub(super) fn fragments() -> Vec<Fragment> {
    vec![("fmt_int", include_str!("../../shaders/fmt_int.wgsl"))]
}

pub(super) fn examples() -> Vec<Format> {
    let mut v = Vec::new();
    for bits in 1..=8u8 {
        for (gran, sym) in [
            (Granularity::Group(32), bits % 2 == 0),
            (Granularity::PerRow, bits % 2 == 1),
            (Granularity::PerTensor, bits < 4),
            // 6 is not a multiple of 4: groups split `w_load4`'s four weights.
            (Granularity::Group(6), bits > 4),
        ] {
            v.push(Format::Int(IntSpec { bits, gran, sym }));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

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
