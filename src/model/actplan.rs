//! Which block-linear inputs are quantized in the forward pass, and how: the activation side of
//! W4A8 (arXiv 2311.05161) and of any `WxAy` configuration. A plan is part of a quantized model
//! (`ModelWeights::act`), like its weights: static scales are calibrated data, and an exported
//! model must carry them.
//!
//! Every site of every block (the topology's `sites`: what the linears read) is quantized once,
//! before the linears that share it read it; the rule is `format::act` (symmetric, round half to
//! even, `±(2^(bits−1) − 1)` codes). A dynamic plan computes each scale at run time (per tensor or
//! per token); a static plan holds one calibrated scale per layer and site.

use crate::format::act::{ActGranularity, ActQuantSpec, ActScale};
use crate::format::tender::{TenderChunk, TenderSpec};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The activation quantization of a whole model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActPlan {
    pub bits: u8,
    pub gran: ActGranularity,
    /// `None`: dynamic scales. `Some(s)`: `s[layer][site]`, the static per-tensor scale of each
    /// site (`absmax / qmax` as calibrated).
    pub scales: Option<Vec<Vec<f32>>>,
    /// Tender's decomposition instead of one scale per tensor or token (`format::tender`);
    /// `gran` and `scales` are then unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tender: Option<TenderPlan>,
}

/// Tender at every site: its parameters and, for static plans, the calibrated decomposition
/// of every chunk position, `chunks[layer][site][position]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenderPlan {
    pub spec: TenderSpec,
    pub chunks: Option<Vec<Vec<Vec<TenderChunk>>>>,
}

impl TenderPlan {
    /// The calibrated chunks of `site` of `layer` (None for a dynamic plan).
    pub fn fixed(&self, layer: usize, site: usize) -> Result<Option<&[TenderChunk]>> {
        let Some(c) = &self.chunks else {
            return Ok(None);
        };
        c.get(layer)
            .and_then(|l| l.get(site))
            .map(|v| Some(v.as_slice()))
            .ok_or_else(|| {
                Error::config(
                    "act.tender",
                    format!("no calibrated chunks for layer {layer} site {site}"),
                )
            })
    }
}

impl ActPlan {
    /// Dynamic scales: `bits`, per tensor or per token.
    pub fn dynamic(bits: u8, gran: ActGranularity) -> ActPlan {
        ActPlan {
            bits,
            gran,
            scales: None,
            tender: None,
        }
    }

    /// The spec for `site` of `layer` (an error when a static plan has no scale there).
    pub fn spec(&self, layer: usize, site: usize) -> Result<ActQuantSpec> {
        let scale = match &self.scales {
            None => ActScale::Dynamic,
            Some(s) => {
                ActScale::Static(*s.get(layer).and_then(|l| l.get(site)).ok_or_else(|| {
                    Error::config(
                        "act.scales",
                        format!("no static scale for layer {layer} site {site}"),
                    )
                })?)
            }
        };
        Ok(ActQuantSpec {
            bits: self.bits,
            gran: self.gran,
            scale,
        })
    }

    /// Checks against a model of `n_layer` blocks of `n_site` sites: bits, and a finite
    /// non-negative static scale for every site (static scales are per tensor).
    pub fn check(&self, n_layer: usize, n_site: usize) -> Result<()> {
        let probe = ActQuantSpec {
            bits: self.bits,
            gran: self.gran,
            scale: ActScale::Dynamic,
        };
        probe.check()?;
        if let Some(t) = &self.tender {
            t.spec.check()?;
            if t.spec.bits != self.bits {
                return Err(Error::config(
                    "act.tender",
                    format!(
                        "{} bits in the plan, {} in Tender's spec",
                        self.bits, t.spec.bits
                    ),
                ));
            }
            if let Some(c) = &t.chunks {
                if c.len() != n_layer
                    || c.iter()
                        .any(|l| l.len() != n_site || l.iter().any(|p| p.is_empty()))
                {
                    return Err(Error::config(
                        "act.tender",
                        format!("calibrated chunks for {} layers where the model has {n_layer} blocks of {n_site} sites", c.len()),
                    ));
                }
            }
        }
        if let Some(s) = &self.scales {
            if self.gran != ActGranularity::PerTensor {
                return Err(Error::config(
                    "act.gran",
                    "static scales are per tensor; per-token scales are dynamic",
                ));
            }
            if s.len() != n_layer || s.iter().any(|l| l.len() != n_site) {
                return Err(Error::config(
                    "act.scales",
                    format!("scales for {} layers where the model has {n_layer} blocks of {n_site} sites", s.len()),
                ));
            }
            for (i, l) in s.iter().enumerate() {
                for (j, &v) in l.iter().enumerate() {
                    if !v.is_finite() || v < 0.0 {
                        return Err(Error::config(
                            "act.scales",
                            format!("layer {i} site {j}: {v} is not a finite non-negative scale"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// `A8`, `A4` …, with the scale kind: for result lines and memory reports.
    pub fn label(&self) -> String {
        if let Some(t) = &self.tender {
            let kind = if t.chunks.is_some() {
                "static"
            } else {
                "dynamic"
            };
            return format!(
                "A{} (Tender k {}, chunk {}, {kind})",
                self.bits, t.spec.groups, t.spec.chunk
            );
        }
        let gran = match self.gran {
            ActGranularity::PerTensor => "tensor",
            ActGranularity::PerToken => "token",
        };
        let kind = if self.scales.is_some() {
            "static"
        } else {
            "dynamic"
        };
        format!("A{} ({kind}, per {gran})", self.bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_plans_give_each_site_its_scale_and_refuse_gaps() {
        let p = ActPlan {
            bits: 8,
            gran: ActGranularity::PerTensor,
            scales: Some(vec![vec![0.5, 0.25], vec![1.0, 2.0]]),
            tender: None,
        };
        p.check(2, 2).unwrap();
        assert_eq!(p.spec(1, 0).unwrap().scale, ActScale::Static(1.0));
        assert!(p.spec(2, 0).is_err());
        assert!(p.check(3, 2).is_err(), "a missing layer");
        let mut bad = p.clone();
        bad.scales = Some(vec![vec![0.5, f32::NAN], vec![1.0, 2.0]]);
        let e = bad.check(2, 2).unwrap_err().to_string();
        assert!(e.contains("layer 0 site 1"), "{e}");
        let mut tok = p.clone();
        tok.gran = ActGranularity::PerToken;
        assert!(tok.check(2, 2).is_err());
        assert_eq!(p.label(), "A8 (static, per tensor)");
        assert!(ActPlan::dynamic(1, ActGranularity::PerToken)
            .check(1, 1)
            .is_err());
    }
}
