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
//! Memory: the dequantized sources are f32, kept column-major (4 bytes per weight; 425 MB for
//! SmolLM2-135M's linears; in wasm only one tensor's at a time, see `CmpqCache::low_memory`),
//! and the fits keep one byte of codes per weight plus a few error entries per column, at the
//! widths the last call used.

use crate::format::{Format, QTensor};
use crate::model::weights::{LayerWeights, Linear, ModelWeights};
use crate::par;
use crate::quant::calib::Calibration;
use crate::quant::cmpq::{check_magnitudes, check_weights, FitCache, PhaseTimes};
use crate::quant::cmpq_fit::{now, quantize_jobs, transpose, Job};
use crate::quant::config::{Method, QuantConfig};
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
/// once, when cached), column-major as the pipeline reads them (`cmpq_fit::transpose`), and
/// its fits.
struct Entry {
    id: SourceId,
    wt: Vec<f32>,
    fits: FitCache,
}

/// Sources and fits by tensor name, for one source model at a time. Each entry remembers the
/// format, shape and a hash of the bytes of the tensor it came from; a different tensor under
/// the same name replaces it, and names the model does not have are dropped, so a cache can't
/// silently serve another model's fits.
pub struct CmpqCache {
    tensors: HashMap<String, Entry>,
    times: PhaseTimes,
    /// One tensor at a time, its source released afterwards (see `apply`); on in wasm.
    low_memory: bool,
}

// Not derived: `low_memory` defaults to true in wasm.
#[allow(clippy::derivable_impls)]
impl Default for CmpqCache {
    fn default() -> Self {
        CmpqCache {
            tensors: HashMap::new(),
            times: PhaseTimes::default(),
            low_memory: cfg!(target_arch = "wasm32"),
        }
    }
}

impl CmpqCache {
    /// A cache that works one tensor at a time and keeps no f32 source between calls, as it
    /// does in wasm (the default there); same results, less memory, less parallelism.
    pub fn low_memory() -> Self {
        CmpqCache {
            low_memory: true,
            ..CmpqCache::default()
        }
    }

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
        self.apply_with(cfg, src, calib, &mut |_, _| true)
    }

    /// As `apply`, calling `progress(tensors done, total)` before each part and at the end;
    /// `false` stops with `Error::Cancelled`. Natively the whole model is one part (its phases
    /// run in parallel over all tensors); with `low_memory` (wasm) every tensor is one, so a
    /// newer setting cancels within one tensor's work. A cancelled call leaves the cache
    /// consistent: fits made so far are kept and the next call reuses them.
    pub fn apply_with(
        &mut self,
        cfg: &QuantConfig,
        src: &ModelWeights,
        calib: &Calibration,
        progress: &mut dyn FnMut(usize, usize) -> bool,
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
        let mut targets: Vec<Target<'_>> = Vec::new();
        let topo = src.topology();
        for (li, layer) in src.layers.iter().enumerate() {
            for (k, lin) in layer.linears().iter().enumerate() {
                if cfg.layer_quant(&lin.name).is_some() {
                    let a = o.magnitudes(calib.site(li, topo.site_of(k))?);
                    check_magnitudes(a, lin.w.cols, &lin.name)?;
                    targets.push((li, k, lin, a));
                }
            }
        }
        // Drop entries of names `src` does not have; check the names are unique.
        let names: std::collections::HashSet<&str> =
            src.linears().map(|l| l.name.as_str()).collect();
        self.tensors.retain(|n, _| names.contains(n.as_str()));
        let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for (_, _, lin, _) in &targets {
            if !seen.insert(&lin.name) {
                return Err(Error::config(
                    "model",
                    format!("two linears are named {}", lin.name),
                ));
            }
        }
        times.source = now() - t;

        // Natively all tensors go through each phase together (in parallel). With `low_memory`
        // (wasm: one thread, at most 4 GiB of memory shared with the model, its engine and
        // calibration) one tensor at a time, and its f32 source is released afterwards (the fits stay), so
        // only one tensor's source is alive at once: holding all 425 MB of them next to the
        // fits ran the page out of memory. Each tensor's quantization is independent, so the
        // result is the same either way.
        let chunk = if self.low_memory {
            1
        } else {
            targets.len().max(1)
        };
        let mut by_pos: HashMap<(usize, usize), QTensor> = HashMap::new();
        for (i, part) in targets.chunks(chunk).enumerate() {
            if !progress(i * chunk, targets.len()) {
                return Err(Error::Cancelled);
            }
            let t = now();
            self.refresh_sources(part)?;
            times.source += now() - t;
            let qs = self.quantize_part(part, o, &mut times)?;
            let t = now();
            for ((li, k, lin, _), q) in part.iter().zip(qs) {
                let q = match &cfg.lorc {
                    Some(lo) => {
                        let wt = self.tensors.get(&lin.name).map(|e| e.wt.as_slice());
                        let wt = wt.ok_or_else(|| missing_source(&lin.name))?;
                        // LoRC takes the weights row-major: the cached copy transposed back.
                        let w = transpose(wt, lin.w.cols, lin.w.rows);
                        lorc::compensate(&q, &w, lo, &lin.name)?
                    }
                    None => q,
                };
                by_pos.insert((*li, *k), q);
            }
            if self.low_memory {
                for (_, _, lin, _) in part {
                    if let Some(e) = self.tensors.get_mut(&lin.name) {
                        e.wt = Vec::new();
                    }
                }
            }
            times.model += now() - t;
        }

        if !progress(targets.len(), targets.len()) {
            return Err(Error::Cancelled);
        }
        let t = now();
        let out = rebuild(src, by_pos);
        times.model += now() - t;
        self.times = times;
        Ok(out)
    }

    /// Make the entry of every target hold its source, dequantizing (in parallel natively)
    /// those that are new, changed, or released after the last call.
    fn refresh_sources(&mut self, targets: &[Target<'_>]) -> Result<()> {
        let ids = par::map(0..targets.len(), |i| SourceId::of(&targets[i].2.w));
        // Stale: new, changed, or (low_memory) released after the last call.
        let stale: Vec<usize> = (0..targets.len())
            .filter(|&i| {
                self.tensors
                    .get(&targets[i].2.name)
                    .is_none_or(|e| e.id != ids[i] || e.wt.is_empty())
            })
            .collect();
        let fresh = par::map(0..stale.len(), |s| -> Result<Vec<f32>> {
            let lin = targets[stale[s]].2;
            let w = lin.w.dequantize()?;
            check_weights(&w, lin.w.rows, lin.w.cols, &lin.name)?;
            Ok(transpose(&w, lin.w.rows, lin.w.cols))
        });
        for (i, wt) in stale.into_iter().zip(fresh) {
            let wt = wt?;
            match self.tensors.get_mut(&targets[i].2.name) {
                // Same tensor, source released: the fits still hold.
                Some(e) if e.id == ids[i] => e.wt = wt,
                _ => {
                    let entry = Entry {
                        id: ids[i],
                        wt,
                        fits: FitCache::default(),
                    };
                    self.tensors.insert(targets[i].2.name.clone(), entry);
                }
            }
        }
        Ok(())
    }
}

