//! The `OneBit` family: 1-bit weights as OneBit stores them (Xu et al., "OneBit: Towards
//! Extremely Low-bit Large Language Models", arXiv 2402.11295; docs/onebit.md): a sign
//! matrix and two f16 value vectors, `Ŵ = diag(s_out) · sign(W) · diag(s_in)`, so
//! `Ŵ[r][c] = ±s_out[r]·s_in[c]`. All little-endian, sections 4-byte aligned:
//!   signs : `rows*cols` bits, row-major, packed into u32 words from bit 0 up; 1 is `+`, 0 is `−`
//!   s_out : one f16 per row (output feature)
//!   s_in  : one f16 per column (input feature)
//! Every stored bit counts: `rows·cols + 16·(rows + cols)` bits (padding to words included),
//! about 1.06 bits per weight at 576 × 576. Sign binarization with one scale per row is the
//! `Int` family at 1 bit (int.rs); this is the two-vector form.
//! GPU decoder: shaders/fmt_onebit.wgsl.

use super::packed::{
    align4, code_range, entry_range, pack_codes, packed_bytes, random_codes, random_f16s,
    unpack_code,
};
use super::{
    gpu_check_bits, Draw, Family, Format, Fragment, GpuDecoder, LevelGroup, QTensor, Storage,
};
use crate::{Error, Result};
use half::f16;

/// The OneBit format (no parameters: the shape decides every size).
pub(crate) struct OneBitFormat;

fn f16_at(bytes: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]).to_f32()
}

/// Bytes of each section of a `rows × cols` tensor: (signs, s_out, s_in).
fn sections(rows: usize, cols: usize) -> (usize, usize, usize) {
    (
        packed_bytes(rows * cols, 1),
        align4(2 * rows),
        align4(2 * cols),
    )
}

impl Family for OneBitFormat {
    fn name(&self) -> String {
        "onebit".to_string()
    }

    fn storage(&self, rows: usize, cols: usize) -> Result<Storage> {
        if rows == 0 || cols == 0 {
            return Err(Error::config(
                "onebit",
                format!("a {rows}×{cols} tensor has no weights"),
            ));
        }
        let (signs, s_out, s_in) = sections(rows, cols);
        Ok(Storage {
            codes: signs,
            scales: s_out + s_in,
            ..Default::default()
        })
    }

    fn dequantize(&self, blob: &[u8], rows: usize, cols: usize, out: &mut [f32]) -> Result<()> {
        let (ns, no, _) = sections(rows, cols);
        let (signs, rest) = blob.split_at(ns);
        let (s_out, s_in) = rest.split_at(no);
        let s_out: Vec<f32> = (0..rows).map(|r| f16_at(s_out, r)).collect();
        let s_in: Vec<f32> = (0..cols).map(|c| f16_at(s_in, c)).collect();
        signed_outer(signs, &s_out, &s_in, out);
        Ok(())
    }

    fn row_levels(
        &self,
        blob: &[u8],
        rows: usize,
        cols: usize,
        row: usize,
    ) -> Result<Option<Vec<LevelGroup>>> {
        let (ns, no, _) = sections(rows, cols);
        let s_in: Vec<f32> = (0..cols).map(|c| f16_at(&blob[ns + no..], c)).collect();
        Ok(Some(sign_levels(f16_at(&blob[ns..], row), &s_in)))
    }

    fn row_slice(
        &self,
        blob: &[u8],
        rows: usize,
        cols: usize,
        r0: usize,
        r1: usize,
    ) -> Result<Vec<u8>> {
        let (ns, no, _) = sections(rows, cols);
        let (signs, rest) = blob.split_at(ns);
        let (s_out, s_in) = rest.split_at(no);
        let mut d = code_range(signs, r0 * cols, r1 * cols, 1);
        d.extend(entry_range(s_out, r0, r1, 2));
        // Every row reads all of s_in: the slice repeats it.
        d.extend_from_slice(s_in);
        Ok(d)
    }

    fn gpu(&self, rows: usize, cols: usize) -> Result<GpuDecoder> {
        gpu_check_bits(rows, cols, 1)?;
        let (ns, no, _) = sections(rows, cols);
        Ok(GpuDecoder {
            fragment: "fmt_onebit",
            bits: 1,
            group: 0,
            sym: 1,
            // Word offsets of s_out and s_in (sections are 4-byte aligned).
            scale_off: (ns / 4) as u32,
            zero_off: ((ns + no) / 4) as u32,
            decode_first: false,
        })
    }

