//! Quantization of f32 super-blocks of 256 weights into ggml's K-quants (Q2_K … Q6_K), byte for
//! byte as ggml's reference quantizers make them, without an importance matrix.
//!
//! Spec: `quantize_row_q2_K_ref`, `quantize_row_q3_K_ref`, `quantize_row_q4_K_ref`,
//! `quantize_row_q5_K_ref` and `quantize_row_q6_K_ref` in ggml's `ggml-quants.c`, and the helpers
//! they call there: `make_qkx2_quants`, `make_q3_quants`, `make_qx_quants` and `nearest_int`
//! (llama.cpp as vendored in llama-cpp-python 0.3.36). These are what `llama-quantize` runs when
//! no importance matrix is given. tests/ggml_quantize_k.rs checks every byte against that C code,
//! compiled by tests/fixtures/gen_ggml_kquant_fixtures.py. The block layouts are the decoder's
//! (kquants.rs).
//!
//! Each super-block is quantized on its own in three steps:
//!
//! 1. **Fit every sub-block** (16 of 16 weights for Q2_K, Q3_K, Q6_K; 8 of 32 for Q4_K, Q5_K) with
//!    a small search for the scale (and min) that minimises a weighted error:
//!    * Q4_K, Q5_K, Q2_K are affine (`w ≈ s·q − m`, codes `0..=nmax`). The search
//!      (`make_qkx2_quants`) starts from the plain min/max grid (`min` clamped to ≤ 0, because
//!      the format subtracts a non-negative `dmin·m`), then tries inverse scales
//!      `(nmax + rmin + rdelta·k) / (max − min)` for `k = 0..=nstep`; for each it rounds the codes
//!      and solves the weighted least-squares problem for scale and min in closed form (scale
//!      alone when the fitted min would be positive), and keeps it if its error is strictly
//!      lower. Q4_K: nmax 15, `rmin = −1`, `rdelta = 0.1`, 20 steps, squared error weighted by
//!      `rms(sub-block) + |w|` (big weights count more, small ones still count). Q5_K: nmax 31,
//!      `−0.5`, 0.1, 15 steps, same weights. Q2_K: nmax 3, `−0.5`, 0.1, 15 steps, absolute error
//!      weighted by `|w|` (an absolute error is less dominated by the few largest residuals,
//!      which with four levels are large).
//!    * Q3_K is symmetric (codes −4..=3). `make_q3_quants` starts as Q4_0 does (the weight of
//!      largest magnitude, with its sign, lands on −4, the level with no mirror), then runs up to
//!      five passes of coordinate descent: each weight in turn moves to the code that is best for
//!      the others' least-squares scale (weights `w²`), and the move is kept only if it raises
//!      `(Σ w·x·l)² / Σ w·l²` (which is the same as lowering the weighted squared error at the
//!      optimal scale). The scale is that least-squares one, `Σ w·x·l / Σ w·l²`.
//!    * Q6_K is symmetric (codes −32..=31). `make_qx_quants` (weights `w²`) tries the inverse scale
//!      `−32 / max` and 18 neighbours `−(32 + 0.1·k) / max`, `k = ±1..=±9`, and keeps the one that
//!      maximises `(Σ w·x·l)² / Σ w·l²`; the scale is the least-squares one of the winner.
//!    * In the symmetric types, a sub-block whose largest |w| is below 1e-15 (ggml's
//!      `GROUP_MAX_EPS`) counts as all zero: scale 0, codes 0 (and a Q6_K super-block whose
//!      scales all are is all-zero bytes).
//! 2. **Quantize the sub-block scales** against the largest one (`d` is stored as f16): Q4_K and
//!    Q5_K to 6 bits (`d = max_scale / 63`, `dmin = max_min / 63`), Q2_K to 4 bits (`/ 15`),
//!    Q3_K to signed 6 bits with the scale of largest magnitude on −32 (`d = 1 / (−32 / max)`),
//!    Q6_K to i8 with it on −128 (`d = 1 / (−128 / max)`, clamped to 127 on the positive side).
//! 3. **Re-round every weight against the stored grid**: the f16 `d` (and `dmin`) times the
//!    integer sub-block scale (and min) is what the decoder will use, so the codes are recomputed
//!    from it, `nearest((w + dmin·m) / (d·s))` or `nearest(w / (d·s))`, clamped to the code range.
//!    A sub-block whose stored scale is 0 keeps the codes of step 1 (they decode to 0 or to the
//!    min anyway, but they are in the bytes).
//!
//! Rounding is ggml's `nearest_int`: adding `1.5·2^23` moves the value into the binade where f32
//! steps are exactly 1, so the addition itself rounds (to nearest, ties to even, unlike `roundf`)
//! and the integer is read from the low mantissa bits. ggml asserts |v| ≤ 2^22 − 1 only in debug
//! builds; outside that the bits are garbage, and we reproduce the same garbage. Integer
//! conversions follow C's: a scale code is truncated to a byte (`uint8_t` / `int8_t`) before it
//! is clamped, as ggml writes it. Every float operation is a separate f32 operation in ggml's
//! order (`w·x·l` is `(w·x)·l`), with no fused multiply-add (Rust never contracts; the reference
//! C is compiled with `-ffp-contract=off`, and llama.cpp's default x86-64 build has no FMA to
//! contract into; a build that fuses rounds differently, see docs/export.md); `sqrt` is correctly
//! rounded in both. The f16 conversions round to nearest even (`half::f16::from_f32`, ggml's
//! `GGML_FP32_TO_FP16`). That is what makes the bytes reproducible. Non-finite weights are refused
//! before this module runs (quantize.rs).

