//! `impl Backend for Gpu`: THE forward pass (`model::arch`) on wgpu. Activations live in GPU
//! buffers (recycled through `buffers::Pool`), every operation is recorded into a command
//! encoder that is submitted in batches, and only the per-token scores come back, through an
//! asynchronous map (`read_scores`), so nothing blocks in the browser.
//!
//! The trait's element-wise operations cannot return errors; a shape mismatch there is recorded
//! and reported by the next readback (`read_scores`, `read_act`), as are wgpu validation errors.

use crate::format::act::ActQuantSpec;
use crate::format::binarymos::MosGpuLayout;
use crate::format::{GpuDecoder, QTensor};
use crate::gpu::addons::AddonLayout;
use crate::gpu::buffers::{self, Pool, PooledBuffer};
use crate::gpu::context::GpuContext;
use crate::gpu::intmm::{IntMatmul, KeptCodes};
use crate::gpu::load::Held;
use crate::gpu::pipelines::{AttentionVariant, Pipelines};
use crate::gpu::record::{u, Params4, Params8, WeightParams};
use crate::gpu::shaders;
use crate::model::backend::{Backend, TokenScore};
use crate::model::config::RopeStyle;
use crate::{Error, Result};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

/// Rows per evaluation batch on a device with tensor cores (`Backend::eval_batch`).
pub const EVAL_ROWS_TENSOR_CORES: usize = 33792;

/// LM-head rows scored per chunk: bounds the logits scratch (64 × 49152 floats = 12.6 MB).
const SCORE_CHUNK: usize = 64;
/// Rows per chunk where the logits fit half of the device's storage binding limit: a
/// whole scored half of a 512-token window in one product of the head instead of four (the
/// head is the model's largest product; 4 × 64 rows also gave the tensor cores too little to
/// do per dispatch, docs/gpu-perf.md v7). 256 × 49152 floats = 50 MB.
const SCORE_CHUNK_LARGE: usize = 256;
/// Largest head dimension the attention kernel holds (shaders/attention.wgsl `MAX_HD`).
const MAX_HEAD_DIM: usize = 128;
/// The attention kernel reads heads as vec4s, so the head dimension must be a multiple of 4,
/// and handles `QB` queries per workgroup.
const ATTN_VEC: usize = 4;
const ATTN_QUERIES: usize = 16;
/// Invocations per query (key splits) by default: every head dimension allows 4, and on the
/// H100 it was the fastest (8 and 16: 5 % and 25 % slower; docs/gpu-perf.md).
const ATTN_SPLITS: usize = 4;
/// Attention kernels by preference when none is forced: the first that applies to the head
/// dimension and the device's workgroup memory is used (`Split` always applies). H100
/// (Vulkan), 9/3 heads × 64, 16 sequences of 512: split 2.34 ms, tiled32 0.89 ms, tiled64
/// 0.49 ms (`gpu_bench --only-attention --tiles`). Lavapipe and Chromium (SwiftShader) offer
/// 32 KiB of workgroup memory, so there tiled32 runs; below 26 KiB, split.
const ATTN_DEFAULT: [AttentionVariant; 3] = [
    AttentionVariant::Tiled64,
    AttentionVariant::Tiled32,
    AttentionVariant::Split,
];

/// Activations: a `rows × cols` f32 matrix in a pooled GPU buffer.
pub struct Act {
    pub rows: usize,
    pub cols: usize,
    pub(crate) buf: PooledBuffer,
    /// The integer codes of `buf`'s values, kept by `fake_quant_act` (row scales, the W4A8
    /// product: src/gpu/intmm.rs) or `tender_act` (per-chunk decomposition: src/gpu/tender.rs)
    /// for `linear`'s integer path. Valid only while `buf` holds exactly those fake-quantized
    /// values: every operation that writes an `Act` in place drops them.
    pub(crate) q: Option<KeptCodes>,
}

impl Act {
    /// Whether the activations carry integer codes (`linear` may then run in integers).
    pub fn has_codes(&self) -> bool {
        self.q.is_some()
    }
}

