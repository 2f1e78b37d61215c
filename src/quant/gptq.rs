//! GPTQ: "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers",
//! Frantar, Ashkboos, Hoefler, Alistarh, arXiv 2210.17323 (Algorithm 1), as restated in
//! docs/methods.md §2.
//!
//! For a linear layer `W` (`rows × cols`) with calibration inputs `X`, GPTQ quantizes the columns
//! one at a time and, after each, spreads the rounding error over the columns not yet quantized
//! so that `‖XWᵀ − XŴᵀ‖²` stays small. With `H = 2XᵀX/n + λI` the update after column `j` is
//! `W[:, j+1..] −= (w_j − q_j)/U_jj · U[j, j+1..]`, where `U` is the upper Cholesky factor of
//! `H⁻¹` (`H⁻¹ = UᵀU`); this equals the paper's direct inverse update (§4 "Step 3") and is what
//! the unit test checks against.
//!
//! Choices (all documented parameters):
//! * `λ = damp · mean(diag H)`, `damp = 0.01`. Dead inputs (`H_jj = 0`, never active in the
//!   calibration data) get `H_jj = 1` and their weights set to 0, as in the paper's code.
//! * Act-order: columns in order of decreasing `diag(H)` (stable, so ties keep index order).
//! * Groups: the stored format is a standard `Format::Int` row of the table, with scales per
//!   group in *original* column order. Without act-order a group's grid is chosen when the group
//!   starts, from the weights as updated so far (the paper's rule). With act-order the columns of
//!   a group are no longer consecutive in the processing order, so the grids are fixed up front
//!   from the original weights ("static groups") — which keeps the layout standard. Per-row and
//!   per-tensor grids are always chosen from the original weights.
//! * Lazy batch updates: errors of `block` (128) consecutive columns are applied to the rest of
//!   the matrix in one matrix product. When a group would cross a block boundary, the block is
//!   widened to whole groups, so a grid chosen at a group start has seen every update — the
//!   result then equals the unbatched loop.
//! * `U` comes from one Cholesky factorisation: with `J` the reversal permutation and
//!   `JHJ = L Lᵀ`, `R = J L J` is upper with `H = R Rᵀ`, so `H⁻¹ = R⁻ᵀR⁻¹` and `U = R⁻¹`.
//!   Factorisation in f64; the column updates in f32 (as the paper's code does).
//! * Rows are independent given `U`: fixed chunks of `ROW_CHUNK` rows run in parallel natively,
//!   so the bytes do not depend on the thread count.
//! * The grid need not be uniform (`Target`): onto a fixed codebook table (NF4, FP4, dINT —
//!   W4A8, arXiv 2311.05161, rounds GPTQ onto its dINT grid) each column is rounded to the
//!   nearest level of its group's table, whose f16 scale is chosen exactly as for the `Int`
//!   grid (when the group starts, or up front under act-order / per row / per tensor) by the
//!   rule RTN uses (`quant::codebook::TableGrid`). The error feedback is unchanged: it only
//!   needs each column's rounded value.

mod layer;
pub use layer::{quantize_layer, Plan};

use crate::format::{check_bits, AddOns, Codebook, Format, Granularity, IntSpec, QTensor};
use crate::linalg::{inverse_cholesky_upper, sgemm};
use crate::quant::codebook::{assemble, TableGrid};
use crate::quant::rtn::{GroupGrid, RtnOptions};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// GPTQ's parameters beyond the storage format.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GptqOptions {
    /// Damping as a fraction of `mean(diag H)`.
    pub damp: f32,
    /// Quantize columns by decreasing `diag(H)`.
    pub act_order: bool,
    /// Columns per lazy batch update.
    pub block: usize,
}

impl Default for GptqOptions {
    fn default() -> Self {
        GptqOptions {
            damp: 0.01,
            act_order: true,
            block: 128,
        }
    }
}

/// Rows processed together (one parallel task).
const ROW_CHUNK: usize = 32;

/// The grid GPTQ rounds onto, which is also the stored format: uniform integer codes (with
/// RTN's grid options, e.g. clip search) or a fixed codebook table (NF4, FP4, dINT) with an f16
/// scale per group.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    Int(IntSpec, RtnOptions),
    /// A fixed table (`Codebook::Nf4`, `Fp4` or `Dint`); a learned table is an error.
    Table(Codebook),
}

