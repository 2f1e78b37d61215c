//! The CMPQ pipeline (Chen et al., arXiv 2410.13056, as restated in docs/methods.md §3, steps
//! 2–6) over any number of tensors at once, phase by phase: allocation, per-column k-means fits,
//! outlier extraction B, re-fits without the outliers, packing into `Format::Cmpq`.
//!
//! Running a phase over every tensor before the next one starts lets the column fits of the
//! whole model share one parallel pool (the few columns a budget step re-fits are spread over
//! all threads, not over one tensor at a time), and lets each phase be timed (`PhaseTimes`, what
//! `bench --cmpq-step` prints). `cmpq::quantize_cached` runs it on one tensor and
//! `CmpqCache::apply` on a whole model; both give the same bytes as `cmpq::quantize`.
//!
//! Natively the phases run on rayon; in wasm everything is sequential (no threads there).

use crate::format::{AddOns, QTensor};
use crate::par;
use crate::quant::cmpq::{fit_levels, nearest, plan, Class, CmpqOptions, Plan};
use crate::quant::cmpq_alloc::Allocation;
use crate::quant::cmpq_outliers::{select, ErrList, Selection};
use crate::quant::codebook::outlier_bytes;
use crate::{Error, Result};
use half::f16;
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// Error lists keep at least this many of a column's largest errors (more when the outlier
/// fraction asks for more per column); the rest is computed only when the search needs it.
const MIN_KEEP: usize = 16;

/// One code column: its sorted levels and its `rows` codes.
#[derive(Clone, Debug)]
pub(crate) struct Fit {
    pub(crate) levels: Vec<f32>,
    pub(crate) codes: Vec<u8>,
}

/// (column, bits, k-means, rows left out as sparse outliers).
type FitKey = (usize, u8, bool, Vec<u32>);
/// (column, bits, k-means) of a plain fit, whose errors an `ErrList` ranks.
type ErrKey = (usize, u8, bool);

/// Column fits of one tensor kept between calls (`cmpq_cache`): a fit depends only on the
/// column's values, its width, the fitting rule and the rows left out as sparse outliers, so
/// moving the budget re-fits only the columns whose width or outliers changed. The largest
/// activation-weighted errors of each plain fit are kept too (they also depend on the
/// magnitudes `a_j`, which the cache remembers and checks). The caller owns the invalidation:
/// one `FitCache` per tensor, cleared when its weights change.
#[derive(Default)]
pub struct FitCache {
    /// Fits on all of a column's values, kept for every width seen.
    plain: HashMap<ErrKey, Fit>,
    /// Fits without the sparse-outlier rows, kept only while the last call used them.
    refits: HashMap<FitKey, Fit>,
    errs: HashMap<ErrKey, ErrList>,
    /// Bit patterns of the magnitudes `errs` were computed with.
    err_a: Vec<u32>,
}

impl FitCache {
    /// Fits held.
    pub fn len(&self) -> usize {
        self.plain.len() + self.refits.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, k: &FitKey) -> Option<&Fit> {
        if k.3.is_empty() {
            self.plain.get(&(k.0, k.1, k.2))
        } else {
            self.refits.get(k)
        }
    }

    fn insert(&mut self, k: FitKey, f: Fit) {
        if k.3.is_empty() {
            self.plain.insert((k.0, k.1, k.2), f);
        } else {
            self.refits.insert(k, f);
        }
    }
}

/// Seconds each phase of the last quantization took (wall clock; 0 in wasm, which has no clock
/// in std) and how much work was not found in the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PhaseTimes {
    /// Dequantizing (or recognising) the source tensors (`CmpqCache` only).
    pub source: f64,
    /// Allocation and column classes.
    pub alloc: f64,
    /// k-means fits of the code columns (step 3).
    pub fits: f64,
    /// Error lists and the selection of the sparse outliers (step 5).
    pub outliers: f64,
    /// Re-fits of the columns that lost weights to the outliers (step 5).
    pub refits: f64,
    /// Packing codes, codebooks, f16 columns and outliers into the format's bytes.
    pub pack: f64,
    /// Putting the quantized model together (and LoRC, when configured; `CmpqCache` only).
    pub model: f64,
    pub new_fits: usize,
    pub new_refits: usize,
    pub new_err_lists: usize,
}

impl PhaseTimes {
    pub fn total(&self) -> f64 {
        self.source + self.alloc + self.fits + self.outliers + self.refits + self.pack + self.model
    }
}

