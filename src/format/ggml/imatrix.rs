//! ggml's quantizers with an importance matrix (llama.cpp's `llama-quantize --imatrix`), byte for
//! byte as ggml makes them: `quantize_q4_0`, `quantize_q4_1`, `quantize_q5_0`, `quantize_q5_1`,
//! `quantize_q3_K`, `quantize_q4_K` and `quantize_q5_K` of ggml's `ggml-quants.c` called with `quant_weights`
//! (their `quantize_row_*_impl` paths), and the helpers those call, `make_qx_quants` (with
//! `rmse_type = 1` and weights given), `make_qkx3_quants` and `make_qp_quants` (llama.cpp as
//! vendored in llama-cpp-python 0.3.36; tests/ggml_imatrix.rs checks the bytes against that C
//! code, compiled by tests/fixtures/gen_ggml_imatrix_fixtures.py).
//!
//! The importance `qw[j]` of input column `j` is the mean of `x_j²` over the calibration tokens at
//! the tensor's input (what llama.cpp's `llama-imatrix` collects). Every row uses the same vector.
//! ggml turns it into a per-weight weight `qw[j] · sqrt(σ² + w_j²)`, with `σ²` the row's mean
//! square (legacy types) or twice the super-block's (K-quants), so a weight counts more when its
//! input channel is loud and when it is large itself, and then runs weighted versions of its
//! scale searches:
//!
//! * Q4_0, Q5_0 (symmetric): `make_qx_quants` tries the inverse scale `−nmax / max` (the weight
//!   of largest magnitude, with its sign, on the unmirrored level) and 18 neighbours
//!   `−(nmax + 0.1·k) / max`, keeping the one whose rounded codes maximise
//!   `(Σ c·x·l)² / Σ c·l²` (the weighted squared error at the least-squares scale); the scale
//!   stored is that least-squares one.
//! * Q4_1, Q5_1 (affine) and the sub-blocks of Q4_K, Q5_K: `make_qkx3_quants`, the search of
//!   the K-quants' reference (`quantize_k::search::Qkx2`, identical code when weights are given)
//!   with `rmin = −0.9`, `rdelta = 0.05`, 36 steps.
//! * Q3_K fits its sub-blocks of 16 with `make_qx_quants` (nmax 4) and quantizes their signed
//!   scales to 6 bits with it again (nmax 32, weighted by each sub-block's summed weights).
//! * Q4_K, Q5_K then quantize the eight sub-block scales and mins to 6 bits with
//!   `make_qp_quants` (weighted by each sub-block's summed weights): a search over 8 inverse
//!   scales around `63 / max`, then up to five rounds of coordinate descent on the codes.
//! * Q8_0 ignores the importance in ggml too; Q2_K and Q6_K (whose weighted paths are not
//!   ported) are refused here with an error naming the type.
//!
//! Every float operation is a separate f32 operation in ggml's order (`w·x·l` is `(w·x)·l`),
//! as in the parent modules; integer conversions follow C's (a code stored in a byte is
//! truncated to it).

use super::quantize::{pack_fifth_bits, pack_nibbles, put_f16, QK};
use super::quantize_k::search::{nearest_int, Qkx2, GROUP_MAX_EPS};
use super::quantize_k::{k4_finish, pack_q4_k, pack_q5_k, q3_k_finish};
use super::{GgmlType, QK_K};
use crate::format::Format;
use crate::{Error, Result};
use half::f16;

/// The types whose ggml quantizer uses an importance matrix and that QuantLab reproduces.
pub const WEIGHTED: [GgmlType; 8] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
];

/// `make_qkx3_quants(n, nmax, …, -0.9f, 0.05f, 36, false)` with weights.
const fn qkx3(nmax: i32) -> Qkx2 {
    Qkx2 {
        nmax,
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        mad: false,
    }
}

