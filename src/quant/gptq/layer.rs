//! GPTQ on a whole decoder block (arXiv 2210.17323, as `gptq.rs`): the tensors that read the
//! same input (q/k/v; gate/up) share that input's Hessian, hence one `prepare` (the `O(cols³)`
//! Cholesky work) per input instead of one per tensor, and the block's inputs (the sites of the
//! architecture's topology) and then its tensors run in parallel natively (each tensor's rows are parallel inside as well). The
//! codes are exactly those of `quantize` on each tensor alone: the same `Prepared` is computed
//! from the same Gram and options.

use super::{prepare, quantize_prepared_to, GptqOptions, Prepared, Target};

use crate::format::QTensor;
use crate::model::arch::Topology;
use crate::model::weights::LayerWeights;
use crate::quant::calib::SiteStats;
use crate::{Error, Result};

/// The grid (and stored format) of a tensor, or None to leave it as it is.
pub type Plan<'a> = dyn Fn(&str) -> Option<Target> + Sync + 'a;

/// Quantize the block linears of `layer` (in topology order) that `plan` names, with the
/// statistics of the block's inputs (`stats[site]`). One entry per linear, None where `plan`
/// leaves it.
pub fn quantize_layer(
    layer: &LayerWeights,
    topo: &Topology,
    stats: &[SiteStats],
    plan: &Plan<'_>,
    opts: &GptqOptions,
) -> Result<Vec<Option<QTensor>>> {
    let linears = layer.linears();
    if linears.len() != topo.linears.len() || stats.len() != topo.sites.len() {
        return Err(Error::config(
            "calibration",
            format!(
                "{} linears and {} site statistics for a block of {} and {}",
                linears.len(),
                stats.len(),
                topo.linears.len(),
                topo.sites.len()
            ),
        ));
    }
    let specs: Vec<Option<Target>> = linears.iter().map(|l| plan(&l.name)).collect();
    for (k, l) in linears.iter().enumerate() {
        let st = &stats[topo.site_of(k)];
        if specs[k].is_some() {
            st.check_width(&l.name, l.w.cols)?;
        }
    }
    // One factor per input that some planned tensor reads.
    let site_job = |s: usize| -> Result<Option<Prepared>> {
        let first = (0..linears.len()).find(|&k| topo.site_of(k) == s && specs[k].is_some());
        match first {
            None => Ok(None),
            Some(k) => {
                let st = &stats[s];
                prepare(&st.gram, st.dim, st.rows, opts, &linears[k].name).map(Some)
            }
        }
    };
    let preps: Vec<Result<Option<Prepared>>> = crate::par::map(0..stats.len(), site_job);
    let preps: Vec<Option<Prepared>> = preps.into_iter().collect::<Result<_>>()?;

    let tensor_job = |k: usize| -> Result<Option<QTensor>> {
        let Some(target) = specs[k] else {
            return Ok(None);
        };
        let l = &linears[k];
        let prep = preps[topo.site_of(k)].as_ref().ok_or_else(|| {
            Error::config("gptq", format!("{}: its input was not prepared", l.name))
        })?;
        let w = l.w.dequantize()?;
        quantize_prepared_to(&w, l.w.rows, l.w.cols, prep, target, opts, &l.name).map(Some)
    };
    // Largest tensors first, so the longest jobs start early.
    let mut order: Vec<usize> = (0..linears.len()).collect();
    order.sort_by_key(|&k| std::cmp::Reverse(linears[k].w.numel() * linears[k].w.cols));
    let done: Vec<(usize, Result<Option<QTensor>>)> =
        crate::par::map(order, |k| (k, tensor_job(k)));
    let mut out: Vec<Option<QTensor>> = vec![None; linears.len()];
    for (k, r) in done {
        out[k] = r?;
    }
    Ok(out)
}
