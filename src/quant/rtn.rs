//! Uniform round-to-nearest (RTN) weight quantization, as restated in docs/methods.md §1 (the
//! baseline of every paper QuantLab follows; ZeroQuant-V2, arXiv 2303.08302, §3 sweeps it).
//!
//! A weight matrix is cut into groups (the whole tensor, one output row, or `g` consecutive
//! input weights of a row); each group gets one scale `s` (and, when asymmetric, one integer zero
//! point `z`), and every weight becomes the nearest code on that grid:
//!
//! * symmetric, `b ≥ 2`: `s = max|w| / qmax`, `qmax = 2^(b-1) - 1`, `q = clamp(round(w/s), ±qmax)`,
//!   stored as code `q + 2^(b-1)`;
//! * symmetric, `b = 1`: sign binarization, `s = mean|w|` (the L2-optimal scale for `±s`), code 1
//!   for `w ≥ 0`;
//! * asymmetric: `s = (max - min) / (2^b - 1)`, `z = clamp(round(-min/s), 0, 2^b - 1)`,
//!   code `clamp(round(w/s) + z, 0, 2^b - 1)`. The range is first widened to contain 0 (as GPTQ's
//!   reference quantizer does) because a `b`-bit zero point can only sit inside the code range;
//!   without that a group of all-positive weights would be clamped to a grid that misses them.
//!
//! Details that make the result exact and reproducible:
//! * The scale is rounded *up* to f16 (what the format table stores) before any code is chosen,
//!   so the codes are the nearest ones for the scale dequantization will use, and the grid still
//!   spans the group's range: every weight lies within half a step of its code (round-to-nearest
//!   f16 could shrink the grid by up to `(2^b - 1)·2^-11` steps and clamp the extremes). A scale
//!   too small for f16 thus becomes the smallest subnormal, not 0; one too large is an error.
//! * Rounding is half-to-even (`f32::round_ties_even`), computed with the `1.5·2^23` trick after
//!   clamping, which is exact for the small magnitudes involved and needs no SSE4.1.
//! * Clip search tries `CLIP_STEPS` shrink factors from 1 down to `CLIP_MIN` (factor 1 first, and
//!   a later factor wins only with a strictly lower squared error, so it is never worse than no
//!   clipping). Asymmetric groups shrink min and max together. 1-bit symmetric has nothing to clip.
//! * Natively rows run in parallel with rayon; on wasm serially. Every reduction happens in a
//!   fixed order (within a row serially, across rows in row order), so the bytes are identical.

use crate::format::{check_bits, Granularity, IntSpec, QTensor};
use crate::{Error, Result};
use half::f16;
use serde::{Deserialize, Serialize};

/// Options of the RTN quantizer beyond the storage format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RtnOptions {
    /// Search a shrink factor for each group's range that minimises the squared error.
    pub clip_search: bool,
}

/// Number of range-shrink factors the clip search tries (factor 1 included).
pub const CLIP_STEPS: usize = 20;
/// Smallest shrink factor the clip search tries.
pub const CLIP_MIN: f32 = 0.5;

/// The shrink factors of the clip search, `1` first, evenly spaced down to `CLIP_MIN`.
pub fn clip_factors() -> [f32; CLIP_STEPS] {
    let mut f = [1.0f32; CLIP_STEPS];
    for (i, v) in f.iter_mut().enumerate() {
        *v = 1.0 - (1.0 - CLIP_MIN) * i as f32 / (CLIP_STEPS - 1) as f32;
    }
    f
}

/// Round half to even for `|x| ≤ 2^22`: adding and subtracting `1.5·2^23` leaves the integer the
/// FPU's default rounding mode picked. Callers clamp to at most ±255 first.
#[inline(always)]
fn round_even_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// Range statistics of one group.
#[derive(Clone, Copy, Debug)]
struct Stats {
    min: f32,
    max: f32,
    /// `mean|w|`, only computed for 1-bit symmetric.
    abs_mean: f64,
}

fn stats(w: &[f32], want_abs_mean: bool) -> Stats {
    // Eight independent lanes so the loop vectorises; min/max are exact, so order is irrelevant.
    let mut lo = [f32::INFINITY; 8];
    let mut hi = [f32::NEG_INFINITY; 8];
    let mut chunks = w.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            lo[k] = lo[k].min(c[k]);
            hi[k] = hi[k].max(c[k]);
        }
    }
    let mut min = lo.iter().fold(f32::INFINITY, |a, &b| a.min(b));
    let mut max = hi.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for &x in chunks.remainder() {
        min = min.min(x);
        max = max.max(x);
    }
    let abs_mean = if want_abs_mean && !w.is_empty() {
        w.iter().map(|&x| x.abs() as f64).sum::<f64>() / w.len() as f64
    } else {
        0.0
    };
    Stats { min, max, abs_mean }
}

