//! The trainer's dense f32 products on the GPU (`shaders/train_gemm.wgsl`; full BinaryMoS
//! distillation, docs/binarymos.md "Training on the GPU"): `linalg::Gemm` for wgpu, natively.
//! Each product uploads its operands, runs one dispatch and reads the result back before it
//! returns, because the trainer's CPU code (norms, attention, softmax, AdamW) needs every result
//! at once; what is avoided is allocation and re-upload:
//!
//! - operand, result and staging buffers come from pools keyed by size and go back after the
//!   read (a training step repeats the same shapes, so after the first step nothing is created);
//!   writing into a pooled buffer is safe because the previous product using it has finished;
//! - weights (`Gemm::mul_t_w`, `mul_w`: the teacher's linears, the student's signs, the head)
//!   are uploaded once per step and kept, keyed by their slice's address and length, until
//!   `end_step`; the trainer promises those slices neither change nor move within a step.
//!
//! Failures (a buffer past the device's limits, a lost device, a wgpu validation error) return
//! zeros and are reported by `check`, which the trainer calls before using a step's gradients.

use crate::gpu::backend::Gpu;
use crate::gpu::buffers;
use crate::gpu::record;
use crate::linalg::Gemm;
use crate::Result;
use bytemuck::{Pod, Zeroable};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// Output tile of train_gemm.wgsl (rows and columns of C per workgroup).
const TILE: usize = 64;
/// Most of `k` one workgroup sums; longer products are cut into ranges (workgroups z) whose
/// partial results shaders/splitk.wgsl adds. Measured on lavapipe: one workgroup summing 49 152
/// (the head's gradient, `dZ · head`) returned zeros without an error, 32 768 did not; ranges
/// of 2 048 also give the head's 9-tile gradient product 24× the workgroups to spread over a
/// large GPU. A multiple of the 16-long slice.
const K_RANGE: usize = 2048;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    k: u32,
    n: u32,
    k_len: u32,
    rsa: u32,
    csa: u32,
    rsb: u32,
    csb: u32,
}

/// One operand of a product: its values, and whether it is a weight kept for the step.
struct Operand<'a> {
    data: &'a [f32],
    weight: bool,
}

/// Buffers by size, reused across products.
#[derive(Default)]
struct Free(RefCell<HashMap<u64, Vec<wgpu::Buffer>>>);

impl Free {
    fn take(&self, size: u64, make: impl FnOnce() -> wgpu::Buffer) -> wgpu::Buffer {
        let reused = self.0.borrow_mut().get_mut(&size).and_then(Vec::pop);
        reused.unwrap_or_else(make)
    }
    fn give(&self, b: wgpu::Buffer) {
        self.0.borrow_mut().entry(b.size()).or_default().push(b);
    }
}

/// `linalg::Gemm` on a wgpu device.
pub struct TrainGemm {
    gpu: Rc<Gpu>,
    pipe: wgpu::ComputePipeline,
    params: wgpu::Buffer,
    storage: Free,
    staging: Free,
    /// This step's weights on the device, by (address, length) of their slice.
    weights: RefCell<HashMap<(usize, usize), wgpu::Buffer>>,
    /// Products run and weight uploads, for tests and reports.
    products: Cell<usize>,
    uploads: Cell<usize>,
    /// Wall seconds inside `run` (uploads, kernels, read-backs).
    seconds: Cell<f64>,
}

impl TrainGemm {
    pub fn new(gpu: Rc<Gpu>) -> Result<TrainGemm> {
        let pipe = gpu.pipes.plain("train_gemm", "main")?;
        let params = gpu.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("train_gemm params"),
            size: std::mem::size_of::<Params>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(TrainGemm {
            gpu,
            pipe,
            params,
            storage: Free::default(),
            staging: Free::default(),
            weights: RefCell::default(),
            products: Cell::new(0),
            uploads: Cell::new(0),
            seconds: Cell::new(0.0),
        })
    }

    /// Products run so far, and weights uploaded (each at most once a step).
    pub fn counts(&self) -> (usize, usize) {
        (self.products.get(), self.uploads.get())
    }

