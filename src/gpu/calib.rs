//! Calibration on the GPU: the statistics of `quant::calib` (docs/methods.md §1 "Calibration";
//! that file is the CPU reference and says what they are for), with the model as loaded running
//! on the GPU in batches of sequences, as evaluation does (`Backend::eval_batch`).
//!
//! The input of every block linear (the topology's sites (`model::arch`)) is folded, as it is produced, into an
//! accumulator that stays on the device: the upper triangle of `XᵀX`, `Σ|x|` and `max|x|` per
//! channel (`shaders/gram.wgsl` over ranges of rows, `shaders/gram_reduce.wgsl` adding the
//! ranges). Nothing comes back until the end, then one map per layer; `‖x_j‖₂` is the square
//! root of the Gram's diagonal, which the CPU path sums separately. Tender's per-position
//! statistics (`SiteStats::pos_max/pos_min`: per block of 64 positions of every sequence, the
//! largest and smallest value of each channel over all sequences) are folded in by
//! `shaders/tender_stats.wgsl`'s `pos_range`; max and min are exact in any order, so they equal
//! the CPU's on the same activations bit for bit.
//!
//! Memory: an accumulator holds `d² + 2d` floats (SmolLM2-135M: 30 layers × 3.35 M floats =
//! 402 MB in all, resident until read back). Each must fit one storage binding, the whole must
//! fit `quant::calib::MAX_CALIB_BYTES` and, when set, the device budget
//! (`Gpu::set_memory_budget`) next to the weights already held; errors name bytes and limit.
//!
//! Precision: each range's partial sums run over at most a few hundred rows in f32 before being
//! added to the accumulator, like the CPU path's per-sequence SGEMM; the summation orders differ,
//! so GPU and CPU agree to f32 rounding of the activations, not bit for bit.

use crate::format::tender::CHUNK_STEP;
use crate::gpu::backend::{Act, Gpu};
use crate::gpu::buffers;
use crate::gpu::record::{u, Params4, Params8};
use crate::model::backend::Backend;
use crate::model::net::Model;
use crate::quant::calib::{self, CalibOptions, Calibration, SiteStats};
use crate::{Error, Result};

/// Output tile of gram.wgsl (channels × channels) and rows per loop slice.
const TILE: usize = 64;
const SLICE: usize = 16;
/// Workgroups a Gram dispatch aims for: a 576-wide input has only 45 upper tiles, far fewer than
/// a large GPU has cores, so rows are cut into ranges (one per workgroup z) until about this many
/// run.
const TARGET_GROUPS: usize = 1024;
/// Fewest rows per range: shorter ranges cost more in partials than they gain in parallelism.
const MIN_RANGE_ROWS: usize = 64;

/// Statistics of one site accumulated on the device (layout in shaders/gram.wgsl).
pub struct GramAcc {
    pub dim: usize,
    /// Rows (tokens) added so far.
    pub rows: usize,
    buf: wgpu::Buffer,
    /// Up to `calib::SAMPLE_ROWS` sampled rows (`SiteStats::samples`), copied as they pass.
    samples: wgpu::Buffer,
    sampled: usize,
    /// Per-position maxima then minima (`blocks × dim` each), grown to the longest sequence.
    pos: Option<wgpu::Buffer>,
    blocks: usize,
}

/// Floats per accumulator (and per partial slice) of a `dim`-wide input.
fn acc_len(dim: usize) -> usize {
    dim * dim + 2 * dim
}

