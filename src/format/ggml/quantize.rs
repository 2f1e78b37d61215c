//! Quantization of f32 rows into ggml's blocks, byte for byte as ggml's reference quantizers make
//! them: the legacy types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) here, the K-quants (Q2_K … Q6_K, rows a
//! multiple of 256) in quantize_k.rs, both through `quantize`.
//!
//! Spec: `quantize_row_q4_0_ref`, `quantize_row_q4_1_ref`, `quantize_row_q5_0_ref`,
//! `quantize_row_q5_1_ref` and `quantize_row_q8_0_ref` in ggml's `ggml-quants.c` (the functions
//! llama.cpp uses to write these types deterministically), and their numpy port in the `gguf`
//! Python package (`gguf/quants.py`), which tests/ggml_quantize.rs checks us against byte for
//! byte. The block layouts are the decoder's (legacy.rs); the two halves of a block share bytes
//! the same way here (weight `j` in the low nibble of byte `j`, weight `j + 16` in the high one).
//!
//! Every block of 32 weights is quantized on its own, so a row is just a run of blocks:
//!
//! * Symmetric types (Q4_0: codes 0..=15 around 8; Q5_0: 0..=31 around 16). The scale comes from
//!   the weight of largest magnitude *with its sign*: `d = max / -8` (Q5_0: `/ -16`), so that
//!   weight lands exactly on code 0, the one level the asymmetric range `-8..=7` has no mirror
//!   for. Spending the extra negative level on the extreme weight gives the rest of the block
//!   the finer step `|max| / 8` instead of `|max| / 7`; the price is that a weight near `-max`
//!   wants code 16 and is clamped to 15 (an error of up to one step instead of half a step).
//!   Of several weights of the same largest magnitude the first one wins (ggml keeps the running
//!   maximum on a strict `<`).
//! * Affine types (Q4_1: 0..=15; Q5_1: 0..=31). The block's minimum is the offset `m` and
//!   `d = (max - min) / 15` (or `/ 31`), so the minimum maps to code 0 and the maximum to the
//!   top code; nothing is clamped for finite input.
//! * Q8_0: symmetric around 0 with `d = max|w| / 127`, codes -127..=127.
//!
//! Rounding, exactly as ggml writes it: the codes are computed from the f32 scale (not from its f16
//! copy), through its f32 reciprocal `id = 1 / d`, which is 0 when `d` is 0 (an all-zero block, or
//! a constant one for the affine types), so that every weight then gets the offset's code: 8, 16,
//! or 0 for the affine types and Q8_0. The 4/5-bit types round by adding 0.5 after shifting by the
//! offset (`w·id + 8.5`, `w·id + 16.5`, `(w - min)·id + 0.5`, all ≥ 0 here) and truncating toward
//! zero, i.e. round-half-up on the code axis; the result is clamped to the top code. Q8_0 rounds
//! `w·id` with C's `roundf` (half away from zero, Rust's `f32::round`). Each product and sum is a
//! separate f32 operation in that order, with no fused multiply-add (Rust never contracts; numpy
//! does not either), which is what makes the bytes reproducible. `d` and `m` are then stored as
//! IEEE f16, rounded to nearest-even (ggml's `GGML_FP32_TO_FP16`, numpy's `astype(float16)`,
//! `half::f16::from_f32`); the dequantizer multiplies by that f16 value, so the stored scale may
//! differ from the one that chose the codes by f16's rounding (at most 2^-11 relative in f16's
//! normal range, half of 2^-24 absolute below it).
//!
//! Where the two references differ, we follow ggml. The differences we know of are all about
//! signed zeros: in an all-zero Q4_0/Q5_0 block ggml's running maximum keeps its initial +0, so
//! `d = +0 / -8 = -0` (f16 bytes `00 80`) even when the block's first value is -0, where numpy
//! takes that value and stores +0; and when the minimum of a Q4_1/Q5_1 block is zero with both
//! signs present, ggml keeps the first zero as `m` while numpy's reduction may pick either. Non-
//! finite weights are refused (ggml's output is meaningless for them). A scale beyond f16's range
//! (|max| > 65504·8 for Q4_0) is stored as ±inf, as ggml does.
//!
//! K-quants (Q2_K … Q6_K) search for their scales (`make_qkx2_quants`, `make_q3_quants`, ...);
//! gguf-py has no port of those, so quantize_k.rs is checked against ggml's C code itself
//! (tests/ggml_quantize_k.rs).

