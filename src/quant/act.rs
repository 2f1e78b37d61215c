//! The activation axis of a `QuantConfig` (docs/w4a8.md): how every block linear's input is
//! quantized in the forward pass — bits, per tensor or per token, dynamic or static scales
//! calibrated on the calibration set (the max, or a percentile of per-token absmax) — and the
//! step that turns it into the model's `ActPlan` once the weights are final.
//!
//! Static scales come from the calibration statistics of the model as transformed (after a
//! `smooth` fold the site is `X·diag(s)⁻¹`, and the statistics were rescaled with it): the max is
//! `max_j max|x_j|` over all calibration tokens, a percentile reads the sampled rows. Calibrating
//! on sequences as long as the evaluation's is SLAC's point (arXiv 2311.05161 §3.2): the
//! calibration length is `calib.seq_len` (`--calib-len`).

use crate::format::act::{qmax, ActGranularity, MAX_BITS, MIN_BITS};
use crate::format::tender::{TenderChunk, TenderRound, TenderSpec, CHUNK_STEP};
use crate::model::actplan::{ActPlan, TenderPlan};
use crate::quant::calib::Calibration;
use crate::quant::smooth::{self, ActTarget};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Where static scales come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActScaleKind {
    /// Computed at run time from the activations themselves.
    #[default]
    Dynamic,
    /// One per-tensor scale per site, calibrated once.
    Static,
}

/// Lowest percentile a static scale may be calibrated at.
pub const MIN_PERCENTILE: f32 = 50.0;

/// Activation quantization, as a config states it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActConfig {
    /// 2..=8 (the papers: 8, 6, 4).
    pub bits: u8,
    pub gran: ActGranularity,
    #[serde(default)]
    pub scale: ActScaleKind,
    /// Static scales only: calibrate the absmax at this percentile of the per-token absmax of
    /// the calibration samples instead of the max.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f32>,
    /// Tender's decomposition (`format::tender`, arXiv 2406.12930) instead of one scale per
    /// tensor or token: `bits` (4 or 8) and `scale` (static: calibrated per chunk position)
    /// apply; `gran` must be `per_tensor` (Tender's scales are per chunk and group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tender: Option<TenderAct>,
}

/// Tender's parameters as a config states them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenderAct {
    /// k, 2..=16 groups.
    pub groups: u8,
    /// T, rows per chunk (a multiple of 64; the paper's 256).
    pub chunk: usize,
    #[serde(default)]
    pub round: TenderRound,
}

impl ActConfig {
    pub fn validate(&self) -> Result<()> {
        if !(MIN_BITS..=MAX_BITS).contains(&self.bits) {
            return Err(Error::config(
                "act.bits",
                format!("{} is outside {MIN_BITS}..={MAX_BITS}", self.bits),
            ));
        }
        if self.scale == ActScaleKind::Static && self.gran != ActGranularity::PerTensor {
            return Err(Error::config(
                "act.gran",
                "static scales are per tensor (a per-token scale is computed at run time): \
                 choose per_tensor or dynamic",
            ));
        }
        if let Some(t) = &self.tender {
            self.tender_spec(t).check()?;
            if self.gran != ActGranularity::PerTensor {
                return Err(Error::config(
                    "act.gran",
                    "Tender's scales are per chunk of rows and group of channels: choose \
                     per_tensor with tender",
                ));
            }
            if self.percentile.is_some() {
                return Err(Error::config(
                    "act.percentile",
                    "Tender calibrates each chunk's range, not a percentile: drop percentile",
                ));
            }
        }
        if let Some(p) = self.percentile {
            if self.scale != ActScaleKind::Static {
                return Err(Error::config(
                    "act.percentile",
                    "a percentile calibrates static scales; set scale to static",
                ));
            }
            if !(p.is_finite() && (MIN_PERCENTILE..=100.0).contains(&p)) {
                return Err(Error::config(
                    "act.percentile",
                    format!("{p} is outside {MIN_PERCENTILE}..=100"),
                ));
            }
        }
        Ok(())
    }

    /// Tender's spec at this config's bits.
    pub fn tender_spec(&self, t: &TenderAct) -> TenderSpec {
        TenderSpec {
            bits: self.bits,
            groups: t.groups,
            chunk: t.chunk,
            round: t.round,
        }
    }

    /// Static scales need calibration.
    pub fn needs_calibration(&self) -> bool {
        self.scale == ActScaleKind::Static
    }

