//! The full-distillation trainer of BinaryMoS (arXiv 2406.12311 §3.3; docs/binarymos.md "Full
//! mode"). Teacher: the model as loaded (its block linears dequantized to f32). Student: the
//! same model with every block linear BinaryMoS, started as lite training starts a layer
//! (OneBit's SVID for every expert, the router seeded from the tensor's name); the embedding,
//! the head and the norms stay as loaded and frozen.
//!
//! Trained: each linear's latent full-precision weight `W` (initially the teacher's), whose
//! signs the product uses, through the straight-through estimator as the authors' `STEBinary`:
//! `∂L/∂W = ∂L/∂sign(W) · [|W| < 1]` (the clip never bites on LLM weights, which are far below
//! 1, but is kept as the paper's); the scale experts `S_in`, `S_out` and the router `W_R`.
//! One AdamW over all of them with one learning rate, a cosine schedule with linear warm-up and
//! the global gradient norm clipped (transformers' Trainer defaults, which the authors use:
//! 3 % warm-up, clip 1.0, no weight decay).
//!
//! Data: sequences of `seq_len` tokens cut from the training tokens, visited in a seeded random
//! order, a fresh permutation each epoch. The batch of step `s` depends only on the seed and
//! `s`, so a resumed run reads the same batches.

use super::adamw::{cosine_lr, AdamW, Moments};
use super::loss::{kl_through_head, mse};
use crate::linalg::{CpuGemm, Gemm};
use crate::model::arch::grad::{self, BlockGrads};
use crate::model::cpu::{Act, Cpu};
use crate::model::net::Model;
use crate::model::weights::ModelWeights;
use crate::quant::binarymos::{router_seed, MosLayer, MAX_EXPERTS};
use crate::testkit::Rng;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Most steps, sequences per batch and tokens per sequence a run may ask for.
pub const MAX_STEPS: usize = 1_000_000;
pub const MAX_BATCH: usize = 1024;
pub const MAX_SEQ_LEN: usize = 8192;

/// Everything a run's numbers depend on (a checkpoint resumes only with the same options).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullOptions {
    pub experts: usize,
    pub steps: usize,
    /// AdamW's peak learning rate, one for every trained tensor (the authors': 2e-5).
    pub lr: f32,
    pub seq_len: usize,
    pub batch: usize,
    /// Linear warm-up steps before the cosine decay.
    pub warmup: usize,
    pub adamw: AdamW,
    /// The global gradient norm is scaled down to this when above it (0: no clipping).
    pub max_grad_norm: f32,
    /// λ of `KL + λ·Σ MSE` (the paper's 10).
    pub hidden_weight: f64,
    /// The straight-through estimator passes the gradient where `|W| < ste_clip` (the
    /// authors': 1).
    pub ste_clip: f32,
    /// Seeds the order in which the training sequences are visited.
    pub seed: u64,
}

impl FullOptions {
    /// The paper's settings for `steps` steps (warm-up 3 % of them).
    pub fn paper(experts: usize, steps: usize, lr: f32, seq_len: usize, batch: usize) -> Self {
        FullOptions {
            experts,
            steps,
            lr,
            seq_len,
            batch,
            warmup: (steps * 3).div_ceil(100),
            adamw: AdamW::default(),
            max_grad_norm: 1.0,
            hidden_weight: 10.0,
            ste_clip: 1.0,
            seed: 42,
        }
    }

    /// Every option against its limit, naming the flag.
    pub fn validate(&self, max_ctx: usize) -> Result<()> {
        let range = |name: &str, v: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(Error::config(name, format!("{v} is outside {lo}..={hi}")))
            }
        };
        range("--experts", self.experts, 1, MAX_EXPERTS)?;
        range("--steps", self.steps, 1, MAX_STEPS)?;
        range("--seq-len", self.seq_len, 2, MAX_SEQ_LEN.min(max_ctx))?;
        range("--batch", self.batch, 1, MAX_BATCH)?;
        range("--warmup", self.warmup, 0, self.steps)?;
        let a = &self.adamw;
        let finite = [
            a.beta1,
            a.beta2,
            a.eps,
            a.weight_decay,
            self.max_grad_norm,
            self.ste_clip,
        ];
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= 1.0) {
            return Err(Error::config(
                "--lr",
                format!("{} is outside (0, 1]", self.lr),
            ));
        }
        if finite.iter().any(|v| !v.is_finite() || *v < 0.0)
            || a.beta1 >= 1.0
            || a.beta2 >= 1.0
            || !(self.hidden_weight.is_finite() && self.hidden_weight >= 0.0)
        {
            return Err(Error::config(
                "full options",
                format!(
                    "AdamW {a:?}, clip {}, λ {}: each must be finite and ≥ 0, betas < 1",
                    self.max_grad_norm, self.hidden_weight
                ),
            ));
        }
        Ok(())
    }

    /// Tokens one step reads.
    pub fn tokens_per_step(&self) -> usize {
        self.seq_len * self.batch
    }
}

