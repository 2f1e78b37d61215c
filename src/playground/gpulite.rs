//! BinaryMoS lite training on the session's GPU without blocking (docs/binarymos.md "In the
//! page"; Jo et al., arXiv 2406.12311): the page cannot wait on the GPU inside the synchronous
//! quantization pipeline (`QuantConfig::apply_traced_on`), so a GPU session first trains every
//! BinaryMoS tensor here, awaiting each (`Gpu::mos_train_lite`), and the pipeline then takes the
//! trained tensors from this cache instead of training (`LiteCache::trainer`).
//!
//! The cache keeps the tensors a run finished, keyed by the configuration and the tensor's
//! name, in the session that holds one model and one calibration (a new calibration empties
//! it): a stopped run resumes with the tensors it had not trained yet, and ends with the tensors
//! an uninterrupted run gives.

use crate::gpu::Gpu;
use crate::model::weights::ModelWeights;
use crate::quant::binarymos::{self, BinaryMosOptions, MosLayer};
use crate::quant::calib::Calibration;
use crate::quant::config::QuantConfig;
use crate::{Error, Result};
use std::collections::HashMap;

/// Trained BinaryMoS tensors of one configuration: name → (trained layer, losses).
#[derive(Default)]
pub struct LiteCache {
    /// The configuration they were trained with (its JSON).
    key: String,
    done: HashMap<String, (MosLayer, Vec<f64>)>,
}

impl LiteCache {
    /// Tensors trained for `cfg` (0 for another configuration).
    pub fn done_for(&self, cfg: &QuantConfig) -> usize {
        match serde_json::to_string(cfg) {
            Ok(k) if k == self.key => self.done.len(),
            _ => 0,
        }
    }

    pub fn clear(&mut self) {
        self.done.clear();
    }

    /// Train every BinaryMoS tensor of `cfg` on `g` that the cache lacks, in the pipeline's
    /// order, each awaited. `on_step` sees each tensor's losses (kept tensors' too, so the trace
    /// is whole); `progress(done, total)` counts tensors; `false` from either cancels, keeping
    /// what was trained.
    #[allow(clippy::too_many_arguments)]
    pub async fn train(
        &mut self,
        g: &Gpu,
        src: &ModelWeights,
        calib: &Calibration,
        cfg: &QuantConfig,
        opts: &BinaryMosOptions,
        progress: &mut dyn FnMut(usize, usize) -> bool,
        on_step: &mut dyn FnMut(&str, usize, f64) -> bool,
    ) -> Result<()> {
        let key = serde_json::to_string(cfg).map_err(|e| Error::config("quant config", e))?;
        if key != self.key {
            self.key = key;
            self.done.clear();
        }
        let topo = src.topology();
        let jobs: Vec<(usize, usize)> = src
            .layers
            .iter()
            .enumerate()
            .flat_map(|(li, l)| (0..l.linears().len()).map(move |k| (li, k)))
            .filter(|&(li, k)| cfg.layer_quant(&src.layers[li].linears()[k].name).is_some())
            .collect();
        for (i, &(li, k)) in jobs.iter().enumerate() {
            if !progress(i, jobs.len()) {
                return Err(Error::Cancelled);
            }
            let lin = &src.layers[li].linears()[k];
            let name = lin.name.as_str();
            if !self.done.contains_key(name) {
                let st = calib.site(li, topo.site_of(k))?;
                if st.sample_rows() == 0 {
                    // The pipeline names the missing rows.
                    continue;
                }
                let w = lin.w.dequantize()?;
                let (layer, target, lite) =
                    binarymos::start(&w, lin.w.rows, lin.w.cols, &st.samples, opts, name)?;
                let trained = g
                    .mos_train_lite(&layer, &st.samples, &target, &lite)
                    .await?;
                self.done.insert(name.to_string(), trained);
            }
            if let Some((_, losses)) = self.done.get(name) {
                binarymos::replay(losses, &mut |s, l| on_step(name, s, l))?;
            }
        }
        Ok(())
    }

    /// The kept tensor `name` and its losses, for the pipeline's trainer: one not in the cache
    /// is an error.
    pub fn trained(&self, name: &str) -> Result<(MosLayer, Vec<f64>)> {
        self.done
            .get(name)
            .cloned()
            .ok_or_else(|| Error::config("binarymos", format!("{name} was not trained on the GPU")))
    }
}