/// One group's grid: `value = q · s` for integer `q` in `[q_lo, q_hi]`, stored as `q + offset`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Grid {
    /// The scale, already rounded to f16.
    s: f32,
    q_lo: f32,
    q_hi: f32,
    /// Code of `q = 0`: `2^(b-1)` symmetric, the zero point `z` asymmetric.
    offset: u8,
    /// Sign binarization (1-bit symmetric): code 1 means `+s`, code 0 means `-s`.
    sign: bool,
}

/// Round a scale *up* to the next f16 (what the format stores); see the module comment.
fn f16_scale(s: f32, name: &str) -> Result<f32> {
    let h = f16_ceil(s);
    if !h.is_finite() {
        return Err(Error::config(
            "scale",
            format!(
                "{name}: scale {s:e} exceeds the f16 range (max {:e}); the weights are too large",
                f16::MAX.to_f32()
            ),
        ));
    }
    Ok(h)
}

/// The smallest f16 value `≥ s` (for finite `s ≥ 0`), as f32; infinity past `f16::MAX`.
pub(crate) fn f16_ceil(s: f32) -> f32 {
    let h = f16::from_f32(s);
    if h.to_f32() >= s {
        h.to_f32()
    } else {
        // Positive f16 values are ordered like their bit patterns, so +1 is the next one up.
        f16::from_bits(h.to_bits() + 1).to_f32()
    }
}

fn grid(st: &Stats, factor: f32, spec: IntSpec, name: &str) -> Result<Grid> {
    let b = spec.bits;
    let levels = ((1u32 << b) - 1) as f32;
    if spec.sym {
        let half = 1u8 << (b - 1);
        if b == 1 {
            let s = f16_scale(st.abs_mean as f32, name)?;
            return Ok(Grid {
                s,
                q_lo: 0.0,
                q_hi: 0.0,
                offset: 0,
                sign: true,
            });
        }
        let qmax = (half - 1) as f32;
        let amax = st.min.abs().max(st.max.abs()) * factor;
        let s = f16_scale(amax / qmax, name)?;
        Ok(Grid {
            s,
            q_lo: -qmax,
            q_hi: qmax,
            offset: half,
            sign: false,
        })
    } else {
        let lo = st.min.min(0.0) * factor;
        let hi = st.max.max(0.0) * factor;
        let s = f16_scale((hi - lo) / levels, name)?;
        let z = if s > 0.0 {
            round_even_small((-lo / s).clamp(0.0, levels))
        } else {
            0.0
        };
        Ok(Grid {
            s,
            q_lo: -z,
            q_hi: levels - z,
            offset: z as u8,
            sign: false,
        })
    }
}

impl Grid {
    /// The integer `q` for `x` (as f32); 0 when the scale is 0 (an all-zero group).
    #[inline(always)]
    fn q(&self, x: f32) -> f32 {
        if self.s > 0.0 {
            round_even_small((x / self.s).clamp(self.q_lo, self.q_hi))
        } else {
            0.0
        }
    }

    fn encode(&self, w: &[f32], codes: &mut [u8]) {
        if self.sign {
            for (c, &x) in codes.iter_mut().zip(w) {
                *c = u8::from(x >= 0.0);
            }
            return;
        }
        let inv_zero = self.s <= 0.0;
        for (c, &x) in codes.iter_mut().zip(w) {
            let q = if inv_zero {
                0.0
            } else {
                round_even_small((x / self.s).clamp(self.q_lo, self.q_hi))
            };
            // q + offset lies in [0, 2^b - 1] by the clamp.
            *c = (q as i32 + self.offset as i32) as u8;
        }
    }

    /// Squared reconstruction error, summed in eight lanes (fixed order, so deterministic).
    fn sq_err(&self, w: &[f32]) -> f64 {
        let mut acc = [0f32; 8];
        let mut chunks = w.chunks_exact(8);
        for c in &mut chunks {
            for k in 0..8 {
                let d = c[k] - self.value(c[k]);
                acc[k] += d * d;
            }
        }
        let mut tail = 0f32;
        for &x in chunks.remainder() {
            let d = x - self.value(x);
            tail += d * d;
        }
        acc.iter().map(|&a| a as f64).sum::<f64>() + tail as f64
    }

    #[inline(always)]
    fn value(&self, x: f32) -> f32 {
        if self.sign {
            if x >= 0.0 {
                self.s
            } else {
                -self.s
            }
        } else {
            self.q(x) * self.s
        }
    }
}

