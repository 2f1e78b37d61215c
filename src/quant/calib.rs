//! Calibration statistics (docs/methods.md §1 "Calibration"): run the model as loaded on `N`
//! sequences of `L` tokens and record, for the input of every block linear layer, the Gram matrix
//! `XᵀX` (what GPTQ, arXiv 2210.17323 §3–4, needs for its Hessian `2XᵀX`, and what makes the
//! output error `‖XWᵀ − XŴᵀ‖²` computable without keeping `X`) and per-input-channel `mean|x|`,
//! `max|x|` and `ℓ2` (AWQ, arXiv 2306.00978 §3.2, scales channels by `mean|x|^α`).
//!
//! The inputs of a block (the sites of the architecture's topology, `model::arch`) are observed
//! through `Model::forward_observed`, so there is no second model implementation.
//!
//! Precision and memory. Each sequence's `XᵀX` (a sum of `L` products) is one SGEMM in f32 and is
//! then added to an f32 accumulator: the relative rounding error is about `(L + N)·2^-24`, i.e.
//! `3·10⁻⁵` at 32 × 512, far below the 1 % damping GPTQ adds to the diagonal, while f64 would
//! double the memory. All Grams are kept (full symmetric `d × d`, for simple row access by the
//! quantizers): per layer `3·d² + F²` floats (SmolLM2-135M: 3·576² + 1536² = 3.35 M floats =
//! 13.4 MB, 30 layers = 402 MB). `calibrate` refuses to allocate more than `MAX_CALIB_BYTES`
//! (naming the need); larger models would need the layer-by-layer variant (quantize layer `i`
//! before observing layer `i + 1`), which this file does not implement.
//!
//! `gpu::calib` computes the same statistics with the model on the GPU, batching sequences as
//! evaluation does; this file is its reference.
//!
//! Sequences are consecutive, non-overlapping runs of `L` tokens from a chosen part of the token
//! stream (by default its end; the evaluation windows start at its beginning). As in the
//! llama.cpp protocol, a model that adds BOS gets BOS as each sequence's first token, so the
//! activations match those seen during evaluation. `eval_overlap` counts shared tokens so the UI
//! and the CLI can warn.

use crate::format::tender::CHUNK_STEP;
use crate::linalg::sgemm;
use crate::model::config::ModelConfig;
use crate::model::cpu::{Act, Cpu};
use crate::model::eval::EvalOptions;
use crate::model::net::Model;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Most calibration sequences.
pub const MAX_SEQS: usize = 4096;
/// Most bytes the statistics may take (Grams dominate).
pub const MAX_CALIB_BYTES: usize = 2 << 30;
/// Activation rows kept per site as samples (`SiteStats::samples`): what AQAS's search and
/// percentile static scales need beyond the Gram, since activation quantization is not linear.
/// 128 rows of every site cost SmolLM2-135M 50 MB, an eighth of its Grams.
pub const SAMPLE_ROWS: usize = 128;