impl From<(IntSpec, RtnOptions)> for Target {
    fn from((spec, rtn): (IntSpec, RtnOptions)) -> Self {
        Target::Int(spec, rtn)
    }
}

impl Target {
    fn gran(&self) -> Result<Granularity> {
        match *self {
            Target::Int(s, _) => Ok(s.gran),
            Target::Table(Codebook::Nf4(g) | Codebook::Fp4(g) | Codebook::Dint(g, _)) => Ok(g),
            Target::Table(t) => Err(Error::config(
                "codebook",
                format!("gptq rounds onto a fixed table (nf4, fp4, dint), not {t:?}"),
            )),
        }
    }

    /// Refuse what the format would refuse (bits, dINT parameters), naming the tensor.
    fn check(&self, name: &str) -> Result<()> {
        match *self {
            Target::Int(spec, _) => check_bits(spec.bits).map_err(|_| {
                Error::config(
                    "bits",
                    format!("{name}: {} bits is outside 1..=8", spec.bits),
                )
            }),
            Target::Table(t) => {
                self.gran()?;
                if let Codebook::Dint(_, p) = t {
                    p.validate()?;
                }
                Ok(())
            }
        }
    }
}

/// One group's grid, of either kind.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ColGrid {
    Int(GroupGrid),
    Table(TableGrid),
}

impl ColGrid {
    fn choose(w: &[f32], target: &Target, name: &str) -> Result<Self> {
        Ok(match target {
            Target::Int(spec, rtn) => ColGrid::Int(GroupGrid::choose(w, *spec, rtn, name)?),
            Target::Table(t) => ColGrid::Table(TableGrid::choose(w, *t, name)?),
        })
    }
    /// The stored code of `x` and what it dequantizes to.
    #[inline]
    fn round(&self, x: f32) -> (u8, f32) {
        match self {
            ColGrid::Int(g) => (g.code(x), g.value(x)),
            ColGrid::Table(g) => {
                let c = g.code(x);
                (c, g.level(c))
            }
        }
    }
    fn scale(&self) -> f32 {
        match self {
            ColGrid::Int(g) => g.scale(),
            ColGrid::Table(g) => g.scale(),
        }
    }
    fn zero(&self) -> u8 {
        match self {
            ColGrid::Int(g) => g.zero(),
            ColGrid::Table(_) => 0,
        }
    }
}

/// The damped Hessian `2·gram/n_tokens + λI` with dead columns marked; returns `(H, dead)`.
pub(crate) fn hessian(
    gram: &[f32],
    cols: usize,
    n_tokens: usize,
    damp: f32,
) -> (Vec<f64>, Vec<bool>) {
    let scale = 2.0 / n_tokens.max(1) as f64;
    let mut h: Vec<f64> = gram.iter().map(|&g| g as f64 * scale).collect();
    let mut dead = vec![false; cols];
    for j in 0..cols {
        if h[j * cols + j] <= 0.0 {
            dead[j] = true;
            h[j * cols + j] = 1.0;
        }
    }
    let mean_diag = (0..cols).map(|j| h[j * cols + j]).sum::<f64>() / cols as f64;
    let lambda = damp as f64 * mean_diag;
    for j in 0..cols {
        h[j * cols + j] += lambda;
    }
    (h, dead)
}

/// The processing order: identity, or by decreasing `diag(H)` (stable).
pub(crate) fn column_order(h: &[f64], cols: usize, act_order: bool) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..cols).collect();
    if act_order {
        perm.sort_by(|&a, &b| h[b * cols + b].total_cmp(&h[a * cols + a]));
    }
    perm
}

/// Check the inputs every calibrated quantizer shares.
/// The Gram matrix of `cols` input channels has `cols²` values.
fn check_gram(gram: &[f32], cols: usize, name: &str) -> Result<()> {
    if gram.len() != cols * cols {
        return Err(Error::config(
            "calibration",
            format!(
                "{name}: Gram of {} values for {cols} input channels (expected {})",
                gram.len(),
                cols * cols
            ),
        ));
    }
    Ok(())
}