/// Quantize `rows × cols` row-major `values` into ggml blocks of type `t` with the importance
/// `qw` of each of the `cols` input columns, as ggml's `quantize_<t>(…, quant_weights)` does.
/// Errors: a type in neither `WEIGHTED` nor the plain list, shapes, non-finite values or
/// importances, a negative importance.
pub fn quantize(
    t: GgmlType,
    values: &[f32],
    rows: usize,
    cols: usize,
    qw: &[f32],
) -> Result<Vec<u8>> {
    if !WEIGHTED.contains(&t) {
        return Err(Error::config(
            "imatrix",
            format!(
                "{} has no importance-weighted quantizer in QuantLab (supported: {})",
                t.name(),
                WEIGHTED.map(|t| t.name()).join(", ")
            ),
        ));
    }
    if qw.len() != cols {
        return Err(Error::config(
            "imatrix",
            format!("{} importances for rows of {cols}", qw.len()),
        ));
    }
    if let Some(j) = qw.iter().position(|v| !v.is_finite() || *v < 0.0) {
        return Err(Error::config(
            "imatrix",
            format!(
                "importance {} of column {j} is not a finite value ≥ 0",
                qw[j]
            ),
        ));
    }
    if t == GgmlType::Q8_0 {
        // ggml's quantize_q8_0 ignores quant_weights.
        return super::quantize::quantize(t, values, rows, cols);
    }
    // Shapes and finiteness are checked by the plain quantizer's rules.
    let bs = t.block_size();
    if !cols.is_multiple_of(bs) || rows.checked_mul(cols) != Some(values.len()) {
        return super::quantize::quantize(t, values, rows, cols);
    }
    if values.iter().any(|v| !v.is_finite()) {
        return super::quantize::quantize(t, values, rows, cols);
    }
    let total = Format::Ggml(t).storage(rows, cols)?.total();
    let row_bytes = total / rows.max(1);
    let mut out = vec![0u8; total];
    let row = |r: usize, o: &mut [u8]| {
        let x = &values[r * cols..(r + 1) * cols];
        match t {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q4_1 | GgmlType::Q5_1 => {
                legacy_row(t, x, qw, o)
            }
            GgmlType::Q3_K => super_blocks(x, qw, o, q3_k_weighted),
            GgmlType::Q4_K => super_blocks(x, qw, o, |xb, q, b: &mut [u8; 144]| {
                let l = k4_weighted(xb, q, 15, false, b);
                pack_q4_k(&l, b);
            }),
            _ => super_blocks(x, qw, o, |xb, q, b: &mut [u8; 176]| {
                let l = k4_weighted(xb, q, 31, true, b);
                pack_q5_k(&l, b);
            }),
        }
    };
    crate::par::for_each_chunk_mut(&mut out, row_bytes, row);
    Ok(out)
}

/// Run `f` over the super-blocks of one row: weights, their importances, `TS` bytes out.
fn super_blocks<const TS: usize>(
    x: &[f32],
    qw: &[f32],
    o: &mut [u8],
    f: impl Fn(&[f32], &[f32], &mut [u8; TS]),
) {
    let blocks = x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K));
    for ((xb, q), b) in blocks.zip(o.chunks_exact_mut(TS)) {
        if let Ok(b) = <&mut [u8; TS]>::try_from(b) {
            f(xb, q, b);
        }
    }
}

/// One row of a legacy type (`quantize_row_q{4,5}_{0,1}_impl`).
fn legacy_row(t: GgmlType, x: &[f32], qw: &[f32], o: &mut [u8]) {
    let mut sum_x2 = 0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    let sigma2 = sum_x2 / x.len() as f32;
    let size = o.len() / (x.len() / QK);
    for ((xb, q), b) in x
        .chunks_exact(QK)
        .zip(qw.chunks_exact(QK))
        .zip(o.chunks_exact_mut(size))
    {
        let mut weight = [0f32; QK];
        for ((w, &q), &v) in weight.iter_mut().zip(q).zip(xb) {
            *w = q * (sigma2 + v * v).sqrt();
        }
        let mut l = [0u8; QK];
        let xb: &[f32; QK] = match xb.try_into() {
            Ok(a) => a,
            Err(_) => continue,
        };
        match t {
            GgmlType::Q4_0 | GgmlType::Q5_0 => {
                let nmax = if t == GgmlType::Q4_0 { 8 } else { 16 };
                let d = make_qx_quants(nmax, xb, &mut l, &weight);
                put_f16(&mut b[0..2], d);
                if t == GgmlType::Q4_0 {
                    pack_nibbles(&l, &mut b[2..18]);
                } else {
                    pack_fifth_bits(&l, &mut b[2..6]);
                    pack_nibbles(&l, &mut b[6..22]);
                }
            }
            _ => {
                let nmax = if t == GgmlType::Q4_1 { 15 } else { 31 };
                let (d, the_min) = qkx3(nmax).fit(xb, &weight, &mut l);
                put_f16(&mut b[0..2], d);
                put_f16(&mut b[2..4], -the_min);
                if t == GgmlType::Q4_1 {
                    pack_nibbles(&l, &mut b[4..20]);
                } else {
                    pack_fifth_bits(&l, &mut b[4..8]);
                    pack_nibbles(&l, &mut b[8..24]);
                }
            }
        }
    }
}

