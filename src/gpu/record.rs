//! Recording kernels into command encoders: the plumbing under `impl Backend for Gpu`. One
//! encoder collects dispatches until `DISPATCHES_PER_SUBMIT` (or a readback) submits it.
//! Dispatches go into one open compute pass (wgpu still inserts the barriers between dependent
//! dispatches of a pass); copies end the pass. Bind groups are built positionally
//! (shaders/README.md).
//!
//! Per-dispatch host cost is what limits a window of ~450 small kernels, so nothing is created
//! per dispatch once the shapes repeat: uniform blocks are cached by their bytes (shapes are
//! fixed per window size, so every window after the first hits), and bind groups by pipeline and
//! buffers (the pool hands the same buffers back in the same order every window). Both caches
//! are cleared when they grow past `CACHE_LIMIT` (windows of changing sizes, fresh uploads).

use crate::gpu::backend::{Act, Gpu};
use crate::gpu::buffers::{self, Pool, PooledBuffer};
use crate::gpu::context::GpuContext;
use crate::gpu::pipelines::Pipelines;
use crate::gpu::profile::{self, Profiler};
use crate::{Error, Result};
use bytemuck::{Pod, Zeroable};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wgpu::util::DeviceExt;

/// Dispatches recorded before the encoder is submitted: enough to keep the queue busy, few
/// enough that the driver's memory for pending work stays small (≈ 4 decoder blocks).
const DISPATCHES_PER_SUBMIT: usize = 256;
/// Dispatches per piece of a paced evaluation (`pace.rs`): a cancellation waits for the pieces
/// in flight, so pieces smaller than a block (≈ 12 to 20 dispatches) let Stop land within a
/// block on a slow (software) GPU, at the cost of one more round trip to the host per piece.
const DISPATCHES_PER_PIECE: usize = 4;
/// Entries each cache may hold before it is cleared.
const CACHE_LIMIT: usize = 4096;

