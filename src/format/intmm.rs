//! Integer W4A8 products (arXiv 2311.05161, "W4A8"): the CPU reference of
//! `shaders/matmul_int.wgsl`. Activations quantized by `format::act` are kept as signed codes
//! `qa` with one scale `sa` per row (token); a symmetric `Int` weight (src/format/int.rs) is
//! signed codes `qw = c − 2^(b−1)` with one f16 scale `sw` per group. The product
//!
//!   y[t, j] = sa[t] · Σ_groups sw[j, g] · Σ_{k ∈ g} qa[t, k] · qw[j, k]  (+ bias[j])
//!
//! sums each group's code products exactly in i32, then spends one float multiply-add per group
//! and one multiply per output: the arithmetic an integer engine (DP4A, int8 tensor cores) does.
//! It equals the fake-quantized float path `fake_quant(x) · dequantize(W)ᵀ` up to float
//! rounding, because `fake_quant` stores exactly `qa · sa` and `dequantize` exactly `qw · sw`
//! (both rounded once to f32).

use super::act::{self, ActGranularity, ActQuantSpec, ActScale};
use super::int::{Granularity, IntSpec};
use super::packed::unpack_code;
use super::{Format, QTensor};
use crate::{Error, Result};
use half::f16;

/// Activations as integer codes: `codes[t · cols + k]` in `−qmax..=qmax`, `scales[t]` per row.
#[derive(Clone, Debug, PartialEq)]
pub struct ActCodes {
    pub rows: usize,
    pub cols: usize,
    pub codes: Vec<i8>,
    pub scales: Vec<f32>,
}

impl ActCodes {
    /// The fake-quantized values `qa · sa` (what `act::fake_quant` stores).
    pub fn values(&self) -> Vec<f32> {
        self.codes
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f32 * self.scales[i / self.cols.max(1)])
            .collect()
    }
}

/// Quantize `x` (rows of `cols`) to codes with the rule of `act::fake_quant`: the same scale
/// (static, `act::dynamic_scale` of the tensor's or each row's absmax) and the same rounding, so
/// `ActCodes::values` equals `fake_quant`'s output exactly (but for the sign of zeros). A per-tensor scale is repeated
/// for every row.
pub fn quantize_act(x: &[f32], cols: usize, spec: &ActQuantSpec) -> Result<ActCodes> {
    spec.check()?;
    if cols == 0 || !x.len().is_multiple_of(cols) {
        return Err(Error::config(
            "activation",
            format!("{} values are not rows of {cols}", x.len()),
        ));
    }
    let rows = x.len() / cols;
    let qmax = spec.qmax();
    let absmax = |v: &[f32]| v.iter().fold(0f32, |m, a| m.max(a.abs()));
    let scales: Vec<f32> = match (spec.scale, spec.gran) {
        (ActScale::Static(s), _) => vec![s; rows],
        (ActScale::Dynamic, ActGranularity::PerTensor) => {
            vec![act::dynamic_scale(absmax(x), qmax); rows]
        }
        (ActScale::Dynamic, ActGranularity::PerToken) => x
            .chunks_exact(cols)
            .map(|r| act::dynamic_scale(absmax(r), qmax))
            .collect(),
    };
    let codes = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let s = scales[i / cols];
            if s == 0.0 {
                0
            } else {
                // |code| ≤ qmax ≤ 127: the cast is exact.
                (v / s).round_ties_even().clamp(-qmax, qmax) as i8
            }
        })
        .collect();
    Ok(ActCodes {
        rows,
        cols,
        codes,
        scales,
    })
}

/// Why `w` cannot be multiplied in integers, or None when it can: a symmetric `Int` format of
/// 2–8 bits (codes minus 2^(b−1) fit in i8; 1-bit signs are left to the float path) without
/// add-ons (outliers and low-rank factors are float corrections applied after the product).
pub fn unsupported_weight(w: &QTensor) -> Option<String> {
    match w.format {
        Format::Int(IntSpec { bits, sym, .. }) if sym && (2..=8).contains(&bits) => {
            if w.addons.is_empty() {
                None
            } else {
                Some("a weight with outliers or low-rank factors".into())
            }
        }
        f => Some(format!(
            "format {} (needs symmetric int, 2–8 bits)",
            f.name()
        )),
    }
}