/// What one step did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// 1-based.
    pub step: usize,
    pub loss: f64,
    /// Mean over tokens.
    pub kl: f64,
    /// `λ · Σ MSE`.
    pub hidden: f64,
    pub lr: f32,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
}

/// One trained linear: its latent weight and the AdamW moments of its four tensors (latent,
/// `S_in`, `S_out`, `W_R`).
pub(crate) struct Trained {
    pub latent: Vec<f32>,
    pub moments: [Moments; 4],
}

/// A full-distillation run in progress.
pub struct Trainer {
    pub(crate) opts: FullOptions,
    pub(crate) teacher: Model<Cpu>,
    pub(crate) student: Model<Cpu>,
    /// Per block linear, block-major.
    pub(crate) trained: Vec<Trained>,
    /// Steps done.
    pub(crate) step: usize,
    pub(crate) tokens: Vec<u32>,
    /// Identifies the teacher (the CLI: the model file's SHA-256), checked on resume.
    pub(crate) model_id: String,
    pub(crate) log: Vec<StepLog>,
    /// Seconds spent in `step`, over every resumed part of the run.
    pub(crate) seconds: f64,
    /// Where the large products run (`linalg::Gemm`; the CPU unless `set_gemm`).
    gemm: Box<dyn Gemm>,
}

/// FNV-1a of the training tokens: a checkpoint resumes only on the same data.
pub(crate) fn fingerprint(tokens: &[u32]) -> String {
    let h = tokens.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &t| {
        (h ^ t as u64).wrapping_mul(0x100_0000_01b3)
    });
    format!("{h:016x}")
}

impl Trainer {
    /// A new run: the teacher from `source`, the student initialised from it, no step done.
    pub fn new(
        source: &ModelWeights,
        model_id: &str,
        tokens: Vec<u32>,
        opts: FullOptions,
    ) -> Result<Trainer> {
        opts.validate(source.config.max_ctx)?;
        if tokens.len() < opts.seq_len {
            return Err(Error::config(
                "training text",
                format!(
                    "{} tokens are fewer than one sequence of --seq-len {}",
                    tokens.len(),
                    opts.seq_len
                ),
            ));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= source.config.vocab) {
            return Err(Error::config(
                "training text",
                format!(
                    "token {t} is outside the vocabulary of {}",
                    source.config.vocab
                ),
            ));
        }
        let teacher = Model::load(&Cpu, source)?;
        grad::check(&teacher)?;
        let mut student = Model::load(&Cpu, source)?;
        let names = source
            .layers
            .iter()
            .flat_map(|l| l.linears.iter().map(|x| &x.name));
        let mats = student.blocks.iter_mut().flat_map(|b| b.mats.iter_mut());
        // Each linear's SVID start is independent of the others: in parallel.
        let experts = opts.experts;
        let trained = crate::par::map(names.zip(mats), |(name, mat)| -> Result<Trained> {
            if mat.mos.is_some() {
                return Err(Error::config(
                    "binarize --mode full",
                    format!("{name} is already BinaryMoS; distil from a model that is not"),
                ));
            }
            let w = std::mem::take(&mut mat.data);
            let layer = MosLayer::init(&w, mat.rows, mat.cols, experts, router_seed(name))?;
            let n = [
                w.len(),
                layer.s_in.len(),
                layer.s_out.len(),
                layer.router.len(),
            ];
            mat.mos = Some(layer);
            Ok(Trained {
                latent: w,
                moments: n.map(Moments::zeros),
            })
        })
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
        Ok(Trainer {
            opts,
            teacher,
            student,
            trained,
            step: 0,
            tokens,
            model_id: model_id.to_string(),
            log: Vec::new(),
            seconds: 0.0,
            gemm: Box::new(CpuGemm),
        })
    }

    /// Run the large matrix products of every later step on `gemm` (`gpu::TrainGemm`: the
    /// GPU). The rest of a step (norms, attention, softmax, AdamW) stays on the CPU.
    pub fn set_gemm(&mut self, gemm: Box<dyn Gemm>) {
        self.gemm = gemm;
    }

    /// Where the large products run ("cpu", "gpu: <adapter>").
    pub fn backend(&self) -> String {
        self.gemm.name()
    }