    fn random(&self, rows: usize, cols: usize, next: Draw) -> Result<Vec<u8>> {
        let mut d = random_codes(rows * cols, 1, next);
        d.extend(random_f16s(rows, 0.05, 0.03, next));
        d.extend(random_f16s(cols, 1.0, 0.5, next));
        Ok(d)
    }
}

/// A row's levels under `signed_outer`: per column `c`, `{−v, +v}` with `v = s_out·s_in[c]`.
pub(super) fn sign_levels(s_out: f32, s_in: &[f32]) -> Vec<LevelGroup> {
    s_in.iter()
        .enumerate()
        .map(|(c, &si)| {
            let v = s_out * si;
            LevelGroup {
                start: c,
                end: c + 1,
                bits: 1,
                levels: vec![-v, v],
            }
        })
        .collect()
}

/// `out[r][c] = ±s_out[r]·s_in[c]`, the sign from bit `r·cols + c` of the packed `signs`
/// (1 is `+`): OneBit's weight, and BinaryMoS's for uniform gates.
pub(super) fn signed_outer(signs: &[u8], s_out: &[f32], s_in: &[f32], out: &mut [f32]) {
    let cols = s_in.len();
    for (r, row) in out.chunks_mut(cols).enumerate() {
        for (c, o) in row.iter_mut().enumerate() {
            let v = s_out[r] * s_in[c];
            *o = if unpack_code(signs, r * cols + c, 1) == 1 {
                v
            } else {
                -v
            };
        }
    }
}

impl QTensor {
    /// Assemble a OneBit tensor from its signs (`true` is `+`, row-major) and value vectors.
    pub fn from_onebit_parts(
        rows: usize,
        cols: usize,
        signs: &[bool],
        s_out: &[f32],
        s_in: &[f32],
    ) -> Result<Self> {
        if signs.len() != rows * cols || s_out.len() != rows || s_in.len() != cols {
            return Err(Error::config(
                "onebit",
                format!(
                    "{} signs, {} s_out and {} s_in for a {rows}×{cols} tensor",
                    signs.len(),
                    s_out.len(),
                    s_in.len()
                ),
            ));
        }
        let bits: Vec<u8> = signs.iter().map(|&s| s as u8).collect();
        let mut data = pack_codes(&bits, 1);
        for v in [s_out, s_in] {
            let mut b: Vec<u8> = v
                .iter()
                .flat_map(|x| f16::from_f32(*x).to_le_bytes())
                .collect();
            b.resize(align4(b.len()), 0);
            data.extend_from_slice(&b);
        }
        QTensor::new(Format::OneBit, rows, cols, data)
    }
}

pub(super) fn fragments() -> Vec<Fragment> {
    vec![("fmt_onebit", include_str!("../../shaders/fmt_onebit.wgsl"))]
}

pub(super) fn examples() -> Vec<Format> {
    vec![Format::OneBit]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_counts_signs_and_both_vectors() {
        // 8 × 64: 512 sign bits, 8 + 64 f16 values.
        let s = Format::OneBit.storage(8, 64).unwrap();
        assert_eq!((s.codes, s.scales), (64, 16 + 128));
        // Odd sizes pad each section to whole words.
        let s = Format::OneBit.storage(3, 5).unwrap();
        assert_eq!((s.codes, s.scales), (4, 8 + 12));
        assert!(Format::OneBit.storage(0, 5).is_err());
    }

    #[test]
    fn parts_roundtrip_through_the_reference() {
        let (rows, cols) = (3, 5);
        let signs: Vec<bool> = (0..rows * cols).map(|i| i % 3 != 0).collect();
        let s_out = [0.5f32, 1.0, 2.0];
        let s_in = [1.0f32, 0.25, 4.0, 0.5, 2.0];
        let q = QTensor::from_onebit_parts(rows, cols, &signs, &s_out, &s_in).unwrap();
        let w = q.dequantize().unwrap();
        for r in 0..rows {
            for c in 0..cols {
                let v = s_out[r] * s_in[c];
                let want = if signs[r * cols + c] { v } else { -v };
                assert_eq!(w[r * cols + c], want, "({r}, {c})");
            }
        }
        // A slice of rows 1..3 keeps its rows and all of s_in.
        let blob = Format::OneBit
            .with_family(|f| f.row_slice(&q.data, rows, cols, 1, 3))
            .unwrap();
        let sw = Format::OneBit.dequantize(&blob, 2, cols).unwrap();
        assert_eq!(sw, w[cols..].to_vec());
    }
}
