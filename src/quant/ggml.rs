//! ggml's block quantization formats, as GGUF files store them (decode only).
//!
//! Spec: the block layouts of ggml (`ggml-common.h`: `block_q4_0` … `block_q6_K`) and the type
//! table of the GGUF specification (ggml `docs/gguf.md`, "GGML types"). Written from the layouts,
//! not from ggml's code. All multi-byte fields are little-endian; `d`/`dmin` are IEEE f16.
//!
//! Legacy formats, 32 weights per block. Codes of a block are split in two halves: byte `j` of
//! `qs` holds weight `j` in its low nibble and weight `j + 16` in its high nibble.
//!   Q4_0  d, qs[16]                 w = (q - 8) · d
//!   Q4_1  d, m, qs[16]              w = q · d + m
//!   Q5_0  d, qh[4], qs[16]          5th bit of weight i is bit i of the u32 `qh`; w = (q - 16) · d
//!   Q5_1  d, m, qh[4], qs[16]       w = q · d + m
//!   Q8_0  d, qs[32] (i8)            w = q · d
//!
//! K-quants, 256 weights per "super-block" made of 16 or 8 sub-blocks, each with its own small
//! integer scale (and min) that multiplies the super-block's f16 `d` (and `dmin`):
//!   Q2_K  scales[16], qs[64], d, dmin        16 × 16 weights, 2-bit codes, 4-bit scale|min
//!   Q3_K  hmask[32], qs[64], scales[12], d   16 × 16 weights, 3-bit codes, 6-bit signed scales
//!   Q4_K  d, dmin, scales[12], qs[128]       8 × 32 weights, 4-bit codes, 6-bit scale and min
//!   Q5_K  d, dmin, scales[12], qh[32], qs[128]  as Q4_K plus one high bit per weight
//!   Q6_K  ql[128], qh[64], scales[16] (i8), d   16 × 16 weights, 6-bit codes
//! The exact bit positions are described at each decoder. The float arithmetic follows the order
//! of the reference decoders (scale product first, then code times scale, then minus the min), so
//! results are bit-identical to them.

use crate::{Error, Result};
use half::f16;

/// Weights per K-quant super-block.
pub const QK_K: usize = 256;

/// A ggml block format (F32/F16/BF16 are `tensor::DType` variants, not here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
        GgmlType::Q4_0 => blocks::<18, 32>(data, out, q4_0),
        GgmlType::Q4_1 => blocks::<20, 32>(data, out, q4_1),
        GgmlType::Q5_0 => blocks::<22, 32>(data, out, q5_0),
        GgmlType::Q5_1 => blocks::<24, 32>(data, out, q5_1),
        GgmlType::Q8_0 => blocks::<34, 32>(data, out, q8_0),
        GgmlType::Q2_K => blocks::<84, QK_K>(data, out, q2_k),
        GgmlType::Q3_K => blocks::<110, QK_K>(data, out, q3_k),
        GgmlType::Q4_K => blocks::<144, QK_K>(data, out, q4_k),
        GgmlType::Q5_K => blocks::<176, QK_K>(data, out, q5_k),
        GgmlType::Q6_K => blocks::<210, QK_K>(data, out, q6_k),
    }
    Ok(())
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

fn q4_0(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = h(b[0], b[1]);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

fn q4_1(b: &[u8; 20], y: &mut [f32; 32]) {
    let (d, m) = (h(b[0], b[1]), h(b[2], b[3]));
    for j in 0..16 {
        let q = b[4 + j];
        y[j] = (q & 0x0f) as f32 * d + m;
        y[j + 16] = (q >> 4) as f32 * d + m;
    }
}

/// The 5-bit codes of Q5_0/Q5_1: low nibbles from `qs`, bit 4 of weight `i` from bit `i` of `qh`.
#[inline(always)]
fn q5_codes(qh: u32, qs: &[u8], y: &mut [u8; 32]) {
    for j in 0..16 {
        y[j] = (qs[j] & 0x0f) | (((qh >> j) & 1) << 4) as u8;
        y[j + 16] = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4) as u8;
    }
}

fn q5_0(b: &[u8; 22], y: &mut [f32; 32]) {
    let d = h(b[0], b[1]);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let mut q = [0u8; 32];
    q5_codes(qh, &b[6..22], &mut q);
    for (y, &q) in y.iter_mut().zip(&q) {
        *y = (q as i32 - 16) as f32 * d;
    }
}

fn q5_1(b: &[u8; 24], y: &mut [f32; 32]) {
    let (d, m) = (h(b[0], b[1]), h(b[2], b[3]));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let mut q = [0u8; 32];
    q5_codes(qh, &b[8..24], &mut q);
    for (y, &q) in y.iter_mut().zip(&q) {
        *y = q as f32 * d + m;
    }
}

fn q8_0(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = h(b[0], b[1]);
    for j in 0..32 {
        y[j] = (b[2 + j] as i8) as f32 * d;
    }
}

/// Q2_K: `scales[16]` (low nibble scale, high nibble min, one per 16 weights), `qs[64]`, `d`,
/// `dmin`. The 256 weights are two halves of 128; half `n` uses `qs[32n..32n+32]`, and its 8
/// groups of 16 weights take the 2-bit field at shift `2·(g/2)` of `qs[32n + 16·(g%2) + l]`.
fn q2_k(b: &[u8; 84], y: &mut [f32; QK_K]) {
    let d = h(b[80], b[81]);
    let dmin = h(b[82], b[83]);
    for n in 0..2 {
        for g in 0..8 {
            let sc = b[8 * n + g];
            let dl = d * (sc & 0x0f) as f32;
            let ml = dmin * (sc >> 4) as f32;
            let shift = 2 * (g / 2);
            let q0 = 16 + 32 * n + 16 * (g % 2);
            let y0 = 128 * n + 16 * g;
            for l in 0..16 {
                y[y0 + l] = dl * ((b[q0 + l] >> shift) & 3) as f32 - ml;
            }
        }
    }
}