/// Which part of the token stream the sequences come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibFrom {
    /// The last `N·L` tokens.
    Tail,
    /// Starting at this token index.
    Offset(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CalibOptions {
    pub n_seq: usize,
    pub seq_len: usize,
    pub from: CalibFrom,
}

impl Default for CalibOptions {
    /// 32 × 512 from the end of the text (methods.md §1).
    fn default() -> Self {
        CalibOptions {
            n_seq: 32,
            seq_len: 512,
            from: CalibFrom::Tail,
        }
    }
}

impl CalibOptions {
    /// The token range the sequences cover in a stream of `n_tokens`.
    pub fn range(&self, n_tokens: usize) -> Result<Range<usize>> {
        if self.n_seq == 0 || self.n_seq > MAX_SEQS {
            return Err(Error::config(
                "calib.n_seq",
                format!("{} is outside 1..={MAX_SEQS}", self.n_seq),
            ));
        }
        if !(2..=crate::model::eval::MAX_CTX).contains(&self.seq_len) {
            return Err(Error::config(
                "calib.seq_len",
                format!(
                    "{} is outside 2..={}",
                    self.seq_len,
                    crate::model::eval::MAX_CTX
                ),
            ));
        }
        let need = self.n_seq * self.seq_len;
        let start = match self.from {
            CalibFrom::Tail => n_tokens.checked_sub(need),
            CalibFrom::Offset(o) => o.checked_add(need).filter(|&e| e <= n_tokens).map(|_| o),
        }
        .ok_or_else(|| {
            Error::config(
                "calib",
                format!(
                    "{} × {} tokens from {:?} do not fit in a text of {n_tokens} tokens",
                    self.n_seq, self.seq_len, self.from
                ),
            )
        })?;
        Ok(start..start + need)
    }
}

/// Tokens of `calib` (a range of the stream) that also lie in an evaluation window of a stream
/// of `n_tokens` under `eval` (0 means disjoint).
pub fn eval_overlap(calib: Range<usize>, n_tokens: usize, eval: &EvalOptions) -> usize {
    let ctx = eval.ctx.max(1);
    let windows = n_tokens / ctx;
    let windows = eval.max_windows.map_or(windows, |m| m.min(windows));
    let eval_end = windows * ctx;
    calib.end.min(eval_end).saturating_sub(calib.start)
}

/// Statistics of one linear-layer input `X` (`rows × dim`, all calibration tokens).
#[derive(Clone, Debug, PartialEq)]
pub struct SiteStats {
    pub dim: usize,
    /// Tokens seen.
    pub rows: usize,
    /// `XᵀX`, `dim × dim`, row-major (symmetric).
    pub gram: Vec<f32>,
    /// Per input channel: `mean|x_j|`, `max|x_j|`, `‖x_j‖₂`.
    pub mean_abs: Vec<f32>,
    pub max_abs: Vec<f32>,
    pub l2: Vec<f32>,
    /// Up to `SAMPLE_ROWS` rows of `X` (row-major, `dim` wide), taken at the positions
    /// `sample_positions` gives in every sequence, in sequence order.
    pub samples: Vec<f32>,
    /// Per block of `tender::CHUNK_STEP` positions of every sequence (block `b` holds positions
    /// `64·b .. 64·b + 64`) and channel, the largest and the smallest value over all sequences:
    /// `pos_max[b · dim + j]`. Tender's static decomposition (`format::tender`) assembles its
    /// chunks from them.
    pub pos_max: Vec<f32>,
    pub pos_min: Vec<f32>,
}

impl SiteStats {
    /// Fail unless these statistics are `cols` wide, the input width of the linear `name`
    /// (with a Gram of that size).
    pub fn check_width(&self, name: &str, cols: usize) -> Result<()> {
        if self.dim != cols || self.gram.len() != cols * cols {
            return Err(Error::config(
                "calibration",
                format!("{name}: statistics of width {} for {cols} inputs", self.dim),
            ));
        }
        Ok(())
    }

    /// Rows held in `samples`.
    pub fn sample_rows(&self) -> usize {
        self.samples.len() / self.dim.max(1)
    }
}

/// The positions within each of `n_seq` sequences of `seq_len` tokens whose rows calibration keeps
/// as samples: `⌈SAMPLE_ROWS / n_seq⌉` per sequence (at most `seq_len`), spread evenly so that
/// late positions, where long contexts differ from short ones (SLAC), are represented; the
/// total is capped at `SAMPLE_ROWS` by the caller (`samples_wanted`).
pub fn sample_positions(n_seq: usize, seq_len: usize) -> Vec<usize> {
    let per = SAMPLE_ROWS.div_ceil(n_seq.max(1)).min(seq_len);
    (0..per)
        .map(|k| (2 * k + 1) * seq_len / (2 * per))
        .collect()
}

/// Rows sequence `s` contributes to the samples (none once `SAMPLE_ROWS` are held).
pub fn samples_wanted(s: usize, n_seq: usize, seq_len: usize) -> Vec<usize> {
    let pos = sample_positions(n_seq, seq_len);
    let held = s * pos.len();
    pos.into_iter()
        .take(SAMPLE_ROWS.saturating_sub(held))
        .collect()
}

/// Everything the calibrated quantizers need, per layer and site.
#[derive(Clone, Debug)]
pub struct Calibration {
    pub opts: CalibOptions,
    /// The token range of the stream used.
    pub range: Range<usize>,
    /// `layers[i][site]`, sites in topology order.
    pub layers: Vec<Vec<SiteStats>>,
    /// The calibration sequences as run (BOS in place), for scoring held-out text
    /// (`auto::verify`); n_seq × seq_len tokens.
    pub seqs: Vec<Vec<u32>>,
}

impl Calibration {
    pub fn site(&self, layer: usize, site: usize) -> Result<&SiteStats> {
        self.layers
            .get(layer)
            .and_then(|l| l.get(site))
            .ok_or_else(|| {
                Error::config(
                    "calibration",
                    format!(
                        "layer {layer} site {site} is missing (calibrated {} layers)",
                        self.layers.len()
                    ),
                )
            })
    }

    /// Bytes the statistics take.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| l.iter())
            .map(|s| {
                4 * (s.gram.len() + 3 * s.dim + s.samples.len() + s.pos_max.len() + s.pos_min.len())
            })
            .sum()
    }
}

