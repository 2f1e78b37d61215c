//! Tender's decomposed activation quantization (Lee et al., "Tender: Accelerating Large Language
//! Models via Tensor Decomposition and Runtime Requantization", arXiv 2406.12930, ISCA 2024;
//! docs/tender.md): the CPU reference of `Backend::tender_act` and of the integer product with
//! shift accumulation that `shaders/tender_matmul.wgsl` runs.
//!
//! The rows of an activation (tokens) are cut into chunks of `T` rows within each sequence. Per
//! chunk, for `k` groups and `b`-bit codes (`qmax = 2^(b−1) − 1`):
//!
//! 1. a per-channel bias `β_j = (max_t x_tj + min_t x_tj) / 2` is subtracted (and comes back
//!    exactly as `β·Ŵᵀ`, a float product the integer engine adds once per chunk);
//! 2. `a_j = max_t |x_tj − β_j|`, `tmax = max_j a_j`, thresholds `θ_i = tmax · 2^(i−(k−1))`;
//! 3. channel `j` joins group `g_j`: the smallest `i` with `a_j ≤ θ_i` (rounding up: nothing is
//!    clipped) or the largest with `θ_i ≤ a_j` (rounding down: the top of the channel clips, its
//!    small values get finer steps);
//! 4. `x̂_tj = β_j + clamp(round_half_even((x_tj − β_j) / s_{g_j}), ±qmax) · s_{g_j}` with
//!    `s_i = θ_i / qmax = 2^i · s_0` (exactly: scaling by a power of two commutes with rounding).
//!
//! Because the scales of consecutive groups differ by exactly 2, a row's product with a weight
//! row `ŵ = qw · sw` (symmetric, one scale per row) is
//! `Σ_j q_j s_{g_j} qw_j sw = s_0 · sw · Σ_i 2^i P_i` with the integer partial sums
//! `P_i = Σ_{g_j = i} q_j qw_j`; `acc ← 2·acc + P_i` from the largest group down gives
//! `Σ_i 2^i P_i` in integers, and one float multiply ends it (`shift_accumulate`).
//!
//! Chunks of a sequence longer than the calibrated positions reuse the last calibrated one
//! (static mode). Dynamic statistics come from the chunk's own rows, later tokens of the chunk
//! included, as a dynamic per-tensor scale does; a chunk of one row has `β` = the row and loses
//! nothing (docs/tender.md says why evaluation windows should be multiples of `T`).

use super::int::{Granularity, IntSpec};
use super::packed::unpack_code;
use super::{Format, QTensor};
use crate::{Error, Result};
use half::f16;
use serde::{Deserialize, Serialize};

/// Fewest and most groups (the paper's slider).
pub const MIN_GROUPS: u8 = 2;
pub const MAX_GROUPS: u8 = 16;
/// Chunk lengths are multiples of this many rows: calibration keeps per-channel max and min per
/// block of `CHUNK_STEP` positions (`SiteStats::pos_max`), from which any chunk is assembled.
pub const CHUNK_STEP: usize = 64;
/// Longest chunk.
pub const MAX_CHUNK: usize = 8192;
/// The paper's chunk.
pub const DEFAULT_CHUNK: usize = 256;
/// Tender's activation widths: 4 and 8 bits (INT4 and INT8 engines).
pub const BITS: [u8; 2] = [4, 8];

/// How a channel's max picks its group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenderRound {
    /// The smallest group whose threshold covers the channel's max: nothing clips.
    #[default]
    Up,
    /// The largest group whose threshold is below the channel's max: finer steps, the top clips.
    Down,
}

/// Tender's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenderSpec {
    pub bits: u8,
    /// k, the number of groups (2..=16).
    pub groups: u8,
    /// T, rows per chunk (a multiple of `CHUNK_STEP`).
    pub chunk: usize,
    pub round: TenderRound,
}

impl TenderSpec {
    pub fn check(&self) -> Result<()> {
        if !BITS.contains(&self.bits) {
            return Err(Error::config(
                "act.bits",
                format!("Tender quantizes to 4 or 8 bits, not {}", self.bits),
            ));
        }
        if !(MIN_GROUPS..=MAX_GROUPS).contains(&self.groups) {
            return Err(Error::config(
                "act.tender.groups",
                format!("{} is outside {MIN_GROUPS}..={MAX_GROUPS}", self.groups),
            ));
        }
        if self.chunk == 0 || self.chunk > MAX_CHUNK || !self.chunk.is_multiple_of(CHUNK_STEP) {
            return Err(Error::config(
                "act.tender.chunk",
                format!(
                    "{} is not a multiple of {CHUNK_STEP} in {CHUNK_STEP}..={MAX_CHUNK}",
                    self.chunk
                ),
            ));
        }
        Ok(())
    }

