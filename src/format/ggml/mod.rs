//! ggml's block quantization formats, as GGUF files store them (decode only): the type table
//! (ids, names, block and byte sizes, GPU fragments) and the block-by-block CPU decoder. The
//! layouts and decoders are in legacy.rs (Q4_0 … Q8_0) and kquants.rs (Q2_K … Q6_K).
//!
//! Spec: the block layouts of ggml (`ggml-common.h`: `block_q4_0` … `block_q6_K`) and the type
//! table of the GGUF specification (ggml `docs/gguf.md`, "GGML types"). Written from the layouts,
//! not from ggml's code. All multi-byte fields are little-endian; `d`/`dmin` are IEEE f16. The
//! float arithmetic follows the order of the reference decoders (scale product first, then code
//! times scale, then minus the min), so results are bit-identical to them. Rows are whole blocks,
//! so a row slice is a byte range.

pub mod imatrix;
mod kquants;
mod legacy;
pub mod quantize;
mod quantize_k;

use super::packed::random_bytes;
use super::{Draw, Family, Format, Fragment, GpuDecoder, Storage};
use crate::{Error, Result};
use half::f16;

/// Weights per K-quant super-block.
pub const QK_K: usize = 256;

/// A ggml block format (F32/F16/BF16 are `tensor::DType` variants, not here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
}

impl GgmlType {
    /// Every supported block format, in ggml type-id order.
    pub const ALL: [GgmlType; 10] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];

    /// The block format with ggml type id `id` (`enum ggml_type`), if it is one we decode.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.into_iter().find(|t| t.id() == id)
    }

    /// ggml's type id (ids 4 and 5 were retired formats; 0, 1 and 30 are F32, F16, BF16).
    pub fn id(self) -> u32 {
        match self {
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q2_K => 10,
            GgmlType::Q3_K => 11,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q2_K => "Q2_K",
            GgmlType::Q3_K => "Q3_K",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q5_K => "Q5_K",
            GgmlType::Q6_K => "Q6_K",
        }
    }

    /// Weights per block.
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => {
                32
            }
            _ => QK_K,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            GgmlType::Q4_0 => 2 + 16,
            GgmlType::Q4_1 => 2 + 2 + 16,
            GgmlType::Q5_0 => 2 + 4 + 16,
            GgmlType::Q5_1 => 2 + 2 + 4 + 16,
            GgmlType::Q8_0 => 2 + 32,
            GgmlType::Q2_K => 16 + 64 + 2 + 2,
            GgmlType::Q3_K => 32 + 64 + 12 + 2,
            GgmlType::Q4_K => 2 + 2 + 12 + 128,
            GgmlType::Q5_K => 2 + 2 + 12 + 32 + 128,
            GgmlType::Q6_K => 128 + 64 + 16 + 2,
        }
    }

    /// Bytes of a block that are scales or mins (f16 `d`/`m`/`dmin` and the packed sub-block
    /// scales); the rest, including high-bit planes (`qh`, `hmask`), are codes.
    pub fn scale_bytes_per_block(self) -> usize {
        match self {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => 2,
            GgmlType::Q4_1 | GgmlType::Q5_1 => 4,
            GgmlType::Q2_K => 16 + 2 + 2,
            GgmlType::Q3_K => 12 + 2,
            GgmlType::Q4_K | GgmlType::Q5_K => 2 + 2 + 12,
            GgmlType::Q6_K => 16 + 2,
        }
    }

    /// The WGSL fragment that decodes this type on the GPU.
    pub fn fragment(self) -> Fragment {
        match self {
            GgmlType::Q4_0 => ("fmt_q4_0", include_str!("../../../shaders/fmt_q4_0.wgsl")),
            GgmlType::Q4_1 => ("fmt_q4_1", include_str!("../../../shaders/fmt_q4_1.wgsl")),
            GgmlType::Q5_0 => ("fmt_q5_0", include_str!("../../../shaders/fmt_q5_0.wgsl")),
            GgmlType::Q5_1 => ("fmt_q5_1", include_str!("../../../shaders/fmt_q5_1.wgsl")),
            GgmlType::Q8_0 => ("fmt_q8_0", include_str!("../../../shaders/fmt_q8_0.wgsl")),
            GgmlType::Q2_K => ("fmt_q2_k", include_str!("../../../shaders/fmt_q2_k.wgsl")),
            GgmlType::Q3_K => ("fmt_q3_k", include_str!("../../../shaders/fmt_q3_k.wgsl")),
            GgmlType::Q4_K => ("fmt_q4_k", include_str!("../../../shaders/fmt_q4_k.wgsl")),
            GgmlType::Q5_K => ("fmt_q5_k", include_str!("../../../shaders/fmt_q5_k.wgsl")),
            GgmlType::Q6_K => ("fmt_q6_k", include_str!("../../../shaders/fmt_q6_k.wgsl")),
        }
    }

    /// Byte offsets of a block's f16 fields (`d`, and `m`/`dmin` where there is one): random
    /// content must keep them finite.
    fn half_fields(self) -> &'static [usize] {
        match self {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
            GgmlType::Q2_K => &[80, 82],
            GgmlType::Q3_K => &[108],
            GgmlType::Q6_K => &[208],
        }
    }
}