use super::quantize_k;
use super::{GgmlType, QK_K};
use crate::format::Format;
use crate::{Error, Result};
use half::f16;

/// Weights per legacy block (ggml's `QK4_0` = `QK4_1` = `QK5_0` = `QK5_1` = `QK8_0`).
pub(super) const QK: usize = 32;
/// Legacy blocks quantized per parallel task (native): large enough to amortise scheduling.
const BLOCKS_PER_TASK: usize = 512;
/// K-quant super-blocks per parallel task: each is 8 legacy blocks' worth of weights and its scale
/// search costs tens of passes over them, so fewer make a task.
const SUPER_BLOCKS_PER_TASK: usize = 16;

/// Quantize `rows × cols` row-major f32 `values` into ggml blocks of type `t`, as ggml's reference
/// quantizer for `t` does. Returns exactly `Format::Ggml(t).storage(rows, cols)?.total()` bytes,
/// rows one after another, each `cols / t.block_size()` blocks (32 weights for the legacy types,
/// 256 for the K-quants).
///
/// Errors: `cols` not a multiple of the block size, `values.len()` not `rows × cols`, or a
/// non-finite value.
pub fn quantize(t: GgmlType, values: &[f32], rows: usize, cols: usize) -> Result<Vec<u8>> {
    let bs = t.block_size();
    if !cols.is_multiple_of(bs) {
        return Err(Error::config(
            "ggml",
            format!(
                "{} quantizes rows whose length is a multiple of {bs}, got rows of {cols}",
                t.name()
            ),
        ));
    }
    if rows.checked_mul(cols) != Some(values.len()) {
        return Err(Error::config(
            "ggml",
            format!(
                "{}: {} values for a {rows}×{cols} tensor",
                t.name(),
                values.len()
            ),
        ));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::format(
            t.name(),
            "values",
            format!(
                "value {} at row {}, column {} is not finite",
                values[i],
                i / cols,
                i % cols
            ),
        ));
    }
    let total = Format::Ggml(t).storage(rows, cols)?.total();
    let mut out = vec![0u8; total];
    let (o, k) = (&mut out, SUPER_BLOCKS_PER_TASK);
    match t {
        GgmlType::Q4_0 => blocks::<QK, 18>(values, o, BLOCKS_PER_TASK, q4_0),
        GgmlType::Q4_1 => blocks::<QK, 20>(values, o, BLOCKS_PER_TASK, q4_1),
        GgmlType::Q5_0 => blocks::<QK, 22>(values, o, BLOCKS_PER_TASK, q5_0),
        GgmlType::Q5_1 => blocks::<QK, 24>(values, o, BLOCKS_PER_TASK, q5_1),
        GgmlType::Q8_0 => blocks::<QK, 34>(values, o, BLOCKS_PER_TASK, q8_0),
        GgmlType::Q2_K => blocks::<QK_K, 84>(values, o, k, quantize_k::q2_k),
        GgmlType::Q3_K => blocks::<QK_K, 110>(values, o, k, quantize_k::q3_k),
        GgmlType::Q4_K => blocks::<QK_K, 144>(values, o, k, quantize_k::q4_k),
        GgmlType::Q5_K => blocks::<QK_K, 176>(values, o, k, quantize_k::q5_k),
        GgmlType::Q6_K => blocks::<QK_K, 210>(values, o, k, quantize_k::q6_k),
    }
    Ok(out)
}

/// Run a per-block quantizer (`BS` weights into `TS` bytes) over matching chunks (lengths checked
/// by the caller), `per_task` blocks per parallel task natively. Blocks are independent and every
/// row is whole blocks, so the split points do not change a byte.
fn blocks<const BS: usize, const TS: usize>(
    values: &[f32],
    out: &mut [u8],
    per_task: usize,
    f: fn(&[f32; BS], &mut [u8; TS]),
) {
    let serial = |values: &[f32], out: &mut [u8]| {
        for (x, b) in values.chunks_exact(BS).zip(out.chunks_exact_mut(TS)) {
            if let (Ok(x), Ok(b)) = (<&[f32; BS]>::try_from(x), <&mut [u8; TS]>::try_from(b)) {
                f(x, b);
            }
        }
    };
    if out.len() >= 2 * per_task * TS {
        crate::par::for_each_chunk_mut(out, per_task * TS, |i, o| {
            serial(&values[i * per_task * BS..], o)
        });
        return;
    }
    serial(values, out);
}

