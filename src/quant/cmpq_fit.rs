//! The CMPQ pipeline (Chen et al., arXiv 2410.13056, as restated in docs/methods.md §3, steps
//! 2–6) over any number of tensors at once, phase by phase: allocation, per-column k-means fits,
//! outlier extraction B, re-fits without the outliers, packing into `Format::Cmpq`.
//!
//! Running a phase over every tensor before the next one starts lets the column fits of the
//! whole model share one parallel pool (the few columns a budget step re-fits are spread over
//! all threads, not over one tensor at a time), and lets each phase be timed (`PhaseTimes`, what
//! `bench --cmpq-step` prints). `cmpq::quantize_cached` runs it on one tensor and
//! `CmpqCache::apply` on a whole model; both give the same bytes as `cmpq::quantize` (and as a
//! plain serial transcription of the method: tests/cmpq_reference.rs).
//!
//! The weights come column-major (`Job`, `transpose`): every fit, error list and re-fit reads
//! one whole column. Packing is in `cmpq_pack`.
//!
//! Natively the phases run on rayon; in wasm everything is sequential (no threads there).

use crate::format::QTensor;
use crate::par;
use crate::quant::cmpq::{codes, fit_levels, nearest, plan, Class, CmpqOptions, Plan};
use crate::quant::cmpq_outliers::{select, ErrList, Selection};
use crate::{Error, Result};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;

use crate::quant::cmpq_pack::assemble;

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

/// The fit maps' hasher: FxHash (rustc's) instead of the default SipHash, which with its
/// lookups was about 4 % of a budget step's profile (a step looks up every column's key several
/// times: what is missing, packing, what to keep). The keys are this pipeline's own, not input
/// anyone picks to collide.
type KeyHash = BuildHasherDefault<rustc_hash::FxHasher>;

/// Column fits of one tensor kept between calls (`cmpq_cache`): a fit depends only on the
/// column's values, its width, the fitting rule and the rows left out as sparse outliers, so
/// moving the budget re-fits only the columns whose width or outliers changed. The largest
/// activation-weighted errors of each plain fit are kept too (they also depend on the
/// magnitudes `a_j`, which the cache remembers and checks). The caller owns the invalidation:
/// one `FitCache` per tensor, cleared when its weights change.
#[derive(Default)]
pub struct FitCache {
    /// Fits on all of a column's values, kept for every width seen.
    plain: HashMap<ErrKey, Fit, KeyHash>,
    /// Fits without the sparse-outlier rows, kept only while the last call used them.
    refits: HashMap<FitKey, Fit, KeyHash>,
    errs: HashMap<ErrKey, ErrList, KeyHash>,
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

/// One tensor to quantize: its weights **column-major** (`wt`, `cols × rows`: column `j` is
/// `wt[j · rows..(j + 1) · rows]`; see `transpose`), already checked to be finite f16 values,
/// its magnitudes (checked finite and ≥ 0), the options and its fit cache.
pub(crate) struct Job<'a> {
    pub wt: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub a: &'a [f32],
    pub opts: &'a CmpqOptions,
    pub name: &'a str,
    pub cache: &'a mut FitCache,
}

/// Column `j` of the column-major `wt` (`rows` long; shorter only where `wt` is).
pub(crate) fn column(wt: &[f32], rows: usize, j: usize) -> &[f32] {
    let start = j.saturating_mul(rows).min(wt.len());
    &wt[start..start.saturating_add(rows).min(wt.len())]
}

/// `w` (`rows × cols`, row-major) column-major, the layout `Job` takes. Every fit, error list
/// and re-fit reads one whole column; from row-major weights that was one cache line (and for
/// wide tensors one page) per value, a strided gather that took about an eighth of a budget
/// step's time (perf, SmolLM2-135M). Blocks of 32 × 32 keep both sides of the copy in cache.
pub(crate) fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const B: usize = 32;
    let mut t = vec![0.0f32; rows * cols];
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    if let Some(&x) = w.get(r * cols + c) {
                        t[c * rows + r] = x;
                    }
                }
            }
        }
    }
    t
}