/// A weight matrix `rows × cols`, packed as its format stores it (`QTensor.data` byte for byte).
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    /// Bytes the packed weight (and bias) occupy on the device.
    pub bytes: usize,
    pub(crate) w: wgpu::Buffer,
    pub(crate) bias: Option<wgpu::Buffer>,
    pub(crate) fmt: GpuDecoder,
    /// Outliers / low-rank factors stored after the base bytes of `w` (addons.rs).
    pub(crate) addons: Option<AddonLayout>,
    /// A BinaryMoS weight: `fmt` decodes its signs only, and every product goes through its
    /// token-mixed scales (binarymos.rs).
    pub(crate) mos: Option<MosGpuLayout>,
    /// Row parts of a weight larger than one storage binding (split.rs), in row order; empty
    /// for a weight in one buffer (then `w` holds it); a split weight binds the shared dummy
    /// buffer as `w`.
    pub(crate) parts: Vec<Mat>,
    /// This weight's share of `Gpu::weight_bytes_held` (None for a split weight: its parts).
    pub(crate) _held: Option<Held>,
    /// Its f16 copy for the all-f16 products (matmul.rs `record_h16`), made by the first such
    /// product and kept while the weight lives; shared by `Mat::share` handles.
    pub(crate) h16: H16Cache,
}

/// A weight's decoded f16 copy, once made (`Mat::h16`).
pub(crate) type H16Cache = Rc<RefCell<Option<(wgpu::Buffer, Held)>>>;

impl Mat {
    /// Buffers the weight occupies: 1, or the number of row parts it was split into.
    pub fn parts(&self) -> usize {
        self.parts.len().max(1)
    }

    /// Whether this is a BinaryMoS weight (whole or split), which only `linear` and the head's
    /// products can use: its `fmt` decodes signs, not the weight.
    pub(crate) fn is_mos(&self) -> bool {
        self.mos.is_some() || self.parts.iter().any(|p| p.mos.is_some())
    }
}

pub struct Vector {
    pub len: usize,
    pub(crate) buf: wgpu::Buffer,
    pub(crate) _held: Held,
}

/// Log-probabilities of `rows × vocab`, kept on the GPU as a reference for KL/top-1.
pub struct LogProbs {
    pub rows: usize,
    pub vocab: usize,
    pub(crate) buf: PooledBuffer,
}

/// Scores recorded on the GPU; `read_scores` maps them back.
pub struct Pending {
    pub(crate) n: usize,
    pub(crate) has_ref: bool,
    pub(crate) staging: wgpu::Buffer,
    /// The submission that holds the copy into `staging`.
    pub(crate) submission: Option<wgpu::SubmissionIndex>,
}