/// Seconds since the first call (natively); wasm32-unknown-unknown's std has no clock.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn now() -> f64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}
#[cfg(target_arch = "wasm32")]
pub(crate) fn now() -> f64 {
    0.0
}

/// One tensor to quantize: its weights (`rows × cols`, row-major, already checked to be finite
/// f16 values), its magnitudes (checked finite and ≥ 0), the options and its fit cache.
pub(crate) struct Job<'a> {
    pub w: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub a: &'a [f32],
    pub opts: &'a CmpqOptions,
    pub name: &'a str,
    pub cache: &'a mut FitCache,
}

fn fit_key(w: &[f32], rows: usize, cols: usize, key: &FitKey) -> Fit {
    let (j, bits, kmeans, out) = key;
    let mut skip = vec![false; rows];
    for &r in out {
        if let Some(s) = skip.get_mut(r as usize) {
            *s = true;
        }
    }
    let vals: Vec<f32> = (0..rows)
        .filter(|&r| !skip[r])
        .filter_map(|r| w.get(r * cols + j).copied())
        .collect();
    let levels = fit_levels(&vals, *bits, *kmeans);
    let codes = (0..rows)
        .map(|r| nearest(&levels, w.get(r * cols + j).copied().unwrap_or(0.0)))
        .collect();
    Fit { levels, codes }
}

