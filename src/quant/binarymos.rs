//! BinaryMoS (Jo et al., "Mixture of Scales: Memory-Efficient Token-Adaptive Binarization for
//! Large Language Models", arXiv 2406.12311, NeurIPS 2024; docs/binarymos.md): 1-bit weights
//! whose two OneBit value vectors become token-adaptive mixtures of `N` scale experts.
//!
//! For an input row `x` (`in` wide), with frozen signs `B = sign(W)` (`out × in`):
//!   `g = softmax(x · W_R)`        (`N` gates; `W_R` is `in × N`, the router)
//!   `s_in = g · S_in`, `s_out = g · S_out`   (`S_in` is `N × in`, `S_out` is `N × out`)
//!   `y = ((x ⊙ s_in) · Bᵀ) ⊙ s_out`.
//! With `N = 1` (or equal experts) this is OneBit (`quant::binary`).
//!
//! The product itself is the format's CPU reference (`format::binarymos::MosParts::forward`,
//! which the CPU backend runs and src/gpu/binarymos.rs is held to). This module holds its
//! initialisation and "lite" training: the signs frozen, the experts and the router trained by
//! Adam to minimise the layer's output error on cached calibration inputs,
//! `L = mean_t ‖y_t − x_t Wᵀ‖²` (issue 15). The gradients are the product's backward pass
//! (`format::binarymos::grad`, checked there against central differences) of `dY = 2E/T`,
//! `E = Y − X·Wᵀ`. Full distillation of the whole model is `train::full`.
//!
//! Initialisation follows the paper: every expert starts from OneBit's SVID
//! (`quant::binary::svid`), and the router from small seeded values. A zero router with equal
//! experts would be a saddle: every expert gets the same gradient and the router none.

use crate::linalg::sgemm;
use crate::quant::binary::svid;
use crate::testkit::Rng;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Most scale experts (the paper uses 4), as the format allows.
pub use crate::format::binarymos::MAX_MOS_EXPERTS as MAX_EXPERTS;
/// Most training steps per layer a config may ask for.
pub const MAX_STEPS: usize = 10_000;
/// Standard deviation of the router's initial values, times `1/√in`: small enough that the
/// gates start near uniform (the layer starts as OneBit), large enough to break the symmetry.
const ROUTER_INIT: f32 = 0.1;

/// One BinaryMoS layer while it trains: the format's unpacked parts (all f32), whose
/// `forward` (format::binarymos, the CPU reference) is the product trained here.
pub use crate::format::binarymos::MosParts as MosLayer;

/// Gradients of the trained tensors (`format::binarymos::MosGrads`).
pub use crate::format::binarymos::MosGrads as Grads;

impl MosLayer {
    /// The paper's initialisation from a weight `w` (`rows × cols`): signs of `w`, every expert
    /// OneBit's SVID vectors, a seeded small router.
    pub fn init(w: &[f32], rows: usize, cols: usize, experts: usize, seed: u64) -> Result<Self> {
        if !(1..=MAX_EXPERTS).contains(&experts) {
            return Err(Error::config(
                "binarymos.experts",
                format!("{experts} is outside 1..={MAX_EXPERTS}"),
            ));
        }
        if rows == 0 || cols == 0 || w.len() != rows * cols || w.iter().any(|v| !v.is_finite()) {
            return Err(Error::config(
                "binarymos",
                format!(
                    "{} finite weights are needed for {rows}×{cols}",
                    rows * cols
                ),
            ));
        }
        let (a, b) = svid(w, rows, cols);
        let mut rng = Rng(seed | 1);
        let sd = ROUTER_INIT / (cols as f32).sqrt();
        Ok(MosLayer {
            rows,
            cols,
            experts,
            signs: w
                .iter()
                .map(|&v| if v >= 0.0 { 1.0 } else { -1.0 })
                .collect(),
            s_in: (0..experts).flat_map(|_| b.iter().copied()).collect(),
            s_out: (0..experts).flat_map(|_| a.iter().copied()).collect(),
            router: (0..cols * experts).map(|_| sd * rng.normal()).collect(),
        })
    }

    /// The gates `softmax(X · W_R)` of `t` input rows: `t × experts`.
    pub fn gates(&self, x: &[f32]) -> Vec<f32> {
        self.forward_trace(x).g
    }

    /// `mean_t ‖y_t − target_t‖²` (sums in f64).
    pub fn loss(&self, x: &[f32], target: &[f32]) -> f64 {
        let t = (x.len() / self.cols).max(1);
        let y = self.forward(x);
        y.iter()
            .zip(target)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            / t as f64
    }

