//! The BinaryMoS tensors a session's lite training finished (Jo et al., arXiv 2406.12311;
//! docs/binarymos.md "In the page"), on the CPU or the GPU: a stopped run of the same
//! configuration resumes with the tensors it had not trained yet, and ends with exactly the
//! tensors an uninterrupted run gives, because every tensor's training depends only on the
//! loaded weight, its calibration inputs, the configuration and its name (the router's seed).
//!
//! One cache per session (one model): keyed by the trainer ("cpu" or "gpu", whose sums differ
//! in order) and the configuration's JSON; a tensor by its name. A new calibration empties it
//! (`Session::calibrate_cached`), another configuration or trainer replaces it.
//!
//! Only the trained tables are kept: the signs are frozen at `sign(W)` and come back from the
//! start each tensor is trained from, so the cache weighs the scale experts and routers, not a
//! second f32 copy of the model.

use crate::model::weights::ModelWeights;
use crate::quant::binarymos::{self, LiteOptions, LiteTrainer, MosLayer};
use crate::quant::config::QuantConfig;
use crate::{Error, Result};
use std::cell::RefCell;

/// Kept BinaryMoS tensors of one configuration, in the order they were trained.
#[derive(Default)]
pub struct LiteCache {
    /// The trainer and the configuration's JSON they were trained with.
    key: String,
    /// Name → (trained tables without signs, losses before training and after every step).
    done: Vec<(String, MosLayer, Vec<f64>)>,
}

/// The (block, linear) of every tensor `cfg` quantizes, in the pipeline's order: the tensors
/// lite training trains when `cfg`'s method is BinaryMoS.
pub fn jobs(src: &ModelWeights, cfg: &QuantConfig) -> Vec<(usize, usize)> {
    src.layers
        .iter()
        .enumerate()
        .flat_map(|(li, l)| {
            l.linears()
                .iter()
                .enumerate()
                .filter(|(_, lin)| cfg.layer_quant(&lin.name).is_some())
                .map(move |(k, _)| (li, k))
        })
        .collect()
}

/// The cache's key: the trainer ("cpu" or "gpu") and the configuration.
fn key_of(cfg: &QuantConfig, trainer: &str) -> Result<String> {
    let json = serde_json::to_string(cfg).map_err(|e| Error::config("quant config", e))?;
    Ok(format!("{trainer} {json}"))
}

impl LiteCache {
    /// The names of the tensors kept for `cfg` trained by `trainer`, in training order (none
    /// for another configuration or trainer).
    pub fn kept_for(&self, cfg: &QuantConfig, trainer: &str) -> Vec<String> {
        match key_of(cfg, trainer) {
            Ok(k) if k == self.key => self.done.iter().map(|(n, _, _)| n.clone()).collect(),
            _ => Vec::new(),
        }
    }

    pub fn clear(&mut self) {
        self.done.clear();
    }

    /// Make the cache `cfg`'s by `trainer`: another key drops what was kept.
    pub fn begin(&mut self, cfg: &QuantConfig, trainer: &str) -> Result<()> {
        let key = key_of(cfg, trainer)?;
        if key != self.key {
            self.key = key;
            self.done.clear();
        }
        Ok(())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.done.iter().any(|(n, _, _)| n == name)
    }

    /// The kept tensor `name` trained from `start` (whose signs it takes) and its losses.
    pub fn get(&self, name: &str, start: &MosLayer) -> Option<(MosLayer, Vec<f64>)> {
        let (_, l, losses) = self.done.iter().find(|(n, _, _)| n == name)?;
        let mut layer = l.clone();
        layer.signs = start.signs.clone();
        Some((layer, losses.clone()))
    }

    /// Keep a trained tensor (its tables; the signs are its start's).
    pub fn keep(&mut self, name: &str, trained: &MosLayer, losses: &[f64]) {
        let layer = MosLayer {
            signs: Vec::new(),
            s_in: trained.s_in.clone(),
            s_out: trained.s_out.clone(),
            router: trained.router.clone(),
            ..*trained
        };
        self.done.retain(|(n, _, _)| n != name);
        self.done.push((name.to_string(), layer, losses.to_vec()));
    }

    /// The kept losses of `name`, if any.
    pub fn losses(&self, name: &str) -> Option<&[f64]> {
        self.done
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, l)| l.as_slice())
    }
}