/// A linear to quantize: (layer, index in `linears()`, the linear, its input magnitudes).
type Target<'a> = (usize, usize, &'a Linear, &'a [f32]);

fn missing_source(name: &str) -> Error {
    Error::config(
        "cmpq",
        format!("{name}: the source tensor is missing from the cache"),
    )
}

impl CmpqCache {
    /// The CMPQ pipeline on `part` (whose sources are held), each job borrowing its own entry.
    fn quantize_part(
        &mut self,
        part: &[Target<'_>],
        o: &crate::quant::cmpq::CmpqOptions,
        times: &mut PhaseTimes,
    ) -> Result<Vec<QTensor>> {
        let slot: HashMap<&str, usize> = part
            .iter()
            .enumerate()
            .map(|(i, (_, _, lin, _))| (lin.name.as_str(), i))
            .collect();
        let mut jobs: Vec<Option<Job<'_>>> = (0..part.len()).map(|_| None).collect();
        for (name, e) in self.tensors.iter_mut() {
            if let Some(&i) = slot.get(name.as_str()) {
                let (_, _, lin, a) = part[i];
                jobs[i] = Some(Job {
                    wt: &e.wt,
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
            .enumerate()
            .map(|(i, j)| j.ok_or_else(|| missing_source(&part[i].2.name)))
            .collect::<Result<Vec<Job<'_>>>>()?;
        quantize_jobs(&mut jobs, times)
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
        .map(|(li, l)| LayerWeights {
            norms: l.norms.clone(),
            linears: l
                .linears
                .iter()
                .enumerate()
                .map(|(k, lin)| Linear {
                    name: lin.name.clone(),
                    w: q.remove(&(li, k)).unwrap_or_else(|| lin.w.clone()),
                    bias: lin.bias.clone(),
                })
                .collect(),
        })
        .collect();
    ModelWeights {
        config: src.config.clone(),
        token_embd: src.token_embd.clone(),
        output_norm: src.output_norm.clone(),
        output: src.output.clone(),
        globals: src.globals.clone(),
        layers,
        act: src.act.clone(),
    }
}