/// A bind group of whole buffers, bound positionally (shaders/README.md), uncached.
pub(crate) fn make_bind_group(
    device: &wgpu::Device,
    pipe: &wgpu::ComputePipeline,
    bindings: &[&wgpu::Buffer],
) -> wgpu::BindGroup {
    let layout = pipe.get_bind_group_layout(0);
    let entries: Vec<wgpu::BindGroupEntry> = bindings
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: b.as_entire_binding(),
        })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &layout,
        entries: &entries,
    })
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct WeightParams {
    pub(crate) m: u32,
    pub(crate) n: u32,
    pub(crate) k: u32,
    pub(crate) has_bias: u32,
    pub(crate) x_row0: u32,
    pub(crate) bits: u32,
    pub(crate) group: u32,
    pub(crate) sym: u32,
    pub(crate) scale_off: u32,
    pub(crate) zero_off: u32,
    /// matmul split-K: the `k` range per workgroup z (0: no split).
    pub(crate) k_split: u32,
    pub(crate) pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params4(pub(crate) [u32; 4]);

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params8(pub(crate) [u32; 8]);

pub(crate) fn u(v: usize) -> u32 {
    // Callers bound sizes by the device's buffer limits (< 2^32 bytes) before getting here.
    v as u32
}

impl Gpu {
    pub fn new(ctx: GpuContext) -> Self {
        let error: Arc<Mutex<Option<String>>> = Arc::default();
        let slot = error.clone();
        ctx.device
            .on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                if let Ok(mut s) = slot.lock() {
                    s.get_or_insert_with(|| e.to_string());
                }
            }));
        let dummy = |label| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage: buffers::STORAGE,
                mapped_at_creation: false,
            })
        };
        Gpu {
            pipes: Pipelines::new(ctx.device.clone()),
            pool: Pool::new(ctx.device.clone()),
            encoder: RefCell::new(None),
            pass: RefCell::new(None),
            uniforms: RefCell::new(HashMap::new()),
            bind_groups: RefCell::new(HashMap::new()),
            profiler: RefCell::new(None),
            matmul_variant: Cell::new(None),
            packed_f16: Cell::new(false),
            decode_first: Cell::new(true),
            decoded_first: Cell::new(0),
            h16_products: Cell::new(0),
            h16_decoded: Cell::new(0),
            h16_converted: Cell::new(0),
            ops: Cell::new(0),
            h16_x: RefCell::new(None),
            matmul_gen: Cell::new(Default::default()),
            precision: Cell::new(Default::default()),
            attention_splits: Cell::new(None),
            attention_variant: Cell::new(None),
            int_matmul: Cell::new(None),
            int_products: Cell::new(0),
            recorded: Cell::new(0),
            pace: Cell::new(false),
            held: RefCell::new(None),
            error,
            rope_tables: RefCell::new(HashMap::new()),
            dummy_ro: dummy("dummy_ro"),
            dummy_rw: dummy("dummy_rw"),
            weights_held: Default::default(),
            h16_held: Default::default(),
            memory_budget: Cell::new(None),
            binding_override: Cell::new(None),
            eval_rows: Cell::new(None),
            ctx,
        }
    }

    /// Acquire the device and build the backend.
    pub async fn create() -> Result<Self> {
        Ok(Gpu::new(GpuContext::new().await?))
    }

    pub(crate) fn fail(&self, op: &str, msg: String) {
        if let Ok(mut s) = self.error.lock() {
            s.get_or_insert_with(|| format!("{op}: {msg}"));
        }
    }

    /// Wait for `buf`'s copy in submission `after` and read it: `buffers::read_back_after`, but
    /// where that fails because the device refused the work (a kernel that did not compile
    /// makes its submission invalid, and waiting on it fails with "not returned by a successful
    /// submission"), the device's own error, which says why, is reported instead.
    pub(crate) async fn read_back(
        &self,
        buf: &wgpu::Buffer,
        after: Option<wgpu::SubmissionIndex>,
    ) -> Result<Vec<u8>> {
        let bytes = buffers::read_back_after(&self.ctx.device, buf, after).await;
        self.take_error()?;
        bytes
    }

    pub(crate) fn take_error(&self) -> Result<()> {
        let e = self.error.lock().ok().and_then(|mut s| s.take());
        match e {
            Some(msg) => Err(Error::unsupported("gpu", "kernel", msg)),
            None => Ok(()),
        }
    }

    /// The uniform block holding `p`, created once per distinct contents.
    pub(crate) fn uniform<T: Pod>(&self, p: &T) -> wgpu::Buffer {
        let bytes = bytemuck::bytes_of(p);
        if let Some(b) = self.uniforms.borrow().get(bytes) {
            return b.clone();
        }
        let b = self
            .ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytes,
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let mut cache = self.uniforms.borrow_mut();
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(bytes.to_vec(), b.clone());
        b
    }

    fn bind_group(
        &self,
        pipe: &wgpu::ComputePipeline,
        bindings: &[&wgpu::Buffer],
    ) -> wgpu::BindGroup {
        let key = (
            pipe.clone(),
            bindings.iter().map(|b| (*b).clone()).collect::<Vec<_>>(),
        );
        if let Some(bg) = self.bind_groups.borrow().get(&key) {
            return bg.clone();
        }
        let bg = make_bind_group(&self.ctx.device, pipe, bindings);
        let mut cache = self.bind_groups.borrow_mut();
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, bg.clone());
        bg
    }

    /// Record one dispatch with `bindings` at 0, 1, 2, … of group 0. `label` names it in
    /// profiles (only called while profiling).
    pub(crate) fn dispatch(
        &self,
        pipe: &wgpu::ComputePipeline,
        bindings: &[&wgpu::Buffer],
        groups: (u32, u32),
        label: &dyn Fn() -> String,
    ) {
        self.dispatch_3d(pipe, bindings, (groups.0, groups.1, 1), label);
    }

    /// `dispatch` with a third workgroup dimension.
    pub(crate) fn dispatch_3d(
        &self,
        pipe: &wgpu::ComputePipeline,
        bindings: &[&wgpu::Buffer],
        groups: (u32, u32, u32),
        label: &dyn Fn() -> String,
    ) {
        self.ops.set(self.ops.get() + 1);
        let bg = self.bind_group(pipe, bindings);
        let profiling = self.profiler.borrow().is_some();
        if profiling {
            let mut idx = self
                .profiler
                .borrow_mut()
                .as_mut()
                .and_then(|p| p.next(label()));
            if idx.is_none() {
                self.flush();
                idx = self
                    .profiler
                    .borrow_mut()
                    .as_mut()
                    .and_then(|p| p.next(label()));
            }
            let prof = self.profiler.borrow();
            let set = prof.as_ref().map(|p| &p.set);
            self.with_encoder(|enc| {
                let tw = set
                    .zip(idx)
                    .map(|(s, (a, b))| wgpu::ComputePassTimestampWrites {
                        query_set: s,
                        beginning_of_pass_write_index: Some(a),
                        end_of_pass_write_index: Some(b),
                    });
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes: tw,
                });
                pass.set_pipeline(pipe);
                pass.set_bind_group(0, &bg, &[]);
                pass.dispatch_workgroups(groups.0, groups.1, groups.2);
            });
        } else {
            let mut slot = self.pass.borrow_mut();
            let pass = slot.get_or_insert_with(|| {
                let mut enc = self.encoder.borrow_mut();
                let enc = enc.get_or_insert_with(|| {
                    self.ctx
                        .device
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default())
                });
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default())
                    .forget_lifetime()
            });
            pass.set_pipeline(pipe);
            pass.set_bind_group(0, &bg, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        }
        self.recorded.set(self.recorded.get() + 1);
        let limit = if self.held.borrow().is_some() {
            DISPATCHES_PER_PIECE
        } else {
            DISPATCHES_PER_SUBMIT
        };
        if self.recorded.get() >= limit {
            self.flush();
        }
    }

    /// Run `f` on the open encoder (any open compute pass is ended first: a pass locks its
    /// encoder until it is dropped).
    pub(crate) fn with_encoder<R>(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> R) -> R {
        self.ops.set(self.ops.get() + 1);
        drop(self.pass.borrow_mut().take());
        let mut slot = self.encoder.borrow_mut();
        let enc = slot.get_or_insert_with(|| {
            self.ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor::default())
        });
        f(enc)
    }

    /// Start timing every dispatch (needs the adapter's `timestamp-query` feature).
    pub fn profile_start(&self) -> Result<()> {
        if !self.ctx.timestamps {
            return Err(Error::unsupported(
                "gpu",
                "profile",
                format!("{} has no timestamp queries", self.ctx.describe()),
            ));
        }
        self.flush();
        self.profiler
            .borrow_mut()
            .get_or_insert_with(|| Profiler::new(&self.ctx.device));
        Ok(())
    }

    /// Stop profiling and return `(label, GPU seconds)` of every dispatch timed since
    /// `profile_start`, in recording order.
    pub async fn profile_take(&self) -> Result<Vec<(String, f64)>> {
        self.flush();
        let batches = match self.profiler.borrow_mut().take() {
            Some(mut p) => p.take_done(),
            None => Vec::new(),
        };
        let period = self.ctx.queue.get_timestamp_period();
        profile::read_batches(&self.ctx.device, period, batches).await
    }

    /// Submit everything recorded so far.
    pub fn flush(&self) {
        self.submit();
    }

    /// Submit everything recorded so far; the submission's index when there was any.
    pub(crate) fn submit(&self) -> Option<wgpu::SubmissionIndex> {
        drop(self.pass.borrow_mut().take());
        self.recorded.set(0);
        let mut enc = self.encoder.borrow_mut().take()?;
        if let Some(p) = self.profiler.borrow_mut().as_mut() {
            p.resolve(&self.ctx.device, &mut enc);
        }
        // A paced evaluation submits its pieces itself (`pace.rs`).
        if let Some(held) = self.held.borrow_mut().as_mut() {
            held.push_back(enc.finish());
            return None;
        }
        Some(self.ctx.queue.submit([enc.finish()]))
    }

    /// Workgroups for `n` items at `per` items per group, spread over y past the x limit.
    pub(crate) fn groups_1d(&self, n: usize, per: usize) -> (u32, u32) {
        let g = n.div_ceil(per).max(1);
        let max_x = self.ctx.limits.max_compute_workgroups_per_dimension.max(1) as usize;
        if g <= max_x {
            (u(g), 1)
        } else {
            (u(max_x), u(g.div_ceil(max_x)))
        }
    }

    pub(crate) fn new_act(&self, rows: usize, cols: usize) -> Act {
        Act {
            rows,
            cols,
            buf: self.pool.get(rows * cols * 4),
            q: None,
        }
    }

    /// Upload host activations (tests, and inputs computed on the CPU).
    pub fn upload_act(&self, rows: usize, cols: usize, data: &[f32]) -> Result<Act> {
        if data.len() != rows * cols {
            return Err(Error::config(
                "activation",
                format!("{} values for {rows}×{cols}", data.len()),
            ));
        }
        buffers::check_size(&self.ctx.limits, "activation", data.len() * 4)?;
        // A fresh buffer copied into a pooled one (see buffers.rs on why uploads avoid pooled
        // buffers directly).
        let src = buffers::upload(
            &self.ctx.device,
            &self.ctx.limits,
            "upload",
            bytemuck::cast_slice(data),
        )?;
        let act = self.new_act(rows, cols);
        self.with_encoder(|enc| enc.copy_buffer_to_buffer(&src, 0, &act.buf, 0, src.size()));
        Ok(act)
    }

    /// Copy `bytes` of `src` into a new mappable buffer at the end of the recorded work.
    pub(crate) fn stage(&self, src: &wgpu::Buffer, bytes: usize) -> wgpu::Buffer {
        self.stage_from(src, 0, bytes)
    }

    /// `stage` of the `bytes` of `src` from byte `offset` (a multiple of 4).
    pub(crate) fn stage_from(
        &self,
        src: &wgpu::Buffer,
        offset: usize,
        bytes: usize,
    ) -> wgpu::Buffer {
        let size = buffers::padded_len(bytes) as u64;
        let staging = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.with_encoder(|enc| enc.copy_buffer_to_buffer(src, offset as u64, &staging, 0, size));
        staging
    }

    /// Read activations back (tests and inspection); asynchronous like every readback.
    pub async fn read_act(&self, x: &Act) -> Result<Vec<f32>> {
        let staging = self.stage(&x.buf, x.rows * x.cols * 4);
        self.flush();
        let bytes = self.read_back(&staging, None).await?;
        let n = x.rows * x.cols;
        Ok(bytemuck::pod_collect_to_vec::<u8, f32>(&bytes)
            .into_iter()
            .take(n)
            .collect())
    }

    /// Use `ns` invocations per query in attention (4, 8 or 16 where the head dimension allows;
    /// tests, benchmarks), or None for the default.
    pub fn force_attention_splits(&self, ns: Option<usize>) {
        self.attention_splits.set(ns);
    }

    /// Bytes held by the pool's idle activation buffers.
    pub fn pool_idle(&self) -> (usize, u64) {
        self.pool.idle()
    }

    pub(crate) fn rope_table(
        &self,
        pos0: usize,
        rows: usize,
        hd: usize,
        theta: f32,
    ) -> Result<wgpu::Buffer> {
        let key = (pos0, rows, hd, theta.to_bits());
        if let Some(b) = self.rope_tables.borrow().get(&key) {
            return Ok(b.clone());
        }
        let half = hd / 2;
        // Same f64 angles as the CPU reference (src/model/cpu.rs `rope`).
        let inv: Vec<f64> = (0..half)
            .map(|i| (theta as f64).powf(-2.0 * i as f64 / hd as f64))
            .collect();
        let mut cs = Vec::with_capacity(rows * half * 2);
        for t in 0..rows {
            let pos = (pos0 + t) as f64;
            for f in &inv {
                let a = pos * f;
                cs.push(a.cos() as f32);
                cs.push(a.sin() as f32);
            }
        }
        let b = buffers::upload(
            &self.ctx.device,
            &self.ctx.limits,
            "rope",
            bytemuck::cast_slice(&cs),
        )?;
        self.rope_tables.borrow_mut().insert(key, b.clone());
        Ok(b)
    }

    pub(crate) fn elementwise(&self, entry: &str, a: &mut Act, b: &Act) {
        self.elementwise_f16(entry, a, b, None);
    }

    /// `elementwise`, and with `copy` its result written in f16 there too (the kernel's entry
    /// `{entry}_h16`, one invocation per pair of values), kept for the next all-f16 product
    /// (`Gpu::h16_copy_for`).
    pub(crate) fn elementwise_f16(
        &self,
        entry: &str,
        a: &mut Act,
        b: &Act,
        copy: Option<PooledBuffer>,
    ) {
        // `a` is written in place: its integer codes no longer describe it.
        a.q = None;
        if (a.rows, a.cols) != (b.rows, b.cols) {
            return self.fail(
                entry,
                format!(
                    "shapes {}×{} and {}×{} differ",
                    a.rows, a.cols, b.rows, b.cols
                ),
            );
        }
        let name = match copy {
            Some(_) => format!("{entry}_h16"),
            None => entry.to_string(),
        };
        let pipe = match self.pipes.plain("elementwise", &name) {
            Ok(p) => p,
            Err(e) => return self.fail(entry, e.to_string()),
        };
        let n = a.rows * a.cols;
        let params = self.uniform(&Params4([u(n), 0, 0, 0]));
        let label = || format!("{name} {}×{}", a.rows, a.cols);
        match copy {
            Some(d) => {
                let groups = self.groups_1d(n / 2, 256);
                self.dispatch(&pipe, &[&params, &b.buf, &a.buf, &d], groups, &label);
                self.keep_h16_copy(&a.buf, a.rows, a.cols, d);
            }
            None => {
                let groups = self.groups_1d(n, 256);
                self.dispatch(&pipe, &[&params, &b.buf, &a.buf], groups, &label);
            }
        }
    }

    /// An activation (`shaders/activation.wgsl` entry point `entry`) in place on `a`.
    pub(crate) fn activation(&self, entry: &str, a: &mut Act) {
        // Written in place: drop the stale integer codes.
        a.q = None;
        let pipe = match self.pipes.plain("activation", entry) {
            Ok(p) => p,
            Err(e) => return self.fail(entry, e.to_string()),
        };
        let n = a.rows * a.cols;
        let params = self.uniform(&Params4([u(n), 0, 0, 0]));
        let groups = self.groups_1d(n, 256);
        self.dispatch(&pipe, &[&params, &a.buf], groups, &|| {
            format!("{entry} {}×{}", a.rows, a.cols)
        });
    }
}