/// The wgpu backend.
pub struct Gpu {
    pub ctx: GpuContext,
    pub(crate) pipes: Pipelines,
    pub(crate) pool: Rc<Pool>,
    pub(crate) encoder: RefCell<Option<wgpu::CommandEncoder>>,
    /// The compute pass open on `encoder`, if any (it locks the encoder until dropped).
    pub(crate) pass: RefCell<Option<wgpu::ComputePass<'static>>>,
    /// Uniform blocks by contents, bind groups by pipeline and buffers (record.rs).
    pub(crate) uniforms: RefCell<HashMap<Vec<u8>, wgpu::Buffer>>,
    #[allow(clippy::type_complexity)]
    pub(crate) bind_groups:
        RefCell<HashMap<(wgpu::ComputePipeline, Vec<wgpu::Buffer>), wgpu::BindGroup>>,
    /// Timestamp queries around every dispatch while profiling (profile.rs).
    pub(crate) profiler: RefCell<Option<crate::gpu::profile::Profiler>>,
    /// A matmul tile shape forced for every product (benchmarks); None picks per shape.
    pub(crate) matmul_variant: Cell<Option<crate::gpu::pipelines::MatmulVariant>>,
    /// The kernels unforced products use (`set_matmul_gen`).
    pub(crate) matmul_gen: Cell<crate::gpu::pipelines::MatmulGen>,
    /// f32 (the reference) or f16 on tensor cores for the weight products (`set_precision`).
    pub(crate) precision: Cell<crate::gpu::pipelines::Precision>,
    /// `F16` on the packed-f16 kernel even where tensor cores exist (`force_packed_f16`).
    pub(crate) packed_f16: Cell<bool>,
    /// Products of slow-to-decode formats decode the weight to f16 first (matmul.rs
    /// `decode_first`); off only to compare the two paths (`set_decode_first`).
    pub(crate) decode_first: Cell<bool>,
    /// Products that decoded their weight first (tests check the path is taken).
    pub(crate) decoded_first: Cell<usize>,
    /// Products run by the all-f16 kernels so far (`MatmulGen::V7`, `V8`; tests).
    pub(crate) h16_products: Cell<usize>,
    /// Weights decoded into their kept f16 copy so far (`Mat::h16`; tests).
    pub(crate) h16_decoded: Cell<usize>,
    /// Activations converted to f16 by the all-f16 products themselves (`to_f16.wgsl`), not
    /// taken from a copy their producer wrote (tests).
    pub(crate) h16_converted: Cell<usize>,
    /// Operations recorded so far (dispatches and encoder commands): tells `h16_x` whether
    /// anything ran since it was made.
    pub(crate) ops: Cell<u64>,
    /// The f16 copy of the activations the last all-f16 product made (src/gpu/matmul.rs
    /// `record_h16`), kept for the next product of the same rows (q/k/v and gate/up share
    /// theirs) as long as nothing else has been recorded since.
    pub(crate) h16_x: RefCell<Option<crate::gpu::matmul::H16Copy>>,
    /// Invocations per query forced for attention (benchmarks, tests); None: the default.
    pub(crate) attention_splits: Cell<Option<usize>>,
    /// Attention kernel forced for every call (benchmarks, tests); None: `ATTN_DEFAULT`.
    pub(crate) attention_variant: Cell<Option<AttentionVariant>>,
    /// The integer product's variant forced (tests, benchmarks); None: native `dot4I8Packed`
    /// where the device has it, else the emulation.
    pub(crate) int_matmul: Cell<Option<IntMatmul>>,
    /// Integer products recorded so far (tests check the path is taken).
    pub(crate) int_products: Cell<usize>,
    pub(crate) recorded: Cell<usize>,
    /// Evaluations are paced (`pace.rs`): recorded work is held back and run a block at a time.
    pub(crate) pace: Cell<bool>,
    /// While an evaluation is paced: the command buffers recorded and not yet submitted.
    pub(crate) held: RefCell<Option<std::collections::VecDeque<wgpu::CommandBuffer>>>,
    /// First error recorded by a sync operation or reported by wgpu; surfaced at readback.
    pub(crate) error: Arc<Mutex<Option<String>>>,
    /// cos/sin tables by (pos0, rows, head_dim, theta bits).
    pub(crate) rope_tables: RefCell<HashMap<(usize, usize, usize, u32), wgpu::Buffer>>,
    /// Bound in place of absent optional inputs (bias, reference, kept log-probs).
    pub(crate) dummy_ro: wgpu::Buffer,
    pub(crate) dummy_rw: wgpu::Buffer,
    /// Weight bytes held on the device, the optional budget on them, and a binding limit
    /// below the device's (load.rs).
    pub(crate) weights_held: Rc<Cell<u64>>,
    /// Bytes of weights' decoded f16 copies (`Mat::h16`), under `load::H16_CACHE_BYTES`.
    pub(crate) h16_held: Rc<Cell<u64>>,
    pub(crate) memory_budget: Cell<Option<u64>>,
    pub(crate) binding_override: Cell<Option<u64>>,
    /// Rows per evaluation batch instead of the default (`set_eval_rows`).
    pub(crate) eval_rows: Cell<Option<usize>>,
}

impl Backend for Gpu {
    type Act = Act;
    type Mat = Mat;
    type Vector = Vector;
    type LogProbs = LogProbs;
    type Pending = Pending;

    fn name(&self) -> String {
        format!("gpu: {}", self.ctx.describe())
    }

    fn eval_batch(&self, ctx: usize, width: usize) -> usize {
        // Enough rows that every product has hundreds of 64×64 tiles and attention has
        // thousands of workgroups, while the widest activation stays inside one binding. A
        // device with tensor cores is a large one: 16384 rows (32 windows of 512) ran 1.36×
        // the tokens/s of 4096 on the H100 at f16 (its 128×128 tiles fill the device only
        // then) and 1.21× at f32 (docs/gpu-perf.md, session 16). More rows still cut the last,
        // partly filled wave of workgroups: the products with 576 outputs make 5 × rows/128
        // tiles, 2.4 waves at 16384 rows on the H100's 132 multiprocessors (two workgroups
        // each), exactly 5 at 33792 (66 windows). The whole text at f32 there: 97.4K tokens/s
        // at 16384 rows, 99.4K at 32768, 100.3K at 33792 (session 21).
        let rows = self
            .eval_rows
            .get()
            .unwrap_or(if cfg!(target_arch = "wasm32") {
                2048
            } else if self.ctx.coop {
                EVAL_ROWS_TENSOR_CORES
            } else {
                4096
            });
        let binding = self.ctx.limits.max_storage_buffer_binding_size as usize;
        let by_binding = binding / (ctx * width.max(1) * 4).max(1);
        // Paced (the browser): one window at a time, so that each finished window is reported
        // and kept when a run is cancelled.
        let most = if self.pace.get() { 1 } else { usize::MAX };
        (rows / ctx.max(1)).min(by_binding).min(most).max(1)
    }

