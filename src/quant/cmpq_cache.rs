//! CMPQ at interactive speed (arXiv 2410.13056 as in docs/methods.md §3; the issue's "budget
//! slider that moves in steps of 0.05 bit and a model that follows it"): a whole-model apply
//! that keeps, between calls, every tensor's dequantized source, its column fits and the largest
//! activation-weighted errors of each fit (`cmpq::FitCache`). Moving the budget or an outlier
//! fraction then re-fits only the columns whose width or sparse outliers changed, and ranks
//! only the errors of columns whose width changed. The result is identical to
//! `QuantConfig::apply_calibrated` with the same config (both run `cmpq_fit`'s pipeline;
//! tests/quant_cmpq.rs checks cached against fresh models); only the time differs.
//!
//! All tensors go through each phase together (`cmpq_fit::quantize_jobs`), in parallel natively
//! and sequentially in wasm. `CmpqCache::times` says what the last call spent in each phase.
//!
//! Memory: the dequantized sources are f32 (4 bytes per weight; 425 MB for SmolLM2-135M's linears),
//! and every width seen keeps one byte of codes per weight plus a few error entries per column.

use crate::model::llama::Site;
use crate::model::weights::{LayerWeights, Linear, ModelWeights};
use crate::quant::calib::Calibration;
use crate::quant::cmpq::{check_magnitudes, check_weights, FitCache, PhaseTimes};
use crate::quant::cmpq_fit::{now, par_map, quantize_jobs, Job};
use crate::quant::config::{Method, QuantConfig};
use crate::quant::format::{Format, QTensor};
use crate::quant::lorc;
use crate::{Error, Result};
use std::collections::HashMap;

/// What a cached source was made from: a source tensor with another format, shape or bytes
/// (another model, or the same name re-loaded with other weights) is dequantized and fitted
/// afresh instead of reusing fits that belong to different weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SourceId {
    format: Format,
    rows: usize,
    cols: usize,
    bytes: usize,
    hash: u64,
}