    /// Wall seconds the products took since `set_gemm`, where measured (the GPU's).
    pub fn product_seconds(&self) -> Option<f64> {
        self.gemm.seconds()
    }

    pub fn options(&self) -> &FullOptions {
        &self.opts
    }
    /// Steps done.
    pub fn steps_done(&self) -> usize {
        self.step
    }
    pub fn log(&self) -> &[StepLog] {
        &self.log
    }
    pub fn seconds(&self) -> f64 {
        self.seconds
    }
    pub fn teacher(&self) -> &Model<Cpu> {
        &self.teacher
    }
    pub fn student(&self) -> &Model<Cpu> {
        &self.student
    }
    /// The number of training sequences (`tokens / seq_len`).
    pub fn sequences(&self) -> usize {
        self.tokens.len() / self.opts.seq_len
    }

    /// The tokens of step `step`'s batch: `batch` sequences, visited in a seeded order with a
    /// fresh permutation every epoch.
    pub fn batch(&self, step: usize) -> Vec<u32> {
        let (n, len) = (self.sequences(), self.opts.seq_len);
        let mut out = Vec::with_capacity(self.opts.tokens_per_step());
        let mut perm: Option<(usize, Vec<usize>)> = None;
        for b in 0..self.opts.batch {
            let pos = step * self.opts.batch + b;
            let epoch = pos / n;
            if perm.as_ref().map(|p| p.0) != Some(epoch) {
                let mut r =
                    Rng((self.opts.seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
                let mut p: Vec<usize> = (0..n).collect();
                for i in (1..n).rev() {
                    p.swap(i, r.next_u32() as usize % (i + 1));
                }
                perm = Some((epoch, p));
            }
            let c = perm.as_ref().map_or(0, |p| p.1[pos % n]);
            out.extend_from_slice(&self.tokens[c * len..(c + 1) * len]);
        }
        out
    }

    /// One step of distillation: forward both models on the next batch, the loss, back through
    /// the student, AdamW on every trained tensor.
    pub fn step(&mut self) -> Result<StepLog> {
        if self.step >= self.opts.steps {
            return Err(Error::config(
                "--steps",
                format!("all {} steps are done", self.opts.steps),
            ));
        }
        let t0 = Instant::now();
        let seq = self.opts.seq_len;
        let tokens = self.batch(self.step);
        let gemm = self.gemm.as_ref();
        // Weights kept from the last step (if it failed before `end_step`) may be stale.
        gemm.end_step();
        let tf = grad::forward_on(&self.teacher, &tokens, seq, false, gemm)?;
        let mut sf = grad::forward_on(&self.student, &tokens, seq, true, gemm)?;
        // Hidden states are `dim` wide; what the head reads is `embed_dim` (OPT's projection).
        let (rows, d, e) = (tokens.len(), self.student.config.dim, sf.out.cols);
        let n = self.student.blocks.len();
        let mut d_out = vec![0f32; rows * e];
        let kl = kl_through_head(
            gemm,
            self.student.head(),
            &sf.out.data,
            &tf.out.data,
            1.0 / rows as f32,
            Some(&mut d_out),
        ) / rows as f64;
        let w = self.opts.hidden_weight;
        let mut hidden = 0.0;
        let mut d_hidden = Vec::with_capacity(n);
        for l in 0..n {
            let mut g = Act::zeros(rows, d);
            if l + 1 < n {
                hidden += mse(
                    &sf.inputs[l + 1].data,
                    &tf.inputs[l + 1].data,
                    w,
                    Some(&mut g.data),
                );
            } else {
                // The last hidden state handed on is the output norm's (Hugging Face's
                // `hidden_states[-1]`).
                hidden += mse(&sf.out.data, &tf.out.data, w, Some(&mut d_out));
            }
            d_hidden.push(g);
        }
        drop(tf);
        let loss = kl + hidden;
        if !loss.is_finite() {
            return Err(Error::config(
                "binarize --mode full",
                format!(
                    "the loss became {loss} at step {}; lower --lr",
                    self.step + 1
                ),
            ));
        }
        let d_out = Act {
            rows,
            cols: e,
            data: d_out,
        };
        let mut grads: Vec<BlockGrads> = vec![Vec::new(); n];
        grad::backward(
            &self.student,
            &mut sf,
            seq,
            &d_hidden,
            &d_out,
            gemm,
            &mut |l, g| {
                grads[l] = g;
                Ok(())
            },
        )?;
        drop(sf);
        // The update changes the signs: the device's copies of this step's weights go, and a
        // product that failed (its zeros in the gradients) stops the run here.
        gemm.end_step();
        gemm.check()?;
        let lr = cosine_lr(self.opts.lr, self.step, self.opts.steps, self.opts.warmup);
        let grad_norm = self.update(grads.into_iter().flatten().collect(), lr)?;
        self.step += 1;
        self.seconds += t0.elapsed().as_secs_f64();
        let log = StepLog {
            step: self.step,
            loss,
            kl,
            hidden,
            lr,
            grad_norm,
        };
        self.log.push(log.clone());
        Ok(log)
    }

    /// Straight-through estimator, global norm clipping and AdamW for every linear; the signs
    /// follow the latent weights. Returns the norm before clipping.
    fn update(
        &mut self,
        grads: Vec<Option<crate::format::binarymos::MosGrads>>,
        lr: f32,
    ) -> Result<f64> {
        let clip = self.opts.ste_clip;
        let mut grads = grads
            .into_iter()
            .zip(&self.trained)
            .map(|(g, t)| {
                let mut g =
                    g.ok_or_else(|| Error::config("train", "a linear without gradients"))?;
                let mut gw = g.signs.take().unwrap_or_default();
                gw.iter_mut().zip(&t.latent).for_each(|(g, w)| {
                    if w.abs() >= clip {
                        *g = 0.0
                    }
                });
                Ok((gw, g))
            })
            .collect::<Result<Vec<_>>>()?;
        let sq = |v: &[f32]| v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>();
        let norm = grads
            .iter()
            .map(|(gw, g)| sq(gw) + sq(&g.s_in) + sq(&g.s_out) + sq(&g.router))
            .sum::<f64>()
            .sqrt();
        if !norm.is_finite() {
            return Err(Error::config(
                "binarize --mode full",
                format!(
                    "the gradient norm became {norm} at step {}; lower --lr",
                    self.step + 1
                ),
            ));
        }
        let max = self.opts.max_grad_norm as f64;
        // torch.nn.utils.clip_grad_norm_: scale by max/(norm + 1e-6) when that is below 1.
        let scale = if max > 0.0 && norm > max {
            (max / (norm + 1e-6)) as f32
        } else {
            1.0
        };
        let (opt, t) = (self.opts.adamw, self.step as u64 + 1);
        let mats = self
            .student
            .blocks
            .iter_mut()
            .flat_map(|b| b.mats.iter_mut());
        let jobs = mats.zip(self.trained.iter_mut()).zip(grads.iter_mut());
        crate::par::map(jobs, |((mat, tr), (gw, g))| {
            let Some(p) = mat.mos.as_mut() else { return };
            for v in [&mut *gw, &mut g.s_in, &mut g.s_out, &mut g.router] {
                v.iter_mut().for_each(|x| *x *= scale);
            }
            let [m0, m1, m2, m3] = &mut tr.moments;
            opt.step(&mut tr.latent, gw, m0, lr, t);
            opt.step(&mut p.s_in, &g.s_in, m1, lr, t);
            opt.step(&mut p.s_out, &g.s_out, m2, lr, t);
            opt.step(&mut p.router, &g.router, m3, lr, t);
            for (s, w) in p.signs.iter_mut().zip(&tr.latent) {
                *s = if *w >= 0.0 { 1.0 } else { -1.0 };
            }
        });
        Ok(norm)
    }

    /// The student as weights: `source` with every block linear the trained BinaryMoS tensor
    /// (its tables rounded to f16, as the format stores them).
    pub fn weights(&self, source: &ModelWeights) -> Result<ModelWeights> {
        let mut w = source.clone();
        let mats = self.student.blocks.iter().flat_map(|b| b.mats.iter());
        for (lin, mat) in w
            .layers
            .iter_mut()
            .flat_map(|l| l.linears.iter_mut())
            .zip(mats)
        {
            let p = mat
                .mos
                .as_ref()
                .ok_or_else(|| Error::config("train", format!("{} is not BinaryMoS", lin.name)))?;
            lin.w = p.to_qtensor()?;
        }
        Ok(w)
    }
}

/// Mean KL(teacher ‖ student) per token over `tokens` (sequences of `seq`): how far a student
/// is from its teacher on held-out text.
pub fn kl_per_token(
    teacher: &Model<Cpu>,
    student: &Model<Cpu>,
    tokens: &[u32],
    seq: usize,
) -> Result<f64> {
    let tf = grad::forward(teacher, tokens, seq)?;
    let sf = grad::forward(student, tokens, seq)?;
    Ok(kl_through_head(
        &CpuGemm,
        student.head(),
        &sf.out.data,
        &tf.out.data,
        1.0,
        None,
    ) / tokens.len() as f64)
}