pub(crate) fn check_layer(
    w: &[f32],
    rows: usize,
    cols: usize,
    gram: &[f32],
    name: &str,
) -> Result<()> {
    if rows == 0 || cols == 0 || rows.checked_mul(cols) != Some(w.len()) {
        return Err(Error::config(
            "shape",
            format!("{name}: {} values for a {rows}×{cols} tensor", w.len()),
        ));
    }
    check_gram(gram, cols, name)?;
    crate::quant::rtn::check_finite(w, cols, name)?;
    if let Some(i) = gram.iter().position(|x| !x.is_finite()) {
        return Err(Error::config(
            "calibration",
            format!("{name}: Gram entry {i} is not finite"),
        ));
    }
    Ok(())
}

/// What GPTQ derives from one input's statistics, shared by every tensor that reads that input
/// (q/k/v; gate/up): the dead inputs, the processing order and `U`, the upper Cholesky factor
/// of the permuted `H⁻¹` (f32, as the column updates use it). It depends on the damping and on
/// act-order only, so it is valid for any storage format with those two options.
pub struct Prepared {
    cols: usize,
    damp: f32,
    act_order: bool,
    dead: Vec<bool>,
    perm: Vec<usize>,
    u: Vec<f32>,
}

fn check_options(opts: &GptqOptions) -> Result<()> {
    if !(opts.damp.is_finite() && opts.damp >= 0.0) || opts.block == 0 {
        return Err(Error::config(
            "gptq",
            format!(
                "damp {} must be ≥ 0 and block {} ≥ 1",
                opts.damp, opts.block
            ),
        ));
    }
    Ok(())
}

/// The damped Hessian of `gram` (`XᵀX`, `cols × cols`, of `n_tokens` inputs), its column order
/// and the factor `U`: the `O(cols³)` part of GPTQ, done once per input. Errors name `name`.
pub fn prepare(
    gram: &[f32],
    cols: usize,
    n_tokens: usize,
    opts: &GptqOptions,
    name: &str,
) -> Result<Prepared> {
    check_options(opts)?;
    if cols == 0 {
        return Err(Error::config(
            "calibration",
            format!("{name}: no input channels"),
        ));
    }
    check_gram(gram, cols, name)?;
    if let Some(i) = gram.iter().position(|x| !x.is_finite()) {
        return Err(Error::config(
            "calibration",
            format!("{name}: Gram entry {i} is not finite"),
        ));
    }
    let (h, dead) = hessian(gram, cols, n_tokens, opts.damp);
    let perm = column_order(&h, cols, opts.act_order);
    let mut hp = vec![0f64; cols * cols];
    for (i, &pi) in perm.iter().enumerate() {
        for (j, &pj) in perm.iter().enumerate() {
            hp[i * cols + j] = h[pi * cols + pj];
        }
    }
    drop(h);
    let u: Vec<f32> = inverse_cholesky_upper(&hp, cols, name)?
        .into_iter()
        .map(|v| v as f32)
        .collect();
    Ok(Prepared {
        cols,
        damp: opts.damp,
        act_order: opts.act_order,
        dead,
        perm,
        u,
    })
}

/// Quantize `w` (`rows × cols`, row-major) to the `Int` format `spec` with GPTQ, given the Gram
/// `XᵀX` (`cols × cols`) of `n_tokens` calibration inputs. `rtn` options choose each grid (clip
/// search). Errors name `name`. (`prepare` + `quantize_prepared`.)
#[allow(clippy::too_many_arguments)]
pub fn quantize(
    w: &[f32],
    rows: usize,
    cols: usize,
    gram: &[f32],
    n_tokens: usize,
    spec: IntSpec,
    rtn: &RtnOptions,
    opts: &GptqOptions,
    name: &str,
) -> Result<QTensor> {
    quantize_to(
        w,
        rows,
        cols,
        gram,
        n_tokens,
        Target::Int(spec, *rtn),
        opts,
        name,
    )
}

