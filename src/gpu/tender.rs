//! Tender's decomposed activation quantization and its integer product on the GPU (Lee et al.,
//! "Tender", arXiv 2406.12930; the rules and CPU reference are `format::tender`).
//!
//! `tender_act` records three kernels: per-chunk channel maxima and minima
//! (`shaders/tender_stats.wgsl`, dynamic only), each chunk's bias, tmax, groups and a channel
//! order with the groups contiguous (`tender_chunk.wgsl`; static chunks are uploaded), then the
//! codes in that order and the fake-quantized values in place (`tender_quant.wgsl`). The codes
//! and per-chunk parameters stay on the `Act` (`KeptCodes::Tender`), like W4A8's, and `linear`
//! multiplies them in integers with shift accumulation (`tender_matmul.wgsl`) when the weight is
//! what `format::tender::weight_codes` accepts; anything else takes the float path on the
//! fake-quantized values. Nothing is read back.

use crate::format::intmm::check_no_overflow;
use crate::format::tender::{self, TenderChunk, TenderCodes, TenderRound, TenderSpec};
use crate::gpu::backend::{Act, Gpu, Mat};
use crate::gpu::buffers::{self, PooledBuffer};
use crate::gpu::intmm::{IntMatmul, KeptCodes};
use crate::gpu::pipelines::MATMUL_TILE;
use crate::gpu::record::{u, Params8};
use crate::{Error, Result};
use bytemuck::{Pod, Zeroable};

/// Words of chunk information per chunk (shaders/tender_chunk.wgsl): tmax, s_0, then the start
/// of each group's range (groups from k−1 down) and the padded total.
const CI_STRIDE: usize = 20;
/// Positions per slice of the integer product: every group's range is padded to a multiple.
const SLICE: usize = 16;
/// Rows per tile of the integer product (and per block of `tender_stats.wgsl`'s `pos_range`).
const ROW_TILE: usize = 64;
/// A padding position of the permutation.
const NONE: u32 = u32::MAX;

/// Tender's codes kept with an `Act`: the codes of every row in its chunk's permuted order
/// (`kpad / 4` words per row), and per chunk the biases, groups, information words and
/// permutation (`kpad` positions).
pub(crate) struct TenderAct {
    pub(crate) spec: TenderSpec,
    pub(crate) seq: usize,
    pub(crate) chunks: usize,
    /// Chunks per sequence.
    pub(crate) nps: usize,
    pub(crate) kpad: usize,
    pub(crate) codes: PooledBuffer,
    pub(crate) bias: PooledBuffer,
    pub(crate) group: PooledBuffer,
    pub(crate) info: PooledBuffer,
    pub(crate) perm: PooledBuffer,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct TenderMatmulParams {
    m: u32,
    n: u32,
    k: u32,
    seq: u32,
    t: u32,
    nps: u32,
    tps: u32,
    kpad: u32,
    kpw: u32,
    groups: u32,
    bits: u32,
    group: u32,
    scale_off: u32,
    mode: u32,
    pad: [u32; 2],
}

/// Positions per chunk of the permuted order: each group padded to `SLICE` adds at most
/// `SLICE − 1` to the channels.
fn padded_positions(cols: usize, k: u8) -> usize {
    (cols + (SLICE - 1) * k as usize).div_ceil(SLICE) * SLICE
}

impl Gpu {
    /// `Backend::tender_act`: fake-quantize `x` in place with Tender's decomposition and keep
    /// the codes for `linear`.
    pub(crate) fn record_tender(
        &self,
        x: &mut Act,
        spec: &TenderSpec,
        fixed: Option<&[TenderChunk]>,
        seq: usize,
    ) -> Result<()> {
        // Whatever happens below, earlier codes no longer describe `x`.
        x.q = None;
        spec.check()?;
        let (rows, cols) = (x.rows, x.cols);
        if cols == 0 {
            return Err(Error::config("activation", "rows of 0 columns"));
        }
        let chunks = tender::chunks(rows, seq, spec.chunk)?.len();
        if rows == 0 {
            return Ok(());
        }
        let nps = seq.div_ceil(spec.chunk);
        let max_groups = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
        if chunks > max_groups {
            return Err(Error::unsupported(
                "gpu",
                "tender_act",
                format!("{chunks} chunks exceed {max_groups} workgroups per dimension"),
            ));
        }
        let kpad = padded_positions(cols, spec.groups);
        let lim = &self.ctx.limits;
        buffers::check_size(lim, "Tender codes", rows * kpad)?;
        buffers::check_size(lim, "Tender permutation", chunks * kpad * 4)?;
        buffers::check_size(lim, "Tender chunk ranges", 2 * chunks * cols * 4)?;
        let t = TenderAct {
            spec: *spec,
            seq,
            chunks,
            nps,
            kpad,
            codes: self.pool.get(rows * kpad),
            bias: self.pool.get(chunks * cols * 4),
            group: self.pool.get(chunks * cols * 4),
            info: self.pool.get(chunks * CI_STRIDE * 4),
            perm: self.pool.get(chunks * kpad * 4),
        };
        let range = match fixed {
            None => {
                let mm = self.pool.get(2 * chunks * cols * 4);
                let p = self.uniform(&Params8([
                    u(rows),
                    u(cols),
                    u(seq),
                    u(spec.chunk),
                    u(nps),
                    u(chunks),
                    0,
                    0,
                ]));
                let pipe = self.pipes.plain("tender_stats", "chunk_range")?;
                self.dispatch(
                    &pipe,
                    &[&p, &x.buf, &mm],
                    (u(cols.div_ceil(ROW_TILE)), u(chunks)),
                    &|| format!("tender_stats {chunks} chunks ×{cols}"),
                );
                Some(mm)
            }
            Some(f) => {
                self.upload_fixed(&t, f, cols)?;
                None
            }
        };
        let p = self.uniform(&Params8([
            u(cols),
            u(chunks),
            spec.groups as u32,
            (spec.round == TenderRound::Up) as u32,
            spec.qmax().to_bits(),
            range.is_some() as u32,
            u(kpad),
            0,
        ]));
        let pipe = self.pipes.plain("tender_chunk", "main")?;
        let mm: &wgpu::Buffer = range.as_deref().unwrap_or(&self.dummy_ro);
        self.dispatch(
            &pipe,
            &[&p, mm, &t.bias, &t.group, &t.info, &t.perm],
            (u(chunks), 1),
            &|| format!("tender_chunk {chunks} chunks k {}", spec.groups),
        );
        let kpw = kpad / 4;
        let p = self.uniform(&Params8([
            u(rows),
            u(cols),
            u(seq),
            u(spec.chunk),
            u(nps),
            u(kpad),
            u(kpw),
            spec.qmax().to_bits(),
        ]));
        let pipe = self.pipes.plain("tender_quant", "main")?;
        self.dispatch(
            &pipe,
            &[&p, &t.perm, &t.bias, &t.group, &t.info, &x.buf, &t.codes],
            self.groups_1d(rows * kpw, 256),
            &|| format!("tender_quant {}b {rows}×{cols}", spec.bits),
        );
        x.q = Some(KeptCodes::Tender(t));
        Ok(())
    }

