//! CMPQ at interactive speed (arXiv 2410.13056 as in docs/methods.md §3; the issue's "budget
//! slider that moves in steps of 0.05 bit and a model that follows it"): a whole-model apply
//! that keeps every tensor's column fits (`cmpq::FitCache`) between calls, so moving the budget
//! or an outlier fraction re-fits only the columns whose width or sparse outliers changed. The
//! result is identical to `QuantConfig::apply_calibrated` with the same config (both call
//! `cmpq::quantize_cached`; tests/quant_cmpq.rs checks cached against fresh tensors); only the
//! time differs.

use crate::model::llama::Site;
use crate::model::weights::ModelWeights;
use crate::quant::calib::Calibration;
use crate::quant::cmpq::{quantize_cached, FitCache};
use crate::quant::config::{Method, QuantConfig};
use crate::quant::lorc;
use crate::{Error, Result};
use std::collections::HashMap;

/// Fits by tensor name, for one source model. Make a new one when the model changes.
#[derive(Default)]
pub struct CmpqCache {
    tensors: HashMap<String, FitCache>,
}

impl CmpqCache {
    /// Column fits held, over all tensors (for memory reports and tests).
    pub fn fits(&self) -> usize {
        self.tensors.values().map(FitCache::len).sum()
    }

    /// `cfg` (whose method must be CMPQ) applied to `src` with `calib`, reusing fits.
    pub fn apply(
        &mut self,
        cfg: &QuantConfig,
        src: &ModelWeights,
        calib: &Calibration,
    ) -> Result<ModelWeights> {
        cfg.validate()?;
        let Method::Cmpq(o) = &cfg.method else {
            return Err(Error::config(
                "method",
                format!("the CMPQ cache applies cmpq, not {}", cfg.method.name()),
            ));
        };
        if calib.layers.len() != src.layers.len() {
            return Err(Error::config(
                "calibration",
                format!(
                    "statistics for {} layers, the model has {}",
                    calib.layers.len(),
                    src.layers.len()
                ),
            ));
        }
        let mut out = src.clone();
        for (li, layer) in out.layers.iter_mut().enumerate() {
            for (k, lin) in layer.linears_mut().into_iter().enumerate() {
                if cfg.layer_quant(&lin.name).is_none() {
                    continue;
                }
                let st = calib.site(li, Site::of_linear(k))?;
                let w = lin.w.dequantize()?;
                let cache = self.tensors.entry(lin.name.clone()).or_default();
                let (rows, cols) = (lin.w.rows, lin.w.cols);
                let q = quantize_cached(&w, rows, cols, o.magnitudes(st), o, &lin.name, cache)?;
                lin.w = match &cfg.lorc {
                    Some(lo) => lorc::compensate(&q, &w, lo, &lin.name)?,
                    None => q,
                };
            }
        }
        Ok(out)
    }
}