pub(super) mod search;

use super::QK_K;
use half::f16;
use search::{nearest_int, q3_fit, q6_fit, Qkx2, GROUP_MAX_EPS};

#[inline(always)]
fn to_f16(v: f32) -> f16 {
    f16::from_f32(v)
}

#[inline(always)]
fn put_f16(b: &mut [u8], v: f16) {
    b.copy_from_slice(&v.to_le_bytes());
}

/// Pack 2-bit codes as Q2_K and Q3_K store them: each half of 128 weights fills 32 bytes, byte
/// `l` holding weights `l`, `l + 32`, `l + 64`, `l + 96` of the half from its low bits up.
fn pack_2bit<T: Copy + Into<i32>>(l: &[T; QK_K], qs: &mut [u8]) {
    for (half, qs) in qs.chunks_exact_mut(32).enumerate() {
        let c = |i: usize| l[128 * half + i].into() as u8;
        for (j, q) in qs.iter_mut().enumerate() {
            *q = c(j) | (c(j + 32) << 2) | (c(j + 64) << 4) | (c(j + 96) << 6);
        }
    }
}

/// Q2_K: `scales[16]` (scale | min << 4), `qs[64]`, `d`, `dmin`; w ≈ d·s·q − dmin·m.
pub(super) fn q2_k(x: &[f32; QK_K], b: &mut [u8; 84]) {
    const Q4SCALE: f32 = 15.0;
    let fit = Qkx2 {
        nmax: 3,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        mad: true,
    };
    let mut l = [0u8; QK_K];
    let (mut scales, mut mins) = ([0f32; 16], [0f32; 16]);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        let mut weights = [0f32; 16];
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = v.abs();
        }
        (scales[j], mins[j]) = fit.fit(xs, &weights, &mut l[16 * j..16 * j + 16]);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let mut sc = [0u8; 16];
    let d = if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for (s, &v) in sc.iter_mut().zip(&scales) {
            *s = nearest_int(iscale * v) as u8;
        }
        to_f16(max_scale / Q4SCALE)
    } else {
        to_f16(0.0)
    };
    let dmin = if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for (s, &v) in sc.iter_mut().zip(&mins) {
            *s = (*s as i32 | (nearest_int(iscale * v) << 4)) as u8;
        }
        to_f16(max_min / Q4SCALE)
    } else {
        to_f16(0.0)
    };
    for (j, &s) in sc.iter().enumerate() {
        let dl = d.to_f32() * (s & 0x0f) as f32;
        if dl == 0.0 {
            continue;
        }
        let ml = dmin.to_f32() * (s >> 4) as f32;
        for i in 16 * j..16 * j + 16 {
            l[i] = nearest_int((x[i] + ml) / dl).clamp(0, 3) as u8;
        }
    }
    b[..16].copy_from_slice(&sc);
    pack_2bit(&l, &mut b[16..80]);
    put_f16(&mut b[80..82], d);
    put_f16(&mut b[82..84], dmin);
}