    /// The loss and its gradients with respect to the experts and the router
    /// (`MosParts::backward` of `dY = 2E/T`).
    pub fn loss_and_grads(&self, x: &[f32], target: &[f32]) -> (f64, Grads) {
        let t = x.len() / self.cols;
        let c = self.forward_trace(x);
        let scale = 2.0 / t.max(1) as f32;
        let mut loss = 0f64;
        let dy: Vec<f32> =
            c.y.iter()
                .zip(target)
                .map(|(y, w)| {
                    let e = y - w;
                    loss += (e as f64).powi(2);
                    scale * e
                })
                .collect();
        let g = self.backward(x, &c, &dy, false, false);
        (loss / t.max(1) as f64, g)
    }
}

/// Adam's settings for lite training.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiteOptions {
    pub steps: usize,
    /// Step size, relative to each tensor's initial mean magnitude (scales differ by orders of
    /// magnitude between `s_in` ≈ 1 and `s_out` ≈ mean|W|; one absolute rate fits neither).
    pub lr: f32,
}

impl Default for LiteOptions {
    fn default() -> Self {
        LiteOptions {
            steps: 50,
            lr: 0.01,
        }
    }
}

/// `Method::BinaryMos`: scale experts and lite training (needs calibration: the inputs are the
/// calibration samples of each layer's input, `SiteStats::samples`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryMosOptions {
    #[serde(default = "default_experts")]
    pub experts: usize,
    #[serde(default = "default_steps")]
    pub steps: usize,
    #[serde(default = "default_lr")]
    pub lr: f32,
}

fn default_experts() -> usize {
    4
}
fn default_steps() -> usize {
    LiteOptions::default().steps
}
fn default_lr() -> f32 {
    LiteOptions::default().lr
}

impl Default for BinaryMosOptions {
    fn default() -> Self {
        BinaryMosOptions {
            experts: default_experts(),
            steps: default_steps(),
            lr: default_lr(),
        }
    }
}

impl BinaryMosOptions {
    /// Every option against its limit, naming the field.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_EXPERTS).contains(&self.experts) {
            return Err(Error::config(
                "binarymos.experts",
                format!("{} is outside 1..={MAX_EXPERTS}", self.experts),
            ));
        }
        if self.steps > MAX_STEPS {
            return Err(Error::config(
                "binarymos.steps",
                format!("{} is outside 0..={MAX_STEPS}", self.steps),
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= 1.0) {
            return Err(Error::config(
                "binarymos.lr",
                format!("{} is outside (0, 1]", self.lr),
            ));
        }
        Ok(())
    }
}

/// The router's seed of the tensor called `name` (FNV-1a of the name): lite and full training
/// start a tensor from the same router.
pub fn router_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Lite training of one layer elsewhere: `trainer(name, layer, x, target, opts, on_step)`
/// returns the tensor `name` trained from `layer` and its losses, before training and after
/// every step, as `train_lite` does, showing them to `on_step` (`false` cancels) as it goes or
/// once trained (a native GPU session's runs `Gpu::mos_train_lite`; a session's cache hands
/// back the tensors a stopped run finished, `playground::lite`).
pub type LiteTrainer<'a> = &'a dyn Fn(
    &str,
    &MosLayer,
    &[f32],
    &[f32],
    &LiteOptions,
    &mut dyn FnMut(usize, f64) -> bool,
) -> Result<(MosLayer, Vec<f64>)>;

/// One linear as `Method::BinaryMos` makes it: SVID start, then lite training on `x`
/// (`t × cols` calibration inputs) toward the loaded weight's outputs, by `trainer` when given,
/// else on the CPU. The router's seed comes from the tensor's name, so a config gives the same
/// tensor every time. `on_step(step, loss)` sees the loss before training (step 0) and after
/// every step (as the trainer shows them); `false` cancels.
#[allow(clippy::too_many_arguments)]
pub fn quantize(
    w: &[f32],
    rows: usize,
    cols: usize,
    x: &[f32],
    opts: &BinaryMosOptions,
    name: &str,
    on_step: &mut dyn FnMut(usize, f64) -> bool,
    trainer: Option<LiteTrainer>,
) -> Result<crate::format::QTensor> {
    let (mut layer, target, lite) = start(w, rows, cols, x, opts, name)?;
    let trained = match trainer {
        None => train_lite(&mut layer, x, &target, &lite, on_step).map(|_| ()),
        Some(train) => train(name, &layer, x, &target, &lite, on_step).map(|(l, _)| {
            layer = l;
        }),
    };
    trained.map_err(|e| match e {
        Error::Cancelled => e,
        e => Error::config("binarymos", format!("{name}: {e}")),
    })?;
    layer.to_qtensor()
}

/// What lite training of one linear starts from: the layer at its SVID start (the router seeded
/// from the tensor's name), the loaded weight's outputs on `x` (the target) and Adam's options.
pub fn start(
    w: &[f32],
    rows: usize,
    cols: usize,
    x: &[f32],
    opts: &BinaryMosOptions,
    name: &str,
) -> Result<(MosLayer, Vec<f32>, LiteOptions)> {
    opts.validate()?;
    let layer = MosLayer::init(w, rows, cols, opts.experts, router_seed(name))?;
    let t = x.len() / cols.max(1);
    let mut target = vec![0f32; t * rows];
    sgemm(t, cols, rows, x, cols, 1, w, 1, cols, &mut target, rows);
    let lite = LiteOptions {
        steps: opts.steps,
        lr: opts.lr,
    };
    Ok((layer, target, lite))
}

