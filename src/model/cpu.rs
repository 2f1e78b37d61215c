//! The CPU reference backend: plain f32, weights expanded from their stored format once at load.
//! Matrix products go through `matrixmultiply` (blocked SGEMM with runtime SIMD detection,
//! multi-threaded natively); everything else is straightforward loops, written to be read.

use crate::format::act::{self, ActQuantSpec};
use crate::format::binarymos::MosParts;
use crate::format::tender::{self, TenderChunk, TenderSpec};
use crate::format::{Format, QTensor};
use crate::linalg::{par_sgemm, sgemm};
use crate::model::backend::{Backend, TokenScore};
use crate::model::config::RopeStyle;
use crate::{Error, Result};

/// A row-major `rows × cols` f32 matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    /// A BinaryMoS weight's parts: its product depends on each token (`linear` uses them;
    /// `data` is then empty).
    pub mos: Option<MosParts>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Act {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Act {
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Act {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// Log-probabilities of consecutive rows, `rows × vocab`.
pub struct LogProbs {
    pub vocab: usize,
    pub data: Vec<f32>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

impl Cpu {
    /// Logits of rows `from..from+n` of `x`: `n × vocab`.
    fn logits(&self, x: &Act, head: &Mat, from: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; n * head.rows];
        par_sgemm(
            n,
            x.cols,
            head.rows,
            &x.data[from * x.cols..],
            x.cols,
            1,
            &head.data,
            1,
            head.cols,
            &mut out,
            head.rows,
        );
        out
    }
}

/// The causal attention probabilities of query head `h` (`scores`, t × t, zero above the
/// diagonal): `softmax(Q_h K_gᵀ / √hd, causal)`, where `g` is the KV head that `h` shares. The
/// forward pass and training's backward (`arch::grad`) both read these.
#[allow(clippy::too_many_arguments)]
pub(crate) fn causal_probs(
    q: &Act,
    k: &Act,
    h: usize,
    n_head: usize,
    n_kv: usize,
    hd: usize,
    scores: &mut [f32],
) {
    let t = q.rows;
    let (qs, kvs) = (n_head * hd, n_kv * hd);
    let g = h / (n_head / n_kv);
    let scale = 1.0 / (hd as f32).sqrt();
    // scores (t×t) = Q_h (t×hd) · K_gᵀ, both read in place through strides.
    sgemm(
        t,
        hd,
        t,
        &q.data[h * hd..],
        qs,
        1,
        &k.data[g * hd..],
        1,
        kvs,
        scores,
        t,
    );
    for i in 0..t {
        let row = &mut scores[i * t..(i + 1) * t];
        // Causal: position i sees keys 0..=i.
        let max = row[..=i]
            .iter()
            .fold(f32::NEG_INFINITY, |m, &s| m.max(s * scale));
        let mut sum = 0f32;
        for s in row[..=i].iter_mut() {
            *s = (*s * scale - max).exp();
            sum += *s;
        }
        let inv = 1.0 / sum;
        row[..=i].iter_mut().for_each(|s| *s *= inv);
        row[i + 1..].iter_mut().for_each(|s| *s = 0.0);
    }
}

/// One causal attention head: `out` (t × hd) = `causal_probs` · V_g.
#[allow(clippy::too_many_arguments)]
fn attention_head(
    q: &Act,
    k: &Act,
    v: &Act,
    h: usize,
    n_head: usize,
    n_kv: usize,
    hd: usize,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let t = q.rows;
    let kvs = n_kv * hd;
    let g = h / (n_head / n_kv);
    causal_probs(q, k, h, n_head, n_kv, hd, scores);
    // out (t×hd) = P (t×t) · V_g (t×hd).
    sgemm(t, t, hd, scores, t, 1, &v.data[g * hd..], kvs, 1, out, hd);
}

/// Causal attention over one sequence (all rows of `q`, `k`, `v`).
fn attention_seq(q: &Act, k: &Act, v: &Act, n_head: usize, n_kv: usize, hd: usize) -> Act {
    let t = q.rows;
    let qs = n_head * hd;
    // Each head's output (t × hd) in its own block of `heads`, then interleaved into rows.
    let mut heads = vec![0f32; n_head * t * hd];
    // Blocks of at least 16 rows keep SGEMM's panels efficient.
    crate::par::for_each_row_block(&mut heads, t * hd, 16, |h0, block| {
        let mut scores = vec![0f32; t * t];
        for (i, o) in block.chunks_mut(t * hd).enumerate() {
            attention_head(q, k, v, h0 + i, n_head, n_kv, hd, &mut scores, o);
        }
    });
    let mut out = Act::zeros(t, qs);
    for (h, o) in heads.chunks(t * hd).enumerate() {
        for (i, r) in o.chunks(hd).enumerate() {
            out.data[i * qs + h * hd..i * qs + (h + 1) * hd].copy_from_slice(r);
        }
    }
    out
}

/// The sequence length to use for `rows` rows: `seq` when it divides `rows`. The forward pass
/// checks this before calling (`Model::forward_batch`); a bad value here is a caller bug, so it
/// degrades to one sequence rather than panicking.
fn checked_seq(rows: usize, seq: usize) -> usize {
    debug_assert!(
        seq > 0 && rows.is_multiple_of(seq),
        "{rows} rows in sequences of {seq}"
    );
    if seq > 0 && rows.is_multiple_of(seq) {
        seq
    } else {
        rows.max(1)
    }
}

/// Whether a per-column vector of `len` values (norm weight, bias) fits `cols` columns. As in
/// `checked_seq`, the trait's element-wise ops cannot return errors and a mismatch is a caller
/// bug, so it panics with a message in debug builds; in release the op degrades (columns without
/// a weight come out 0) rather than panicking.
fn check_vector(what: &str, len: usize, cols: usize) {
    debug_assert!(len == cols, "{what}: {len} values for {cols} columns");
}

/// RoPE on each head of `x` (rows: sequences of `seq`), as `Backend::rope`; with `inverse`,
/// each pair is turned back by the same angle (the transpose of the rotation, which is what
/// training's backward pass multiplies a gradient by).
#[allow(clippy::too_many_arguments)]
pub(crate) fn rotate(
    x: &mut Act,
    n_head: usize,
    hd: usize,
    pos0: usize,
    theta: f32,
    style: RopeStyle,
    seq: usize,
    inverse: bool,
) {
    let seq = checked_seq(x.rows, seq);
    let half = hd / 2;
    let sign = if inverse { -1.0 } else { 1.0 };
    // Frequencies in f64, as the angle for late positions needs the precision.
    let inv: Vec<f64> = (0..half)
        .map(|i| (theta as f64).powf(-2.0 * i as f64 / hd as f64))
        .collect();
    for t in 0..x.rows {
        let pos = (pos0 + t % seq) as f64;
        let cs: Vec<(f32, f32)> = inv
            .iter()
            .map(|f| {
                let a = pos * f;
                (a.cos() as f32, sign * a.sin() as f32)
            })
            .collect();
        let row = &mut x.data[t * x.cols..(t + 1) * x.cols];
        for h in 0..n_head {
            let head = &mut row[h * hd..(h + 1) * hd];
            for (i, &(c, s)) in cs.iter().enumerate() {
                let (a, b) = match style {
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    RopeStyle::Half => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * c - x1 * s;
                head[b] = x0 * s + x1 * c;
            }
        }
    }
}

/// GPT-2's `gelu_new` (Hendrycks & Gimpel 2016, arXiv 1606.08415, the tanh approximation) of one
/// value: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`. Two clamps keep it finite for any finite
/// `x`, mirroring shaders/activation.wgsl: `x` to ±10 before the cube, so that `x³` never
/// overflows (WGSL may assume there are no infinities), and tanh's argument to ±10, which some
/// drivers' `tanh` overflows on for large inputs. Neither changes an f32 result: |x| ≥ 10 gives an
/// argument above 43, and tanh(±10) already rounds to ±1 in f32 (1 − tanh 10 ≈ 4e-9 < 2^-25).
pub fn gelu_tanh(x: f32) -> f32 {
    let xc = x.clamp(-10.0, 10.0);
    let u = (GELU_SQRT_2_OVER_PI * (xc + GELU_CUBIC * xc * xc * xc)).clamp(-10.0, 10.0);
    0.5 * x * (1.0 + u.tanh())
}

/// `gelu_new`'s constants: √(2/π) and the cubic's coefficient.
const GELU_SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_CUBIC: f32 = 0.044715;

/// The derivative of `gelu_tanh` at `x` (training's backward pass, `arch::grad`):
/// `0.5·(1 + tanh u) + 0.5·x·(1 − tanh² u)·√(2/π)·(1 + 3·0.044715·x²)`, with `u` clamped as the
/// forward clamps it. Where a clamp bites tanh is ±1 in f32, so the second term is 0 there, as
/// the forward's flat clamped value says.
pub fn gelu_tanh_grad(x: f32) -> f32 {
    let xc = x.clamp(-10.0, 10.0);
    let u = (GELU_SQRT_2_OVER_PI * (xc + GELU_CUBIC * xc * xc * xc)).clamp(-10.0, 10.0);
    let t = u.tanh();
    let du = GELU_SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * xc * xc);
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du
}

/// In-place log-softmax of one row, in f64 accumulation for stability.
fn log_softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
    let lse = max as f64 + sum.ln();
    for v in row.iter_mut() {
        *v = (*v as f64 - lse) as f32;
    }
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

impl Backend for Cpu {
    type Act = Act;
    type Mat = Mat;
    type Vector = Vec<f32>;
    type LogProbs = LogProbs;
    type Pending = Vec<TokenScore>;

    fn name(&self) -> String {
        "cpu".into()
    }

    fn load_matrix(&self, w: &QTensor, bias: Option<&[f32]>) -> Result<Mat> {
        // A BinaryMoS weight has no single matrix: `linear` reads its parts, so `data` (what the
        // plain product, the embedding and the head read) stays empty.
        let (data, mos) = match w.format {
            Format::BinaryMos { .. } => (Vec::new(), Some(MosParts::from_qtensor(w)?)),
            _ => (w.dequantize()?, None),
        };
        Ok(Mat {
            rows: w.rows,
            cols: w.cols,
            data,
            bias: bias.map(|b| b.to_vec()),
            mos,
        })
    }

    fn computes_as_recorded(&self) -> bool {
        true
    }

    fn load_vector(&self, v: &[f32]) -> Result<Vec<f32>> {
        Ok(v.to_vec())
    }

    fn embed(&self, table: &Mat, tokens: &[u32]) -> Result<Act> {
        let mut out = Act::zeros(tokens.len(), table.cols);
        for (t, &id) in tokens.iter().enumerate() {
            let id = id as usize;
            if id >= table.rows {
                return Err(Error::config(
                    "token",
                    format!("id {id} is outside the vocabulary of {}", table.rows),
                ));
            }
            out.data[t * table.cols..(t + 1) * table.cols]
                .copy_from_slice(&table.data[id * table.cols..(id + 1) * table.cols]);
        }
        Ok(out)
    }

    fn rmsnorm(&self, x: &Act, w: &Vec<f32>, eps: f32) -> Act {
        let mut out = Act::zeros(x.rows, x.cols);
        for (o, r) in out.data.chunks_mut(x.cols).zip(x.data.chunks(x.cols)) {
            let ms = r.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.cols as f64;
            let scale = (1.0 / (ms + eps as f64).sqrt()) as f32;
            for ((o, &v), &g) in o.iter_mut().zip(r).zip(w) {
                *o = v * scale * g;
            }
        }
        out
    }

    fn layernorm(&self, x: &Act, w: &Vec<f32>, b: Option<&Vec<f32>>, eps: f32) -> Act {
        check_vector("layernorm weight", w.len(), x.cols);
        if let Some(b) = b {
            check_vector("layernorm bias", b.len(), x.cols);
        }
        let mut out = Act::zeros(x.rows, x.cols);
        let n = x.cols as f64;
        // `max(1)`: a 0-column activation has no rows to walk (chunks of 0 would panic).
        let rows = out
            .data
            .chunks_mut(x.cols.max(1))
            .zip(x.data.chunks(x.cols.max(1)));
        for (o, r) in rows {
            // Two passes in f64: the mean first, then the mean squared deviation from it, so a
            // row far from zero (1000 ± 1) loses nothing to cancellation, as E[x²] − E[x]² would,
            // and f64 makes this the correctly rounded reference the GPU's f32 is held to.
            let mean = r.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = r.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            let rstd = 1.0 / (var + eps as f64).sqrt();
            for (c, ((o, &v), &g)) in o.iter_mut().zip(r).zip(w).enumerate() {
                let bias = b.and_then(|b| b.get(c)).copied().unwrap_or(0.0);
                *o = ((v as f64 - mean) * rstd) as f32 * g + bias;
            }
        }
        out
    }

    fn linear(&self, x: &Act, w: &Mat) -> Act {
        let mut out = Act::zeros(x.rows, w.rows);
        match &w.mos {
            // BinaryMoS: each token mixes its own scales (format::binarymos).
            Some(m) => out.data = m.forward(&x.data),
            // y (T×out) = x (T×in) · Wᵀ, Wᵀ read through strides (row stride 1, column stride in).
            None => par_sgemm(
                x.rows,
                x.cols,
                w.rows,
                &x.data,
                x.cols,
                1,
                &w.data,
                1,
                w.cols,
                &mut out.data,
                w.rows,
            ),
        }
        if let Some(b) = &w.bias {
            for r in out.data.chunks_mut(w.rows) {
                r.iter_mut().zip(b).for_each(|(y, b)| *y += b);
            }
        }
        out
    }

    fn rope(
        &self,
        x: &mut Act,
        n_head: usize,
        hd: usize,
        pos0: usize,
        theta: f32,
        style: RopeStyle,
        seq: usize,
    ) {
        rotate(x, n_head, hd, pos0, theta, style, seq, false);
    }

    fn attention(
        &self,
        q: &Act,
        k: &Act,
        v: &Act,
        n_head: usize,
        n_kv: usize,
        hd: usize,
        seq: usize,
    ) -> Act {
        let seq = checked_seq(q.rows, seq);
        if seq == q.rows {
            return attention_seq(q, k, v, n_head, n_kv, hd);
        }
        // Independent sequences: each attends within itself (copies are cheap next to t²·hd).
        let rows = |a: &Act, s: usize| Act {
            rows: seq,
            cols: a.cols,
            data: a.data[s * seq * a.cols..(s + 1) * seq * a.cols].to_vec(),
        };
        let mut out = Act::zeros(q.rows, n_head * hd);
        for (s, o) in out.data.chunks_mut(seq * n_head * hd).enumerate() {
            let part = attention_seq(&rows(q, s), &rows(k, s), &rows(v, s), n_head, n_kv, hd);
            o.copy_from_slice(&part.data);
        }
        out
    }

    fn silu_mul(&self, gate: &mut Act, up: &Act) {
        for (g, &u) in gate.data.iter_mut().zip(&up.data) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
    }

    fn add(&self, x: &mut Act, y: &Act) {
        x.data.iter_mut().zip(&y.data).for_each(|(a, b)| *a += b);
    }

    fn gelu(&self, x: &mut Act) {
        x.data.iter_mut().for_each(|v| *v = gelu_tanh(*v));
    }

    fn relu(&self, x: &mut Act) {
        x.data.iter_mut().for_each(|v| *v = v.max(0.0));
    }

    fn slice_cols(&self, x: &Act, from: usize, width: usize) -> Act {
        // A range past the last column is a caller bug (see `check_vector`): a message in debug
        // builds; in release the columns that exist are copied and the rest stay 0.
        let end = from.saturating_add(width);
        debug_assert!(
            end <= x.cols,
            "slice_cols: columns {from}..{end} of {}",
            x.cols
        );
        let (start, stop) = (from.min(x.cols), end.min(x.cols));
        let mut out = Act::zeros(x.rows, width);
        let rows = out
            .data
            .chunks_mut(width.max(1))
            .zip(x.data.chunks(x.cols.max(1)));
        for (o, r) in rows {
            o[..stop - start].copy_from_slice(&r[start..stop]);
        }
        out
    }

    fn fake_quant_act(&self, x: &mut Act, spec: &ActQuantSpec) -> Result<()> {
        act::fake_quant(&mut x.data, x.cols, spec)
    }

    fn tender_act(
        &self,
        x: &mut Act,
        spec: &TenderSpec,
        fixed: Option<&[TenderChunk]>,
        seq: usize,
    ) -> Result<()> {
        tender::fake_quant(&mut x.data, x.cols, seq, spec, fixed)
    }

    fn score(
        &self,
        x: &Act,
        head: &Mat,
        from: usize,
        targets: &[u32],
        reference: Option<&LogProbs>,
        keep: bool,
    ) -> Result<(Vec<TokenScore>, Option<LogProbs>)> {
        let vocab = head.rows;
        if from + targets.len() > x.rows {
            return Err(Error::config(
                "score",
                format!(
                    "rows {from}+{} exceed the window of {}",
                    targets.len(),
                    x.rows
                ),
            ));
        }
        if let Some(r) = reference {
            if r.vocab != vocab || r.data.len() != targets.len() * vocab {
                return Err(Error::config(
                    "reference",
                    "reference log-probs do not match this window",
                ));
            }
        }
        let mut scores = Vec::with_capacity(targets.len());
        let mut kept = if keep {
            Vec::with_capacity(targets.len() * vocab)
        } else {
            Vec::new()
        };
        // Chunks of rows bound the logits buffer (64 × 49152 floats = 12.6 MB).
        const CHUNK: usize = 64;
        for c0 in (0..targets.len()).step_by(CHUNK) {
            let n = CHUNK.min(targets.len() - c0);
            let mut lp = self.logits(x, head, from + c0, n);
            for (j, row) in lp.chunks_mut(vocab).enumerate() {
                log_softmax(row);
                let tgt = targets[c0 + j] as usize;
                let nll = -(*row.get(tgt).ok_or_else(|| {
                    Error::config("target", format!("token {tgt} ≥ vocab {vocab}"))
                })?) as f64;
                let am = argmax(row);
                let mut s = TokenScore {
                    nll,
                    kl: 0.0,
                    top1_agree: true,
                    argmax: am,
                };
                if let Some(r) = reference {
                    let rr = &r.data[(c0 + j) * vocab..(c0 + j + 1) * vocab];
                    s.kl = rr
                        .iter()
                        .zip(row.iter())
                        .map(|(&p, &q)| (p as f64).exp() * (p as f64 - q as f64))
                        .sum::<f64>()
                        .max(0.0);
                    s.top1_agree = argmax(rr) == am;
                }
                scores.push(s);
            }
            if keep {
                kept.extend_from_slice(&lp);
            }
        }
        Ok((scores, keep.then_some(LogProbs { vocab, data: kept })))
    }

    async fn read_scores(&self, pending: Vec<TokenScore>) -> Result<Vec<TokenScore>> {
        Ok(pending)
    }

    fn logits_row(&self, x: &Act, head: &Mat, row: usize) -> Result<Vec<f32>> {
        if row >= x.rows {
            return Err(Error::config("row", format!("{row} ≥ {}", x.rows)));
        }
        Ok(self.logits(x, head, row, 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made model whose embedding table or head is BinaryMoS (no quantizer makes one) is
    /// refused by name when loaded, instead of gathering from a matrix that has no rows.
    #[test]
    fn a_binarymos_embedding_or_head_is_refused_by_name() {
        use crate::model::net::Model;
        let mut seed = 7u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            seed
        };
        let mos = |rows: usize, cols: usize, next: &mut dyn FnMut() -> u32| {
            let f = Format::BinaryMos { experts: 2 };
            QTensor::new(f, rows, cols, f.random(rows, cols, next).unwrap()).unwrap()
        };
        let mut m = crate::quant::testutil::tiny_model(2);
        let (v, d) = (m.token_embd.rows, m.token_embd.cols);
        m.token_embd = mos(v, d, &mut next);
        let e = Model::load(&Cpu, &m).err().expect("refused").to_string();
        assert!(e.contains("token_embd") && e.contains("BinaryMoS"), "{e}");
        let mut m = crate::quant::testutil::tiny_model(2);
        m.output = Some(mos(v, d, &mut next));
        let e = Model::load(&Cpu, &m).err().expect("refused").to_string();
        assert!(e.contains("output") && e.contains("BinaryMoS"), "{e}");
    }

    fn act(rows: usize, cols: usize, data: &[f32]) -> Act {
        Act {
            rows,
            cols,
            data: data.to_vec(),
        }
    }

    fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() <= tol, "{what}[{i}]: {g} vs {w}");
        }
    }

    /// By hand: [1, 2, 3, 4] has mean 2.5 and population variance 1.25, so
    /// y = (x − 2.5) / √1.25 = ±1.5/1.1180340, ±0.5/1.1180340.
    #[test]
    fn layernorm_by_hand() {
        let x = act(1, 4, &[1.0, 2.0, 3.0, 4.0]);
        let unit = [
            -1.3416407864998738,
            -0.4472135954999579,
            0.4472135954999579,
            1.3416407864998738,
        ];
        let y = Cpu.layernorm(&x, &vec![1.0; 4], Some(&vec![0.0; 4]), 0.0);
        assert_close(&y.data, &unit, 1e-6, "w=1 b=0");
        let y = Cpu.layernorm(&x, &vec![1.0; 4], None, 0.0);
        assert_close(&y.data, &unit, 1e-6, "no bias");
        // y·w + b, element by element.
        let (w, b) = (vec![1.0, 2.0, -1.0, 0.5], vec![0.0, 1.0, 0.0, -1.0]);
        let y = Cpu.layernorm(&x, &w, Some(&b), 0.0);
        let want = [
            -1.3416407864998738,
            0.10557280900008414,
            -0.4472135954999579,
            -0.3291796067500631,
        ];
        assert_close(&y.data, &want, 1e-6, "w, b");
        // eps enters as var + eps: 1.25 + 0.75 = 2, so y = (x − 2.5)/√2.
        let y = Cpu.layernorm(&x, &vec![1.0; 4], None, 0.75);
        let s = 2f64.sqrt();
        assert_close(
            &y.data,
            &[-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s],
            1e-6,
            "eps",
        );
        // A constant row has zero variance: eps keeps it finite and the output is the bias.
        let y = Cpu.layernorm(
            &act(1, 3, &[7.0; 3]),
            &vec![2.0; 3],
            Some(&vec![0.5; 3]),
            1e-5,
        );
        assert_eq!(y.data, vec![0.5; 3]);
    }

    /// Rows of 1000 ± 1 normalize like the same deviations around 0 (the mean is subtracted
    /// before squaring, so nothing cancels).
    #[test]
    fn layernorm_is_shift_invariant() {
        let dev: Vec<f32> = (0..77)
            .map(|i| ((i * 37 % 77) as f32 / 38.0) - 1.0)
            .collect();
        let far: Vec<f32> = dev.iter().map(|d| 1000.0 + d).collect();
        let w = vec![1.0; 77];
        let a = Cpu.layernorm(&act(1, 77, &dev), &w, None, 1e-5);
        // The shifted values are themselves rounded to f32 (ulp(1000) = 6e-5), which moves
        // each deviation by at most 3e-5 of a standard deviation of about 0.58.
        let b = Cpu.layernorm(&act(1, 77, &far), &w, None, 1e-5);
        let want: Vec<f64> = a.data.iter().map(|&v| v as f64).collect();
        assert_close(&b.data, &want, 1e-4, "1000 ± 1");
    }

    #[test]
    fn gelu_by_hand_and_finite_everywhere() {
        // 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))) at ±1: 0.8411919906…, −0.1588080094….
        assert!((gelu_tanh(1.0) as f64 - 0.8411919906082768).abs() < 1e-7);
        assert!((gelu_tanh(-1.0) as f64 + 0.15880800939172324).abs() < 1e-7);
        assert_eq!(gelu_tanh(0.0), 0.0);
        // Far tails: x itself, and zero (tanh is ±1 in f32 there); never NaN.
        for x in [30.0, 1e4, 1e30, f32::MAX] {
            assert_eq!(gelu_tanh(x), x, "gelu({x})");
            assert_eq!(gelu_tanh(-x), 0.0, "gelu({})", -x);
        }
        // The clamps change nothing but rounding: against the unclamped formula in f64.
        let exact = |x: f64| {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
        };
        for i in -1200..=1200 {
            let x = i as f32 / 100.0;
            let (g, e) = (gelu_tanh(x) as f64, exact(x as f64));
            assert!(
                (g - e).abs() <= 1e-6 * e.abs().max(1.0),
                "gelu({x}): {g} vs {e}"
            );
        }
        let mut a = act(1, 5, &[-1.0, 0.0, 1.0, 1e4, -1e4]);
        Cpu.gelu(&mut a);
        assert_eq!(a.data, [gelu_tanh(-1.0), 0.0, gelu_tanh(1.0), 1e4, 0.0]);
    }

    #[test]
    fn relu_by_hand() {
        let mut a = act(2, 3, &[-2.0, 0.0, 3.5, -1e-30, 1e-30, -0.0]);
        Cpu.relu(&mut a);
        assert_eq!(a.data, [0.0, 0.0, 3.5, 0.0, 1e-30, 0.0]);
    }

    #[test]
    fn slice_cols_by_hand() {
        let x = act(2, 5, &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        let y = Cpu.slice_cols(&x, 1, 3);
        assert_eq!(
            (y.rows, y.cols, y.data),
            (2, 3, vec![1.0, 2.0, 3.0, 6.0, 7.0, 8.0])
        );
        assert_eq!(Cpu.slice_cols(&x, 0, 5), x);
        assert_eq!(Cpu.slice_cols(&x, 4, 1).data, [4.0, 9.0]);
        assert_eq!(Cpu.slice_cols(&x, 5, 0), Act::zeros(2, 0));
    }

    /// Shape mismatches: a message in debug builds; in release, the documented degraded result
    /// (the trait's element-wise ops cannot return errors; see `checked_seq`).
    #[test]
    fn shape_mismatches_are_caller_bugs() {
        let x = act(2, 4, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let run = |f: &dyn Fn() -> Act| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let sliced = run(&|| Cpu.slice_cols(&x, 3, 2));
        let normed = run(&|| Cpu.layernorm(&x, &vec![1.0; 3], None, 1e-5));
        let biased = run(&|| Cpu.layernorm(&x, &vec![1.0; 4], Some(&vec![0.0; 5]), 1e-5));
        if cfg!(debug_assertions) {
            assert!(sliced.is_err() && normed.is_err() && biased.is_err());
        } else {
            let s = sliced.unwrap();
            assert_eq!((s.rows, s.cols, s.data), (2, 2, vec![4.0, 0.0, 8.0, 0.0]));
            let n = normed.unwrap();
            assert_eq!((n.rows, n.cols), (2, 4));
            assert_eq!((n.data[3], n.data[7]), (0.0, 0.0));
            assert_eq!(
                biased.unwrap().data,
                Cpu.layernorm(&x, &vec![1.0; 4], None, 1e-5).data
            );
        }
    }
}