/// Q3_K: `hmask[32]`, `qs[64]`, `scales[12]` (signed 6-bit, packed), `d`; w ≈ d·s·(q − 4).
pub(super) fn q3_k(x: &[f32; QK_K], b: &mut [u8; 110]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut amax) = (0f32, 0f32);
    for j in 0..16 {
        scales[j] = q3_fit(&x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
        if scales[j].abs() > amax {
            amax = scales[j].abs();
            max_scale = scales[j];
        }
    }
    // The 6-bit codes, low nibbles in bytes 0..8, top two bits in bytes 8..12 (kquants.rs).
    let mut packed = [0u8; 12];
    let d = if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (j, &s) in scales.iter().enumerate() {
            // C: `int8_t l = nearest_int(...)`, clamped to −32..=31, then biased by 32.
            let q = ((nearest_int(iscale * s) as i8).clamp(-32, 31) + 32) as u8;
            if j < 8 {
                packed[j] = q & 0x0f;
            } else {
                packed[j - 8] |= (q & 0x0f) << 4;
            }
            packed[8 + j % 4] |= (q >> 4) << (2 * (j / 4));
        }
        to_f16(1.0 / iscale)
    } else {
        to_f16(0.0)
    };
    q3_k_finish(x, l, &packed, d, b);
}

