//! Underflow meter (issue 13; dINT from W4A8, arXiv 2311.05161; docs/dint.md): how many small
//! weights a 4-bit grid rounds to zero, and how much of the quantization error that costs.
//!
//! For every block linear, both grids are applied with round-to-nearest at the same
//! granularity, symmetric: INT (`quant::rtn`, `s = absmax / (2^(b-1) − 1)`) and dINT
//! (`quant::codebook::fixed`, `Δ = absmax / max`). For each:
//! * `zeroed`: nonzero weights whose quantized value is exactly 0 (underflow);
//! * the squared error `Σ (w − ŵ)²`, split into the **underflow** part, `Σ w²` over the zeroed
//!   weights (all of their value is lost), and the **rounding** part, everything else (weights
//!   that keep a nonzero level, and exact zeros, which a grid with a zero level keeps exactly).
//!   The two parts are disjoint sums of the same per-weight terms, so they add up to the total.
//!
//! Per tensor (`blk.3.attn_q.weight`) and per layer type (the canonical base name, `attn_q`:
//! the same linear in every block), in topology order.

use crate::format::{Codebook, DintParams, IntSpec};
use crate::model::weights::ModelWeights;
use crate::quant::codebook;
use crate::quant::config::{Grid, LayerQuant};
use crate::quant::rtn::{self, RtnOptions};
use crate::{Error, Result};
use serde::Serialize;

/// One grid's underflow and error on a set of weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Split {
    /// Nonzero weights rounded to exactly 0.
    pub zeroed: usize,
    /// `Σ w²` over the zeroed weights.
    pub underflow: f64,
    /// `Σ (w − ŵ)²` over the other weights.
    pub rounding: f64,
}

impl Split {
    /// The weights' total squared error.
    pub fn total(&self) -> f64 {
        self.underflow + self.rounding
    }
    fn add(&mut self, o: &Split) {
        self.zeroed += o.zeroed;
        self.underflow += o.underflow;
        self.rounding += o.rounding;
    }
}

/// A set of weights (one tensor, or one layer type over all blocks) under both grids.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Underflow {
    /// The tensor's canonical name, or the layer type's base name.
    pub name: String,
    /// Tensors summed (1 for a tensor).
    pub tensors: usize,
    pub weights: usize,
    /// Weights that are not exactly 0 before quantization.
    pub nonzero: usize,
    /// `Σ w²`: what the errors are relative to.
    pub energy: f64,
    pub int: Split,
    pub dint: Split,
}

impl Underflow {
    /// Fraction of the nonzero weights `s` rounds to 0.
    pub fn zero_frac(&self, s: &Split) -> f64 {
        s.zeroed as f64 / self.nonzero.max(1) as f64
    }
    /// `s`'s squared error relative to `Σ w²`.
    pub fn rel(&self, err: f64) -> f64 {
        if self.energy > 0.0 {
            err / self.energy
        } else {
            0.0
        }
    }
    fn add(&mut self, o: &Underflow) {
        self.tensors += o.tensors;
        self.weights += o.weights;
        self.nonzero += o.nonzero;
        self.energy += o.energy;
        self.int.add(&o.int);
        self.dint.add(&o.dint);
    }
}

/// The meter's result: the settings, then per layer type and per tensor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UnderflowReport {
    /// The INT grid (symmetric, the setting's bits and granularity).
    pub int: IntSpec,
    /// The dINT code set (the setting's, or the default when its grid is INT).
    pub dint: DintParams,
    pub kinds: Vec<Underflow>,
    pub tensors: Vec<Underflow>,
}

/// Split the error of `wq` (quantized `w`) into underflow and rounding parts.
pub fn split(w: &[f32], wq: &[f32]) -> Split {
    let mut s = Split::default();
    for (&x, &q) in w.iter().zip(wq) {
        if x != 0.0 && q == 0.0 {
            s.zeroed += 1;
            s.underflow += (x as f64) * (x as f64);
        } else {
            let d = x as f64 - q as f64;
            s.rounding += d * d;
        }
    }
    s
}