/// Expand `data` (whole blocks of type `t`) into `out`. `out.len()` must be a multiple of the
/// block size and `data` exactly the bytes of `out.len()` weights.
pub fn dequantize(t: GgmlType, data: &[u8], out: &mut [f32]) -> Result<()> {
    let (bs, ts) = (t.block_size(), t.type_size());
    if !out.len().is_multiple_of(bs) {
        return Err(Error::format(
            t.name(),
            "data",
            format!(
                "{} weights is not a multiple of the block size {bs}",
                out.len()
            ),
        ));
    }
    let want = out.len() / bs * ts;
    if data.len() != want {
        return Err(Error::format(
            t.name(),
            "data",
            format!(
                "{} bytes for {} weights, expected {want} ({} blocks of {ts} bytes)",
                data.len(),
                out.len(),
                out.len() / bs
            ),
        ));
    }
    match t {
        GgmlType::Q4_0 => blocks::<18, 32>(data, out, legacy::q4_0),
        GgmlType::Q4_1 => blocks::<20, 32>(data, out, legacy::q4_1),
        GgmlType::Q5_0 => blocks::<22, 32>(data, out, legacy::q5_0),
        GgmlType::Q5_1 => blocks::<24, 32>(data, out, legacy::q5_1),
        GgmlType::Q8_0 => blocks::<34, 32>(data, out, legacy::q8_0),
        GgmlType::Q2_K => blocks::<84, QK_K>(data, out, kquants::q2_k),
        GgmlType::Q3_K => blocks::<110, QK_K>(data, out, kquants::q3_k),
        GgmlType::Q4_K => blocks::<144, QK_K>(data, out, kquants::q4_k),
        GgmlType::Q5_K => blocks::<176, QK_K>(data, out, kquants::q5_k),
        GgmlType::Q6_K => blocks::<210, QK_K>(data, out, kquants::q6_k),
    }
    Ok(())
}

impl Family for GgmlType {
    fn name(&self) -> String {
        GgmlType::name(*self).to_string()
    }

    fn storage(&self, rows: usize, cols: usize) -> Result<Storage> {
        let t = *self;
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
        let blocks = rows * cols / t.block_size();
        let scale_bytes = t.scale_bytes_per_block();
        Ok(Storage {
            codes: blocks * (t.type_size() - scale_bytes),
            scales: blocks * scale_bytes,
            ..Default::default()
        })
    }

    fn dequantize(&self, blob: &[u8], _: usize, _: usize, out: &mut [f32]) -> Result<()> {
        dequantize(*self, blob, out)
    }

    fn row_slice(
        &self,
        blob: &[u8],
        _: usize,
        cols: usize,
        r0: usize,
        r1: usize,
    ) -> Result<Vec<u8>> {
        let row = cols / self.block_size() * self.type_size();
        Ok(blob[r0 * row..r1 * row].to_vec())
    }

    fn gpu(&self, _: usize, _: usize) -> Result<GpuDecoder> {
        Ok(GpuDecoder::plain(self.fragment().0))
    }