    /// A percentile reads the calibration samples.
    pub fn needs_samples(&self) -> bool {
        self.percentile.is_some()
    }

    /// What AQAS's search quantizes activations with.
    pub fn target(&self) -> ActTarget {
        ActTarget {
            bits: self.bits,
            gran: self.gran,
            static_scale: self.scale == ActScaleKind::Static,
            percentile: self.percentile,
        }
    }

    /// The plan for a model whose (transformed) calibration is `calib` (needed for static
    /// scales).
    pub fn plan(&self, calib: Option<&Calibration>) -> Result<ActPlan> {
        self.validate()?;
        if let Some(t) = &self.tender {
            return self.tender_plan(t, calib);
        }
        if self.scale == ActScaleKind::Dynamic {
            return Ok(ActPlan::dynamic(self.bits, self.gran));
        }
        let c = calib.ok_or_else(|| {
            Error::config(
                "act.scale",
                "static activation scales need calibration statistics; calibrate on a text first",
            )
        })?;
        let mut scales = Vec::with_capacity(c.layers.len());
        for (li, layer) in c.layers.iter().enumerate() {
            let mut l = Vec::with_capacity(layer.len());
            for (si, st) in layer.iter().enumerate() {
                let s = match self.percentile {
                    None => {
                        let absmax = st.max_abs.iter().fold(0f32, |m, &v| m.max(v));
                        absmax / qmax(self.bits)
                    }
                    Some(p) => {
                        if st.sample_rows() == 0 {
                            return Err(Error::config(
                                "act.percentile",
                                "percentile scales need activation samples from calibration; \
                                 calibrate again",
                            ));
                        }
                        smooth::static_scale(&st.samples, st.dim, self.bits, Some(p))
                    }
                };
                if !s.is_finite() {
                    return Err(Error::config(
                        "act.scale",
                        format!("the static scale of layer {li} site {si} is not finite ({s})"),
                    ));
                }
                l.push(s);
            }
            scales.push(l);
        }
        Ok(ActPlan {
            bits: self.bits,
            gran: ActGranularity::PerTensor,
            scales: Some(scales),
            tender: None,
        })
    }

    /// Tender's plan: dynamic, or static with each chunk position's decomposition assembled
    /// from calibration's per-64-position ranges (`SiteStats::pos_max`/`pos_min`).
    fn tender_plan(&self, t: &TenderAct, calib: Option<&Calibration>) -> Result<ActPlan> {
        let spec = self.tender_spec(t);
        let chunks = if self.scale == ActScaleKind::Static {
            let c = calib.ok_or_else(|| {
                Error::config(
                    "act.scale",
                    "Tender's static decomposition needs calibration statistics; calibrate on \
                     a text first",
                )
            })?;
            let per = spec.chunk / CHUNK_STEP;
            let mut layers = Vec::with_capacity(c.layers.len());
            for (li, layer) in c.layers.iter().enumerate() {
                let mut sites = Vec::with_capacity(layer.len());
                for (si, st) in layer.iter().enumerate() {
                    let d = st.dim;
                    let blocks = st.pos_max.len() / d.max(1);
                    if blocks == 0 || st.pos_min.len() != st.pos_max.len() {
                        return Err(Error::config(
                            "act.tender",
                            format!(
                                "layer {li} site {si}: the calibration has no per-position \
                                 ranges; calibrate again"
                            ),
                        ));
                    }
                    let mut pos = Vec::new();
                    for b0 in (0..blocks).step_by(per) {
                        let (mut hi, mut lo) = (vec![f32::NEG_INFINITY; d], vec![f32::INFINITY; d]);
                        for b in b0..(b0 + per).min(blocks) {
                            for j in 0..d {
                                hi[j] = hi[j].max(st.pos_max[b * d + j]);
                                lo[j] = lo[j].min(st.pos_min[b * d + j]);
                            }
                        }
                        pos.push(TenderChunk::from_range(&hi, &lo, &spec).map_err(|e| {
                            Error::config("act.tender", format!("layer {li} site {si}: {e}"))
                        })?);
                    }
                    sites.push(pos);
                }
                layers.push(sites);
            }
            Some(layers)
        } else {
            None
        };
        Ok(ActPlan {
            bits: self.bits,
            gran: ActGranularity::PerTensor,
            scales: None,
            tender: Some(TenderPlan { spec, chunks }),
        })
    }
}