    /// Static mode: each chunk's calibrated decomposition (`fixed[p]` for chunk position `p`,
    /// the last one past the end) into the chunk buffers; tender_chunk.wgsl adds s_0 and the
    /// order.
    fn upload_fixed(&self, t: &TenderAct, fixed: &[TenderChunk], cols: usize) -> Result<()> {
        if fixed.is_empty() {
            return Err(Error::config("act.tender", "no calibrated chunk"));
        }
        for c in fixed {
            c.check(cols, &t.spec)?;
        }
        let mut bias = Vec::with_capacity(t.chunks * cols);
        let mut group = Vec::with_capacity(t.chunks * cols);
        let mut info = vec![0u32; t.chunks * CI_STRIDE];
        for c in 0..t.chunks {
            let f = &fixed[(c % t.nps).min(fixed.len() - 1)];
            bias.extend_from_slice(&f.bias);
            group.extend(f.group.iter().map(|&g| g as u32));
            info[c * CI_STRIDE] = f.tmax.to_bits();
        }
        let lim = &self.ctx.limits;
        let dev = &self.ctx.device;
        for (src, dst) in [
            (bytemuck::cast_slice::<f32, u8>(&bias), &t.bias),
            (bytemuck::cast_slice(&group), &t.group),
            (bytemuck::cast_slice(&info), &t.info),
        ] {
            let b = buffers::upload(dev, lim, "Tender static chunks", src)?;
            self.with_encoder(|enc| enc.copy_buffer_to_buffer(&b, 0, dst, 0, b.size()));
        }
        Ok(())
    }

    /// Record `out = x Wᵀ + b` as Tender's integer product when `x` carries Tender's codes and
    /// `w` is a whole symmetric `Int` weight of 2–8 bits with one scale per row (or tensor) and
    /// no add-ons; false, recording nothing, when the float path must run.
    pub(crate) fn record_tender_matmul(&self, x: &Act, w: &Mat, out: &wgpu::Buffer) -> bool {
        self.tender_product(x, w, out, false)
    }

