//! ggml's K-quants, 256 weights per "super-block" made of 16 or 8 sub-blocks, each with its own
//! small integer scale (and min) that multiplies the super-block's f16 `d` (and `dmin`) (ggml
//! `ggml-common.h`: `block_q2_K` … `block_q6_K`; the table is in `ggml/mod.rs`):
//!   Q2_K  scales[16], qs[64], d, dmin        16 × 16 weights, 2-bit codes, 4-bit scale|min
//!   Q3_K  hmask[32], qs[64], scales[12], d   16 × 16 weights, 3-bit codes, 6-bit signed scales
//!   Q4_K  d, dmin, scales[12], qs[128]       8 × 32 weights, 4-bit codes, 6-bit scale and min
//!   Q5_K  d, dmin, scales[12], qh[32], qs[128]  as Q4_K plus one high bit per weight
//!   Q6_K  ql[128], qh[64], scales[16] (i8), d   16 × 16 weights, 6-bit codes
//! The exact bit positions are described at each decoder. GPU decoders: shaders/fmt_q2_k.wgsl …
//! fmt_q6_k.wgsl (the K-quant scale unpacking they share is in shaders/fmt_common.wgsl).

use super::{h, QK_K};

/// Q2_K: `scales[16]` (low nibble scale, high nibble min, one per 16 weights), `qs[64]`, `d`,
/// `dmin`. The 256 weights are two halves of 128; half `n` uses `qs[32n..32n+32]`, and its 8
/// groups of 16 weights take the 2-bit field at shift `2·(g/2)` of `qs[32n + 16·(g%2) + l]`.
pub(super) fn q2_k(b: &[u8; 84], y: &mut [f32; QK_K]) {
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
pub(super) fn q3_k(b: &[u8; 110], y: &mut [f32; QK_K]) {
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
pub(super) fn k4_scale_min(s: &[u8], j: usize) -> (u8, u8) {
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
pub(super) fn q4_k(b: &[u8; 144], y: &mut [f32; QK_K]) {
    k4(b, &b[16..144], None, y);
}

/// Q5_K: as Q4_K plus `qh[32]` before `qs`: weight `l` of sub-block `k` (0..8) gets 16 added
/// when bit `k` of `qh[l]` is set.
pub(super) fn q5_k(b: &[u8; 176], y: &mut [f32; QK_K]) {
    k4(b, &b[48..176], Some(&b[16..48]), y);
}

/// The decoder Q4_K and Q5_K share; `qh` is Q5_K's plane of fifth bits. Inlined into both, so
/// the `Option` is resolved at compile time.
#[inline(always)]
fn k4(b: &[u8], qs: &[u8], qh: Option<&[u8]>, y: &mut [f32; QK_K]) {
    let d = h(b[0], b[1]);
    let dmin = h(b[2], b[3]);
    let s = &b[4..16];
    for c in 0..4 {
        let (sc1, m1) = k4_scale_min(s, 2 * c);
        let (sc2, m2) = k4_scale_min(s, 2 * c + 1);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        for l in 0..32 {
            let q = qs[32 * c + l];
            let (h1, h2) = match qh {
                Some(qh) => {
                    let hb = qh[l] >> (2 * c);
                    ((hb & 1) << 4, (hb & 2) << 3)
                }
                None => (0, 0),
            };
            y[64 * c + l] = d1 * ((q & 0x0f) | h1) as f32 - m1;
            y[64 * c + 32 + l] = d2 * ((q >> 4) | h2) as f32 - m2;
        }
    }
}

/// Q6_K: `ql[128]`, `qh[64]`, `scales[16]` (i8), `d`. Half `n` of 128 weights uses
/// `ql[64n..64n+64]`, `qh[32n..32n+32]` and `scales[8n..8n+8]`; its quarter `k` (0..4) of 32
/// weights takes the low (k even) or high (k odd) nibble of `ql[64n + 32·(k%2) + l]` and bits
/// `2k..2k+2` of `qh[32n + l]`, minus 32; each 16 weights have their own scale.
pub(super) fn q6_k(b: &[u8; 210], y: &mut [f32; QK_K]) {
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