/// Pick the grid for one group: the plain range, or the clip-search winner.
fn choose_grid(w: &[f32], spec: IntSpec, opts: &RtnOptions, name: &str) -> Result<Grid> {
    let one_bit = spec.sym && spec.bits == 1;
    let st = stats(w, one_bit);
    let base = grid(&st, 1.0, spec, name)?;
    if !opts.clip_search || one_bit {
        return Ok(base);
    }
    let mut best = base;
    let mut best_err = base.sq_err(w);
    for &f in &clip_factors()[1..] {
        let g = grid(&st, f, spec, name)?;
        let e = g.sq_err(w);
        if e < best_err {
            best = g;
            best_err = e;
        }
    }
    Ok(best)
}

/// One row's share of the outputs.
struct RowJob<'a> {
    w: &'a [f32],
    codes: &'a mut [u8],
    scales: &'a mut [f32],
    zeros: &'a mut [u8],
}

/// The first error in row order, so parallel and serial runs report the same one.
fn first_err(results: Vec<Result<()>>) -> Result<()> {
    results.into_iter().collect()
}

/// Quantize a row-major `rows × cols` matrix `w` to the `Int` format `spec`.
///
/// `name` (the tensor's canonical name) appears in every error. Errors: bits outside 1..=8, a
/// group size that does not divide `cols`, `w.len() != rows·cols`, an empty shape, a non-finite
/// weight, or a scale beyond the f16 range.
pub fn quantize(
    w: &[f32],
    rows: usize,
    cols: usize,
    spec: IntSpec,
    opts: &RtnOptions,
    name: &str,
) -> Result<QTensor> {
    quantize_with(w, rows, cols, spec, opts, None, name)
}

/// `quantize` with an importance per input column (`imp`, `cols` long; llama.cpp's imatrix):
/// each group's clip factor minimises `Σ imp_j (w_j − ŵ_j)²` (factor 1 wins ties, so the error
/// under that measure is never above plain RTN's). Per-tensor granularity is refused (one range
/// for the whole tensor leaves nothing per column to weigh).
pub fn quantize_weighted(
    w: &[f32],
    rows: usize,
    cols: usize,
    spec: IntSpec,
    imp: &[f32],
    name: &str,
) -> Result<QTensor> {
    if imp.len() != cols || imp.iter().any(|v| !v.is_finite() || *v < 0.0) {
        return Err(Error::config(
            "imatrix",
            format!(
                "{name}: {} importances (each finite, ≥ 0) for {cols} columns",
                imp.len()
            ),
        ));
    }
    if spec.gran == Granularity::PerTensor {
        return Err(Error::config(
            "imatrix",
            format!("{name}: importance-weighted RTN needs per-row or group granularity"),
        ));
    }
    quantize_with(w, rows, cols, spec, &RtnOptions::default(), Some(imp), name)
}

fn quantize_with(
    w: &[f32],
    rows: usize,
    cols: usize,
    spec: IntSpec,
    opts: &RtnOptions,
    imp: Option<&[f32]>,
    name: &str,
) -> Result<QTensor> {
    if check_bits(spec.bits).is_err() {
        return Err(Error::config(
            "bits",
            format!("{name}: {} bits is outside 1..=8", spec.bits),
        ));
    }
    if rows == 0 || cols == 0 {
        return Err(Error::config(
            "shape",
            format!("{name}: empty tensor {rows}×{cols}"),
        ));
    }
    let n = rows
        .checked_mul(cols)
        .filter(|&n| n == w.len())
        .ok_or_else(|| {
            Error::config(
                "shape",
                format!("{name}: {} values for a {rows}×{cols} tensor", w.len()),
            )
        })?;
    let g = spec.gran.group_len(rows, cols, name)?;
    check_finite(w, cols, name)?;

    let groups = n / g;
    let mut codes = vec![0u8; n];
    let mut scales = vec![0f32; groups];
    let mut zeros = vec![0u8; groups];

    if spec.gran == Granularity::PerTensor {
        let grid = per_tensor_grid(w, cols, spec, opts, name)?;
        scales[0] = grid.s;
        zeros[0] = grid.offset;
        let jobs: Vec<(&[f32], &mut [u8])> = w.chunks(cols).zip(codes.chunks_mut(cols)).collect();
        crate::par::map(jobs, |(wr, cr)| grid.encode(wr, cr));
    } else {
        let per_row = cols / g;
        let jobs: Vec<RowJob<'_>> = w
            .chunks(cols)
            .zip(codes.chunks_mut(cols))
            .zip(scales.chunks_mut(per_row))
            .zip(zeros.chunks_mut(per_row))
            .map(|(((w, codes), scales), zeros)| RowJob {
                w,
                codes,
                scales,
                zeros,
            })
            .collect();
        first_err(crate::par::map(jobs, |job| {
            let groups = job.w.chunks(g).zip(job.codes.chunks_mut(g));
            for (k, (wg, cg)) in groups.enumerate() {
                let grid = match imp {
                    Some(m) => {
                        GroupGrid::choose_weighted(wg, &m[k * g..(k + 1) * g], spec, name)?.0
                    }
                    None => choose_grid(wg, spec, opts, name)?,
                };
                grid.encode(wg, cg);
                job.scales[k] = grid.s;
                job.zeros[k] = grid.offset;
            }
            Ok(())
        }))?;
    }

    let zeros: &[u8] = if spec.sym { &[] } else { &zeros };
    QTensor::from_int_parts(spec, rows, cols, &codes, &scales, zeros)
}