    fn load_matrix(&self, w: &QTensor, bias: Option<&[f32]>) -> Result<Mat> {
        self.load_mat(w, bias)
    }

    fn load_vector(&self, v: &[f32]) -> Result<Vector> {
        let what = format!("a vector of {}", v.len());
        Ok(Vector {
            len: v.len(),
            _held: self.hold(&what, 4 * v.len())?,
            buf: self.upload_weight(&what, bytemuck::cast_slice(v))?,
        })
    }

    fn embed(&self, table: &Mat, tokens: &[u32]) -> Result<Act> {
        if table.is_mos() {
            // A BinaryMoS row exists only against a token's activations (its scales are mixed
            // by them); quantizers binarize linear layers only.
            return Err(Error::unsupported(
                "gpu",
                "embed",
                "a BinaryMoS embedding table (its scales depend on each token's activations)",
            ));
        }
        if table.addons.is_some() || table.parts.iter().any(|p| p.addons.is_some()) {
            // Quantizers put add-ons on linear layers only (quant::config); a gather would need
            // its own outlier/low-rank pass.
            return Err(Error::unsupported(
                "gpu",
                "embed",
                "an embedding table with outliers or low-rank factors",
            ));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= table.rows) {
            return Err(Error::config(
                "token",
                format!("id {bad} is outside the vocabulary of {}", table.rows),
            ));
        }
        buffers::check_size(
            &self.ctx.limits,
            "embedding output",
            tokens.len() * table.cols * 4,
        )?;
        if !table.parts.is_empty() {
            return self.embed_split(table, tokens);
        }
        let pipe = self.pipes.weight("embed", table.fmt.fragment)?;
        let toks = buffers::upload(
            &self.ctx.device,
            &self.ctx.limits,
            "tokens",
            bytemuck::cast_slice(tokens),
        )?;
        let out = self.new_act(tokens.len(), table.cols);
        let p = WeightParams {
            m: u(tokens.len()),
            n: u(table.rows),
            k: u(table.cols),
            has_bias: 0,
            x_row0: 0,
            bits: table.fmt.bits,
            group: table.fmt.group,
            sym: table.fmt.sym,
            scale_off: table.fmt.scale_off,
            zero_off: table.fmt.zero_off,
            k_split: 0,
            pad: 0,
        };
        let params = self.uniform(&p);
        let groups = self.groups_1d(tokens.len() * table.cols, 256);
        self.dispatch(
            &pipe,
            &[&params, &table.w, &toks, &out.buf],
            groups,
            &|| {
                format!(
                    "embed {} {}×{}",
                    table.fmt.fragment,
                    tokens.len(),
                    table.cols
                )
            },
        );
        Ok(out)
    }

    fn rmsnorm(&self, x: &Act, w: &Vector, eps: f32) -> Act {
        let out = self.new_act(x.rows, x.cols);
        if w.len != x.cols {
            self.fail(
                "rmsnorm",
                format!("{} weights for {} columns", w.len, x.cols),
            );
            return out;
        }
        let pipe = match self.pipes.plain("rmsnorm", "main") {
            Ok(p) => p,
            Err(e) => {
                self.fail("rmsnorm", e.to_string());
                return out;
            }
        };
        let params = self.uniform(&Params4([u(x.rows), u(x.cols), eps.to_bits(), 0]));
        self.dispatch(
            &pipe,
            &[&params, &x.buf, &w.buf, &out.buf],
            (u(x.rows), 1),
            &|| format!("rmsnorm {}×{}", x.rows, x.cols),
        );
        out
    }