/// Measure every block linear of `model` at `q`'s bits and granularity (bits must be 4: dINT's
/// codes are 4 bits; `q.sym`, `q.clip_search` are not used: both grids are plain symmetric
/// RTN). The dINT code set is `q.grid`'s when it is dINT, else the default.
pub fn measure(model: &ModelWeights, q: LayerQuant) -> Result<UnderflowReport> {
    if q.bits != 4 {
        return Err(Error::config(
            "bits",
            format!(
                "{}: the meter compares INT and dINT at 4 bits (dINT's codes are 4 bits)",
                q.bits
            ),
        ));
    }
    let params = match q.grid {
        Grid::Dint(p) => p,
        Grid::Int => DintParams::default(),
    };
    params.validate()?;
    let int = IntSpec {
        bits: q.bits,
        gran: q.gran,
        sym: true,
    };
    let table = Codebook::Dint(q.gran, params);
    let topo = model.topology();
    let linears: Vec<(usize, &crate::model::weights::Linear)> = model
        .layers
        .iter()
        .flat_map(|l| l.linears().iter().enumerate())
        .collect();
    let job = |(k, l): (usize, &crate::model::weights::Linear)| -> Result<(usize, Underflow)> {
        let (rows, cols) = (l.w.rows, l.w.cols);
        let w = l.w.dequantize()?;
        let qi = rtn::quantize(&w, rows, cols, int, &RtnOptions::default(), &l.name)?;
        let qd = codebook::fixed(&w, rows, cols, table, &l.name)?;
        Ok((
            k,
            Underflow {
                name: l.name.clone(),
                tensors: 1,
                weights: w.len(),
                nonzero: w.iter().filter(|&&x| x != 0.0).count(),
                energy: w.iter().map(|&x| (x as f64) * (x as f64)).sum(),
                int: split(&w, &qi.dequantize()?),
                dint: split(&w, &qd.dequantize()?),
            },
        ))
    };
    let done: Vec<Result<(usize, Underflow)>> = crate::par::map(linears, job);
    let mut kinds: Vec<Underflow> = topo
        .linears
        .iter()
        .map(|s| Underflow {
            name: s.name.to_string(),
            tensors: 0,
            weights: 0,
            nonzero: 0,
            energy: 0.0,
            int: Split::default(),
            dint: Split::default(),
        })
        .collect();
    let mut tensors = Vec::with_capacity(done.len());
    for r in done {
        let (k, u) = r?;
        let kind = kinds.get_mut(k).ok_or_else(|| {
            Error::config(
                "model",
                format!("{}: linear {k} is not in the topology", u.name),
            )
        })?;
        kind.add(&u);
        tensors.push(u);
    }
    Ok(UnderflowReport {
        int,
        dint: params,
        kinds,
        tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Granularity;
    use crate::testkit::{tiny_config, tiny_model};

    /// The parts are sums of the same f64 terms as the total, in another grouping: they agree to
    /// f64 rounding, far inside this.
    const SUM_TOL: f64 = 1e-9;

    fn total_error(w: &[f32], wq: &[f32]) -> f64 {
        w.iter()
            .zip(wq)
            .map(|(&x, &q)| (x as f64 - q as f64).powi(2))
            .sum()
    }

    #[test]
    fn split_counts_only_nonzero_weights_rounded_to_zero() {
        let w = [0.0, 0.1, -0.2, 0.3, 0.0];
        let q = [0.0, 0.0, -0.25, 0.0, 0.5];
        let s = split(&w, &q);
        assert_eq!(s.zeroed, 2);
        assert!((s.underflow - (0.01f32 as f64 + 0.09f32 as f64)).abs() < 1e-7);
        assert!((s.rounding - (0.05f64.powi(2) + 0.25)).abs() < 1e-7);
    }

    #[test]
    fn tiny_model_int4_zeroes_at_least_as_many_and_parts_sum_to_total() {
        for (arch, flavour) in [
            (crate::model::arch::Arch::Llama, 0),
            (crate::model::arch::Arch::Opt, 0),
        ] {
            let model = tiny_model(tiny_config(arch, flavour), 7);
            for gran in [Granularity::PerRow, Granularity::Group(16)] {
                let q = LayerQuant {
                    bits: 4,
                    gran,
                    ..LayerQuant::default()
                };
                let r = measure(&model, q).unwrap();
                assert_eq!(r.tensors.len(), model.linears().count());
                assert_eq!(r.kinds.len(), model.topology().linears.len());
                for u in r.kinds.iter().chain(&r.tensors) {
                    assert!(
                        u.int.zeroed >= u.dint.zeroed,
                        "{arch:?} {gran:?} {}: INT4 zeroed {} < dINT4 {}",
                        u.name,
                        u.int.zeroed,
                        u.dint.zeroed
                    );
                }
                // Something is zeroed at all (uniform ±0.15 weights, steps of ~0.02), so the
                // comparison above is not 0 ≥ 0.
                let all_int: usize = r.kinds.iter().map(|u| u.int.zeroed).sum();
                assert!(all_int > 0, "{arch:?} {gran:?}: INT4 zeroed nothing");
                // The parts against an independent total, tensor by tensor.
                for l in model.linears() {
                    let w = l.w.dequantize().unwrap();
                    let (rows, cols) = (l.w.rows, l.w.cols);
                    let u = r.tensors.iter().find(|u| u.name == l.name).unwrap();
                    let qi = rtn::quantize(&w, rows, cols, r.int, &RtnOptions::default(), "t")
                        .unwrap()
                        .dequantize()
                        .unwrap();
                    let qd = codebook::fixed(&w, rows, cols, Codebook::Dint(gran, r.dint), "t")
                        .unwrap()
                        .dequantize()
                        .unwrap();
                    for (s, t) in [
                        (&u.int, total_error(&w, &qi)),
                        (&u.dint, total_error(&w, &qd)),
                    ] {
                        assert!(
                            (s.total() - t).abs() <= SUM_TOL * t,
                            "{}: parts {} + {} vs total {t}",
                            l.name,
                            s.underflow,
                            s.rounding
                        );
                    }
                }
                // Layer types are sums of their tensors.
                let zi: usize = r.tensors.iter().map(|u| u.int.zeroed).sum();
                assert_eq!(zi, all_int);
            }
        }
    }

    #[test]
    fn bits_other_than_four_are_refused_naming_the_field() {
        let model = tiny_model(tiny_config(crate::model::arch::Arch::Llama, 0), 1);
        let q = LayerQuant {
            bits: 3,
            ..LayerQuant::default()
        };
        let e = measure(&model, q).unwrap_err().to_string();
        assert!(e.contains("bits"), "{e}");
    }
}
