//! Checkpoints of a full-distillation run: every trained tensor (latent weights, scale experts,
//! routers), AdamW's two moments of each, the step, the data order's seed and position, the
//! loss log and the options, as a safetensors file (f32, little-endian) whose metadata
//! `quantlab_train` holds the JSON. A run resumed from one continues bit for bit as if it had
//! never stopped (tests/binarize_full.rs): nothing else feeds a step (the batch of step `s`
//! is a function of the seed and `s`, the signs are the latent weights' signs, the teacher and
//! the frozen tensors come from the model file).
//!
//! A checkpoint is hostile input: every tensor is looked up by name and checked for dtype and
//! shape against the model before a byte of it is used, and the options, the model and the
//! training tokens must be the run's own.

use super::adamw::Moments;
use super::full::{fingerprint, FullOptions, StepLog, Trainer};
use crate::model::weights::ModelWeights;
use crate::{Error, Result};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The metadata key, and the format's version.
const KEY: &str = "quantlab_train";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    version: u32,
    options: FullOptions,
    /// Steps done.
    step: usize,
    model: String,
    /// FNV-1a of the training tokens, and where the data order stands: the batch of step `s`
    /// is sequences `s·batch ..` of the seeded per-epoch permutations (`Trainer::batch`).
    data: DataPos,
    log: Vec<StepLog>,
    seconds: f64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataPos {
    tokens: usize,
    fingerprint: String,
    seed: u64,
    sequences_read: usize,
}

/// The four trained tensors of linear `name`, with their moments: (suffix, rows, cols).
fn layout(name: &str, rows: usize, cols: usize, k: usize) -> [(String, usize, usize); 4] {
    let base = name.strip_suffix(".weight").unwrap_or(name);
    [
        (format!("{base}.latent"), rows, cols),
        (format!("{base}.s_in"), k, cols),
        (format!("{base}.s_out"), k, rows),
        (format!("{base}.router"), cols, k),
    ]
}

fn bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