/// One super-block of Q3_K (`quantize_row_q3_K_impl`): sub-blocks of 16 fitted by
/// `make_qx_quants` (nmax 4), their scales to signed 6 bits by `make_qx_quants` (nmax 32)
/// weighted by each sub-block's summed weights.
fn q3_k_weighted(x: &[f32], qw: &[f32], b: &mut [u8; 110]) {
    let mut sumx2 = 0f32;
    for &v in x {
        sumx2 += v * v;
    }
    let sigma2 = 2.0 * sumx2 / QK_K as f32;
    let mut l = [0u8; QK_K];
    let (mut scales, mut sw) = ([0f32; 16], [0f32; 16]);
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        let mut weight = [0f32; 16];
        for ((w, &q), &v) in weight.iter_mut().zip(&qw[16 * j..]).zip(xs) {
            *w = q * (sigma2 + v * v).sqrt();
        }
        let mut sumw = 0f32;
        for &w in &weight {
            sumw += w;
        }
        sw[j] = sumw;
        scales[j] = make_qx_quants(4, xs, &mut l[16 * j..16 * j + 16], &weight);
    }
    let mut ls = [0u8; 16];
    let d_block = make_qx_quants(32, &scales, &mut ls, &sw);
    // The 6-bit codes, low nibbles in bytes 0..8, top two bits in bytes 8..12 (kquants.rs).
    let mut packed = [0u8; 12];
    for (j, &c) in ls.iter().enumerate() {
        if j < 8 {
            packed[j] = c & 0x0f;
        } else {
            packed[j - 8] |= (c & 0x0f) << 4;
        }
        packed[8 + j % 4] |= (c >> 4) << (2 * (j / 4));
    }
    q3_k_finish(x, l.map(|c| c as i8), &packed, f16::from_f32(d_block), b);
}

