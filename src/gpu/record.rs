//! Recording kernels into command encoders: the plumbing under `impl Backend for Gpu`. One
//! encoder collects dispatches until `DISPATCHES_PER_SUBMIT` (or a readback) submits it; each
//! dispatch gets a small uniform block and a bind group built positionally (shaders/README.md).

use crate::gpu::backend::{Act, Gpu, Mat};
use crate::gpu::buffers::{self, Pool};
use crate::gpu::context::GpuContext;
use crate::gpu::pipelines::Pipelines;
use crate::{Error, Result};
use bytemuck::{Pod, Zeroable};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wgpu::util::DeviceExt;

/// Dispatches recorded before the encoder is submitted: enough to keep the queue busy, few
/// enough that the driver's memory for pending work stays small (≈ 4 decoder blocks).
const DISPATCHES_PER_SUBMIT: usize = 64;

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
    pub(crate) pad: [u32; 2],
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
            recorded: Cell::new(0),
            error,
            rope_tables: RefCell::new(HashMap::new()),
            dummy_ro: dummy("dummy_ro"),
            dummy_rw: dummy("dummy_rw"),
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

    pub(crate) fn take_error(&self) -> Result<()> {
        let e = self.error.lock().ok().and_then(|mut s| s.take());
        match e {
            Some(msg) => Err(Error::unsupported("gpu", "kernel", msg)),
            None => Ok(()),
        }
    }

    pub(crate) fn uniform<T: Pod>(&self, p: &T) -> wgpu::Buffer {
        self.ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::bytes_of(p),
                usage: wgpu::BufferUsages::UNIFORM,
            })
    }

    /// Record one dispatch with `bindings` at 0, 1, 2, … of group 0.
    pub(crate) fn dispatch(
        &self,
        pipe: &wgpu::ComputePipeline,
        bindings: &[&wgpu::Buffer],
        groups: (u32, u32),
    ) {
        let layout = pipe.get_bind_group_layout(0);
        let entries: Vec<wgpu::BindGroupEntry> = bindings
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bg = self
            .ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &layout,
                entries: &entries,
            });
        self.with_encoder(|enc| {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(pipe);
            pass.set_bind_group(0, &bg, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, 1);
        });
        self.recorded.set(self.recorded.get() + 1);
        if self.recorded.get() >= DISPATCHES_PER_SUBMIT {
            self.flush();
        }
    }

    pub(crate) fn with_encoder<R>(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> R) -> R {
        let mut slot = self.encoder.borrow_mut();
        let enc = slot.get_or_insert_with(|| {
            self.ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor::default())
        });
        f(enc)
    }

    /// Submit everything recorded so far.
    pub fn flush(&self) {
        if let Some(enc) = self.encoder.borrow_mut().take() {
            self.ctx.queue.submit([enc.finish()]);
        }
        self.recorded.set(0);
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
        let size = buffers::padded_len(bytes) as u64;
        let staging = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.with_encoder(|enc| enc.copy_buffer_to_buffer(src, 0, &staging, 0, size));
        staging
    }

    /// Read activations back (tests and inspection); asynchronous like every readback.
    pub async fn read_act(&self, x: &Act) -> Result<Vec<f32>> {
        let staging = self.stage(&x.buf, x.rows * x.cols * 4);
        self.flush();
        let bytes = buffers::read_back(&self.ctx.device, &staging).await?;
        self.take_error()?;
        let n = x.rows * x.cols;
        Ok(bytemuck::pod_collect_to_vec::<u8, f32>(&bytes)
            .into_iter()
            .take(n)
            .collect())
    }

    /// Record `out (m × w.rows) = x[x_row0 .. x_row0+m] Wᵀ + b`.
    pub(crate) fn record_matmul(
        &self,
        x: &wgpu::Buffer,
        x_row0: usize,
        m: usize,
        w: &Mat,
        out: &wgpu::Buffer,
    ) {
        let pipe = match self.pipes.weight("matmul", w.fmt.fragment) {
            Ok(p) => p,
            Err(e) => return self.fail("linear", e.to_string()),
        };
        let p = WeightParams {
            m: u(m),
            n: u(w.rows),
            k: u(w.cols),
            has_bias: w.bias.is_some() as u32,
            x_row0: u(x_row0),
            bits: w.fmt.bits,
            group: w.fmt.group,
            sym: w.fmt.sym,
            scale_off: w.fmt.scale_off,
            zero_off: w.fmt.zero_off,
            pad: [0; 2],
        };
        let params = self.uniform(&p);
        let bias = w.bias.as_ref().unwrap_or(&self.dummy_ro);
        let groups = (u(w.rows.div_ceil(64)), u(m.div_ceil(64)));
        self.dispatch(&pipe, &[&params, &w.w, x, bias, out], groups);
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
        if (a.rows, a.cols) != (b.rows, b.cols) {
            return self.fail(
                entry,
                format!(
                    "shapes {}×{} and {}×{} differ",
                    a.rows, a.cols, b.rows, b.cols
                ),
            );
        }
        let pipe = match self.pipes.plain("elementwise", entry) {
            Ok(p) => p,
            Err(e) => return self.fail(entry, e.to_string()),
        };
        let n = a.rows * a.cols;
        let params = self.uniform(&Params4([u(n), 0, 0, 0]));
        let groups = self.groups_1d(n, 256);
        self.dispatch(&pipe, &[&params, &b.buf, &a.buf], groups);
    }
}