/// `quantize` onto any `Target` grid (e.g. `Target::Table(Codebook::Dint(..))`).
#[allow(clippy::too_many_arguments)]
pub fn quantize_to(
    w: &[f32],
    rows: usize,
    cols: usize,
    gram: &[f32],
    n_tokens: usize,
    target: Target,
    opts: &GptqOptions,
    name: &str,
) -> Result<QTensor> {
    // `quantize_prepared_to` checks the target; the layer's shape is checked before factoring.
    check_layer(w, rows, cols, gram, name)?;
    let p = prepare(gram, cols, n_tokens, opts, name)?;
    quantize_prepared_to(w, rows, cols, &p, target, opts, name)
}

/// `quantize` with the input's `Prepared` factor (made with the same `opts`).
#[allow(clippy::too_many_arguments)]
pub fn quantize_prepared(
    w: &[f32],
    rows: usize,
    cols: usize,
    prep: &Prepared,
    spec: IntSpec,
    rtn: &RtnOptions,
    opts: &GptqOptions,
    name: &str,
) -> Result<QTensor> {
    quantize_prepared_to(w, rows, cols, prep, Target::Int(spec, *rtn), opts, name)
}

/// `quantize_prepared` onto any `Target` grid.
pub fn quantize_prepared_to(
    w: &[f32],
    rows: usize,
    cols: usize,
    prep: &Prepared,
    target: Target,
    opts: &GptqOptions,
    name: &str,
) -> Result<QTensor> {
    target.check(name)?;
    check_options(opts)?;
    if rows == 0 || cols == 0 || rows.checked_mul(cols) != Some(w.len()) {
        return Err(Error::config(
            "shape",
            format!("{name}: {} values for a {rows}×{cols} tensor", w.len()),
        ));
    }
    if prep.cols != cols || prep.damp != opts.damp || prep.act_order != opts.act_order {
        return Err(Error::config(
            "gptq",
            format!(
                "{name}: prepared for {} inputs (damp {}, act-order {}), used for {cols} (damp {}, act-order {})",
                prep.cols, prep.damp, prep.act_order, opts.damp, opts.act_order
            ),
        ));
    }
    crate::quant::rtn::check_finite(w, cols, name)?;
    let gran = target.gran()?;
    let g = gran.group_len(rows, cols, name)?;
    let (dead, perm, u) = (&prep.dead, &prep.perm, &prep.u);

    let mut w0 = w.to_vec();
    for r in w0.chunks_exact_mut(cols) {
        for (x, &d) in r.iter_mut().zip(dead) {
            if d {
                *x = 0.0;
            }
        }
    }
    // Grids fixed before any update (per tensor, per row, or static groups under act-order).
    let groups_per_row = match gran {
        Granularity::PerTensor => 0,
        _ => cols / g,
    };
    let tensor_grid = match gran {
        Granularity::PerTensor => Some(ColGrid::choose(&w0, &target, name)?),
        _ => None,
    };
    let dynamic = matches!(gran, Granularity::Group(_)) && !opts.act_order;
    // Blocks hold whole groups when groups are chosen on the fly (see the module comment).
    let block = if dynamic && !opts.block.is_multiple_of(g) {
        g * (opts.block / g).max(1)
    } else {
        opts.block
    };

    let mut codes = vec![0u8; rows * cols];
    let mut grids: Vec<Option<ColGrid>> = vec![None; rows * groups_per_row.max(1)];
    let jobs: Vec<Job<'_>> = codes
        .chunks_mut(ROW_CHUNK * cols)
        .zip(grids.chunks_mut(ROW_CHUNK * groups_per_row.max(1)))
        .enumerate()
        .map(|(i, (c, gr))| (i * ROW_CHUNK, c, gr))
        .collect();
    let ctx = Ctx {
        w0: &w0,
        cols,
        g,
        u,
        perm,
        target: &target,
        name,
        block,
        dynamic,
        tensor_grid,
        groups_per_row,
    };
    let run = |(r0, codes, grids): Job<'_>| ctx.rows(r0, codes, grids);
    let results: Vec<Result<()>> = crate::par::map(jobs, run);
    results.into_iter().collect::<Result<()>>()?;

    let (scales, zeros): (Vec<f32>, Vec<u8>) = match tensor_grid {
        Some(t) => (vec![t.scale()], vec![t.zero()]),
        None => grids
            .iter()
            .map(|gr| gr.map_or((0.0, 0), |gr| (gr.scale(), gr.zero())))
            .unzip(),
    };
    match target {
        Target::Int(spec, _) => {
            let zeros: &[u8] = if spec.sym { &[] } else { &zeros };
            QTensor::from_int_parts(spec, rows, cols, &codes, &scales, zeros)
        }
        Target::Table(table) => assemble(
            Format::Codebook { bits: 4, table },
            AddOns::default(),
            rows,
            cols,
            &codes,
            &scales,
            &[],
        ),
    }
}