/// Running sums for one site.
struct Acc {
    dim: usize,
    rows: usize,
    gram: Vec<f32>,
    tmp: Vec<f32>,
    sum_abs: Vec<f64>,
    sum_sq: Vec<f64>,
    max_abs: Vec<f32>,
    samples: Vec<f32>,
    pos_max: Vec<f32>,
    pos_min: Vec<f32>,
}

impl Acc {
    fn new(dim: usize) -> Self {
        Acc {
            dim,
            rows: 0,
            gram: vec![0.0; dim * dim],
            tmp: Vec::new(),
            sum_abs: vec![0.0; dim],
            sum_sq: vec![0.0; dim],
            max_abs: vec![0.0; dim],
            samples: Vec::new(),
            pos_max: Vec::new(),
            pos_min: Vec::new(),
        }
    }

    /// Add one sequence's rows, keeping rows `keep` as samples.
    fn add(&mut self, x: &Act, keep: &[usize]) -> Result<()> {
        let d = self.dim;
        if x.cols != d || x.data.len() != x.rows * d {
            return Err(Error::config(
                "calibration",
                format!("activation of width {} where {d} was expected", x.cols),
            ));
        }
        // tmp (d×d) = Xᵀ (d×T, read through strides) · X (T×d), split by output rows over threads.
        self.tmp.resize(d * d, 0.0);
        let t = x.rows;
        gram_rows(&x.data, t, d, &mut self.tmp);
        self.gram
            .iter_mut()
            .zip(&self.tmp)
            .for_each(|(g, v)| *g += v);
        // One sequence: row t is position t.
        let blocks = t.div_ceil(CHUNK_STEP);
        if self.pos_max.len() < blocks * d {
            self.pos_max.resize(blocks * d, f32::NEG_INFINITY);
            self.pos_min.resize(blocks * d, f32::INFINITY);
        }
        for (p, r) in x.data.chunks_exact(d).enumerate() {
            let b = p / CHUNK_STEP * d;
            let (hi, lo) = (&mut self.pos_max[b..b + d], &mut self.pos_min[b..b + d]);
            for (j, &v) in r.iter().enumerate() {
                let a = v.abs();
                self.sum_abs[j] += a as f64;
                self.sum_sq[j] += (v as f64) * (v as f64);
                self.max_abs[j] = self.max_abs[j].max(a);
                hi[j] = hi[j].max(v);
                lo[j] = lo[j].min(v);
            }
        }
        for &r in keep {
            if let Some(row) = x.data.get(r * d..(r + 1) * d) {
                self.samples.extend_from_slice(row);
            }
        }
        self.rows += t;
        Ok(())
    }

    fn finish(self) -> SiteStats {
        let n = self.rows.max(1) as f64;
        SiteStats {
            dim: self.dim,
            rows: self.rows,
            gram: self.gram,
            mean_abs: self.sum_abs.iter().map(|&s| (s / n) as f32).collect(),
            max_abs: self.max_abs,
            l2: self.sum_sq.iter().map(|&s| s.sqrt() as f32).collect(),
            samples: self.samples,
            pos_max: self.pos_max,
            pos_min: self.pos_min,
        }
    }
}

/// `out (d×d) = Xᵀ X` for row-major `X` (`t × d`), output rows in parallel natively (the
/// reference the GPU's `shaders/gram.wgsl` is tested against).
pub fn gram_rows(x: &[f32], t: usize, d: usize, out: &mut [f32]) {
    let job = |i0: usize, chunk: &mut [f32]| {
        let m = chunk.len() / d;
        // a = rows i0..i0+m of Xᵀ: element (i, k) = X[k][i0 + i] → row stride 1, column stride d.
        sgemm(m, t, d, &x[i0..], 1, d, x, d, 1, chunk, d);
    };
    crate::par::for_each_row_block(out, d, 32, job);
}