/// Show a finished training's losses to `on_step` as `train_lite` would have, step by step.
pub fn replay(losses: &[f64], on_step: &mut dyn FnMut(usize, f64) -> bool) -> Result<()> {
    for (step, &l) in losses.iter().enumerate() {
        if !on_step(step, l) {
            return Err(Error::Cancelled);
        }
    }
    Ok(())
}

/// Adam's β₁, β₂ and ε in lite training (the GPU's `shaders/mos_train_adam.wgsl` gets the same).
pub const ADAM_B1: f32 = 0.9;
pub const ADAM_B2: f32 = 0.999;
pub const ADAM_EPS: f32 = 1e-12;

/// Adam's bias corrections `(1 − β₁ᵗ, 1 − β₂ᵗ)` at step `t` (from 1).
pub fn adam_corrections(t: usize) -> (f32, f32) {
    let t = t.min(i32::MAX as usize) as i32;
    (1.0 - ADAM_B1.powi(t), 1.0 - ADAM_B2.powi(t))
}

/// The step sizes of `S_in`, `S_out` and `W_R` for a layer at its start, from the relative rate
/// `lr`: each tensor's is relative to its initial mean magnitude, except the router's, which
/// starts near zero and so takes its step relative to its initial spread. The CPU and the GPU
/// (`gpu::mos_train`) train with these same sizes.
pub fn lite_rates(layer: &MosLayer, lr: f32) -> [f32; 3] {
    let rel = |p: &[f32]| {
        let mag = p.iter().map(|v| v.abs()).sum::<f32>() / p.len().max(1) as f32;
        lr * if mag > 0.0 { mag } else { 1.0 }
    };
    [
        rel(&layer.s_in),
        rel(&layer.s_out),
        lr * ROUTER_INIT / (layer.cols as f32).sqrt(),
    ]
}

/// Adam's moments of one tensor and its step size.
struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
    lr: f32,
}

impl Adam {
    fn new(len: usize, lr: f32) -> Self {
        Adam {
            m: vec![0.0; len],
            v: vec![0.0; len],
            lr,
        }
    }

    fn step(&mut self, p: &mut [f32], g: &[f32], t: usize) {
        let (c1, c2) = adam_corrections(t);
        for i in 0..p.len() {
            self.m[i] = ADAM_B1 * self.m[i] + (1.0 - ADAM_B1) * g[i];
            self.v[i] = ADAM_B2 * self.v[i] + (1.0 - ADAM_B2) * g[i] * g[i];
            p[i] -= self.lr * (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + ADAM_EPS);
        }
    }
}

/// Lite training of one layer on `x` (`t × cols` calibration inputs) toward `target`
/// (`t × rows`, the layer as loaded on them). Calls `progress(0, loss)` before the first step
/// and `progress(step, loss)` after every step (`false` stops). Returns the loss before the
/// first step and after each.
pub fn train_lite(
    layer: &mut MosLayer,
    x: &[f32],
    target: &[f32],
    opts: &LiteOptions,
    progress: &mut dyn FnMut(usize, f64) -> bool,
) -> Result<Vec<f64>> {
    let t = x.len() / layer.cols.max(1);
    if t == 0 || x.len() != t * layer.cols || target.len() != t * layer.rows {
        return Err(Error::config(
            "binarymos",
            format!(
                "{} inputs and {} targets for a {}×{} layer",
                x.len(),
                target.len(),
                layer.rows,
                layer.cols
            ),
        ));
    }
    let rates = lite_rates(layer, opts.lr);
    let mut opt = [
        Adam::new(layer.s_in.len(), rates[0]),
        Adam::new(layer.s_out.len(), rates[1]),
        Adam::new(layer.router.len(), rates[2]),
    ];
    let mut losses = vec![layer.loss(x, target)];
    if !progress(0, losses[0]) {
        return Err(Error::Cancelled);
    }
    for step in 1..=opts.steps {
        let (_, g) = layer.loss_and_grads(x, target);
        opt[0].step(&mut layer.s_in, &g.s_in, step);
        opt[1].step(&mut layer.s_out, &g.s_out, step);
        opt[2].step(&mut layer.router, &g.router, step);
        let l = layer.loss(x, target);
        if !l.is_finite() {
            return Err(Error::config(
                "binarymos",
                format!("the loss became {l} at step {step}; lower the learning rate"),
            ));
        }
        losses.push(l);
        if !progress(step, l) {
            return Err(Error::Cancelled);
        }
    }
    Ok(losses)
}

#[cfg(test)]
mod tests;