/// Lite training of one tensor through `cache` (a `LiteTrainer`'s work): a kept tensor comes
/// back with its losses replayed to `on_step`; any other is trained by `inner` (the CPU's
/// `train_lite` when `None`) and kept once its training finished.
#[allow(clippy::too_many_arguments)]
pub fn train_kept(
    cache: &RefCell<LiteCache>,
    inner: Option<LiteTrainer>,
    name: &str,
    start: &MosLayer,
    x: &[f32],
    target: &[f32],
    opts: &LiteOptions,
    on_step: &mut dyn FnMut(usize, f64) -> bool,
) -> Result<(MosLayer, Vec<f64>)> {
    let kept = cache.borrow().get(name, start);
    if let Some((layer, losses)) = kept {
        binarymos::replay(&losses, on_step)?;
        return Ok((layer, losses));
    }
    let (layer, losses) = match inner {
        Some(train) => train(name, start, x, target, opts, on_step)?,
        None => {
            let mut layer = start.clone();
            let losses = binarymos::train_lite(&mut layer, x, target, opts, on_step)?;
            (layer, losses)
        }
    };
    cache.borrow_mut().keep(name, &layer, &losses);
    Ok((layer, losses))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A 2 × 3 layer at its SVID start with 2 experts.
    fn start() -> MosLayer {
        let w = [0.5, -0.25, 0.125, -1.0, 0.75, 0.3];
        MosLayer::init(&w, 2, 3, 2, 7).unwrap()
    }

    #[test]
    fn a_kept_tensor_comes_back_untrained_with_its_start_signs_and_losses_replayed() {
        let cfg = QuantConfig::default();
        let mut cache = LiteCache::default();
        cache.begin(&cfg, "cpu").unwrap();
        let s = start();
        // Tables no training would give, to tell the kept tensor from a trained one.
        let mut kept = s.clone();
        kept.s_in.iter_mut().for_each(|v| *v = 3.0);
        cache.keep("a", &kept, &[2.0, 1.0]);
        assert!(cache.done[0].1.signs.is_empty(), "signs are not kept");
        let calls = Cell::new(0);
        let inner = |_: &str,
                     l: &MosLayer,
                     _: &[f32],
                     _: &[f32],
                     _: &LiteOptions,
                     _: &mut dyn FnMut(usize, f64) -> bool| {
            calls.set(calls.get() + 1);
            Ok((l.clone(), vec![5.0]))
        };
        let cache = RefCell::new(cache);
        let opts = LiteOptions::default();
        let mut seen = Vec::new();
        let (got, losses) = train_kept(
            &cache,
            Some(&inner),
            "a",
            &s,
            &[],
            &[],
            &opts,
            &mut |k, l| {
                seen.push((k, l));
                true
            },
        )
        .unwrap();
        assert_eq!(calls.get(), 0, "a kept tensor is not trained");
        assert_eq!(got, kept);
        assert_eq!(losses, [2.0, 1.0]);
        assert_eq!(seen, [(0, 2.0), (1, 1.0)]);
        // Another tensor is trained, then kept.
        train_kept(
            &cache,
            Some(&inner),
            "b",
            &s,
            &[],
            &[],
            &opts,
            &mut |_, _| true,
        )
        .unwrap();
        assert_eq!(calls.get(), 1);
        assert_eq!(cache.borrow().kept_for(&cfg, "cpu"), ["a", "b"]);
        assert!(
            cache.borrow().kept_for(&cfg, "gpu").is_empty(),
            "another trainer"
        );
    }

    #[test]
    fn a_cancelled_training_keeps_nothing() {
        let cfg = QuantConfig::default();
        let cache = RefCell::new(LiteCache::default());
        cache.borrow_mut().begin(&cfg, "cpu").unwrap();
        let s = start();
        let x = [1.0, 0.5, -0.5, 0.25, -1.0, 2.0];
        let target = s.forward(&x).iter().map(|v| v * 1.5).collect::<Vec<_>>();
        let opts = LiteOptions { steps: 5, lr: 0.01 };
        let r = train_kept(&cache, None, "a", &s, &x, &target, &opts, &mut |k, _| k < 3);
        assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
        assert!(cache.borrow().kept_for(&cfg, "cpu").is_empty());
        // Uncancelled, the CPU's training is kept with every step's loss.
        let (_, losses) =
            train_kept(&cache, None, "a", &s, &x, &target, &opts, &mut |_, _| true).unwrap();
        assert_eq!(losses.len(), 6);
        assert_eq!(cache.borrow().losses("a"), Some(losses.as_slice()));
    }
}