/// Widths of the sites of a block, in topology order.
pub fn site_dims(c: &ModelConfig) -> Result<Vec<usize>> {
    Ok(c.topology()?.sites.iter().map(|s| s.width).collect())
}

/// Bytes the statistics of a model with config `c` take (full Grams and three vectors per
/// site and layer); an error naming the need when past `MAX_CALIB_BYTES`.
pub fn stats_bytes(c: &ModelConfig) -> Result<usize> {
    let per_layer: usize = site_dims(c)?
        .iter()
        .map(|d| d * d + 3 * d + SAMPLE_ROWS * d)
        .sum();
    let bytes = c.n_layer.saturating_mul(per_layer).saturating_mul(4);
    if bytes > MAX_CALIB_BYTES {
        return Err(Error::config(
            "calibration",
            format!(
                "the statistics of this model need {bytes} bytes, over the limit of {MAX_CALIB_BYTES}"
            ),
        ));
    }
    Ok(bytes)
}

/// Calibration sequence `s` (of `seq_len` tokens) of the token range `range`, with `bos`
/// replacing its first token when given (as in evaluation).
pub fn sequence(
    tokens: &[u32],
    range: &Range<usize>,
    s: usize,
    seq_len: usize,
    bos: Option<u32>,
) -> Result<Vec<u32>> {
    let start = range.start + s * seq_len;
    let mut seq = tokens
        .get(start..start + seq_len)
        .filter(|_| start + seq_len <= range.end)
        .ok_or_else(|| {
            Error::config(
                "calibration",
                format!("sequence {s} of {seq_len} tokens is outside {range:?}"),
            )
        })?
        .to_vec();
    if let (Some(b), Some(first)) = (bos, seq.first_mut()) {
        *first = b;
    }
    Ok(seq)
}