fn fit_key(job: &Job<'_>, key: &FitKey) -> Fit {
    let (j, bits, kmeans, out) = key;
    let col = column(job.wt, job.rows, *j);
    let levels = if out.is_empty() {
        fit_levels(col, *bits, *kmeans)
    } else {
        let mut skip = vec![false; col.len()];
        for &r in out {
            if let Some(s) = skip.get_mut(r as usize) {
                *s = true;
            }
        }
        let vals: Vec<f32> = col
            .iter()
            .zip(&skip)
            .filter(|(_, &s)| !s)
            .map(|(&x, _)| x)
            .collect();
        fit_levels(&vals, *bits, *kmeans)
    };
    // Rows past the end of `wt` (none, for checked weights) code 0.0.
    let mut codes = codes(&levels, col);
    codes.resize(job.rows, nearest(&levels, 0.0));
    Fit { levels, codes }
}

/// Fit every key not yet in its job's cache, all jobs' columns in one parallel pool; the count.
/// Finding the missing keys and storing the new fits run per job in parallel too: done on one
/// thread they were a serial stretch of a budget step, whose fits are few.
fn fill(jobs: &mut [Job<'_>], keys: &[Vec<Option<FitKey>>]) -> usize {
    let view: &[Job<'_>] = jobs;
    let missing: Vec<Vec<&FitKey>> = par::map(0..view.len(), |ji| {
        keys[ji]
            .iter()
            .flatten()
            .filter(|k| view[ji].cache.get(k).is_none())
            .collect()
    });
    let flat: Vec<(usize, &FitKey)> = missing
        .iter()
        .enumerate()
        .flat_map(|(ji, ks)| ks.iter().map(move |&k| (ji, k)))
        .collect();
    let n = flat.len();
    let mut new = par::map(flat, |(ji, k)| fit_key(&view[ji], k)).into_iter();
    let per_job: Vec<Vec<Fit>> = missing
        .iter()
        .map(|ks| new.by_ref().take(ks.len()).collect())
        .collect();
    par::map(
        jobs.iter_mut().zip(missing).zip(per_job),
        |((job, ks), fs)| {
            for (k, f) in ks.into_iter().zip(fs) {
                job.cache.insert(k.clone(), f);
            }
        },
    );
    n
}

/// Step 5's selection for one job: the sorted flat indices of its sparse outliers and the
/// number of error lists it had to compute.
fn select_job(job: &mut Job<'_>, p: &Plan) -> Result<(Vec<usize>, usize)> {
    let k = p.alloc.n_sparse;
    if k == 0 {
        return Ok((Vec::new(), 0));
    }
    let (wt, rows, cols, a) = (job.wt, job.rows, job.cols, job.a);
    let (kmeans, name) = (job.opts.kmeans, job.name);
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
            .insert(ek, ErrList::new(column(wt, rows, j), a_j, fit, keep));
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
    let view: &[Job<'_>] = jobs;
    let plans = par::map(view, |j| plan(j.rows, j.cols, j.a, j.opts, j.name))
        .into_iter()
        .collect::<Result<Vec<Plan>>>()?;
    times.alloc += now() - t;

    // Step 3: every code column fitted on all its values.
    let t = now();
    let mut keys: Vec<Vec<Option<FitKey>>> = par::map(jobs.iter().zip(&plans), |(job, p)| {
        (0..job.cols)
            .map(|j| (p.class[j] != Class::F16).then(|| (j, p.bits(j), job.opts.kmeans, vec![])))
            .collect()
    });
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
    let view: &[Job<'_>] = jobs;
    let refit: Vec<Vec<Option<FitKey>>> = par::map(
        view.iter().zip(&plans).zip(&selected),
        |((job, p), (pos, _))| {
            let mut out_rows: Vec<Vec<u32>> = vec![Vec::new(); job.cols];
            for &i in pos {
                out_rows[i % job.cols].push((i / job.cols) as u32);
            }
            out_rows
                .into_iter()
                .enumerate()
                .map(|(j, rs)| (!rs.is_empty()).then(|| (j, p.bits(j), job.opts.kmeans, rs)))
                .collect()
        },
    );
    times.new_refits += fill(jobs, &refit);
    par::map(keys.iter_mut().zip(refit), |(ks, rs)| {
        for (k, r) in ks.iter_mut().zip(rs) {
            if r.is_some() {
                *k = r;
            }
        }
    });
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
            job.wt,
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
        let used: HashSet<&FitKey, KeyHash> =
            ks.iter().flatten().filter(|k| !k.3.is_empty()).collect();
        job.cache.refits.retain(|k, _| used.contains(k));
        let widths: HashSet<u8> = ks.iter().flatten().map(|k| k.1).collect();
        job.cache.plain.retain(|k, _| widths.contains(&k.1));
        job.cache.errs.retain(|k, _| widths.contains(&k.1));
    });
    times.pack += now() - t;
    Ok(out)
}