    fn layernorm(&self, x: &Act, w: &Vector, b: Option<&Vector>, eps: f32) -> Act {
        let out = self.new_act(x.rows, x.cols);
        if w.len != x.cols || b.is_some_and(|b| b.len != x.cols) {
            let bias = b.map_or("no".to_string(), |b| b.len.to_string());
            self.fail(
                "layernorm",
                format!("{} weights and {bias} biases for {} columns", w.len, x.cols),
            );
            return out;
        }
        let pipe = match self.pipes.plain("layernorm", "main") {
            Ok(p) => p,
            Err(e) => {
                self.fail("layernorm", e.to_string());
                return out;
            }
        };
        let params = self.uniform(&Params4([
            u(x.rows),
            u(x.cols),
            eps.to_bits(),
            b.is_some() as u32,
        ]));
        // Absent bias: the dummy buffer, switched off by `has_bias` (shaders/README.md).
        let bias: &wgpu::Buffer = b.map_or(&self.dummy_ro, |b| &b.buf);
        self.dispatch(
            &pipe,
            &[&params, &x.buf, &w.buf, bias, &out.buf],
            self.groups_1d(x.rows, 1),
            &|| format!("layernorm {}×{}", x.rows, x.cols),
        );
        out
    }

    fn linear(&self, x: &Act, w: &Mat) -> Act {
        let out = self.new_act(x.rows, w.rows);
        if x.cols != w.cols {
            self.fail(
                "linear",
                format!("input has {} columns, weight {}", x.cols, w.cols),
            );
            return out;
        }
        if self.record_int_matmul(x, w, &out.buf) || self.record_tender_matmul(x, w, &out.buf) {
            return out;
        }
        self.record_matmul(&x.buf, 0, x.rows, w, &out.buf);
        out
    }

    fn rope(
        &self,
        x: &mut Act,
        n_head: usize,
        head_dim: usize,
        pos0: usize,
        theta: f32,
        style: RopeStyle,
        seq: usize,
    ) {
        // Every in-place write makes the codes stale.
        x.q = None;
        if n_head * head_dim != x.cols || !head_dim.is_multiple_of(2) {
            return self.fail(
                "rope",
                format!("{n_head} heads × {head_dim} for {} columns", x.cols),
            );
        }
        if seq == 0 || !x.rows.is_multiple_of(seq) {
            return self.fail("rope", format!("{} rows in sequences of {seq}", x.rows));
        }
        // One table for one sequence; the kernel indexes it with `t % seq`.
        let (table, pipe) = match (
            self.rope_table(pos0, seq, head_dim, theta),
            self.pipes.plain("rope", "main"),
        ) {
            (Ok(t), Ok(p)) => (t, p),
            (Err(e), _) | (_, Err(e)) => return self.fail("rope", e.to_string()),
        };
        let half = (style == RopeStyle::Half) as u32;
        let params = self.uniform(&Params8([
            u(x.rows),
            u(n_head),
            u(head_dim),
            half,
            u(seq),
            0,
            0,
            0,
        ]));
        let groups = self.groups_1d(x.rows * n_head * head_dim / 2, 256);
        self.dispatch(&pipe, &[&params, &table, &x.buf], groups, &|| {
            format!("rope {}×{}×{head_dim}", x.rows, n_head)
        });
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
        let rows = q.rows;
        let out = self.new_act(rows, n_head * hd);
        // Each sequence of `seq` rows is one slice of the grid's y dimension (× heads).
        let t = seq;
        let ok = n_kv > 0
            && seq > 0
            && rows.is_multiple_of(seq)
            && n_head.is_multiple_of(n_kv)
            && hd <= MAX_HEAD_DIM
            && hd.is_multiple_of(ATTN_VEC)
            && q.cols == n_head * hd
            && (k.rows, k.cols) == (rows, n_kv * hd)
            && (v.rows, v.cols) == (rows, n_kv * hd);
        if !ok {
            self.fail(
                "attention",
                format!(
                    "q {}×{}, k {}×{}, v {}×{} in sequences of {seq} with {n_head}/{n_kv} heads of {hd} (max {MAX_HEAD_DIM}, a multiple of {ATTN_VEC})",
                    q.rows, q.cols, k.rows, k.cols, v.rows, v.cols
                ),
            );
            return out;
        }
        let scale = 1.0 / (hd as f32).sqrt();
        let params = self.uniform(&Params8([
            u(t),
            u(n_head),
            u(n_kv),
            u(hd),
            scale.to_bits(),
            0,
            0,
            0,
        ]));
        let variant = self.attention_variant(hd);
        // The tiled and tensor-core kernels: one workgroup per block of queries × head.
        let block = match variant {
            AttentionVariant::Coop => Some((self.pipes.attention_coop(), 64)),
            AttentionVariant::Coop1 => Some((self.pipes.attention_coop1(), 64)),
            v => v
                .tiled_queries()
                .map(|bq| (self.pipes.attention_tiled(bq), bq)),
        };
        if let Some((pipe, bq)) = block {
            let pipe = match pipe {
                Ok(p) => p,
                Err(e) => {
                    self.fail("attention", e.to_string());
                    return out;
                }
            };
            self.dispatch(
                &pipe,
                &[&params, &q.buf, &k.buf, &v.buf, &out.buf],
                (u(t.div_ceil(bq)), u(n_head * (rows / seq))),
                &|| {
                    format!(
                        "attention {} {}×{t} {n_head}/{n_kv}×{hd}",
                        variant.name(),
                        rows / seq
                    )
                },
            );
            return out;
        }
        let ns = self
            .attention_splits
            .get()
            .filter(|&ns| shaders::attention_splits_ok(hd, ns))
            .unwrap_or(ATTN_SPLITS);
        let pipe = match self.pipes.attention(hd, ns) {
            Ok(p) => p,
            Err(e) => {
                self.fail("attention", e.to_string());
                return out;
            }
        };
        self.dispatch(
            &pipe,
            &[&params, &q.buf, &k.buf, &v.buf, &out.buf],
            (u(t.div_ceil(ATTN_QUERIES)), u(n_head * (rows / seq))),
            &|| format!("attention ns{ns} {}×{t} {n_head}/{n_kv}×{hd}", rows / seq),
        );
        out
    }