/// Run `model` on the calibration sequences of `tokens` and collect statistics.
///
/// `bos` replaces each sequence's first token (as in evaluation) when given. `progress(done,
/// total)` is called before each sequence and at the end; returning `false` stops with
/// `Error::Cancelled`.
pub fn calibrate(
    model: &Model<Cpu>,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &CalibOptions,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Calibration> {
    let range = opts.range(tokens.len())?;
    let dims = site_dims(&model.config)?;
    let n_layer = model.config.n_layer;
    stats_bytes(&model.config)?;
    let mut acc: Vec<Vec<Acc>> = (0..n_layer)
        .map(|_| dims.iter().map(|&d| Acc::new(d)).collect())
        .collect();
    let (n, l) = (opts.n_seq, opts.seq_len);
    let mut seqs = Vec::with_capacity(n);
    for s in 0..n {
        if !progress(s, n) {
            return Err(Error::Cancelled);
        }
        let seq = sequence(tokens, &range, s, l, bos)?;
        let keep = samples_wanted(s, n, l);
        model.forward_observed(&Cpu, &seq, &mut |layer, site, x| {
            let a = acc
                .get_mut(layer)
                .ok_or_else(|| Error::config("calibration", format!("unexpected layer {layer}")))?;
            a.get_mut(site)
                .ok_or_else(|| Error::config("calibration", format!("unexpected site {site}")))?
                .add(x, &keep)
        })?;
        seqs.push(seq);
    }
    if !progress(n, n) {
        return Err(Error::Cancelled);
    }
    Ok(Calibration {
        opts: *opts,
        range,
        layers: acc
            .into_iter()
            .map(|a| a.into_iter().map(Acc::finish).collect())
            .collect(),
        seqs,
    })
}

/// `‖X Wᵀ − X Ŵᵀ‖_F² = Σ_r (w_r − ŵ_r) · XᵀX · (w_r − ŵ_r)ᵀ` for row-major `rows × cols`
/// matrices, from the Gram of `X` (`cols × cols`): products in f32, sums in f64.
pub fn output_error(w: &[f32], w_hat: &[f32], cols: usize, gram: &[f32]) -> Result<f64> {
    if w.len() != w_hat.len()
        || cols == 0
        || !w.len().is_multiple_of(cols)
        || gram.len() != cols * cols
    {
        return Err(Error::config(
            "output_error",
            format!(
                "shapes disagree: {} and {} weights, {cols} columns, Gram of {}",
                w.len(),
                w_hat.len(),
                gram.len()
            ),
        ));
    }
    // Chunks of rows: T = D·G by SGEMM (f32), then Σ T ⊙ D in f64; chunks in parallel natively,
    // summed in chunk order so the result does not depend on the thread count.
    const CHUNK: usize = 32;
    let chunk = |(wc, hc): (&[f32], &[f32])| -> f64 {
        let n = wc.len() / cols;
        let d: Vec<f32> = wc.iter().zip(hc).map(|(a, b)| a - b).collect();
        let mut t = vec![0f32; n * cols];
        sgemm(n, cols, cols, &d, cols, 1, gram, cols, 1, &mut t, cols);
        d.iter().zip(&t).map(|(&a, &b)| a as f64 * b as f64).sum()
    };
    let pairs: Vec<(&[f32], &[f32])> = w
        .chunks(CHUNK * cols)
        .zip(w_hat.chunks(CHUNK * cols))
        .collect();
    let parts: Vec<f64> = crate::par::map(pairs, chunk);
    let total = parts.iter().sum();
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::eval::Protocol;

    /// Relative tolerance for f32 Gram sums against an f64 reference.
    const GRAM_TOL: f64 = 1e-5;

    #[test]
    fn gram_matches_f64_reference() {
        let (t, d) = (37, 19);
        let x: Vec<f32> = (0..t * d)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 3.0)
            .collect();
        let mut acc = Acc::new(d);
        let act = Act {
            rows: t,
            cols: d,
            data: x.clone(),
        };
        acc.add(&act, &[]).unwrap();
        acc.add(&act, &[]).unwrap();
        let st = acc.finish();
        assert_eq!(st.rows, 2 * t);
        for i in 0..d {
            for j in 0..d {
                let r: f64 = (0..t)
                    .map(|k| 2.0 * x[k * d + i] as f64 * x[k * d + j] as f64)
                    .sum();
                let g = st.gram[i * d + j] as f64;
                assert!(
                    (g - r).abs() <= GRAM_TOL * (1.0 + r.abs()),
                    "{i},{j}: {g} vs {r}"
                );
            }
            let ma: f64 = (0..t).map(|k| (x[k * d + i] as f64).abs()).sum::<f64>() / t as f64;
            assert!((st.mean_abs[i] as f64 - ma).abs() < GRAM_TOL);
            let mx = (0..t).map(|k| x[k * d + i].abs()).fold(0f32, f32::max);
            assert_eq!(st.max_abs[i], mx);
        }
    }

    #[test]
    fn output_error_matches_direct_product() {
        let (t, rows, cols) = (11, 3, 5);
        let x: Vec<f32> = (0..t * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.91).cos()).collect();
        let wh: Vec<f32> = w.iter().map(|v| (v * 4.0).round() / 4.0).collect();
        let mut g = vec![0f32; cols * cols];
        gram_rows(&x, t, cols, &mut g);
        let mut direct = 0f64;
        for k in 0..t {
            for r in 0..rows {
                let y: f64 = (0..cols)
                    .map(|j| x[k * cols + j] as f64 * (w[r * cols + j] - wh[r * cols + j]) as f64)
                    .sum();
                direct += y * y;
            }
        }
        let e = output_error(&w, &wh, cols, &g).unwrap();
        assert!((e - direct).abs() <= GRAM_TOL * direct, "{e} vs {direct}");
        assert!(output_error(&w, &wh[1..], cols, &g).is_err());
    }

    #[test]
    fn ranges_and_overlap() {
        let o = CalibOptions {
            n_seq: 4,
            seq_len: 100,
            from: CalibFrom::Tail,
        };
        assert_eq!(o.range(1000).unwrap(), 600..1000);
        assert!(o.range(399).is_err());
        let at = CalibOptions {
            from: CalibFrom::Offset(50),
            ..o
        };
        assert_eq!(at.range(1000).unwrap(), 50..450);
        assert!(CalibOptions {
            from: CalibFrom::Offset(usize::MAX),
            ..o
        }
        .range(1000)
        .is_err());
        let ev = EvalOptions {
            protocol: Protocol::Llamacpp,
            ctx: 100,
            max_windows: Some(5),
            kl: false,
        };
        // Evaluation covers 0..500.
        assert_eq!(eval_overlap(600..1000, 1000, &ev), 0);
        assert_eq!(eval_overlap(450..850, 1000, &ev), 50);
        assert_eq!(eval_overlap(50..450, 1000, &ev), 400);
        let all = EvalOptions {
            max_windows: None,
            ..ev
        };
        assert_eq!(eval_overlap(600..1000, 1000, &all), 400);
    }
}