impl Gpu {
    /// A zeroed accumulator for a `dim`-wide input (wgpu zero-fills new buffers).
    pub fn gram_acc(&self, dim: usize) -> Result<GramAcc> {
        if dim == 0 {
            return Err(Error::config("calibration", "an input of width 0"));
        }
        let bytes = acc_len(dim)
            .checked_mul(4)
            .ok_or_else(|| Error::config("calibration", format!("width {dim} overflows")))?;
        buffers::check_size(
            &self.ctx.limits,
            &format!("calibration statistics of a {dim}-wide input"),
            bytes,
        )?;
        let buf = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("gram accumulator"),
            size: bytes as u64,
            usage: buffers::STORAGE,
            mapped_at_creation: false,
        });
        let samples = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("calibration samples"),
            size: (calib::SAMPLE_ROWS * dim * 4) as u64,
            usage: buffers::STORAGE,
            mapped_at_creation: false,
        });
        Ok(GramAcc {
            dim,
            rows: 0,
            buf,
            samples,
            sampled: 0,
            pos: None,
            blocks: 0,
        })
    }

    /// Make room for `blocks` blocks of positions in `acc.pos`: a new buffer of −∞ maxima and
    /// +∞ minima (what the CPU's grown vectors hold), the blocks held so far copied in.
    fn grow_pos(&self, acc: &mut GramAcc, blocks: usize) -> Result<()> {
        if blocks <= acc.blocks {
            return Ok(());
        }
        let d = acc.dim;
        let mut init = vec![f32::NEG_INFINITY; blocks * d];
        init.resize(2 * blocks * d, f32::INFINITY);
        let buf = buffers::upload(
            &self.ctx.device,
            &self.ctx.limits,
            &format!("per-position statistics of a {d}-wide input"),
            bytemuck::cast_slice(&init),
        )?;
        if let Some(old) = &acc.pos {
            let half = (acc.blocks * d * 4) as u64;
            let min_at = (blocks * d * 4) as u64;
            self.with_encoder(|enc| {
                enc.copy_buffer_to_buffer(old, 0, &buf, 0, half);
                enc.copy_buffer_to_buffer(old, half, &buf, min_at, half);
            });
        }
        acc.pos = Some(buf);
        acc.blocks = blocks;
        Ok(())
    }

    /// Record `acc += statistics of x` (x: `rows × acc.dim`, sequences of `seq` rows), keeping
    /// rows `keep` of `x` as samples while fewer than `calib::SAMPLE_ROWS` are held.
    pub fn gram_add(&self, acc: &mut GramAcc, x: &Act, seq: usize, keep: &[usize]) -> Result<()> {
        let d = acc.dim;
        if x.cols != d {
            return Err(Error::config(
                "calibration",
                format!("activation of width {} where {d} was expected", x.cols),
            ));
        }
        if seq == 0 || !x.rows.is_multiple_of(seq) {
            return Err(Error::config(
                "calibration",
                format!("{} rows are not sequences of {seq}", x.rows),
            ));
        }
        if x.rows == 0 {
            return Ok(());
        }
        // Per block of CHUNK_STEP positions, over every sequence of the batch (CPU: Acc::add).
        let blocks = seq.div_ceil(CHUNK_STEP);
        self.grow_pos(acc, blocks)?;
        if let Some(pos) = &acc.pos {
            let pipe = self.pipes.plain("tender_stats", "pos_range")?;
            let p = self.uniform(&Params8([
                u(x.rows),
                u(d),
                u(seq),
                u(CHUNK_STEP),
                u(blocks),
                u(acc.blocks),
                0,
                0,
            ]));
            self.dispatch(
                &pipe,
                &[&p, &x.buf, pos],
                (u(d.div_ceil(64)), u(blocks)),
                &|| format!("tender_stats pos_range {}×{d}", x.rows),
            );
        }
        let slice_bytes = acc_len(d) * 4;
        // Ranges: enough for TARGET_GROUPS workgroups, as many as one binding of partials holds.
        let nt = d.div_ceil(TILE);
        let tiles = nt * (nt + 1) / 2;
        let want = TARGET_GROUPS.div_ceil(tiles).max(1);
        let max_splits = (self.binding_limit() as usize / slice_bytes).max(1);
        let len = x
            .rows
            .div_ceil(want.min(max_splits))
            .max(x.rows.div_ceil(max_splits))
            .max(MIN_RANGE_ROWS)
            .div_ceil(SLICE)
            * SLICE;
        let splits = x.rows.div_ceil(len);
        buffers::check_size(
            &self.ctx.limits,
            "calibration partial sums",
            splits * slice_bytes,
        )?;
        let part = self.pool.get(splits * slice_bytes);
        let pipe = self.pipes.plain("gram", "main")?;
        let p = self.uniform(&Params4([u(x.rows), u(d), u(len), 0]));
        self.dispatch_3d(
            &pipe,
            &[&p, &x.buf, &part],
            (u(nt), u(nt), u(splits)),
            &|| format!("gram {}×{d} in {splits} ranges", x.rows),
        );
        let reduce = self.pipes.plain("gram_reduce", "main")?;
        let n = acc_len(d);
        let rp = self.uniform(&Params4([u(d), u(splits), u(n), 0]));
        self.dispatch(
            &reduce,
            &[&rp, &part, &acc.buf],
            self.groups_1d(n, 256),
            &|| format!("gram reduce ×{splits} {d}"),
        );
        let row_bytes = (d * 4) as u64;
        for &r in keep.iter().filter(|&&r| r < x.rows) {
            if acc.sampled >= calib::SAMPLE_ROWS {
                break;
            }
            let at = acc.sampled as u64 * row_bytes;
            self.with_encoder(|enc| {
                enc.copy_buffer_to_buffer(&x.buf, r as u64 * row_bytes, &acc.samples, at, row_bytes)
            });
            acc.sampled += 1;
        }
        acc.rows += x.rows;
        Ok(())
    }

    /// Read accumulators back (one map for all of them) as `SiteStats`: the Gram mirrored to
    /// full symmetric form, `mean|x|`, `max|x|` and `ℓ2 = √diag(XᵀX)`.
    pub async fn gram_read(&self, accs: &[&GramAcc]) -> Result<Vec<SiteStats>> {
        let total: usize = accs
            .iter()
            .map(|a| (acc_len(a.dim) + a.sampled * a.dim + 2 * a.blocks * a.dim) * 4)
            .sum();
        if accs.is_empty() {
            return Ok(Vec::new());
        }
        let staging = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("gram staging"),
            size: total as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut off = 0u64;
        for a in accs {
            let bytes = (acc_len(a.dim) * 4) as u64;
            self.with_encoder(|enc| enc.copy_buffer_to_buffer(&a.buf, 0, &staging, off, bytes));
            off += bytes;
            let sbytes = (a.sampled * a.dim * 4) as u64;
            if sbytes > 0 {
                self.with_encoder(|enc| {
                    enc.copy_buffer_to_buffer(&a.samples, 0, &staging, off, sbytes)
                });
                off += sbytes;
            }
            if let Some(pos) = &a.pos {
                let pbytes = (2 * a.blocks * a.dim * 4) as u64;
                self.with_encoder(|enc| enc.copy_buffer_to_buffer(pos, 0, &staging, off, pbytes));
                off += pbytes;
            }
        }
        let submission = self.submit();
        let raw = self.read_back(&staging, submission).await?;
        let floats: Vec<f32> = bytemuck::pod_collect_to_vec(&raw);
        let mut out = Vec::with_capacity(accs.len());
        let mut at = 0;
        for a in accs {
            let d = a.dim;
            let v = floats.get(at..at + acc_len(d)).ok_or_else(|| {
                Error::unsupported("gpu", "readback", "statistics shorter than requested")
            })?;
            at += acc_len(d);
            let samples = floats
                .get(at..at + a.sampled * d)
                .ok_or_else(|| {
                    Error::unsupported("gpu", "readback", "samples shorter than requested")
                })?
                .to_vec();
            at += a.sampled * d;
            let pb = a.blocks * d;
            let pos = floats.get(at..at + 2 * pb).ok_or_else(|| {
                Error::unsupported("gpu", "readback", "positions shorter than requested")
            })?;
            at += 2 * pb;
            let mut gram = v[..d * d].to_vec();
            // Only the upper triangle was accumulated.
            for i in 1..d {
                for j in 0..i {
                    gram[i * d + j] = gram[j * d + i];
                }
            }
            let n = a.rows.max(1) as f32;
            out.push(SiteStats {
                dim: d,
                rows: a.rows,
                mean_abs: v[d * d..d * d + d].iter().map(|s| s / n).collect(),
                max_abs: v[d * d + d..d * d + 2 * d].to_vec(),
                l2: (0..d).map(|j| gram[j * d + j].max(0.0).sqrt()).collect(),
                gram,
                samples,
                pos_max: pos[..pb].to_vec(),
                pos_min: pos[pb..].to_vec(),
            });
        }
        Ok(out)
    }
}

