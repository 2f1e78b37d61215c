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
}

impl Storage {
    pub fn total(&self) -> usize {
        self.codes + self.scales + self.zeros
    }
    pub fn add(&mut self, o: Storage) {
        self.codes += o.codes;
        self.scales += o.scales;
        self.zeros += o.zeros;
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
                let g = match s.gran {
                    Granularity::PerTensor => "tensor".to_string(),
                    Granularity::PerRow => "row".to_string(),
                    Granularity::Group(g) => format!("g{g}"),
                };
                format!("int{}-{}-{}", s.bits, g, if s.sym { "sym" } else { "asym" })
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
                    zeros: 0,
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
        }
        Ok(out)
    }
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

/// A stored tensor: its format, shape (`rows × cols`, row-major) and bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct QTensor {
    pub format: Format,
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<u8>,
}

impl QTensor {
    /// Build from parts, checking the blob length against the table.
    pub fn new(format: Format, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self> {
        let want = format.storage(rows, cols)?.total();
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
            rows,
            cols,
            data,
        })
    }

    /// Plain f32 storage of a dense matrix.
    pub fn from_f32(rows: usize, cols: usize, values: &[f32]) -> Self {
        QTensor {
            format: Format::F32,
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
        self.format
            .storage(self.rows, self.cols)
            .unwrap_or_default()
    }
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        self.format.dequantize(&self.data, self.rows, self.cols)
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