impl SourceId {
    fn of(t: &QTensor) -> Self {
        // FNV-1a over 8-byte words: a change detector, not a defence against crafted inputs.
        let mut words = t.data.chunks_exact(8);
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for c in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            h = (h ^ u64::from_le_bytes(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        for &b in words.remainder() {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        SourceId {
            format: t.format,
            rows: t.rows,
            cols: t.cols,
            bytes: t.data.len(),
            hash: h,
        }
    }
}

/// One source tensor: where it came from, its dequantized weights (checked finite f16 values
/// once, when cached) and its fits.
struct Entry {
    id: SourceId,
    w: Vec<f32>,
    fits: FitCache,
}

/// Sources and fits by tensor name, for one source model at a time. Each entry remembers the
/// format, shape and a hash of the bytes of the tensor it came from; a different tensor under
/// the same name replaces it, and names the model does not have are dropped, so a cache can't
/// silently serve another model's fits.
#[derive(Default)]
pub struct CmpqCache {
    tensors: HashMap<String, Entry>,
    times: PhaseTimes,
}

impl CmpqCache {
    /// Column fits held, over all tensors (for memory reports and tests).
    pub fn fits(&self) -> usize {
        self.tensors.values().map(|e| e.fits.len()).sum()
    }

    /// Seconds per phase of the last `apply` (zeros in wasm, which has no clock in std).
    pub fn times(&self) -> PhaseTimes {
        self.times
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
        let mut times = PhaseTimes::default();
        let t = now();
        // The linears to quantize, as (layer, index in `linears()`, linear, magnitudes).
        let mut targets: Vec<(usize, usize, &Linear, &[f32])> = Vec::new();
        for (li, layer) in src.layers.iter().enumerate() {
            for (k, lin) in layer.linears().into_iter().enumerate() {
                if cfg.layer_quant(&lin.name).is_some() {
                    let a = o.magnitudes(calib.site(li, Site::of_linear(k))?);
                    check_magnitudes(a, lin.w.cols, &lin.name)?;
                    targets.push((li, k, lin, a));
                }
            }
        }
        self.refresh_sources(src, &targets)?;
        times.source = now() - t;

        // One job per target, each borrowing its own entry.
        let mut slot: HashMap<&str, usize> = HashMap::new();
        for (i, (_, _, lin, _)) in targets.iter().enumerate() {
            if slot.insert(&lin.name, i).is_some() {
                return Err(Error::config(
                    "model",
                    format!("two linears are named {}", lin.name),
                ));
            }
        }
        let mut jobs: Vec<Option<Job<'_>>> = (0..targets.len()).map(|_| None).collect();
        for (name, e) in self.tensors.iter_mut() {
            if let Some(&i) = slot.get(name.as_str()) {
                let (_, _, lin, a) = targets[i];
                jobs[i] = Some(Job {
                    w: &e.w,
                    rows: lin.w.rows,
                    cols: lin.w.cols,
                    a,
                    opts: o,
                    name: &lin.name,
                    cache: &mut e.fits,
                });
            }
        }
        let mut jobs = jobs
            .into_iter()
            .collect::<Option<Vec<Job<'_>>>>()
            .ok_or_else(|| Error::config("cmpq", "a source tensor is missing from the cache"))?;
        let qs = quantize_jobs(&mut jobs, &mut times)?;

        let t = now();
        let mut by_pos: HashMap<(usize, usize), QTensor> = HashMap::new();
        for ((li, k, lin, _), (q, job)) in targets.iter().zip(qs.into_iter().zip(&jobs)) {
            let q = match &cfg.lorc {
                Some(lo) => lorc::compensate(&q, job.w, lo, &lin.name)?,
                None => q,
            };
            by_pos.insert((*li, *k), q);
        }
        let out = rebuild(src, by_pos);
        times.model = now() - t;
        // In wasm (at most 4 GiB of memory, shared with the model, its calibration and the
        // engine) the f32 sources are not kept between calls: the next call dequantizes them
        // again and keeps the fits.
        #[cfg(target_arch = "wasm32")]
        for e in self.tensors.values_mut() {
            e.w = Vec::new();
        }
        self.times = times;
        Ok(out)
    }

    /// Make the entry of every target hold its source (dequantizing, in parallel, those that
    /// are new or changed) and drop entries of names `src` does not have.
    fn refresh_sources(
        &mut self,
        src: &ModelWeights,
        targets: &[(usize, usize, &Linear, &[f32])],
    ) -> Result<()> {
        let names: std::collections::HashSet<&str> =
            src.linears().map(|l| l.name.as_str()).collect();
        self.tensors.retain(|n, _| names.contains(n.as_str()));
        let ids = par_map(targets.len(), |i| SourceId::of(&targets[i].2.w));
        // Stale: new, changed, or (in wasm) released after the last call.
        let stale: Vec<usize> = (0..targets.len())
            .filter(|&i| {
                self.tensors
                    .get(&targets[i].2.name)
                    .is_none_or(|e| e.id != ids[i] || e.w.is_empty())
            })
            .collect();
        let fresh = par_map(stale.len(), |s| -> Result<Vec<f32>> {
            let lin = targets[stale[s]].2;
            let w = lin.w.dequantize()?;
            check_weights(&w, lin.w.rows, lin.w.cols, &lin.name)?;
            Ok(w)
        });
        for (i, w) in stale.into_iter().zip(fresh) {
            let w = w?;
            match self.tensors.get_mut(&targets[i].2.name) {
                // Same tensor, source released: the fits still hold.
                Some(e) if e.id == ids[i] => e.w = w,
                _ => {
                    let entry = Entry {
                        id: ids[i],
                        w,
                        fits: FitCache::default(),
                    };
                    self.tensors.insert(targets[i].2.name.clone(), entry);
                }
            }
        }
        Ok(())
    }
}

/// `src` with the linears at `(layer, index in linears())` replaced by `q`'s tensors; the rest
/// (embedding, norms, linears left out by the config) is copied. Building it field by field
/// spares copying every source linear only to overwrite it.
fn rebuild(src: &ModelWeights, mut q: HashMap<(usize, usize), QTensor>) -> ModelWeights {
    let layers = src
        .layers
        .iter()
        .enumerate()
        .map(|(li, l)| {
            let mut take = |k: usize, lin: &Linear| Linear {
                name: lin.name.clone(),
                w: q.remove(&(li, k)).unwrap_or_else(|| lin.w.clone()),
                bias: lin.bias.clone(),
            };
            // The order of `LayerWeights::linears()`, which `k` indexes.
            LayerWeights {
                attn_norm: l.attn_norm.clone(),
                ffn_norm: l.ffn_norm.clone(),
                wq: take(0, &l.wq),
                wk: take(1, &l.wk),
                wv: take(2, &l.wv),
                wo: take(3, &l.wo),
                w_gate: take(4, &l.w_gate),
                w_up: take(5, &l.w_up),
                w_down: take(6, &l.w_down),
            }
        })
        .collect();
    ModelWeights {
        config: src.config.clone(),
        token_embd: src.token_embd.clone(),
        output_norm: src.output_norm.clone(),
        output: src.output.clone(),
        layers,
    }
}