/// The sixteen 6-bit scales of Q3_K, packed in 12 bytes: the low 4 bits of scale `i` are the low
/// (i < 8) or high (i ≥ 8) nibble of byte `i % 8`; its top 2 bits are bits `2·(i/4)..` of byte
/// `8 + i % 4`. Stored with a bias of 32.
#[inline(always)]
fn q3_k_scales(s: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let lo = if i < 8 { s[i] & 0x0f } else { s[i - 8] >> 4 };
        let hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = ((lo | (hi << 4)) as i32 - 32) as i8;
    }
    out
}

/// Q3_K: `hmask[32]`, `qs[64]`, `scales[12]`, `d`. Code = 2 low bits from `qs` (laid out as in
/// Q2_K) minus 4 when the weight's bit in `hmask` is clear; group `j` (0..8) of 32 weights uses
/// bit `j` of `hmask[l]` for weight `l` of its two 16-weight halves.
fn q3_k(b: &[u8; 110], y: &mut [f32; QK_K]) {
    let d = h(b[108], b[109]);
    let scales = q3_k_scales(&b[96..108]);
    for n in 0..2 {
        for g in 0..8 {
            let dl = d * scales[8 * n + g] as f32;
            let shift = 2 * (g / 2);
            let half = 16 * (g % 2);
            let bit = 1u8 << (4 * n + g / 2);
            let q0 = 32 + 32 * n + half;
            let y0 = 128 * n + 16 * g;
            for l in 0..16 {
                let low = ((b[q0 + l] >> shift) & 3) as i32;
                let sub = if b[half + l] & bit != 0 { 0 } else { 4 };
                y[y0 + l] = dl * (low - sub) as f32;
            }
        }
    }
}

/// Scale and min of sub-block `j` (0..8) of Q4_K/Q5_K from their 12 packed bytes: for j < 4 the
/// low 6 bits of bytes `j` and `j + 4`; for j ≥ 4 a nibble of byte `j + 4` plus the top 2 bits of
/// bytes `j - 4` (scale) and `j` (min).
#[inline(always)]
fn k4_scale_min(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q4_K: `d`, `dmin`, `scales[12]`, `qs[128]`. Chunk `c` (0..4) of 64 weights reads
/// `qs[32c..32c+32]`: sub-block `2c` from the low nibbles, `2c + 1` from the high nibbles.
fn q4_k(b: &[u8; 144], y: &mut [f32; QK_K]) {
    let d = h(b[0], b[1]);
    let dmin = h(b[2], b[3]);
    let s = &b[4..16];
    for c in 0..4 {
        let (sc1, m1) = k4_scale_min(s, 2 * c);
        let (sc2, m2) = k4_scale_min(s, 2 * c + 1);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        for l in 0..32 {
            let q = b[16 + 32 * c + l];
            y[64 * c + l] = d1 * (q & 0x0f) as f32 - m1;
            y[64 * c + 32 + l] = d2 * (q >> 4) as f32 - m2;
        }
    }
}

/// Q5_K: as Q4_K plus `qh[32]`: weight `l` of sub-block `k` (0..8) gets 16 added when bit `k`
/// of `qh[l]` is set.
fn q5_k(b: &[u8; 176], y: &mut [f32; QK_K]) {
    let d = h(b[0], b[1]);
    let dmin = h(b[2], b[3]);
    let s = &b[4..16];
    for c in 0..4 {
        let (sc1, m1) = k4_scale_min(s, 2 * c);
        let (sc2, m2) = k4_scale_min(s, 2 * c + 1);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        for l in 0..32 {
            let q = b[48 + 32 * c + l];
            let hb = b[16 + l] >> (2 * c);
            y[64 * c + l] = d1 * ((q & 0x0f) | ((hb & 1) << 4)) as f32 - m1;
            y[64 * c + 32 + l] = d2 * ((q >> 4) | ((hb & 2) << 3)) as f32 - m2;
        }
    }
}

/// Q6_K: `ql[128]`, `qh[64]`, `scales[16]` (i8), `d`. Half `n` of 128 weights uses
/// `ql[64n..64n+64]`, `qh[32n..32n+32]` and `scales[8n..8n+8]`; its quarter `k` (0..4) of 32
/// weights takes the low (k even) or high (k odd) nibble of `ql[64n + 32·(k%2) + l]` and bits
/// `2k..2k+2` of `qh[32n + l]`, minus 32; each 16 weights have their own scale.
fn q6_k(b: &[u8; 210], y: &mut [f32; QK_K]) {
    let d = h(b[208], b[209]);
    for n in 0..2 {
        for k in 0..4 {
            for l in 0..32 {
                let ql = b[64 * n + 32 * (k % 2) + l];
                let low = if k < 2 { ql & 0x0f } else { ql >> 4 };
                let hi = (b[128 + 32 * n + l] >> (2 * k)) & 3;
                let q = (low | (hi << 4)) as i32 - 32;
                let sc = b[192 + 8 * n + 2 * k + l / 16] as i8;
                y[128 * n + 32 * k + l] = d * sc as f32 * q as f32;
            }
        }
    }
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