    pub fn qmax(&self) -> f32 {
        super::act::qmax(self.bits)
    }

    /// `θ_i = tmax · 2^(i−(k−1))`, exact (a power-of-two scaling).
    pub fn threshold(&self, tmax: f32, i: u8) -> f32 {
        tmax * pow2(i as i32 - (self.groups as i32 - 1))
    }

    /// `s_i = θ_i / qmax`; `s_i = 2^i · s_0` exactly.
    pub fn scale(&self, tmax: f32, i: u8) -> f32 {
        self.threshold(tmax, i) / self.qmax()
    }

    /// The group of a channel whose largest deviation from its bias is `a`.
    pub fn group_of(&self, a: f32, tmax: f32) -> u8 {
        let k = self.groups;
        match self.round {
            TenderRound::Up => (0..k)
                .find(|&i| a <= self.threshold(tmax, i))
                .unwrap_or(k - 1),
            TenderRound::Down => (0..k)
                .rev()
                .find(|&i| self.threshold(tmax, i) <= a)
                .unwrap_or(0),
        }
    }
}

/// `2^e` as f32, exactly, for the exponents Tender uses (−15..=15).
fn pow2(e: i32) -> f32 {
    f32::from_bits(((127 + e) as u32) << 23)
}

/// One chunk's decomposition: a bias and a group per channel, and the largest deviation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenderChunk {
    pub bias: Vec<f32>,
    pub tmax: f32,
    pub group: Vec<u8>,
}

impl TenderChunk {
    /// From per-channel maxima and minima (calibration's, or a chunk's own rows).
    pub fn from_range(max: &[f32], min: &[f32], spec: &TenderSpec) -> Result<TenderChunk> {
        if max.len() != min.len() || max.is_empty() {
            return Err(Error::config(
                "tender",
                format!("{} maxima for {} minima", max.len(), min.len()),
            ));
        }
        let bias: Vec<f32> = max.iter().zip(min).map(|(&h, &l)| (h + l) / 2.0).collect();
        let dev: Vec<f32> = max
            .iter()
            .zip(min)
            .zip(&bias)
            .map(|((&h, &l), &b)| (h - b).max(b - l))
            .collect();
        if let Some(j) = dev.iter().position(|d| !d.is_finite()) {
            return Err(Error::config(
                "tender",
                format!("channel {j} has a range that is not finite"),
            ));
        }
        let tmax = dev.iter().fold(0f32, |m, &d| m.max(d));
        let group = dev.iter().map(|&a| spec.group_of(a, tmax)).collect();
        Ok(TenderChunk { bias, tmax, group })
    }

    /// The dynamic decomposition of `rows` (row-major, `cols` wide).
    pub fn from_rows(rows: &[f32], cols: usize, spec: &TenderSpec) -> Result<TenderChunk> {
        let mut max = vec![f32::NEG_INFINITY; cols];
        let mut min = vec![f32::INFINITY; cols];
        for r in rows.chunks_exact(cols) {
            for (j, &v) in r.iter().enumerate() {
                max[j] = max[j].max(v);
                min[j] = min[j].min(v);
            }
        }
        TenderChunk::from_range(&max, &min, spec)
    }

    /// Channels in each group, `0..k`.
    pub fn group_sizes(&self, k: u8) -> Vec<usize> {
        let mut n = vec![0; k as usize];
        self.group.iter().for_each(|&g| n[g as usize] += 1);
        n
    }

    /// Refuse a decomposition that does not fit `cols` channels and `spec` (sizes, a finite
    /// non-negative tmax and finite biases, groups below k).
    pub fn check(&self, cols: usize, spec: &TenderSpec) -> Result<()> {
        if self.bias.len() != cols || self.group.len() != cols {
            return Err(Error::config(
                "act.tender",
                format!(
                    "a chunk of {} biases and {} groups for {cols} channels",
                    self.bias.len(),
                    self.group.len()
                ),
            ));
        }
        if !self.tmax.is_finite() || self.tmax < 0.0 || self.bias.iter().any(|b| !b.is_finite()) {
            return Err(Error::config(
                "act.tender",
                "a chunk with a non-finite value",
            ));
        }
        if self.group.iter().any(|&g| g >= spec.groups) {
            return Err(Error::config(
                "act.tender",
                format!("a group index ≥ {} groups", spec.groups),
            ));
        }
        Ok(())
    }
}