    /// Random codes and sub-block scales, with sane f16 `d`/`m`/`dmin` (random bytes there could
    /// be NaN or inf).
    fn random(&self, rows: usize, cols: usize, next: Draw) -> Result<Vec<u8>> {
        let mut d = random_bytes(rows * cols / self.block_size() * self.type_size(), next);
        for block in d.chunks_exact_mut(self.type_size()) {
            for &at in self.half_fields() {
                let v = 0.001 + 0.02 * (next() >> 8) as f32 / (1u32 << 24) as f32;
                block[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
            }
        }
        Ok(d)
    }
}

pub(super) fn fragments() -> Vec<Fragment> {
    GgmlType::ALL.iter().map(|t| t.fragment()).collect()
}

pub(super) fn examples() -> Vec<Format> {
    GgmlType::ALL.iter().map(|&t| Format::Ggml(t)).collect()
}

/// Blocks decoded per parallel task (native): large enough to amortise scheduling.
const BLOCKS_PER_TASK: usize = 1024;

/// Run a per-block decoder over matching chunks; lengths were checked by the caller. Fixed-size
/// arrays let the compiler drop every bounds check inside the decoders.
fn blocks<const TS: usize, const BS: usize>(
    data: &[u8],
    out: &mut [f32],
    f: fn(&[u8; TS], &mut [f32; BS]),
) {
    let serial = |data: &[u8], out: &mut [f32]| {
        for (b, o) in data.chunks_exact(TS).zip(out.chunks_exact_mut(BS)) {
            if let (Ok(b), Ok(o)) = (<&[u8; TS]>::try_from(b), <&mut [f32; BS]>::try_from(o)) {
                f(b, o);
            }
        }
    };
    if out.len() >= 4 * BLOCKS_PER_TASK * BS {
        crate::par::for_each_chunk_mut(out, BLOCKS_PER_TASK * BS, |i, o| {
            serial(&data[i * BLOCKS_PER_TASK * TS..], o)
        });
        return;
    }
    serial(data, out);
}

#[inline(always)]
fn h(lo: u8, hi: u8) -> f32 {
    f16::from_le_bytes([lo, hi]).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_roundtrip_and_sizes_match_layouts() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert!(t.scale_bytes_per_block() < t.type_size());
        }
        for id in [0, 1, 4, 5, 9, 15, 16, 30, 1000] {
            assert_eq!(GgmlType::from_id(id), None, "id {id}");
        }
        // Bits per weight, the figures ggml documents for each format.
        let bpw = |t: GgmlType| 8.0 * t.type_size() as f64 / t.block_size() as f64;
        assert_eq!(bpw(GgmlType::Q4_0), 4.5);
        assert_eq!(bpw(GgmlType::Q4_1), 5.0);
        assert_eq!(bpw(GgmlType::Q8_0), 8.5);
        assert_eq!(bpw(GgmlType::Q2_K), 2.625);
        assert_eq!(bpw(GgmlType::Q3_K), 3.4375);
        assert_eq!(bpw(GgmlType::Q4_K), 4.5);
        assert_eq!(bpw(GgmlType::Q5_K), 5.5);
        assert_eq!(bpw(GgmlType::Q6_K), 6.5625);
    }

    #[test]
    fn length_mismatch_is_an_error() {
        let mut out = vec![0f32; 64];
        assert!(dequantize(GgmlType::Q4_0, &[0u8; 36], &mut out).is_ok());
        assert!(dequantize(GgmlType::Q4_0, &[0u8; 35], &mut out).is_err());
        let mut odd = vec![0f32; 48];
        assert!(dequantize(GgmlType::Q4_0, &[0u8; 27], &mut odd).is_err());
    }

    #[test]
    fn q4_0_hand_block() {
        // d = 0.5 (f16 0x3800); byte j holds j in its low nibble and 15 - j in its high one.
        let mut b = vec![0x00, 0x38];
        b.extend((0..16u8).map(|j| ((15 - j) << 4) | j));
        let mut y = [0f32; 32];
        dequantize(GgmlType::Q4_0, &b, &mut y).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(y[j + 16], (15.0 - j as f32 - 8.0) * 0.5);
        }
    }
}