/// `y = sa · Σ_g sw_g · (Σ_{k∈g} qa·qw)_i32 + bias`, rows of `a` times the rows of `w`
/// (`a.rows × w.rows`, row-major). Each group's sum is exact in i32: |qa·qw| ≤ 127 · 128 and
/// the shapes are refused where a row could overflow.
pub fn int_linear(a: &ActCodes, w: &QTensor, bias: Option<&[f32]>) -> Result<Vec<f32>> {
    if let Some(why) = unsupported_weight(w) {
        return Err(Error::unsupported("cpu", "int_linear", why));
    }
    let Format::Int(spec) = w.format else {
        unreachable!("unsupported_weight accepts Int only")
    };
    if a.cols != w.cols || a.codes.len() != a.rows * a.cols || a.scales.len() != a.rows {
        return Err(Error::config(
            "int_linear",
            format!(
                "{}×{} activations ({} codes, {} scales) against a {}×{} weight",
                a.rows,
                a.cols,
                a.codes.len(),
                a.scales.len(),
                w.rows,
                w.cols
            ),
        ));
    }
    if bias.is_some_and(|b| b.len() != w.rows) {
        return Err(Error::config(
            "bias",
            format!("{} values for {} rows", bias.map_or(0, |b| b.len()), w.rows),
        ));
    }
    check_no_overflow(w.cols, spec.bits)?;
    let (rows, cols) = (w.rows, w.cols);
    let st = w.format.storage(rows, cols)?;
    let (codes, scales) = w.data.split_at(st.codes);
    let glen = spec.gran.group_len(rows, cols, "weight")?;
    // Groups within one row: a per-tensor scale covers whole rows.
    let gk = match spec.gran {
        Granularity::Group(g) => g,
        _ => cols,
    };
    let half = 1i32 << (spec.bits - 1);
    // The weight as signed codes, one row after another.
    let qw: Vec<i32> = (0..rows * cols)
        .map(|i| unpack_code(codes, i, spec.bits) as i32 - half)
        .collect();
    let sw = |j: usize, k: usize| {
        let g = (j * cols + k) / glen;
        f16::from_le_bytes([scales[2 * g], scales[2 * g + 1]]).to_f32()
    };
    let mut y = vec![0f32; a.rows * rows];
    for t in 0..a.rows {
        let xa = &a.codes[t * cols..(t + 1) * cols];
        for j in 0..rows {
            let wr = &qw[j * cols..(j + 1) * cols];
            let mut acc = 0f32;
            for g0 in (0..cols).step_by(gk) {
                let g1 = (g0 + gk).min(cols);
                let dot: i32 = xa[g0..g1]
                    .iter()
                    .zip(&wr[g0..g1])
                    .map(|(&q, &c)| q as i32 * c)
                    .sum();
                acc += dot as f32 * sw(j, g0);
            }
            y[t * rows + j] = acc * a.scales[t] + bias.map_or(0.0, |b| b[j]);
        }
    }
    Ok(y)
}