/// How the rows of an activation split into chunks: `(chunk position within its sequence, row
/// range)` for each chunk, sequences of `seq` rows.
pub fn chunks(rows: usize, seq: usize, t: usize) -> Result<Vec<(usize, std::ops::Range<usize>)>> {
    if seq == 0 || t == 0 || !rows.is_multiple_of(seq) {
        return Err(Error::config(
            "tender",
            format!("{rows} rows do not split into sequences of {seq}"),
        ));
    }
    let mut out = Vec::new();
    for s0 in (0..rows).step_by(seq) {
        for (p, c0) in (0..seq).step_by(t).enumerate() {
            out.push((p, s0 + c0..s0 + (c0 + t).min(seq)));
        }
    }
    Ok(out)
}

/// Activations as Tender's integer codes: `codes[t · cols + j]`, each chunk's decomposition,
/// and the chunk of every row.
#[derive(Clone, Debug, PartialEq)]
pub struct TenderCodes {
    pub spec: TenderSpec,
    pub rows: usize,
    pub cols: usize,
    pub codes: Vec<i8>,
    pub chunks: Vec<TenderChunk>,
    pub chunk_of_row: Vec<u32>,
}

impl TenderCodes {
    /// `x̂ = β + q · s_g` (what `fake_quant` stores).
    pub fn values(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.codes.len()];
        for t in 0..self.rows {
            let c = &self.chunks[self.chunk_of_row[t] as usize];
            for j in 0..self.cols {
                let s = self.spec.scale(c.tmax, c.group[j]);
                out[t * self.cols + j] = c.bias[j] + self.codes[t * self.cols + j] as f32 * s;
            }
        }
        out
    }
}

/// Quantize `x` (rows of `cols`, independent sequences of `seq` rows) to Tender's codes: each
/// chunk decomposed from its own rows (`fixed` None) or with the calibrated decomposition of its
/// position (`fixed[p]`, the last one past the end).
pub fn quantize(
    x: &[f32],
    cols: usize,
    seq: usize,
    spec: &TenderSpec,
    fixed: Option<&[TenderChunk]>,
) -> Result<TenderCodes> {
    spec.check()?;
    if cols == 0 || !x.len().is_multiple_of(cols) {
        return Err(Error::config(
            "activation",
            format!("{} values are not rows of {cols}", x.len()),
        ));
    }
    if fixed.is_some_and(|f| f.is_empty()) {
        return Err(Error::config("act.tender", "no calibrated chunk"));
    }
    let rows = x.len() / cols;
    let qmax = spec.qmax();
    let mut codes = vec![0i8; x.len()];
    let mut out_chunks = Vec::new();
    let mut chunk_of_row = vec![0u32; rows];
    for (p, r) in chunks(rows, seq, spec.chunk)? {
        let c = match fixed {
            Some(f) => f[p.min(f.len() - 1)].clone(),
            None => TenderChunk::from_rows(&x[r.start * cols..r.end * cols], cols, spec)?,
        };
        c.check(cols, spec)?;
        let scales: Vec<f32> = (0..spec.groups).map(|i| spec.scale(c.tmax, i)).collect();
        for t in r {
            chunk_of_row[t] = out_chunks.len() as u32;
            for j in 0..cols {
                let s = scales[c.group[j] as usize];
                let v = x[t * cols + j] - c.bias[j];
                // |code| ≤ qmax ≤ 127: the cast is exact.
                codes[t * cols + j] = if s == 0.0 {
                    0
                } else {
                    (v / s).round_ties_even().clamp(-qmax, qmax) as i8
                };
            }
        }
        out_chunks.push(c);
    }
    Ok(TenderCodes {
        spec: *spec,
        rows,
        cols,
        codes,
        chunks: out_chunks,
        chunk_of_row,
    })
}

/// Fake-quantize `x` in place: `quantize` then `values`.
pub fn fake_quant(
    x: &mut [f32],
    cols: usize,
    seq: usize,
    spec: &TenderSpec,
    fixed: Option<&[TenderChunk]>,
) -> Result<()> {
    let q = quantize(x, cols, seq, spec, fixed)?;
    x.copy_from_slice(&q.values());
    Ok(())
}