impl Trainer {
    /// The run as it stands, as checkpoint bytes.
    pub fn checkpoint(&self) -> Result<Vec<u8>> {
        let names = self.linear_names();
        let mut views: Vec<(String, TensorView<'_>)> = Vec::new();
        let mats = self.student.blocks.iter().flat_map(|b| b.mats.iter());
        for ((name, mat), tr) in names.iter().zip(mats).zip(&self.trained) {
            let p = mat
                .mos
                .as_ref()
                .ok_or_else(|| Error::config("checkpoint", format!("{name} is not BinaryMoS")))?;
            let values: [&[f32]; 4] = [&tr.latent, &p.s_in, &p.s_out, &p.router];
            for (((n, r, c), v), m) in layout(name, p.rows, p.cols, p.experts)
                .into_iter()
                .zip(values)
                .zip(&tr.moments)
            {
                for (suffix, data) in [("", v), (".adam_m", &m.m[..]), (".adam_v", &m.v[..])] {
                    let view = TensorView::new(Dtype::F32, vec![r, c], bytes(data))
                        .map_err(|e| Error::format("checkpoint", &n, e))?;
                    views.push((format!("{n}{suffix}"), view));
                }
            }
        }
        let meta = Meta {
            version: VERSION,
            options: self.opts.clone(),
            step: self.step,
            model: self.model_id.clone(),
            data: DataPos {
                tokens: self.tokens.len(),
                fingerprint: fingerprint(&self.tokens),
                seed: self.opts.seed,
                sequences_read: self.step * self.opts.batch,
            },
            log: self.log.clone(),
            seconds: self.seconds,
        };
        let json = serde_json::to_string(&meta)
            .map_err(|e| Error::config("checkpoint", format!("serializing: {e}")))?;
        safetensors::serialize(views, Some(HashMap::from([(KEY.to_string(), json)])))
            .map_err(|e| Error::format("checkpoint", "tensors", e))
    }

    /// The canonical names of the student's block linears, block-major.
    fn linear_names(&self) -> Vec<String> {
        (0..self.student.blocks.len())
            .flat_map(|l| {
                self.student
                    .arch
                    .topology(&self.student.config)
                    .linears
                    .iter()
                    .map(move |s| format!("blk.{l}.{}.weight", s.name))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A run resumed from checkpoint `bytes` (called `label` in messages): a new trainer on
    /// `source` and `tokens` with `opts`, then every trained tensor, moment, the step and the
    /// log from the file. The options, the model and the tokens must be the checkpoint's.
    pub fn resume(
        source: &ModelWeights,
        model_id: &str,
        tokens: Vec<u32>,
        opts: FullOptions,
        label: &str,
        bytes: &[u8],
    ) -> Result<Trainer> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::format(label, "header", e))?;
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| Error::format(label, "header", e))?;
        let json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(KEY))
            .ok_or_else(|| {
                Error::format(label, KEY, "missing: not a QuantLab training checkpoint")
            })?;
        let meta: Meta = serde_json::from_str(json).map_err(|e| Error::format(label, KEY, e))?;
        if meta.version != VERSION {
            return Err(Error::format(
                label,
                "version",
                format!("{} (this QuantLab reads {VERSION})", meta.version),
            ));
        }
        if meta.options != opts {
            return Err(Error::config(
                "--resume",
                format!(
                    "{label} was made with other options: {} (now {}); resume with the same \
                     --experts, --steps, --lr, --seq-len, --batch and training settings",
                    serde_json::to_string(&meta.options).unwrap_or_default(),
                    serde_json::to_string(&opts).unwrap_or_default()
                ),
            ));
        }
        if meta.model != model_id {
            return Err(Error::config(
                "--resume",
                format!(
                    "{label} trained model {} , not this one ({model_id})",
                    meta.model
                ),
            ));
        }
        let fp = fingerprint(&tokens);
        if meta.data.fingerprint != fp || meta.data.tokens != tokens.len() {
            return Err(Error::config(
                "--resume",
                format!(
                    "{label} trained on other tokens ({} tokens, {}), not these ({} tokens, {fp})",
                    meta.data.tokens,
                    meta.data.fingerprint,
                    tokens.len()
                ),
            ));
        }
        if meta.step > opts.steps || meta.log.len() != meta.step {
            return Err(Error::format(
                label,
                "step",
                format!(
                    "{} of {} steps with {} logged",
                    meta.step,
                    opts.steps,
                    meta.log.len()
                ),
            ));
        }
        let mut t = Trainer::new(source, model_id, tokens, opts)?;
        let names = t.linear_names();
        let read = |n: &str, rows: usize, cols: usize| -> Result<Vec<f32>> {
            let v = st.tensor(n).map_err(|e| Error::format(label, n, e))?;
            if v.dtype() != Dtype::F32 || v.shape() != [rows, cols] {
                return Err(Error::format(
                    label,
                    n,
                    format!(
                        "{:?} {:?} where F32 [{rows}, {cols}] is needed",
                        v.dtype(),
                        v.shape()
                    ),
                ));
            }
            Ok(v.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let mats = t.student.blocks.iter_mut().flat_map(|b| b.mats.iter_mut());
        for ((name, mat), tr) in names.iter().zip(mats).zip(t.trained.iter_mut()) {
            let Some(p) = mat.mos.as_mut() else { continue };
            let [l0, l1, l2, l3] = layout(name, p.rows, p.cols, p.experts);
            let load = |(n, r, c): &(String, usize, usize)| -> Result<(Vec<f32>, Moments)> {
                Ok((
                    read(n, *r, *c)?,
                    Moments {
                        m: read(&format!("{n}.adam_m"), *r, *c)?,
                        v: read(&format!("{n}.adam_v"), *r, *c)?,
                    },
                ))
            };
            let (latent, m0) = load(&l0)?;
            let (s_in, m1) = load(&l1)?;
            let (s_out, m2) = load(&l2)?;
            let (router, m3) = load(&l3)?;
            if [&latent, &s_in, &s_out, &router]
                .iter()
                .any(|v| v.iter().any(|x| !x.is_finite()))
            {
                return Err(Error::format(label, name, "a trained value is not finite"));
            }
            for (s, w) in p.signs.iter_mut().zip(&latent) {
                *s = if *w >= 0.0 { 1.0 } else { -1.0 };
            }
            (p.s_in, p.s_out, p.router) = (s_in, s_out, router);
            tr.latent = latent;
            tr.moments = [m0, m1, m2, m3];
        }
        t.step = meta.step;
        t.log = meta.log;
        t.seconds = meta.seconds;
        Ok(t)
    }
}