/// The single grid of a per-tensor quantization. Statistics are one serial pass; the clip search
/// sums per-row errors (computed in parallel) in row order.
fn per_tensor_grid(
    w: &[f32],
    cols: usize,
    spec: IntSpec,
    opts: &RtnOptions,
    name: &str,
) -> Result<Grid> {
    let one_bit = spec.sym && spec.bits == 1;
    let st = stats(w, one_bit);
    let base = grid(&st, 1.0, spec, name)?;
    if !opts.clip_search || one_bit {
        return Ok(base);
    }
    let total_err = |g: Grid| -> f64 {
        let rows: Vec<&[f32]> = w.chunks(cols).collect();
        crate::par::map(rows, |r| g.sq_err(r)).into_iter().sum()
    };
    let mut best = base;
    let mut best_err = total_err(base);
    for &f in &clip_factors()[1..] {
        let g = grid(&st, f, spec, name)?;
        let e = total_err(g);
        if e < best_err {
            best = g;
            best_err = e;
        }
    }
    Ok(best)
}

/// One group's RTN grid, for quantizers that choose the grid once and then quantize weights one
/// at a time while changing the ones not yet quantized (GPTQ's error feedback).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct GroupGrid(Grid);

impl GroupGrid {
    /// The grid RTN would use for the group `w` (clip search included when asked).
    pub(crate) fn choose(w: &[f32], spec: IntSpec, opts: &RtnOptions, name: &str) -> Result<Self> {
        choose_grid(w, spec, opts, name).map(GroupGrid)
    }
    /// The grid whose clip factor (of `clip_factors()`) minimises the importance-weighted
    /// squared error `Σ imp_j (w_j − ŵ_j)²` (AWQ's clip search on `diag(XᵀX)`); factor 1 wins
    /// ties, so this is never worse than no clipping under that measure.
    pub(crate) fn choose_weighted(
        w: &[f32],
        imp: &[f32],
        spec: IntSpec,
        name: &str,
    ) -> Result<Self> {
        let one_bit = spec.sym && spec.bits == 1;
        let st = stats(w, one_bit);
        let base = grid(&st, 1.0, spec, name)?;
        if one_bit {
            return Ok(GroupGrid(base));
        }
        let err = |g: &Grid| -> f64 {
            w.iter()
                .zip(imp)
                .map(|(&x, &m)| {
                    let d = (x - g.value(x)) as f64;
                    m as f64 * d * d
                })
                .sum()
        };
        let (mut best, mut best_err) = (base, err(&base));
        for &f in &clip_factors()[1..] {
            let g = grid(&st, f, spec, name)?;
            let e = err(&g);
            if e < best_err {
                best = g;
                best_err = e;
            }
        }
        Ok(GroupGrid(best))
    }
    /// The stored code of `x`.
    #[inline]
    pub(crate) fn code(&self, x: f32) -> u8 {
        let mut c = [0u8];
        self.0.encode(&[x], &mut c);
        c[0]
    }
    /// What `x` dequantizes to.
    #[inline]
    pub(crate) fn value(&self, x: f32) -> f32 {
        self.0.value(x)
    }
    pub(crate) fn scale(&self) -> f32 {
        self.0.s
    }
    /// The stored zero point (asymmetric formats).
    pub(crate) fn zero(&self) -> u8 {
        self.0.offset
    }
}

/// Refuse NaN or infinite weights, naming the tensor, row and column (every quantizer's first
/// check: a non-finite value would poison a whole group's scale).
pub(crate) fn check_finite(w: &[f32], cols: usize, name: &str) -> Result<()> {
    match w.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(Error::format(
            name,
            "weights",
            format!(
                "value {} at row {} column {} is not finite",
                w[i],
                i / cols.max(1),
                i % cols.max(1)
            ),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