/// A chunk of rows: first row, its codes and its group grids.
type Job<'a> = (usize, &'a mut [u8], &'a mut [Option<ColGrid>]);

/// What every row chunk shares.
struct Ctx<'a> {
    w0: &'a [f32],
    cols: usize,
    g: usize,
    u: &'a [f32],
    perm: &'a [usize],
    target: &'a Target,
    name: &'a str,
    block: usize,
    dynamic: bool,
    tensor_grid: Option<ColGrid>,
    groups_per_row: usize,
}

impl Ctx<'_> {
    /// GPTQ on rows `r0..r0 + codes.len()/cols`.
    fn rows(&self, r0: usize, codes: &mut [u8], grids: &mut [Option<ColGrid>]) -> Result<()> {
        let (cols, g, gpr) = (self.cols, self.g, self.groups_per_row);
        let n = codes.len() / cols;
        // Working copy in processing order.
        let mut wp = vec![0f32; n * cols];
        for r in 0..n {
            let src = &self.w0[(r0 + r) * cols..(r0 + r + 1) * cols];
            for (d, &p) in wp[r * cols..(r + 1) * cols].iter_mut().zip(self.perm) {
                *d = src[p];
            }
        }
        if !self.dynamic && gpr > 0 {
            for r in 0..n {
                let src = &self.w0[(r0 + r) * cols..(r0 + r + 1) * cols];
                for k in 0..gpr {
                    grids[r * gpr + k] = Some(ColGrid::choose(
                        &src[k * g..(k + 1) * g],
                        self.target,
                        self.name,
                    )?);
                }
            }
        }
        let mut err = vec![0f32; n * self.block];
        let mut upd = Vec::new();
        for b0 in (0..cols).step_by(self.block) {
            let b1 = (b0 + self.block).min(cols);
            let bw = b1 - b0;
            for j in b0..b1 {
                let oc = self.perm[j];
                if self.dynamic && oc.is_multiple_of(g) {
                    // Without act-order, j == oc: the group is wp[.., j..j+g], all updated.
                    for r in 0..n {
                        grids[r * gpr + oc / g] = Some(ColGrid::choose(
                            &wp[r * cols + j..r * cols + j + g],
                            self.target,
                            self.name,
                        )?);
                    }
                }
                let ujj = self.u[j * cols + j];
                let urow = &self.u[j * cols + j + 1..j * cols + b1];
                for r in 0..n {
                    let grid = match self.tensor_grid {
                        Some(t) => t,
                        None => grids[r * gpr + oc / g].ok_or_else(|| {
                            Error::config("gptq", format!("{}: group grid missing", self.name))
                        })?,
                    };
                    let row = &mut wp[r * cols..(r + 1) * cols];
                    let x = row[j];
                    let (code, value) = grid.round(x);
                    codes[r * cols + oc] = code;
                    let e = (x - value) / ujj;
                    for (v, &uk) in row[j + 1..b1].iter_mut().zip(urow) {
                        *v -= e * uk;
                    }
                    err[r * bw + (j - b0)] = e;
                }
            }
            if b1 < cols {
                // wp[:, b1..] −= Err (n × bw) · U[b0..b1, b1..].
                let rest = cols - b1;
                upd.resize(n * rest, 0.0);
                sgemm(
                    n,
                    bw,
                    rest,
                    &err,
                    bw,
                    1,
                    &self.u[b0 * cols + b1..],
                    cols,
                    1,
                    &mut upd,
                    rest,
                );
                for r in 0..n {
                    let row = &mut wp[r * cols + b1..(r + 1) * cols];
                    row.iter_mut()
                        .zip(&upd[r * rest..(r + 1) * rest])
                        .for_each(|(v, d)| *v -= d);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