    fn silu_mul(&self, gate: &mut Act, up: &Act) {
        // Before an all-f16 product (SwiGLU's down projection) the result is also written in
        // f16, which that product then reads instead of converting it.
        let copy = self.h16_copy_for(gate.rows, gate.cols);
        self.elementwise_f16("silu_mul", gate, up, copy);
    }

    fn add_rmsnorm(&self, x: &mut Act, y: &Act, w: &Vector, eps: f32) -> Act {
        let out = self.new_act(x.rows, x.cols);
        x.q = None;
        if (x.rows, x.cols) != (y.rows, y.cols) || w.len != x.cols {
            self.fail(
                "add_rmsnorm",
                format!(
                    "shapes {}×{} and {}×{}, {} weights",
                    x.rows, x.cols, y.rows, y.cols, w.len
                ),
            );
            return out;
        }
        let copy = self.h16_copy_for(x.rows, x.cols);
        let entry = if copy.is_some() { "main_h16" } else { "main" };
        let pipe = match self.pipes.plain("add_rmsnorm", entry) {
            Ok(p) => p,
            Err(e) => {
                self.fail("add_rmsnorm", e.to_string());
                return out;
            }
        };
        let params = self.uniform(&Params4([u(x.rows), u(x.cols), eps.to_bits(), 0]));
        let mut bindings: Vec<&wgpu::Buffer> = vec![&params, &x.buf, &y.buf, &w.buf, &out.buf];
        if let Some(d) = &copy {
            bindings.push(d);
        }
        self.dispatch(&pipe, &bindings, (u(x.rows), 1), &|| {
            format!("add_rmsnorm {}×{}", x.rows, x.cols)
        });
        if let Some(d) = copy {
            self.keep_h16_copy(&out.buf, x.rows, x.cols, d);
        }
        out
    }

    fn add(&self, x: &mut Act, y: &Act) {
        self.elementwise("add", x, y);
    }

    fn gelu(&self, x: &mut Act) {
        self.activation("gelu", x);
    }

    fn relu(&self, x: &mut Act) {
        self.activation("relu", x);
    }

    fn slice_cols(&self, x: &Act, from: usize, width: usize) -> Act {
        let out = self.new_act(x.rows, width);
        if from.checked_add(width).is_none_or(|end| end > x.cols) {
            self.fail(
                "slice_cols",
                format!("columns {from}..{from}+{width} of {}", x.cols),
            );
            return out;
        }
        let pipe = match self.pipes.plain("slice_cols", "main") {
            Ok(p) => p,
            Err(e) => {
                self.fail("slice_cols", e.to_string());
                return out;
            }
        };
        let params = self.uniform(&Params4([u(x.rows), u(width), u(x.cols), u(from)]));
        self.dispatch(
            &pipe,
            &[&params, &x.buf, &out.buf],
            self.groups_1d(x.rows * width, 256),
            &|| format!("slice_cols {}×{width} of {}", x.rows, x.cols),
        );
        out
    }

