//! BinaryMoS lite training on the session's GPU without blocking (docs/binarymos.md "In the
//! page"; Jo et al., arXiv 2406.12311): the page cannot wait on the GPU inside the synchronous
//! quantization pipeline (`QuantConfig::apply_traced_on`), so a GPU session first trains every
//! BinaryMoS tensor here, awaiting each (`Gpu::mos_train_lite`), into the session's
//! `lite::LiteCache`, and the pipeline then takes the trained tensors from the cache.
//!
//! The cache keeps the tensors a run finished (`playground::lite`, the CPU path's too): a
//! stopped run resumes with the tensors it had not trained yet, and ends with the tensors an
//! uninterrupted run gives.

use crate::gpu::Gpu;
use crate::model::weights::ModelWeights;
use crate::playground::lite::LiteCache;
use crate::quant::binarymos::{self, BinaryMosOptions};
use crate::quant::calib::Calibration;
use crate::quant::config::QuantConfig;
use crate::{Error, Result};

impl LiteCache {
    /// Train every BinaryMoS tensor of `cfg` on `g` that the cache lacks, in the pipeline's
    /// order, each awaited. `on_step` sees each tensor's losses (kept tensors' too, so the trace
    /// is whole); `progress(done, total)` counts tensors; `false` from either cancels, keeping
    /// what was trained.
    #[allow(clippy::too_many_arguments)]
    pub async fn train_on_gpu(
        &mut self,
        g: &Gpu,
        src: &ModelWeights,
        calib: &Calibration,
        cfg: &QuantConfig,
        opts: &BinaryMosOptions,
        progress: &mut dyn FnMut(usize, usize) -> bool,
        on_step: &mut dyn FnMut(&str, usize, f64) -> bool,
    ) -> Result<()> {
        self.begin(cfg, "gpu")?;
        let topo = src.topology();
        let jobs = crate::playground::lite::jobs(src, cfg);
        for (i, &(li, k)) in jobs.iter().enumerate() {
            if !progress(i, jobs.len()) {
                return Err(Error::Cancelled);
            }
            let lin = &src.layers[li].linears()[k];
            let name = lin.name.as_str();
            if !self.contains(name) {
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
                self.keep(name, &trained.0, &trained.1);
            }
            if let Some(losses) = self.losses(name) {
                binarymos::replay(losses, &mut |s, l| on_step(name, s, l))?;
            }
        }
        Ok(())
    }
}