/// Fit every key not yet in its job's cache, all jobs' columns in one parallel pool; the count.
fn fill(jobs: &mut [Job<'_>], keys: &[Vec<Option<FitKey>>]) -> usize {
    let view: &[Job<'_>] = jobs;
    let missing: Vec<(usize, &FitKey)> = par::map(0..view.len(), |ji| {
        keys[ji]
            .iter()
            .flatten()
            .filter(|k| view[ji].cache.get(k).is_none())
            .map(|k| (ji, k))
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect();
    let new = par::map(0..missing.len(), |i| {
        let (ji, k) = missing[i];
        let j = &view[ji];
        fit_key(j.w, j.rows, j.cols, k)
    });
    let n = new.len();
    for ((ji, k), f) in missing.into_iter().zip(new) {
        jobs[ji].cache.insert(k.clone(), f);
    }
    n
}

/// Step 5's selection for one job: the sorted flat indices of its sparse outliers and the
/// number of error lists it had to compute.
fn select_job(job: &mut Job<'_>, p: &Plan) -> Result<(Vec<usize>, usize)> {
    let k = p.alloc.n_sparse;
    if k == 0 {
        return Ok((Vec::new(), 0));
    }
    let (w, cols, a, kmeans, name) = (job.w, job.cols, job.a, job.opts.kmeans, job.name);
    let cache = &mut *job.cache;
    let a_bits: Vec<u32> = a.iter().map(|x| x.to_bits()).collect();
    if cache.err_a != a_bits {
        cache.errs.clear();
        cache.err_a = a_bits;
    }
    let code: Vec<(usize, ErrKey)> = (0..cols)
        .filter(|&j| p.class[j] != Class::F16)
        .map(|j| (j, (j, p.bits(j), kmeans)))
        .collect();
    let keep = (4 * k.div_ceil(code.len().max(1))).max(MIN_KEEP);
    let missing = |name: &str, j: usize| {
        Error::config("cmpq", format!("{name}: column {j} has no plain fit"))
    };
    let mut computed = 0;
    let mut make = |cache: &mut FitCache, j: usize, ek: ErrKey, keep: usize| -> Result<()> {
        let fit = cache.plain.get(&ek).ok_or_else(|| missing(name, j))?;
        let a_j = a.get(j).copied().unwrap_or(0.0);
        cache
            .errs
            .insert(ek, ErrList::new(w, cols, j, a_j, fit, keep));
        computed += 1;
        Ok(())
    };
    for &(j, ek) in &code {
        if !cache.errs.contains_key(&ek) {
            make(cache, j, ek, keep)?;
        }
    }
    // Each round completes at least one list, so this ends within `code.len() + 1` rounds.
    loop {
        let lists = code
            .iter()
            .map(|(j, ek)| cache.errs.get(ek).map(|l| (*j, l)))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::config("cmpq", format!("{name}: error list lost")))?;
        match select(&lists, k, cols) {
            Selection::Done(pos) => return Ok((pos, computed)),
            Selection::Complete(need) if need.is_empty() => {
                return Err(Error::config(
                    "cmpq",
                    format!("{name}: fewer outlier candidates than {k}"),
                ));
            }
            Selection::Complete(need) => {
                for i in need {
                    let (j, ek) = code[i];
                    make(cache, j, ek, usize::MAX)?;
                }
            }
        }
    }
}

/// Run the CMPQ pipeline on every job, phase by phase, adding each phase's seconds to `times`.
pub(crate) fn quantize_jobs(jobs: &mut [Job<'_>], times: &mut PhaseTimes) -> Result<Vec<QTensor>> {
    let t = now();
    let plans = jobs
        .iter()
        .map(|j| plan(j.rows, j.cols, j.a, j.opts, j.name))
        .collect::<Result<Vec<Plan>>>()?;
    times.alloc += now() - t;

    // Step 3: every code column fitted on all its values.
    let t = now();
    let mut keys: Vec<Vec<Option<FitKey>>> = jobs
        .iter()
        .zip(&plans)
        .map(|(job, p)| {
            (0..job.cols)
                .map(|j| {
                    (p.class[j] != Class::F16).then(|| (j, p.bits(j), job.opts.kmeans, vec![]))
                })
                .collect()
        })
        .collect();
    times.new_fits += fill(jobs, &keys);
    times.fits += now() - t;

    // Step 5: the largest activation-weighted errors become sparse outliers.
    let t = now();
    let selected = par::map(jobs.iter_mut().zip(&plans), |(j, p)| select_job(j, p))
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    times.new_err_lists += selected.iter().map(|s| s.1).sum::<usize>();
    times.outliers += now() - t;

    // Re-cluster the columns that lost weights, without them.
    let t = now();
    let refit: Vec<Vec<Option<FitKey>>> = jobs
        .iter()
        .zip(&plans)
        .zip(&selected)
        .map(|((job, p), (pos, _))| {
            let mut out_rows: Vec<Vec<u32>> = vec![Vec::new(); job.cols];
            for &i in pos {
                out_rows[i % job.cols].push((i / job.cols) as u32);
            }
            out_rows
                .into_iter()
                .enumerate()
                .map(|(j, rs)| (!rs.is_empty()).then(|| (j, p.bits(j), job.opts.kmeans, rs)))
                .collect()
        })
        .collect();
    times.new_refits += fill(jobs, &refit);
    for (ks, rs) in keys.iter_mut().zip(refit) {
        for (k, r) in ks.iter_mut().zip(rs) {
            if r.is_some() {
                *k = r;
            }
        }
    }
    times.refits += now() - t;

    let t = now();
    let view: &[Job<'_>] = jobs;
    let out = par::map(0..view.len(), |i| {
        let (job, p) = (&view[i], &plans[i]);
        let fits: Vec<Option<&Fit>> = keys[i]
            .iter()
            .map(|k| k.as_ref().and_then(|k| job.cache.get(k)))
            .collect();
        assemble(
            job.w,
            job.rows,
            job.cols,
            &p.alloc,
            &p.class,
            &fits,
            &selected[i].0,
        )
    })
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    // Drop re-fits this call did not use, and plain fits and error lists at widths it did not
    // use: a budget step keeps its two widths (so the next step re-fits only what moved), while
    // the cache stays bounded to about two widths' codes per tensor as the budget wanders (in
    // wasm, whose memory is at most 4 GiB, holding every width seen ran out of it).
    par::map(jobs.iter_mut().zip(&keys), |(job, ks)| {
        let used: HashSet<&FitKey> = ks.iter().flatten().filter(|k| !k.3.is_empty()).collect();
        job.cache.refits.retain(|k, _| used.contains(k));
        let widths: HashSet<u8> = ks.iter().flatten().map(|k| k.1).collect();
        job.cache.plain.retain(|k, _| widths.contains(&k.1));
        job.cache.errs.retain(|k, _| widths.contains(&k.1));
    });
    times.pack += now() - t;
    Ok(out)
}

/// Codes of one class's columns (`fits`, in class order), row-major, packed at `bits`: the
/// layout of `format::pack_codes` (code `i` at bit `i · bits`, LSB first, u32 little-endian
/// words), written as one stream instead of gathering a code matrix first (a test checks that
/// both give the same bytes).
fn pack_class(rows: usize, fits: &[&Fit], bits: u8) -> Vec<u8> {
    let n_words = (rows * fits.len() * bits as usize).div_ceil(32);
    let mut out = Vec::with_capacity(4 * n_words);
    let mask = (1u64 << bits) - 1;
    let (mut acc, mut fill) = (0u64, 0u32);
    for r in 0..rows {
        for f in fits {
            let c = f.codes.get(r).copied().unwrap_or(0) as u64 & mask;
            acc |= c << fill;
            fill += bits as u32;
            if fill >= 32 {
                out.extend_from_slice(&(acc as u32).to_le_bytes());
                acc >>= 32;
                fill -= 32;
            }
        }
    }
    if fill > 0 {
        out.extend_from_slice(&(acc as u32).to_le_bytes());
    }
    out
}

/// Lay the parts out as `Format::Cmpq` (src/format/cmpq.rs) plus the sparse-outlier add-on.
fn assemble(
    w: &[f32],
    rows: usize,
    cols: usize,
    alloc: &Allocation,
    class: &[Class],
    fits: &[Option<&Fit>],
    sparse: &[usize],
) -> Result<QTensor> {
    let (n_lo, n_hi, n_f16) = (alloc.n_lo(cols), alloc.n_hi, alloc.n_f16);
    let mut map = Vec::with_capacity(2 * cols);
    let mut members: [Vec<usize>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for (j, &c) in class.iter().enumerate() {
        let k = match c {
            Class::Lo => 0,
            Class::Hi => 1,
            Class::F16 => 2,
        };
        let e = ((k << 14) | members[k].len()) as u16;
        map.extend_from_slice(&e.to_le_bytes());
        members[k].push(j);
    }
    if [n_lo, n_hi, n_f16] != [members[0].len(), members[1].len(), members[2].len()] {
        return Err(Error::config(
            "cmpq",
            "column classes do not match the allocation",
        ));
    }
    map.resize(map.len().div_ceil(4) * 4, 0);
    let mut data = map;
    let half = |v: f32| f16::from_f32(v).to_le_bytes();
    let fit = |j: usize| -> Result<&Fit> {
        fits.get(j)
            .copied()
            .flatten()
            .ok_or_else(|| Error::config("cmpq", format!("column {j} has no codebook")))
    };
    let class_fits = [
        members[0]
            .iter()
            .map(|&j| fit(j))
            .collect::<Result<Vec<_>>>()?,
        members[1]
            .iter()
            .map(|&j| fit(j))
            .collect::<Result<Vec<_>>>()?,
    ];
    for f in class_fits.iter().flatten() {
        f.levels
            .iter()
            .for_each(|&v| data.extend_from_slice(&half(v)));
    }
    for (fs, bits) in class_fits.iter().zip([alloc.lo, alloc.lo + 1]) {
        data.extend_from_slice(&pack_class(rows, fs, bits));
    }
    let start = data.len();
    for r in 0..rows {
        for &j in &members[2] {
            data.extend_from_slice(&half(w[r * cols + j]));
        }
    }
    data.resize(start + (data.len() - start).div_ceil(4) * 4, 0);
    data.extend_from_slice(&outlier_bytes(w, sparse));
    let addons = AddOns {
        outliers: sparse.len(),
        lowrank: None,
    };
    QTensor::with_addons(alloc.format(), addons, rows, cols, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack_codes;
    use crate::quant::testutil::lcg;

    #[test]
    fn streamed_packing_equals_the_format_table() {
        for bits in 1..=8u8 {
            for (rows, m) in [(1, 1), (3, 5), (7, 33), (64, 70), (5, 0)] {
                let fits: Vec<Fit> = (0..m)
                    .map(|j| Fit {
                        levels: Vec::new(),
                        codes: lcg(j as u64 + 100 * bits as u64, rows)
                            .iter()
                            .map(|x| ((x + 0.5) * 256.0) as u8 & ((1u16 << bits) - 1) as u8)
                            .collect(),
                    })
                    .collect();
                let refs: Vec<&Fit> = fits.iter().collect();
                let matrix: Vec<u8> = (0..rows)
                    .flat_map(|r| fits.iter().map(move |f| f.codes[r]))
                    .collect();
                assert_eq!(
                    pack_class(rows, &refs, bits),
                    pack_codes(&matrix, bits),
                    "{bits} bits, {rows}×{m}"
                );
            }
        }
    }
}