/// The end of every Q3_K quantizer, reference or importance-weighted: re-round each weight
/// against the stored grid (`d` times the 6-bit scale codes `packed`; a sub-block whose scale is
/// 0 keeps the codes `l` has), then pack codes, scales and `d`.
pub(super) fn q3_k_finish(
    x: &[f32],
    mut l: [i8; QK_K],
    packed: &[u8; 12],
    d: f16,
    b: &mut [u8; 110],
) {
    for j in 0..16 {
        let lo = if j < 8 {
            packed[j] & 0x0f
        } else {
            packed[j - 8] >> 4
        };
        let s = (lo | (((packed[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i32 - 32;
        let dl = d.to_f32() * s as f32;
        if dl == 0.0 {
            continue;
        }
        for i in 16 * j..16 * j + 16 {
            l[i] = (nearest_int(x[i] / dl).clamp(-4, 3) + 4) as i8;
        }
    }
    // The third bit of weight j goes to bit j / 32 of hmask[j % 32]; qs keeps the low two.
    let (hmask, rest) = b.split_at_mut(32);
    hmask.fill(0);
    for (j, v) in l.iter_mut().enumerate() {
        if *v > 3 {
            hmask[j % 32] |= 1 << (j / 32);
            *v -= 4;
        }
    }
    pack_2bit(&l, &mut rest[..64]);
    rest[64..76].copy_from_slice(packed);
    put_f16(&mut rest[76..78], d);
}

/// What Q4_K and Q5_K share: the fits of the eight sub-blocks of 32 (weights `rms + |w|`), their
/// 6-bit scales and mins packed into `b[0..16]` (`d`, `dmin`, `scales[12]`), and the final codes
/// against the stored grid, returned for the caller to pack.
fn k4_codes(x: &[f32; QK_K], fit: &Qkx2, b: &mut [u8]) -> [u8; QK_K] {
    let mut l = [0u8; QK_K];
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let mut weights = [0f32; 32];
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        (scales[j], mins[j]) = fit.fit(xs, &weights, &mut l[32 * j..32 * j + 32]);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    // C: `uint8_t ls = nearest_int(...)`, then MIN(63, ls).
    let ls = scales.map(|v| (nearest_int(inv_scale * v) as u8).min(63));
    let lm = mins.map(|v| (nearest_int(inv_min * v) as u8).min(63));
    let d = to_f16(max_scale / 63.0);
    let dmin = to_f16(max_min / 63.0);
    k4_finish(x, (&ls, &lm), (d, dmin), fit.nmax, b, &mut l);
    l
}

/// The end of every Q4_K/Q5_K quantizer, reference or importance-weighted: pack the 6-bit
/// sub-block scale codes `ls` and min codes `lm` with `d` and `dmin` into `b[0..16]`, then
/// re-round every weight against the stored grid into `l` (codes `0..=nmax`; a sub-block whose
/// stored scale is 0 keeps the codes it has).
pub(super) fn k4_finish(
    x: &[f32],
    (ls, lm): (&[u8; 8], &[u8; 8]),
    (d, dmin): (f16, f16),
    nmax: i32,
    b: &mut [u8],
    l: &mut [u8; QK_K],
) {
    let s = &mut b[4..16];
    for j in 0..8 {
        let (ls, lm) = (ls[j], lm[j]);
        if j < 4 {
            s[j] = ls;
            s[j + 4] = lm;
        } else {
            s[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
            s[j - 4] |= (ls >> 4) << 6;
            s[j] |= (lm >> 4) << 6;
        }
    }
    put_f16(&mut b[0..2], d);
    put_f16(&mut b[2..4], dmin);
    for j in 0..8 {
        let (sc, m) = super::kquants::k4_scale_min(&b[4..16], j);
        let dl = d.to_f32() * sc as f32;
        if dl == 0.0 {
            continue;
        }
        let ml = dmin.to_f32() * m as f32;
        for i in 32 * j..32 * j + 32 {
            l[i] = nearest_int((x[i] + ml) / dl).clamp(0, nmax) as u8;
        }
    }
}

/// Q4_K: `d`, `dmin`, `scales[12]`, `qs[128]`; w ≈ d·s·q − dmin·m.
pub(super) fn q4_k(x: &[f32; QK_K], b: &mut [u8; 144]) {
    let fit = Qkx2 {
        nmax: 15,
        rmin: -1.0,
        rdelta: 0.1,
        nstep: 20,
        mad: false,
    };
    let l = k4_codes(x, &fit, b);
    pack_q4_k(&l, b);
}

/// Q4_K's codes into `qs` (after the 16 bytes of scales).
pub(super) fn pack_q4_k(l: &[u8; QK_K], b: &mut [u8; 144]) {
    // Chunk c of 64 weights: the first 32 in the low nibbles of qs[32c..], the next in the high.
    for (c, qs) in b[16..].chunks_exact_mut(32).enumerate() {
        for (j, q) in qs.iter_mut().enumerate() {
            *q = l[64 * c + j] | (l[64 * c + j + 32] << 4);
        }
    }
}

/// Q5_K: `d`, `dmin`, `scales[12]`, `qh[32]`, `qs[128]`; as Q4_K with a fifth bit per weight.
pub(super) fn q5_k(x: &[f32; QK_K], b: &mut [u8; 176]) {
    let fit = Qkx2 {
        nmax: 31,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        mad: false,
    };
    let l = k4_codes(x, &fit, b);
    pack_q5_k(&l, b);
}

/// Q5_K's codes into `qh` and `qs` (after the 16 bytes of scales).
pub(super) fn pack_q5_k(l: &[u8; QK_K], b: &mut [u8; 176]) {
    let (qh, qs) = b[16..].split_at_mut(32);
    qh.fill(0);
    // Chunk c of 64 weights: low nibbles as Q4_K; the fifth bits of its two halves are bits 2c
    // and 2c + 1 of qh[j].
    for (c, qs) in qs.chunks_exact_mut(32).enumerate() {
        for (j, q) in qs.iter_mut().enumerate() {
            let (lo, hi) = (l[64 * c + j], l[64 * c + j + 32]);
            qh[j] |= ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1));
            *q = (lo & 0x0f) | ((hi & 0x0f) << 4);
        }
    }
}

/// Q6_K: `ql[128]`, `qh[64]`, `scales[16]` (i8), `d`; w ≈ d·s·(q − 32).
pub(super) fn q6_k(x: &[f32; QK_K], b: &mut [u8; 210]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for j in 0..16 {
        scales[j] = q6_fit(&x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
        if scales[j].abs() > max_abs_scale {
            max_abs_scale = scales[j].abs();
            max_scale = scales[j];
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        // ggml zeroes the whole block (d = +0 included).
        b.fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    let d = to_f16(1.0 / iscale);
    let mut sc = [0i8; 16];
    for (s, &v) in sc.iter_mut().zip(&scales) {
        // C: `int8_t = MIN(127, nearest_int(...))`.
        *s = nearest_int(iscale * v).min(127) as i8;
    }
    for (j, &s) in sc.iter().enumerate() {
        let dl = d.to_f32() * s as f32;
        if dl == 0.0 {
            continue;
        }
        for i in 16 * j..16 * j + 16 {
            l[i] = (nearest_int(x[i] / dl).clamp(-32, 31) + 32) as i8;
        }
    }
    // Half h of 128 weights: quarters k = 0..4 of 32; the low nibbles of quarters 0 and 2 share
    // ql[64h + j], of 1 and 3 ql[64h + 32 + j]; the top two bits of quarter k are bits 2k.. of
    // qh[32h + j].
    let (ql, rest) = b.split_at_mut(128);
    let (qh, rest) = rest.split_at_mut(64);
    for h in 0..2 {
        for j in 0..32 {
            let q = |k: usize| l[128 * h + 32 * k + j] as u8;
            ql[64 * h + j] = (q(0) & 0x0f) | ((q(2) & 0x0f) << 4);
            ql[64 * h + 32 + j] = (q(1) & 0x0f) | ((q(3) & 0x0f) << 4);
            qh[32 * h + j] =
                (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
        }
    }
    for (o, &s) in rest[..16].iter_mut().zip(&sc) {
        *o = s as u8;
    }
    put_f16(&mut rest[16..18], d);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ggml::quantize::quantize;
    use crate::format::ggml::GgmlType;
    use crate::format::Format;

    const K_TYPES: [GgmlType; 5] = [
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];

    /// An all-zero super-block is all-zero bytes in every type (scales, mins and codes 0), and a
    /// constant negative one is carried by the mins alone (`max == min` in every sub-block, so
    /// the scales are 0 and `dmin·63` is the constant, to f16 rounding).
    #[test]
    fn zero_and_constant_super_blocks() {
        for t in K_TYPES {
            let b = quantize(t, &[0.0; QK_K], 1, QK_K).unwrap();
            assert!(b.iter().all(|&v| v == 0), "{} {b:02x?}", t.name());
        }
        for t in [GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::Q5_K] {
            let b = quantize(t, &[-0.75; QK_K], 1, QK_K).unwrap();
            let y = Format::Ggml(t).dequantize(&b, 1, QK_K).unwrap();
            // m is the top code (15 for Q2_K's 4-bit mins, 63 for 6 bits): dmin = 0.75 / m,
            // stored as f16 (relative error ≤ 2^-11).
            let tol = 0.75 * 2f32.powi(-11);
            assert!(
                y.iter().all(|&v| (v + 0.75).abs() <= tol),
                "{}: {:?}",
                t.name(),
                &y[..4]
            );
        }
    }
}
