//! Activation fake-quantization: the CPU reference of `shaders/actquant.wgsl` and of
//! `Backend::fake_quant_act`. Activations are quantized to signed `bits`-bit integers and
//! immediately expanded back (the model stays in f32; the error is what integer activations
//! would add). docs/methods.md §1 "Activation quantization": 8 or 4 bits, static (scales
//! calibrated once) or dynamic (computed at run time), per tensor or per token; symmetric, as
//! W4A8 (arXiv 2311.05161) and Tender (arXiv 2406.12930) use them. Later methods extend this.
//!
//! Rule, in f32: `qmax = 2^(bits−1) − 1`, `s = absmax · (1/qmax)` (dynamic, `dynamic_scale`)
//! or the given static scale, `x ← clamp(round_half_even(x / s), −qmax, qmax) · s`; a zero
//! scale maps everything to 0. The absmax is over the whole tensor (`PerTensor`) or over each row (`PerToken`).

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Fewest and most activation bits (2 bits leave one level a side; past 8 the int8 kernels and
/// the point of the papers are gone).
pub const MIN_BITS: u8 = 2;
pub const MAX_BITS: u8 = 8;

/// Which activations share one scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActGranularity {
    PerTensor,
    /// One scale per row (token).
    PerToken,
}

/// Where the scale comes from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActScale {
    /// `absmax / qmax` of the activations at run time.
    Dynamic,
    /// A calibrated scale (one for the tensor).
    Static(f32),
}

/// How a tensor of activations is fake-quantized.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActQuantSpec {
    pub bits: u8,
    pub gran: ActGranularity,
    pub scale: ActScale,
}

impl ActQuantSpec {
    /// Bits are 2..=8 (the papers use 8, 6 and 4); a static scale is finite, ≥ 0 and per
    /// tensor.
    pub fn check(&self) -> Result<()> {
        if !(MIN_BITS..=MAX_BITS).contains(&self.bits) {
            return Err(Error::config(
                "act_bits",
                format!("{} is outside {MIN_BITS}..={MAX_BITS}", self.bits),
            ));
        }
        if let ActScale::Static(s) = self.scale {
            if !s.is_finite() || s < 0.0 {
                return Err(Error::config(
                    "act_scale",
                    format!("static scale {s} is not a finite non-negative number"),
                ));
            }
            if self.gran == ActGranularity::PerToken {
                return Err(Error::config(
                    "act_scale",
                    "a static scale is per tensor; per-token scales are dynamic",
                ));
            }
        }
        Ok(())
    }

    /// The largest code magnitude, `2^(bits−1) − 1`.
    pub fn qmax(&self) -> f32 {
        qmax(self.bits)
    }
}

/// The largest code magnitude of `bits`-bit symmetric codes, `2^(bits−1) − 1` (bits clamped to
/// `MIN_BITS..=MAX_BITS`).
pub fn qmax(bits: u8) -> f32 {
    ((1u32 << (bits.clamp(MIN_BITS, MAX_BITS) - 1)) - 1) as f32
}

/// A dynamic scale, `absmax · (1/qmax)` with the reciprocal rounded to f32 first. A product is
/// correctly rounded on every GPU, a quotient is not (WGSL allows `/` 2.5 ULP; with `absmax /
/// qmax` the H100's Vulkan driver failed tests/gpu_kernels.rs's comparison on the share of values
/// that differ, which one scale an ulp off explains: every value scaled by it differs).
/// `shaders/actquant.wgsl` gets `1/qmax` from the host and computes the same product, so its
/// scales equal these bit for bit.
pub fn dynamic_scale(absmax: f32, qmax: f32) -> f32 {
    absmax * (1.0 / qmax)
}

/// Largest |x| (NaN ignored).
fn absmax(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// Quantize-dequantize one value with scale `s` and code range `±qmax`.
#[inline]
pub fn fake_quant_value(x: f32, s: f32, qmax: f32) -> f32 {
    if s == 0.0 {
        return 0.0;
    }
    (x / s).round_ties_even().clamp(-qmax, qmax) * s
}

/// Fake-quantize `x` (row-major, rows of `cols`) in place.
pub fn fake_quant(x: &mut [f32], cols: usize, spec: &ActQuantSpec) -> Result<()> {
    spec.check()?;
    if cols == 0 || !x.len().is_multiple_of(cols) {
        return Err(Error::config(
            "activation",
            format!("{} values are not rows of {cols}", x.len()),
        ));
    }
    let qmax = spec.qmax();
    match (spec.scale, spec.gran) {
        (ActScale::Static(s), _) => x
            .iter_mut()
            .for_each(|v| *v = fake_quant_value(*v, s, qmax)),
        (ActScale::Dynamic, ActGranularity::PerTensor) => {
            let s = dynamic_scale(absmax(x), qmax);
            x.iter_mut()
                .for_each(|v| *v = fake_quant_value(*v, s, qmax));
        }
        (ActScale::Dynamic, ActGranularity::PerToken) => {
            for row in x.chunks_exact_mut(cols) {
                let s = dynamic_scale(absmax(row), qmax);
                row.iter_mut()
                    .for_each(|v| *v = fake_quant_value(*v, s, qmax));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_per_token_hits_the_grid_and_keeps_the_absmax() {
        // Row 0: absmax 1.27 → s = 0.01 at 8 bits; row 1 all zero.
        let mut x = vec![1.27, -0.5, 0.004, 0.016, 0.0, 0.0, 0.0, 0.0];
        let spec = ActQuantSpec {
            bits: 8,
            gran: ActGranularity::PerToken,
            scale: ActScale::Dynamic,
        };
        fake_quant(&mut x, 4, &spec).unwrap();
        let s = 1.27f32 * (1.0 / 127.0);
        assert_eq!(x[0], 127.0 * s);
        assert_eq!(x[1], -50.0 * s);
        assert_eq!(x[2], 0.0); // 0.4 steps rounds to 0
        assert_eq!(x[3], 2.0 * s); // 1.6 steps rounds to 2
        assert!(x[4..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn static_scale_clamps_and_four_bits_have_seven_levels_a_side() {
        let mut x = vec![10.0, -10.0, 0.25, -0.75];
        let spec = ActQuantSpec {
            bits: 4,
            gran: ActGranularity::PerTensor,
            scale: ActScale::Static(0.5),
        };
        fake_quant(&mut x, 2, &spec).unwrap();
        // 0.25/0.5 = 0.5 → 0 (ties to even); −0.75/0.5 = −1.5 → −2.
        assert_eq!(x, vec![3.5, -3.5, 0.0, -1.0]);
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut x = vec![0.0; 4];
        for spec in [
            ActQuantSpec {
                bits: 9,
                gran: ActGranularity::PerTensor,
                scale: ActScale::Dynamic,
            },
            ActQuantSpec {
                bits: 1,
                gran: ActGranularity::PerTensor,
                scale: ActScale::Dynamic,
            },
            ActQuantSpec {
                bits: 8,
                gran: ActGranularity::PerToken,
                scale: ActScale::Static(1.0),
            },
            ActQuantSpec {
                bits: 8,
                gran: ActGranularity::PerTensor,
                scale: ActScale::Static(f32::NAN),
            },
        ] {
            assert!(fake_quant(&mut x, 2, &spec).is_err(), "{spec:?}");
        }
        let ok = ActQuantSpec {
            bits: 8,
            gran: ActGranularity::PerTensor,
            scale: ActScale::Dynamic,
        };
        assert!(fake_quant(&mut x, 3, &ok).is_err(), "4 values in rows of 3");
    }
}