/// Refuse rows long enough that an i32 sum of code products could overflow: 8-bit activation
/// codes (|qa| ≤ 127) times `bits`-bit weight codes (|qw| ≤ 2^(bits−1)).
pub fn check_no_overflow(cols: usize, bits: u8) -> Result<()> {
    let worst = cols as u64 * 127 * (1u64 << (bits.clamp(1, 8) - 1));
    if worst > i32::MAX as u64 {
        return Err(Error::unsupported(
            "int_linear",
            "shape",
            format!("rows of {cols} could overflow an i32 sum of {bits}-bit code products"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::act::fake_quant;
    use crate::testkit::Rng;

    /// The integer product against the fake-quantized float product computed in f64 (so the
    /// reference itself is exact to ~1e-16). Per output, the integer path rounds each group's
    /// `f32(dot) · sw` and the running sum once (G groups: ≤ (G + 1) roundings of 2⁻²⁴ of the
    /// absolute sum `E = Σ_k |x̂_k ŵ_k|`), then the final multiply by `sa` and the bias add; the
    /// float path's inputs `x̂ = qa·sa`, `ŵ = qw·sw` are each rounded to f32 once (2 more). At
    /// most 48 groups here: (48 + 5) · 2⁻²⁴ ≈ 3.2e-6 of `E`, under this bound.
    const INT_VS_FAKE_QUANT_REL: f64 = 1e-5;

    fn int_weight(r: &mut Rng, bits: u8, gran: Granularity, rows: usize, cols: usize) -> QTensor {
        let spec = IntSpec {
            bits,
            gran,
            sym: true,
        };
        let groups = rows * cols / gran.group_len(rows, cols, "w").unwrap();
        let mask = (1u32 << bits) - 1;
        let codes: Vec<u8> = (0..rows * cols)
            .map(|_| (r.next_u32() & mask) as u8)
            .collect();
        let scales: Vec<f32> = (0..groups).map(|_| 0.01 + 0.1 * r.next().abs()).collect();
        QTensor::from_int_parts(spec, rows, cols, &codes, &scales, &[]).unwrap()
    }

    #[test]
    fn codes_times_scales_equal_fake_quant_exactly() {
        let mut r = Rng(5);
        let (t, d) = (9, 70);
        let mut x: Vec<f32> = r.vec(t * d).iter().map(|v| 4.0 * v).collect();
        x[2 * d..3 * d].iter_mut().for_each(|v| *v = 0.0); // a zero scale
        for bits in [4u8, 8] {
            for (gran, scale) in [
                (ActGranularity::PerToken, ActScale::Dynamic),
                (ActGranularity::PerTensor, ActScale::Dynamic),
                (ActGranularity::PerTensor, ActScale::Static(0.02)),
            ] {
                let spec = ActQuantSpec { bits, gran, scale };
                let a = quantize_act(&x, d, &spec).unwrap();
                let mut fq = x.clone();
                fake_quant(&mut fq, d, &spec).unwrap();
                let qmax = spec.qmax() as i8;
                assert!(a.codes.iter().all(|q| (-qmax..=qmax).contains(q)));
                // Equal as numbers: fake_quant keeps the sign of a zero (round(−0.3) is −0).
                let same = a.values().iter().zip(&fq).all(|(a, b)| a == b);
                assert!(same, "{spec:?}");
            }
        }
    }

    #[test]
    fn int_linear_equals_fake_quant_float_product() {
        let mut r = Rng(6);
        for (t, d, n) in [(7, 96, 40), (5, 90, 13), (3, 1536, 24)] {
            for gran in [
                Granularity::PerRow,
                Granularity::Group(32),
                Granularity::PerTensor,
            ] {
                if let Granularity::Group(g) = gran {
                    if d % g != 0 {
                        continue;
                    }
                }
                for bits in [4u8, 2, 8] {
                    let w = int_weight(&mut r, bits, gran, n, d);
                    let x: Vec<f32> = r.vec(t * d).iter().map(|v| 2.0 * v).collect();
                    let bias: Vec<f32> = r.vec(n);
                    let spec = ActQuantSpec {
                        bits: 8,
                        gran: ActGranularity::PerToken,
                        scale: ActScale::Dynamic,
                    };
                    let a = quantize_act(&x, d, &spec).unwrap();
                    let got = int_linear(&a, &w, Some(&bias)).unwrap();
                    let xh = a.values();
                    let wh = w.dequantize().unwrap();
                    for i in 0..t {
                        for j in 0..n {
                            let (xr, wr) = (&xh[i * d..(i + 1) * d], &wh[j * d..(j + 1) * d]);
                            let want: f64 = xr
                                .iter()
                                .zip(wr)
                                .map(|(&p, &q)| p as f64 * q as f64)
                                .sum::<f64>()
                                + bias[j] as f64;
                            let e: f64 = xr
                                .iter()
                                .zip(wr)
                                .map(|(&p, &q)| (p as f64 * q as f64).abs())
                                .sum::<f64>()
                                + (bias[j] as f64).abs();
                            let err = (got[i * n + j] as f64 - want).abs();
                            assert!(
                                err <= INT_VS_FAKE_QUANT_REL * e,
                                "{t}×{d}→{n} {gran:?} {bits}b at ({i},{j}): {} vs {want} (E {e})",
                                got[i * n + j]
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn unsupported_weights_and_shapes_are_refused() {
        let mut r = Rng(7);
        let a = quantize_act(
            &r.vec(2 * 32),
            32,
            &ActQuantSpec {
                bits: 8,
                gran: ActGranularity::PerToken,
                scale: ActScale::Dynamic,
            },
        )
        .unwrap();
        let asym = QTensor::from_int_parts(
            IntSpec {
                bits: 4,
                gran: Granularity::PerRow,
                sym: false,
            },
            3,
            32,
            &[1; 96],
            &[0.1; 3],
            &[8; 3],
        )
        .unwrap();
        assert!(int_linear(&a, &asym, None).is_err());
        let f32w = QTensor::from_f32(3, 32, &[0.0; 96]);
        assert!(int_linear(&a, &f32w, None).is_err());
        let narrow = int_weight(&mut r, 4, Granularity::PerRow, 3, 16);
        assert!(int_linear(&a, &narrow, None).is_err(), "16 columns for 32");
        let w = int_weight(&mut r, 4, Granularity::PerRow, 3, 32);
        assert!(
            int_linear(&a, &w, Some(&[0.0; 2])).is_err(),
            "2 biases for 3 rows"
        );
        assert!(check_no_overflow(1 << 20, 4).is_ok());
        assert!(check_no_overflow(1 << 18, 8).is_err());
    }
}