/// The value of largest magnitude, with its sign; the first one on ties; +0 for an all-zero block
/// (ggml's running maximum starts at +0 and is replaced only on a strict `<`).
#[inline(always)]
fn signed_absmax(x: &[f32; QK]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// The block's minimum and maximum, scanned as ggml does (start at ±FLT_MAX, strict compares).
#[inline(always)]
fn min_max(x: &[f32; QK]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// `1 / d`, or 0 when `d` is ±0 (ggml's `d ? 1.0f/d : 0.0f`).
#[inline(always)]
fn inverse(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// A 4/5-bit code from its already offset and half-shifted value: truncation toward zero (C's
/// float-to-int conversion), clamped to `0..=top`. The lower clamp is never needed for finite
/// input (the value is ≥ 0.5 minus rounding); it only keeps a stray value in range.
#[inline(always)]
fn code(v: f32, top: i32) -> u8 {
    (v as i32).clamp(0, top) as u8
}

#[inline(always)]
pub(super) fn put_f16(b: &mut [u8], v: f32) {
    b.copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// Pack 4-bit codes: byte `j` holds code `j` in its low nibble and code `j + 16` in its high one.
/// Only the low nibbles of `q` are used (Q5's fifth bits go to `qh`).
#[inline(always)]
pub(super) fn pack_nibbles(q: &[u8; QK], qs: &mut [u8]) {
    for j in 0..QK / 2 {
        qs[j] = (q[j] & 0x0f) | ((q[j + QK / 2] & 0x0f) << 4);
    }
}

/// Bit `i` of the little-endian u32 `qh` is bit 4 of code `i`.
#[inline(always)]
pub(super) fn pack_fifth_bits(q: &[u8; QK], qh: &mut [u8]) {
    let bits = q
        .iter()
        .enumerate()
        .fold(0u32, |acc, (i, &c)| acc | (((c >> 4) & 1) as u32) << i);
    qh.copy_from_slice(&bits.to_le_bytes());
}

/// Codes of a symmetric block: `trunc(w·id + offset + 0.5)`, clamped to `0..=top`.
#[inline(always)]
fn symmetric_codes(x: &[f32; QK], id: f32, shifted_half: f32, top: i32) -> [u8; QK] {
    let mut q = [0u8; QK];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = code(v * id + shifted_half, top);
    }
    q
}

/// Codes of an affine block: `trunc((w - min)·id + 0.5)`, clamped to `0..=top`.
#[inline(always)]
fn affine_codes(x: &[f32; QK], min: f32, id: f32, top: i32) -> [u8; QK] {
    let mut q = [0u8; QK];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = code((v - min) * id + 0.5, top);
    }
    q
}

/// Q4_0: `d, qs[16]`, w ≈ (q - 8)·d.
fn q4_0(x: &[f32; QK], b: &mut [u8; 18]) {
    let d = signed_absmax(x) / -8.0;
    let q = symmetric_codes(x, inverse(d), 8.5, 15);
    put_f16(&mut b[0..2], d);
    pack_nibbles(&q, &mut b[2..18]);
}

/// Q4_1: `d, m, qs[16]`, w ≈ q·d + m.
fn q4_1(x: &[f32; QK], b: &mut [u8; 20]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let q = affine_codes(x, min, inverse(d), 15);
    put_f16(&mut b[0..2], d);
    put_f16(&mut b[2..4], min);
    pack_nibbles(&q, &mut b[4..20]);
}

/// Q5_0: `d, qh[4], qs[16]`, w ≈ (q - 16)·d.
fn q5_0(x: &[f32; QK], b: &mut [u8; 22]) {
    let d = signed_absmax(x) / -16.0;
    let q = symmetric_codes(x, inverse(d), 16.5, 31);
    put_f16(&mut b[0..2], d);
    pack_fifth_bits(&q, &mut b[2..6]);
    pack_nibbles(&q, &mut b[6..22]);
}

/// Q5_1: `d, m, qh[4], qs[16]`, w ≈ q·d + m. (ggml does not clamp here, since the maximum's code
/// `(max - min)·id + 0.5` stays below 32; the clamp, as in gguf-py, changes nothing.)
fn q5_1(x: &[f32; QK], b: &mut [u8; 24]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let q = affine_codes(x, min, inverse(d), 31);
    put_f16(&mut b[0..2], d);
    put_f16(&mut b[2..4], min);
    pack_fifth_bits(&q, &mut b[4..8]);
    pack_nibbles(&q, &mut b[8..24]);
}

/// Q8_0: `d, qs[32]` (i8), w ≈ q·d.
fn q8_0(x: &[f32; QK], b: &mut [u8; 34]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = inverse(d);
    put_f16(&mut b[0..2], d);
    for (q, &v) in b[2..].iter_mut().zip(x) {
        // |v·id| ≤ 127 up to rounding, so the saturating cast never saturates.
        *q = (v * id).round() as i8 as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::Rng;

    const LEGACY: [GgmlType; 5] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
    ];

    fn roundtrip(t: GgmlType, x: &[f32], rows: usize, cols: usize) -> (Vec<u8>, Vec<f32>) {
        let bytes = quantize(t, x, rows, cols).unwrap();
        let y = Format::Ggml(t).dequantize(&bytes, rows, cols).unwrap();
        (bytes, y)
    }

    /// Every weight comes back within half a step of its block (the f32 scale that chose the
    /// codes; a little more for the f16 rounding of `d` and `m`), except in Q4_0/Q5_0 a weight
    /// that the top code clamps (within half a step of `-max`), which is within one step.
    #[test]
    fn roundtrip_error_is_bounded_by_half_a_step() {
        let mut rng = Rng(0x5eed_1234);
        let (rows, cols) = (7, 96);
        // Blocks of very different scales, some one-signed, as real rows have.
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| {
                let scale = [0.02, 1.0, 3e-4, 40.0][(i / QK) % 4];
                let shift = if (i / QK).is_multiple_of(3) {
                    0.7 * scale
                } else {
                    0.0
                };
                rng.normal() * scale + shift
            })
            .collect();
        for t in LEGACY {
            let (_, y) = roundtrip(t, &x, rows, cols);
            for (blk, (xb, yb)) in x.chunks(QK).zip(y.chunks(QK)).enumerate() {
                let (min, max) = xb
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                let amax = min.abs().max(max.abs());
                let (step, levels) = match t {
                    GgmlType::Q4_0 => (amax / 8.0, 8.0),
                    GgmlType::Q5_0 => (amax / 16.0, 16.0),
                    GgmlType::Q4_1 => ((max - min) / 15.0, 15.0),
                    GgmlType::Q5_1 => ((max - min) / 31.0, 31.0),
                    _ => (amax / 127.0, 127.0),
                };
                // f16 keeps 11 significant bits: the stored d is off by ≤ 2^-11 of it (or by half
                // the subnormal spacing 2^-24 below 2^-14), times up to `levels` codes, and the
                // stored min likewise.
                let f16_err = |v: f32| v.abs() * 2f32.powi(-11) + 2f32.powi(-25);
                let f16_slack = f16_err(step) * levels + f16_err(min);
                let slack = f16_slack + amax * 1e-6;
                let signed_max = signed_absmax(xb.try_into().unwrap());
                for (j, (&a, &b)) in xb.iter().zip(yb).enumerate() {
                    // Q4_0/Q5_0: weights past +levels - 0.5 steps on the far side of the max clamp.
                    let clamped = matches!(t, GgmlType::Q4_0 | GgmlType::Q5_0)
                        && -a / signed_max * levels > levels - 0.5;
                    let bound = if clamped { step } else { step / 2.0 } + slack;
                    assert!(
                        (a - b).abs() <= bound,
                        "{} block {blk} weight {j}: {a} -> {b}, |err| {} > {bound} (step {step})",
                        t.name(),
                        (a - b).abs()
                    );
                }
            }
        }
    }

    #[test]
    fn all_zero_block() {
        let x = [0f32; QK];
        let (b, y) = roundtrip(GgmlType::Q4_0, &x, 1, QK);
        // d = +0 / -8 = -0; every weight gets the middle code 8.
        assert_eq!(&b[..2], &[0x00, 0x80]);
        assert!(b[2..].iter().all(|&q| q == 0x88));
        assert!(y.iter().all(|&v| v == 0.0));
        let (b, _) = roundtrip(GgmlType::Q5_0, &x, 1, QK);
        // Code 16 = 0b10000: low nibbles 0, every fifth bit set.
        assert_eq!(&b[..6], &[0x00, 0x80, 0xff, 0xff, 0xff, 0xff]);
        assert!(b[6..].iter().all(|&q| q == 0));
        for t in [GgmlType::Q4_1, GgmlType::Q5_1, GgmlType::Q8_0] {
            let (b, y) = roundtrip(t, &x, 1, QK);
            assert!(b.iter().all(|&q| q == 0), "{}: {b:?}", t.name());
            assert!(y.iter().all(|&v| v == 0.0));
        }
        // ggml keeps its initial +0 maximum even if the zeros are negative (see the module doc).
        let neg = [-0f32; QK];
        assert_eq!(
            &quantize(GgmlType::Q4_0, &neg, 1, QK).unwrap()[..2],
            &[0x00, 0x80]
        );
    }

    #[test]
    fn one_huge_value_sets_the_scale() {
        let mut x = [0.01f32; QK];
        x[5] = -0.02;
        x[20] = 1000.0;
        // Q4_0: d = 1000 / -8 = -125 (exact in f16); the big weight gets code 0 and comes back
        // exactly; the small ones round to code 8, i.e. 0.
        let (b, y) = roundtrip(GgmlType::Q4_0, &x, 1, QK);
        assert_eq!(f16::from_le_bytes([b[0], b[1]]).to_f32(), -125.0);
        assert_eq!(y[20], 1000.0);
        assert!(y.iter().enumerate().all(|(j, &v)| j == 20 || v == 0.0));
        // Negative outlier: d becomes positive and the outlier again takes code 0.
        let neg: Vec<f32> = x.iter().map(|v| -v).collect();
        let (b, y) = roundtrip(GgmlType::Q5_0, &neg, 1, QK);
        assert_eq!(f16::from_le_bytes([b[0], b[1]]).to_f32(), 62.5);
        assert_eq!(y[20], -1000.0);
        assert!(y.iter().enumerate().all(|(j, &v)| j == 20 || v == 0.0));
        // Q8_0: d = 1000/127; everything else is below half a step.
        let (_, y) = roundtrip(GgmlType::Q8_0, &x, 1, QK);
        assert!((y[20] - 1000.0).abs() <= 1000.0 * 2f32.powi(-11));
        assert!(y.iter().enumerate().all(|(j, &v)| j == 20 || v == 0.0));
        // Q4_1: the minimum -0.02 is stored as m; the small weights land on code 0 (m).
        let (b, y) = roundtrip(GgmlType::Q4_1, &x, 1, QK);
        let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
        assert_eq!(m, f16::from_f32(-0.02).to_f32());
        assert!(y.iter().enumerate().all(|(j, &v)| j == 20 || v == m));
    }

    #[test]
    fn output_length_matches_storage_and_rows_are_independent() {
        let mut rng = Rng(77);
        // Enough blocks for the parallel path.
        let (rows, cols) = (40, 1024);
        let x = rng.vec(rows * cols);
        // All ten types: the K-quants' 160 super-blocks also take the parallel path.
        for t in GgmlType::ALL {
            let all = quantize(t, &x, rows, cols).unwrap();
            assert_eq!(
                all.len(),
                Format::Ggml(t).storage(rows, cols).unwrap().total()
            );
            let row_bytes = all.len() / rows;
            for r in [0, 17, rows - 1] {
                let one = quantize(t, &x[r * cols..(r + 1) * cols], 1, cols).unwrap();
                assert_eq!(one, all[r * row_bytes..(r + 1) * row_bytes], "{}", t.name());
            }
        }
        assert!(quantize(GgmlType::Q4_0, &[], 0, 64).unwrap().is_empty());
    }

    #[test]
    fn bad_lengths_types_and_values_are_errors() {
        let x = vec![0.5f32; 48];
        let e = quantize(GgmlType::Q4_0, &x, 1, 48).unwrap_err().to_string();
        assert!(
            e.contains("Q4_0") && e.contains("48") && e.contains("32"),
            "{e}"
        );
        let e = quantize(GgmlType::Q8_0, &x, 2, 32).unwrap_err().to_string();
        assert!(e.contains("Q8_0") && e.contains("48 values"), "{e}");
        // K-quants take rows of whole 256-weight super-blocks (SmolLM2's 576 is not).
        let e = quantize(GgmlType::Q4_K, &[0.0; 576], 1, 576)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Q4_K") && e.contains("256") && e.contains("576"),
            "{e}"
        );
        let mut z = vec![0.5f32; 512];
        z[300] = f32::INFINITY;
        let e = quantize(GgmlType::Q6_K, &z, 2, 256)
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 1, column 44") && e.contains("inf"), "{e}");
        let mut y = vec![0.5f32; 64];
        y[40] = f32::NAN;
        let e = quantize(GgmlType::Q5_1, &y, 2, 32).unwrap_err().to_string();
        assert!(e.contains("row 1, column 8"), "{e}");
    }
}