    fn storage_buffer(&self, bytes: usize) -> wgpu::Buffer {
        let size = buffers::padded_len(bytes) as u64;
        self.storage.take(size, || {
            self.gpu.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("train_gemm operand"),
                size,
                usage: buffers::STORAGE,
                mapped_at_creation: false,
            })
        })
    }

    /// `o` on the device: the step's kept copy of a weight, else a pooled buffer written now
    /// (returned in the second place, to go back to the pool after the product).
    fn operand(&self, o: &Operand, what: &str) -> Result<(wgpu::Buffer, bool)> {
        let bytes = std::mem::size_of_val(o.data);
        buffers::check_size(&self.gpu.ctx.limits, what, bytes)?;
        let key = (o.data.as_ptr() as usize, o.data.len());
        if o.weight {
            if let Some(b) = self.weights.borrow().get(&key) {
                return Ok((b.clone(), false));
            }
        }
        let buf = if o.weight {
            self.uploads.set(self.uploads.get() + 1);
            buffers::upload(
                &self.gpu.ctx.device,
                &self.gpu.ctx.limits,
                what,
                bytemuck::cast_slice(o.data),
            )?
        } else {
            let b = self.storage_buffer(bytes);
            self.gpu
                .ctx
                .queue
                .write_buffer(&b, 0, bytemuck::cast_slice(o.data));
            b
        };
        if o.weight {
            self.weights.borrow_mut().insert(key, buf.clone());
        }
        Ok((buf, !o.weight))
    }

    /// `C (m×n) = A (m×k, strides rsa/csa) · B (k×n, strides rsb/csb)`.
    #[allow(clippy::too_many_arguments)]
    fn product(
        &self,
        a: Operand,
        b: Operand,
        (m, k, n): (usize, usize, usize),
        (rsa, csa): (usize, usize),
        (rsb, csb): (usize, usize),
    ) -> Result<Vec<f32>> {
        if let Some(why) = self.gpu.ctx.lost() {
            return Err(crate::Error::unsupported("gpu", "device", why));
        }
        if m == 0 || n == 0 || k == 0 {
            return Ok(vec![0f32; m * n]);
        }
        let shape = format!("a {m}×{k} by {k}×{n} training product");
        let (cx, cy) = (n.div_ceil(TILE), m.div_ceil(TILE));
        let splits = k.div_ceil(K_RANGE);
        let most = self.gpu.ctx.limits.max_compute_workgroups_per_dimension as usize;
        if cx > most || cy > most || splits > most {
            return Err(crate::Error::unsupported(
                "gpu",
                "training product",
                format!(
                    "{shape} needs {cx}×{cy}×{splits} workgroups; this device allows {most} a side"
                ),
            ));
        }
        let reach = |rows: usize, cols: usize, (rs, cs): (usize, usize)| {
            (rows - 1) * rs + (cols - 1) * cs + 1
        };
        for (o, need, side) in [
            (&a, reach(m, k, (rsa, csa)), "left"),
            (&b, reach(k, n, (rsb, csb)), "right"),
        ] {
            if o.data.len() < need {
                return Err(crate::Error::config(
                    "training product",
                    format!(
                        "{shape}: the {side} operand has {} values of {need}",
                        o.data.len()
                    ),
                ));
            }
        }
        let out_bytes = m * n * 4;
        let k_len = if splits > 1 { K_RANGE } else { k };
        buffers::check_size(
            &self.gpu.ctx.limits,
            &format!("{shape}'s partial results"),
            splits * out_bytes,
        )?;
        let sum = if splits > 1 {
            Some(self.gpu.pipes.plain("splitk", "main")?)
        } else {
            None
        };
        let (ab, a_pooled) = self.operand(&a, &format!("{shape}'s left operand"))?;
        let (bb, b_pooled) = self.operand(&b, &format!("{shape}'s right operand"))?;
        let u = |v: usize| v as u32;
        let p = Params {
            m: u(m),
            k: u(k),
            n: u(n),
            k_len: u(k_len),
            rsa: u(rsa),
            csa: u(csa),
            rsb: u(rsb),
            csb: u(csb),
        };
        let dev = &self.gpu.ctx.device;
        self.gpu
            .ctx
            .queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&p));
        // With one range the kernel writes the result itself; else its slices go to `part`.
        let cb = self.storage_buffer(out_bytes);
        let part = sum
            .as_ref()
            .map(|_| self.storage_buffer(splits * out_bytes));
        let size = cb.size();
        let staging = self.staging.take(size, || {
            dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("train_gemm readback"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        // Uncached (unlike `Gpu::bind_group`): a cache would keep every step's weights alive.
        let target = part.as_ref().unwrap_or(&cb);
        let bind = record::make_bind_group(dev, &self.pipe, &[&self.params, &ab, &bb, target]);
        let mut enc = dev.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.pipe);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(u(cx), u(cy), u(splits));
            if let (Some(sum), Some(part)) = (&sum, &part) {
                let sp = self
                    .gpu
                    .uniform(&record::Params4([u(m * n), u(n), u(splits), 0]));
                let (gx, gy) = self.gpu.groups_1d(m * n, 256);
                let bg = record::make_bind_group(dev, sum, &[&sp, part, &self.gpu.dummy_ro, &cb]);
                pass.set_pipeline(sum);
                pass.set_bind_group(0, &bg, &[]);
                pass.dispatch_workgroups(gx, gy, 1);
            }
        }
        enc.copy_buffer_to_buffer(&cb, 0, &staging, 0, size);
        let sub = self.gpu.ctx.queue.submit([enc.finish()]);
        let bytes = pollster::block_on(buffers::read_back_after(dev, &staging, Some(sub)));
        self.staging.give(staging);
        self.storage.give(cb);
        if let Some(part) = part {
            self.storage.give(part);
        }
        for (buf, pooled) in [(ab, a_pooled), (bb, b_pooled)] {
            if pooled {
                self.storage.give(buf);
            }
        }
        self.products.set(self.products.get() + 1);
        let bytes = bytes?;
        Ok(bytemuck::cast_slice::<u8, f32>(&bytes[..out_bytes]).to_vec())
    }

    /// `product`, its failure recorded for `check` and zeros in its place.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        a: Operand,
        b: Operand,
        mkn: (usize, usize, usize),
        sa: (usize, usize),
        sb: (usize, usize),
    ) -> Vec<f32> {
        let (m, n) = (mkn.0, mkn.2);
        let t0 = std::time::Instant::now();
        let c = self.product(a, b, mkn, sa, sb).unwrap_or_else(|e| {
            self.gpu.fail("training product", e.to_string());
            vec![0f32; m * n]
        });
        self.seconds
            .set(self.seconds.get() + t0.elapsed().as_secs_f64());
        c
    }
}