/// `Σ_i 2^i · P_i` by Tender's runtime requantization: from the largest group down,
/// `acc ← 2·acc + P_i` (a shift and an add; `partials[i]` is group `i`'s integer sum).
pub fn shift_accumulate(partials: &[i64]) -> i64 {
    partials.iter().rev().fold(0i64, |acc, &p| (acc << 1) + p)
}

/// The per-row weight codes and scales of a symmetric `Int` weight with one scale per row (or
/// per tensor): what Tender's integer engine multiplies. Anything else is refused with why.
pub fn weight_codes(w: &QTensor) -> Result<(Vec<i32>, Vec<f32>)> {
    let spec = match w.format {
        Format::Int(
            s @ IntSpec {
                sym: true,
                bits: 2..=8,
                gran: Granularity::PerRow | Granularity::PerTensor,
            },
        ) if w.addons.is_empty() => s,
        f => {
            return Err(Error::unsupported(
                "tender",
                "integer product",
                format!(
                "weight format {} (needs symmetric int, 2–8 bits, one scale per row, no add-ons)",
                f.name()
            ),
            ))
        }
    };
    let (rows, cols) = (w.rows, w.cols);
    let st = w.format.storage(rows, cols)?;
    let (codes, scales) = w.data.split_at(st.codes);
    let half = 1i32 << (spec.bits - 1);
    let qw = (0..rows * cols)
        .map(|i| unpack_code(codes, i, spec.bits) as i32 - half)
        .collect();
    let glen = spec.gran.group_len(rows, cols, "weight")?;
    let sw = (0..rows)
        .map(|j| {
            let g = j * cols / glen;
            f16::from_le_bytes([scales[2 * g], scales[2 * g + 1]]).to_f32()
        })
        .collect();
    Ok((qw, sw))
}

/// The integer product: for each row `t` (chunk `c`) and weight row `j`, the group partial sums
/// `P_i` in integers, `acc = shift_accumulate(P)`, then `y = acc · (s_0 · sw_j) + (β_c·Ŵᵀ)_j
/// (+ bias_j)`, the bias term in f64 from the dequantized weight. Returns `y` and, for tests,
/// every `acc`.
pub fn tender_linear(
    a: &TenderCodes,
    w: &QTensor,
    bias: Option<&[f32]>,
) -> Result<(Vec<f32>, Vec<i64>)> {
    if a.cols != w.cols {
        return Err(Error::config(
            "tender_linear",
            format!("{} columns against a weight of {}", a.cols, w.cols),
        ));
    }
    if bias.is_some_and(|b| b.len() != w.rows) {
        return Err(Error::config(
            "bias",
            format!("{} values for {} rows", bias.map_or(0, |b| b.len()), w.rows),
        ));
    }
    let (qw, sw) = weight_codes(w)?;
    let (n, d, k) = (w.rows, w.cols, a.spec.groups as usize);
    // β·Ŵᵀ per chunk, in f64 from the dequantized weight (ŵ = qw · sw).
    let beta_w: Vec<Vec<f64>> = a
        .chunks
        .iter()
        .map(|c| {
            (0..n)
                .map(|j| {
                    (0..d)
                        .map(|i| c.bias[i] as f64 * (qw[j * d + i] as f32 * sw[j]) as f64)
                        .sum()
                })
                .collect()
        })
        .collect();
    let mut y = vec![0f32; a.rows * n];
    let mut accs = vec![0i64; a.rows * n];
    let mut partials = vec![0i64; k];
    for t in 0..a.rows {
        let ci = a.chunk_of_row[t] as usize;
        let c = &a.chunks[ci];
        let s0 = a.spec.scale(c.tmax, 0);
        let xa = &a.codes[t * d..(t + 1) * d];
        for j in 0..n {
            partials.iter_mut().for_each(|p| *p = 0);
            for (i, (&q, &g)) in xa.iter().zip(&c.group).enumerate() {
                partials[g as usize] += q as i64 * qw[j * d + i] as i64;
            }
            let acc = shift_accumulate(&partials);
            accs[t * n + j] = acc;
            y[t * n + j] = (acc as f64 * (s0 * sw[j]) as f64
                + beta_w[ci][j]
                + bias.map_or(0.0, |b| b[j] as f64)) as f32;
        }
    }
    Ok((y, accs))
}

#[cfg(test)]
mod tests;