/// `make_qx_quants(n, nmax, x, L, 1, qw)`: codes `l + nmax` into `out`, the scale returned.
fn make_qx_quants(nmax: i32, x: &[f32], out: &mut [u8], qw: &[f32]) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        out.fill(0);
        return 0.0;
    }
    let nm = nmax as f32;
    let code = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for (&v, &w) in x.iter().zip(qw) {
            let l = code(iscale, v) as f32;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let fill = |iscale: f32, out: &mut [u8]| {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = (nmax + code(iscale, v)) as u8;
        }
    };
    let iscale = -nm / max;
    fill(iscale, out);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(nm + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            fill(iscale, out);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `make_qp_quants(n, nmax, x, L, quant_weights)`: non-negative values `x` (sub-block scales or
/// mins) to codes `0..=nmax` against one scale, returned.
fn make_qp_quants(nmax: i32, x: &[f32], l: &mut [u8], qw: &[f32]) -> f32 {
    let mut max = 0f32;
    for &v in x {
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let nm = nmax as f32;
    let mut iscale = nm / max;
    for (l, &v) in l.iter_mut().zip(x) {
        *l = nearest_int(iscale * v) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for ((&l, &v), &w) in l.iter().zip(x).zip(qw) {
        let diff = v - scale * l as f32;
        best_mse += w * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nm) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for (&v, &w) in x.iter().zip(qw) {
            let q = nearest_int(iscale_is * v).min(nmax);
            let diff = v - scale_is * q as f32;
            mse += w * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for ((l, &v), &w) in l.iter_mut().zip(x).zip(qw) {
        let q = nearest_int(iscale * v).min(nmax);
        *l = q as u8;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut changed = 0;
        for (l, (&v, &w)) in l.iter_mut().zip(x.iter().zip(qw)) {
            let old = *l as f32;
            let mut slx = sumlx - w * v * old;
            let mut sl2 = suml2 - w * old * old;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(v * sl2 / slx).min(nmax);
                if new_l != *l as i32 {
                    slx += w * v * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *l = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed += 1;
                    }
                }
            }
        }
        if changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// One super-block of Q4_K (`nmax` 15) or Q5_K (31, whose scale codes ggml clamps to 63):
/// `quantize_row_q{4,5}_K_impl` up to the codes, which are returned; `b[0..16]` gets `d`,
/// `dmin` and the packed scales.
fn k4_weighted(x: &[f32], qw: &[f32], nmax: i32, clamp63: bool, b: &mut [u8]) -> [u8; QK_K] {
    let mut l = [0u8; QK_K];
    let mut sum_x2 = 0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    let sigma2 = 2.0 * sum_x2 / QK_K as f32;
    let (mut scales, mut mins, mut sw) = ([0f32; 8], [0f32; 8], [0f32; 8]);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut weights = [0f32; 32];
        for ((w, &q), &v) in weights.iter_mut().zip(&qw[32 * j..]).zip(xs) {
            *w = q * (sigma2 + v * v).sqrt();
        }
        let mut sumw = 0f32;
        for &w in &weights {
            sumw += w;
        }
        sw[j] = sumw;
        (scales[j], mins[j]) = qkx3(nmax).fit(xs, &weights, &mut l[32 * j..32 * j + 32]);
    }
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    if clamp63 {
        ls = ls.map(|v| v.min(63));
        lm = lm.map(|v| v.min(63));
    }
    let (d, dmin) = (f16::from_f32(d_block), f16::from_f32(m_block));
    k4_finish(x, (&ls, &lm), (d, dmin), nmax, b, &mut l);
    l
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ggml::dequantize;
    use crate::testkit::Rng;

    /// Σ_rows Σ_j imp_j (w − ŵ)² of `bytes` against `x`.
    fn weighted_err(
        t: GgmlType,
        x: &[f32],
        rows: usize,
        cols: usize,
        bytes: &[u8],
        imp: &[f32],
    ) -> f64 {
        let mut d = vec![0f32; rows * cols];
        dequantize(t, bytes, &mut d).unwrap();
        let mut e = 0f64;
        for (i, (&a, &b)) in x.iter().zip(&d).enumerate() {
            let diff = (a - b) as f64;
            e += imp[i % cols] as f64 * diff * diff;
        }
        e
    }

    /// With importances that vary over four decades, the weighted quantizer's error measured
    /// with those importances is below the plain quantizer's for every type, summed over rows.
    #[test]
    fn importance_lowers_the_weighted_error() {
        let (rows, cols) = (16, 512);
        let mut rng = Rng(18);
        let x: Vec<f32> = (0..rows * cols).map(|_| rng.normal()).collect();
        let imp: Vec<f32> = (0..cols).map(|_| 10f32.powf(2.0 * rng.next())).collect();
        for t in WEIGHTED {
            let plain = super::super::quantize::quantize(t, &x, rows, cols).unwrap();
            let w = quantize(t, &x, rows, cols, &imp).unwrap();
            assert_eq!(w.len(), plain.len());
            let (ep, ew) = (
                weighted_err(t, &x, rows, cols, &plain, &imp),
                weighted_err(t, &x, rows, cols, &w, &imp),
            );
            if t == GgmlType::Q8_0 {
                assert_eq!(w, plain, "ggml's Q8_0 ignores the importance");
            } else {
                assert!(ew < ep, "{}: weighted {ew} vs plain {ep}", t.name());
            }
        }
    }

    #[test]
    fn unsupported_types_and_bad_importances_are_errors() {
        let x = vec![0.5f32; 256];
        let imp = vec![1f32; 256];
        for t in [GgmlType::Q2_K, GgmlType::Q6_K] {
            let e = quantize(t, &x, 1, 256, &imp).unwrap_err().to_string();
            assert!(e.contains(t.name()), "{e}");
        }
        assert!(quantize(GgmlType::Q4_0, &x, 1, 256, &imp[1..]).is_err());
        let mut bad = imp.clone();
        bad[3] = f32::NAN;
        assert!(quantize(GgmlType::Q4_0, &x, 1, 256, &bad).is_err());
        bad[3] = -1.0;
        assert!(quantize(GgmlType::Q4_0, &x, 1, 256, &bad).is_err());
    }
}