fn plain(data: &[f32]) -> Operand<'_> {
    Operand {
        data,
        weight: false,
    }
}

fn weight(data: &[f32]) -> Operand<'_> {
    Operand { data, weight: true }
}

impl Gemm for TrainGemm {
    fn mul_t(&self, a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        self.run(plain(a), plain(b), (m, k, n), (k, 1), (1, k))
    }
    fn mul(&self, a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        self.run(plain(a), plain(b), (m, k, n), (k, 1), (n, 1))
    }
    fn t_mul(&self, a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        // (k × n) = aᵀ (k × m) · b (m × n): a read with row stride 1, column stride k.
        self.run(plain(a), plain(b), (k, m, n), (1, k), (n, 1))
    }
    fn mul_t_w(&self, a: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        self.run(plain(a), weight(w), (m, k, n), (k, 1), (1, k))
    }
    fn mul_w(&self, a: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        self.run(plain(a), weight(w), (m, k, n), (k, 1), (n, 1))
    }
    fn end_step(&self) {
        self.weights.borrow_mut().clear();
    }
    fn check(&self) -> Result<()> {
        if let Some(why) = self.gpu.ctx.lost() {
            return Err(crate::Error::unsupported("gpu", "device", why));
        }
        self.gpu.take_error()
    }
    fn name(&self) -> String {
        format!("gpu: {}", self.gpu.ctx.describe())
    }
    fn seconds(&self) -> Option<f64> {
        Some(self.seconds.get())
    }
}