    fn tender_product(&self, x: &Act, w: &Mat, out: &wgpu::Buffer, accs: bool) -> bool {
        let Some(KeptCodes::Tender(t)) = &x.q else {
            return false;
        };
        let native = match self.int_matmul.get() {
            Some(IntMatmul::Off) => return false,
            Some(IntMatmul::Native) | None => self.ctx.dot4,
            Some(IntMatmul::Emulated) => false,
        };
        let f = &w.fmt;
        let (m, n, k) = (x.rows, w.rows, w.cols);
        let takes = f.fragment == "fmt_int"
            && f.sym == 1
            && (2..=8).contains(&f.bits)
            && w.parts.is_empty()
            && w.addons.is_none()
            && n > 0
            && x.cols == k
            && (f.group as usize) >= k
            && (f.group as usize).is_multiple_of(k)
            && check_no_overflow(k, f.bits as u8).is_ok();
        if !takes || m == 0 {
            return false;
        }
        let pipe = match self.pipes.tender_matmul(native) {
            Ok(p) => p,
            Err(e) => {
                self.fail("linear", e.to_string());
                return true;
            }
        };
        // β_c · Ŵᵀ + b per chunk: the float product of the chunks' biases.
        let bw = self.pool.get(t.chunks * n * 4);
        self.record_matmul(&t.bias, 0, t.chunks, w, &bw);
        let tps = t.seq.div_ceil(ROW_TILE);
        let p = TenderMatmulParams {
            m: u(m),
            n: u(n),
            k: u(k),
            seq: u(t.seq),
            t: u(t.spec.chunk),
            nps: u(t.nps),
            tps: u(tps),
            kpad: u(t.kpad),
            kpw: u(t.kpad / 4),
            groups: t.spec.groups as u32,
            bits: f.bits,
            group: f.group,
            scale_off: f.scale_off,
            mode: accs as u32,
            pad: [0; 2],
        };
        let params = self.uniform(&p);
        let tiles = (u(n.div_ceil(MATMUL_TILE)), u(m / t.seq * tps));
        self.int_products.set(self.int_products.get() + 1);
        self.dispatch(
            &pipe,
            &[&params, &w.w, &t.codes, &t.perm, &t.info, &bw, out],
            tiles,
            &|| {
                let v = if native { "dot4" } else { "emul" };
                format!(
                    "tender_matmul {v} k {} int{} {m}×{k}→{n}",
                    t.spec.groups, f.bits
                )
            },
        );
        true
    }

    /// The 64-bit accumulators `Σ_i 2^i P_i` of Tender's integer product of `x` and `w`, row
    /// by row (`x.rows × w.rows`), or None when `linear` would take the float path: what the
    /// tests compare with `format::tender::tender_linear`'s as integers.
    pub async fn tender_accumulators(&self, x: &Act, w: &Mat) -> Result<Option<Vec<i64>>> {
        let n = x.rows * w.rows;
        buffers::check_size(&self.ctx.limits, "Tender accumulators", 8 * n)?;
        let out = self.pool.get(8 * n);
        if !self.tender_product(x, w, &out, true) {
            return Ok(None);
        }
        let staging = self.stage(&out, 8 * n);
        self.flush();
        let bytes = self.read_back(&staging, None).await?;
        self.take_error()?;
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
        Ok(Some(
            words
                .chunks_exact(2)
                .take(n)
                .map(|w| ((w[1] as u64) << 32 | w[0] as u64) as i64)
                .collect(),
        ))
    }

    /// The Tender codes `x` carries, un-permuted, with each chunk's decomposition, and each
    /// chunk's `s_0` as the GPU computed it; None when it carries none (tests, inspection).
    pub async fn read_tender(&self, x: &Act) -> Result<Option<(TenderCodes, Vec<f32>)>> {
        let Some(KeptCodes::Tender(t)) = &x.q else {
            return Ok(None);
        };
        let (rows, cols, nc) = (x.rows, x.cols, t.chunks);
        let staged = [
            self.stage(&t.codes, rows * t.kpad),
            self.stage(&t.perm, nc * t.kpad * 4),
            self.stage(&t.bias, nc * cols * 4),
            self.stage(&t.group, nc * cols * 4),
            self.stage(&t.info, nc * CI_STRIDE * 4),
        ];
        self.flush();
        let mut raw = Vec::with_capacity(staged.len());
        for s in &staged {
            raw.push(self.read_back(s, None).await?);
        }
        self.take_error()?;
        let words = |b: &[u8]| bytemuck::pod_collect_to_vec::<u8, u32>(b);
        let (perm, group, info) = (words(&raw[1]), words(&raw[3]), words(&raw[4]));
        let bias: Vec<f32> = bytemuck::pod_collect_to_vec(&raw[2]);
        let chunks: Vec<TenderChunk> = (0..nc)
            .map(|c| TenderChunk {
                bias: bias[c * cols..(c + 1) * cols].to_vec(),
                tmax: f32::from_bits(info[c * CI_STRIDE]),
                group: group[c * cols..(c + 1) * cols]
                    .iter()
                    .map(|&g| g as u8)
                    .collect(),
            })
            .collect();
        let s0 = (0..nc)
            .map(|c| f32::from_bits(info[c * CI_STRIDE + 1]))
            .collect();
        let chunk_of_row: Vec<u32> = (0..rows)
            .map(|r| u((r / t.seq) * t.nps + (r % t.seq) / t.spec.chunk))
            .collect();
        let mut codes = vec![0i8; rows * cols];
        for (r, &c) in chunk_of_row.iter().enumerate() {
            let order = &perm[c as usize * t.kpad..(c as usize + 1) * t.kpad];
            let row = &raw[0][r * t.kpad..(r + 1) * t.kpad];
            for (&j, &q) in order.iter().zip(row) {
                if j != NONE {
                    codes[r * cols + j as usize] = q as i8;
                }
            }
        }
        let codes = TenderCodes {
            spec: t.spec,
            rows,
            cols,
            codes,
            chunks,
            chunk_of_row,
        };
        Ok(Some((codes, s0)))
    }
}