/// `quant::calib::calibrate` with `model` on the GPU: the same sequences and statistics,
/// `Backend::eval_batch` sequences per forward pass. `progress(done, total)` counts sequences,
/// before each batch and at the end; returning `false` stops with `Error::Cancelled`.
pub async fn calibrate(
    gpu: &Gpu,
    model: &Model<Gpu>,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &CalibOptions,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Calibration> {
    let range = opts.range(tokens.len())?;
    let c = &model.config;
    let dims = calib::site_dims(c)?;
    calib::stats_bytes(c)?;
    // What stays on the device: every accumulator until the end.
    let resident: usize = c.n_layer
        * dims
            .iter()
            .map(|&d| {
                (acc_len(d) + calib::SAMPLE_ROWS * d + 2 * opts.seq_len.div_ceil(CHUNK_STEP) * d)
                    * 4
            })
            .sum::<usize>();
    if let Some(budget) = gpu.memory_budget.get() {
        let held = gpu.weight_bytes_held();
        if held + resident as u64 > budget {
            return Err(Error::unsupported(
                "gpu",
                "calibration",
                format!(
                    "statistics of {resident} bytes next to {held} bytes of weights exceed the \
                     device budget of {budget} bytes"
                ),
            ));
        }
    }
    let mut acc: Vec<Vec<GramAcc>> = Vec::with_capacity(c.n_layer);
    for _ in 0..c.n_layer {
        acc.push(
            dims.iter()
                .map(|&d| gpu.gram_acc(d))
                .collect::<Result<_>>()?,
        );
    }
    let (n, l) = (opts.n_seq, opts.seq_len);
    let width = c.topology()?.widest();
    let per = gpu.eval_batch(l, width).max(1);
    let mut seqs = Vec::with_capacity(n);
    for s0 in (0..n).step_by(per) {
        if !progress(s0, n) {
            return Err(Error::Cancelled);
        }
        let s1 = (s0 + per).min(n);
        let mut batch = Vec::with_capacity((s1 - s0) * l);
        for s in s0..s1 {
            let seq = calib::sequence(tokens, &range, s, l, bos)?;
            batch.extend_from_slice(&seq);
            seqs.push(seq);
        }
        let keep: Vec<usize> = (s0..s1)
            .flat_map(|s| {
                calib::samples_wanted(s, n, l)
                    .into_iter()
                    .map(move |p| (s - s0) * l + p)
            })
            .collect();
        let out = model.forward_batch_observed(gpu, &batch, l, &mut |layer, site, x| {
            let a = acc
                .get_mut(layer)
                .ok_or_else(|| Error::config("calibration", format!("unexpected layer {layer}")))?;
            let a = a
                .get_mut(site)
                .ok_or_else(|| Error::config("calibration", format!("unexpected site {site}")))?;
            gpu.gram_add(a, x, l, &keep)
        })?;
        drop(out);
        // Hand the batch to the GPU now so it computes while the next one is recorded.
        gpu.flush();
    }
    let mut layers = Vec::with_capacity(acc.len());
    for a in &acc {
        let refs: Vec<&GramAcc> = a.iter().collect();
        let st: Vec<SiteStats> = gpu.gram_read(&refs).await?;
        if st.len() != a.len() {
            return Err(Error::unsupported(
                "gpu",
                "calibration",
                "a layer's statistics are incomplete",
            ));
        }
        layers.push(st);
    }
    if !progress(n, n) {
        return Err(Error::Cancelled);
    }
    Ok(Calibration {
        opts: *opts,
        range,
        layers,
        seqs,
    })
}