    fn fake_quant_act(&self, x: &mut Act, spec: &ActQuantSpec) -> Result<()> {
        self.record_fake_quant(x, spec)
    }

    fn tender_act(
        &self,
        x: &mut Act,
        spec: &crate::format::tender::TenderSpec,
        fixed: Option<&[crate::format::tender::TenderChunk]>,
        seq: usize,
    ) -> Result<()> {
        self.record_tender(x, spec, fixed, seq)
    }

    fn score(
        &self,
        x: &Act,
        head: &Mat,
        from: usize,
        targets: &[u32],
        reference: Option<&LogProbs>,
        keep: bool,
    ) -> Result<(Pending, Option<LogProbs>)> {
        let (n, vocab) = (targets.len(), head.rows);
        crate::gpu::score::check_scored_rows(x, head, from, targets)?;
        if let Some(r) = reference {
            if (r.rows, r.vocab) != (n, vocab) {
                return Err(Error::config(
                    "reference",
                    "reference log-probs do not match this window",
                ));
            }
        }
        let lim = &self.ctx.limits;
        let chunk =
            if SCORE_CHUNK_LARGE * vocab * 4 <= lim.max_storage_buffer_binding_size as usize / 2 {
                SCORE_CHUNK_LARGE
            } else {
                SCORE_CHUNK
            };
        buffers::check_size(lim, "logits chunk", chunk.min(n) * vocab * 4)?;
        if keep {
            buffers::check_size(lim, "kept log-probs", n * vocab * 4)?;
        }
        let pipe = self.pipes.plain("score", "main")?;
        let tgt = buffers::upload(
            &self.ctx.device,
            lim,
            "targets",
            bytemuck::cast_slice(targets),
        )?;
        let out = self.pool.get(n * 16);
        let kept = keep.then(|| LogProbs {
            rows: n,
            vocab,
            buf: self.pool.get(n * vocab * 4),
        });
        for c0 in (0..n).step_by(chunk) {
            let rows = chunk.min(n - c0);
            let logits = self.pool.get(rows * vocab * 4);
            self.record_matmul(&x.buf, from + c0, rows, head, &logits);
            let params = self.uniform(&Params8([
                u(vocab),
                u(rows),
                u(c0),
                reference.is_some() as u32,
                keep as u32,
                0,
                0,
                0,
            ]));
            let refb: &wgpu::Buffer = reference.map_or(&self.dummy_ro, |r| &r.buf);
            let keepb: &wgpu::Buffer = kept.as_ref().map_or(&self.dummy_rw, |k| &k.buf);
            self.dispatch(
                &pipe,
                &[&params, &logits, &tgt, refb, &out, keepb],
                (u(rows), 1),
                &|| format!("score {rows}×{vocab}"),
            );
        }
        let staging = self.stage(&out, n * 16);
        // Submit now so the GPU works while the caller records the next window.
        let submission = self.submit();
        Ok((
            Pending {
                n,
                has_ref: reference.is_some(),
                staging,
                submission,
            },
            kept,
        ))
    }

    fn score_windows(
        &self,
        x: &Act,
        head: &Mat,
        windows: &[(usize, &[u32])],
    ) -> Result<Vec<Pending>> {
        self.score_batched(x, head, windows)
    }

    async fn read_scores(&self, pending: Pending) -> Result<Vec<TokenScore>> {
        // Only this window's submission is waited for (a later window may be queued behind it).
        let bytes = self.read_back(&pending.staging, pending.submission).await?;
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
        Ok(words
            .chunks_exact(4)
            .take(pending.n)
            .map(|w| {
                let argmax = w[3];
                TokenScore {
                    nll: f32::from_bits(w[0]) as f64,
                    kl: if pending.has_ref {
                        f32::from_bits(w[1]) as f64
                    } else {
                        0.0
                    },
                    top1_agree: !pending.has_ref || w[2] == argmax,
                    argmax,
                }
            })
            .collect())
    }

    fn logits_row(&self, x: &Act, head: &Mat, row: usize) -> Result<Vec<f32>> {
        if row >= x.rows || x.cols != head.cols {
            return Err(Error::config("row", format!("{row} ≥ {}", x.rows)));
        }
        let out = self.new_act(1, head.rows);
        self.record_matmul(&x.buf, row, 1, head, &out.buf);
        // Natively this may wait; the browser cannot block, so there the caller must use
        // `read_act` on the output of an async path instead.
        #[cfg(not(target_arch = "wasm32"))]
        {
            pollster::block_on(self.read_act(&out))
        }
        #[cfg(target_arch = "wasm32")]
        {
            Err(Error::unsupported(
                "gpu",
                "logits_row",
                "reading logits synchronously would block the browser",
            ))
        }
    }

