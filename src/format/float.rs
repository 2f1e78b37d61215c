//! Plain floats: `F32` (IEEE 754 binary32), `F16` (IEEE 754 binary16) and `BF16` (bfloat16: the
//! upper half of a binary32), row-major, little-endian, no scales. Everything is `codes`.

use super::packed::{random_f16s, random_unit};
use super::{Draw, Family, Format, Fragment, GpuDecoder, Storage};
use crate::Result;
use half::{bf16, f16};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Float {
    F32,
    F16,
    BF16,
}

impl Float {
    /// Bytes per value.
    fn size(self) -> usize {
        match self {
            Float::F32 => 4,
            Float::F16 | Float::BF16 => 2,
        }
    }
}

impl Family for Float {
    fn name(&self) -> String {
        match self {
            Float::F32 => "f32",
            Float::F16 => "f16",
            Float::BF16 => "bf16",
        }
        .into()
    }

    fn storage(&self, rows: usize, cols: usize) -> Result<Storage> {
        Ok(Storage {
            codes: self.size() * rows * cols,
            ..Default::default()
        })
    }

    fn dequantize(&self, blob: &[u8], _: usize, _: usize, out: &mut [f32]) -> Result<()> {
        let values = blob.chunks_exact(self.size());
        for (o, c) in out.iter_mut().zip(values) {
            *o = match self {
                Float::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                Float::F16 => f16::from_le_bytes([c[0], c[1]]).to_f32(),
                Float::BF16 => bf16::from_le_bytes([c[0], c[1]]).to_f32(),
            };
        }
        Ok(())
    }

    fn row_slice(
        &self,
        blob: &[u8],
        _: usize,
        cols: usize,
        r0: usize,
        r1: usize,
    ) -> Result<Vec<u8>> {
        let row = self.size() * cols;
        Ok(blob[r0 * row..r1 * row].to_vec())
    }

    fn gpu(&self, _: usize, _: usize) -> Result<GpuDecoder> {
        Ok(GpuDecoder::plain(match self {
            Float::F32 => "fmt_f32",
            Float::F16 => "fmt_f16",
            Float::BF16 => "fmt_bf16",
        }))
    }

    fn random(&self, rows: usize, cols: usize, next: Draw) -> Result<Vec<u8>> {
        let n = rows * cols;
        Ok(match self {
            Float::F32 => (0..n)
                .flat_map(|_| random_unit(next).to_le_bytes())
                .collect(),
            // An odd count is padded to a word by `random_f16s`; the table has no padding here.
            Float::F16 => random_f16s(n, 0.0, 1.0, next)[..2 * n].to_vec(),
            Float::BF16 => (0..n)
                .flat_map(|_| bf16::from_f32(random_unit(next)).to_le_bytes())
                .collect(),
        })
    }
}

pub(super) fn fragments() -> Vec<Fragment> {
    vec![
        ("fmt_f32", include_str!("../../shaders/fmt_f32.wgsl")),
        ("fmt_f16", include_str!("../../shaders/fmt_f16.wgsl")),
        ("fmt_bf16", include_str!("../../shaders/fmt_bf16.wgsl")),
    ]
}

pub(super) fn examples() -> Vec<Format> {
    vec![Format::F32, Format::F16, Format::BF16]
}