    fn hold_work(&self, on: bool) -> bool {
        self.hold_pieces(on)
    }

    fn block_boundary(&self) {
        self.flush();
    }

    fn run_held(
        &self,
        step: &mut dyn FnMut(usize, usize) -> bool,
    ) -> impl std::future::Future<Output = Result<()>> {
        self.run_pieces(step)
    }
}

impl Gpu {
    /// Multiply the weight products in `p`: `F16` runs on the device's cooperative matrices,
    /// else in packed f16 (`GpuContext::f16`), and is refused, with the reason, where it has
    /// neither.
    pub fn set_precision(&self, p: crate::gpu::pipelines::Precision) -> Result<()> {
        if p == crate::gpu::pipelines::Precision::F16 {
            if let Some(why) = self.ctx.f16_missing() {
                return Err(Error::unsupported("gpu", "precision f16", why));
            }
        }
        self.precision.set(p);
        Ok(())
    }

    /// Tokens per evaluation batch (`Backend::eval_batch`: windows of a batch × their length)
    /// instead of the default (natively `EVAL_ROWS_TENSOR_CORES` with tensor cores, else 4096; 2048 in the
    /// browser); None for the default.
    /// Benchmarks time other sizes with it (`quantlab`'s `QUANTLAB_EVAL_ROWS`).
    pub fn set_eval_rows(&self, rows: Option<usize>) {
        self.eval_rows.set(rows.filter(|&r| r > 0));
    }

    pub fn precision(&self) -> crate::gpu::pipelines::Precision {
        self.precision.get()
    }

    /// Use attention kernel `v` for every call (benchmarks, tests), or None for the default
    /// (`ATTN_DEFAULT`). A tiled variant that does not apply to a call (head dimension other
    /// than 64, too little workgroup memory) falls back to the default.
    pub fn force_attention_variant(&self, v: Option<AttentionVariant>) {
        self.attention_variant.set(v);
    }

    /// Whether attention kernel `v` can run at head dimension `hd` on this device.
    pub fn attention_variant_applies(&self, v: AttentionVariant, hd: usize) -> bool {
        let limits = &self.ctx.limits;
        let memory = limits.max_compute_workgroup_storage_size as usize;
        match (v, v.tiled_queries()) {
            (AttentionVariant::Coop, _) => {
                self.ctx.coop
                    && hd == shaders::ATTENTION_TILED_HEAD_DIM
                    && memory >= shaders::ATTENTION_COOP_BYTES
            }
            (AttentionVariant::Coop1, _) => {
                self.ctx.coop
                    && hd == shaders::ATTENTION_TILED_HEAD_DIM
                    && memory >= shaders::ATTENTION_COOP1_BYTES
            }
            (_, None) => true,
            (_, Some(bq)) => {
                hd == shaders::ATTENTION_TILED_HEAD_DIM
                    && memory >= shaders::attention_tiled_bytes(bq)
                    && limits.max_compute_invocations_per_workgroup as usize >= 2 * bq
            }
        }
    }

    /// The attention kernel a call at head dimension `hd` uses: the forced one where it
    /// applies, else at f16 the one-pass tensor-core kernel (`Coop1`: on the H100 335 µs per
    /// layer at 32 windows against tiled64's 676 µs, timed in session 19 before its fix;
    /// docs/gpu-perf.md, sessions 19 and 20), else the first of `ATTN_DEFAULT` that applies.
    /// The two-pass tensor-core kernel (`Coop`) is never
    /// chosen unforced: it was slower than tiled64 on the H100 (8 × 512: 0.367 ms against
    /// 0.267 ms; docs/gpu-perf.md v7). At f32 the kernels stay f32 throughout.
    pub fn attention_variant(&self, hd: usize) -> AttentionVariant {
        let f16 = self.precision() == crate::gpu::pipelines::Precision::F16;
        self.attention_variant
            .get()
            .into_iter()
            .chain(f16.then_some(AttentionVariant::Coop1))
            .chain(ATTN_DEFAULT)
            .find(|&v| self.attention_variant_applies(v, hd))
            .unwrap_or(AttentionVariant::Split)
    }
}
