//! BinaryMoS lite training of one linear on the GPU (Jo et al., arXiv 2406.12311;
//! docs/binarymos.md "Lite training"): the signs frozen, the scale experts `S_in`, `S_out` and
//! the router `W_R` trained by Adam toward the layer as loaded on its calibration rows, the same
//! steps as the CPU's `quant::binarymos::train_lite`. Every step is recorded without a read-back:
//! only the final tensors and the loss of every step come back, once, asynchronously (so the
//! page, which cannot wait on the GPU, runs it too).
//!
//! One step, for `t` rows `X` (the tables in f32 buffers of their own, not the f16 of the packed
//! tensor the inference kernels read):
//!   1. `mos_train_gates`: `G = softmax(X·W_R)`, `XS = X ⊙ G·S_in`;
//!   2. `mos_train_mm`: `H = XS·signᵀ`;
//!   3. `mos_train_err`: `Y = H ⊙ G·S_out`, `E = Y − target`, `dY = 2E/t`, `dY ⊙ H`, `dY ⊙ G·S_out`
//!      and each row's `‖E‖²`; `mos_train_small` `loss` sums them into the step's loss slot;
//!   4. the backward pass of `format::binarymos::grad`, link by link: `dS_out = Gᵀ(dY ⊙ H)`,
//!      `dXS = (dY ⊙ s_out)·sign`, `dS_in = Gᵀ(dXS ⊙ X)`, `dG = (dY ⊙ H)·S_outᵀ + (dXS ⊙ X)·S_inᵀ`,
//!      `dZ` through the softmax, `dW_R = Xᵀ·dZ`: products in `mos_train_mm` (strided operands,
//!      nothing transposed in memory), the rest in `mos_train_small`;
//!   5. `mos_train_adam` on each of the three tensors, with `binarymos::lite_rates`.
//!
//! After the last step a final forward pass gives the last loss, so the losses are the CPU's:
//! the loss before training and after every step.

use crate::format::binarymos::{MosGrads, MosParts};
use crate::gpu::backend::Gpu;
use crate::gpu::buffers::{self, PooledBuffer};
use crate::gpu::record::u;
use crate::quant::binarymos::{
    adam_corrections, lite_rates, LiteOptions, ADAM_B1, ADAM_B2, ADAM_EPS,
};
use crate::{Error, Result};
use bytemuck::{Pod, Zeroable};

/// `mos_train_*.wgsl`'s `TrainParams`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct TrainParams {
    t: u32,
    n: u32,
    o: u32,
    k: u32,
    step: u32,
    scale: f32,
    pad: [u32; 2],
}

/// `mos_train_mm.wgsl`'s `MmParams`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MmParams {
    m: u32,
    n: u32,
    p: u32,
    a_rs: u32,
    a_cs: u32,
    b_rs: u32,
    b_cs: u32,
    c_rs: u32,
    acc: u32,
    pad: [u32; 3],
}

/// `mos_train_adam.wgsl`'s `AdamParams`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AdamParams {
    count: u32,
    lr: f32,
    c1: f32,
    c2: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    pad: u32,
}

/// One operand of `mos_train_mm`: a buffer read through row and column strides.
struct Operand<'a> {
    buf: &'a wgpu::Buffer,
    rs: usize,
    cs: usize,
}

fn op(buf: &wgpu::Buffer, rs: usize, cs: usize) -> Operand<'_> {
    Operand { buf, rs, cs }
}

/// The buffers of one layer in training: its inputs, the trained tables and their moments, and
/// the scratch of one step.
struct Lite {
    t: usize,
    n: usize,
    o: usize,
    k: usize,
    x: wgpu::Buffer,
    target: wgpu::Buffer,
    signs: wgpu::Buffer,
    /// `S_in`, `S_out`, `W_R`: trained in place.
    params: [wgpu::Buffer; 3],
    grads: [PooledBuffer; 3],
    /// Adam's two moments of each trained tensor (new buffers, which WebGPU zero-initialises).
    moments: [[wgpu::Buffer; 2]; 3],
    g: PooledBuffer,
    xs: PooledBuffer,
    h: PooledBuffer,
    dyh: PooledBuffer,
    dh: PooledBuffer,
    dg: PooledBuffer,
    rowl: PooledBuffer,
    losses: PooledBuffer,
}

impl Gpu {
    /// The loss `mean_t ‖y_t − target_t‖²` of `layer` on `x` and its gradients with respect to
    /// the experts and the router, computed on the GPU (`MosLayer::loss_and_grads` on the CPU).
    pub async fn mos_loss_and_grads(
        &self,
        layer: &MosParts,
        x: &[f32],
        target: &[f32],
    ) -> Result<(f64, MosGrads)> {
        let l = self.lite_upload(layer, x, target, 1)?;
        self.lite_forward(&l, 0)?;
        self.lite_backward(&l)?;
        let mut got = self
            .lite_read(&l, &[&l.grads[0], &l.grads[1], &l.grads[2]], 1)
            .await?;
        let loss = got.pop().map_or(f64::NAN, |v| v[0] as f64);
        let router = got.pop().unwrap_or_default();
        let s_out = got.pop().unwrap_or_default();
        let s_in = got.pop().unwrap_or_default();
        Ok((
            loss,
            MosGrads {
                s_in,
                s_out,
                router,
                signs: None,
                x: None,
            },
        ))
    }

    /// Lite training of `layer` on `x` (`t × cols` calibration rows) toward `target` (`t × rows`,
    /// the layer as loaded on them), `opts.steps` Adam steps with no read-back in between. Returns
    /// the trained layer and the losses before the first step and after each (the CPU's
    /// `train_lite`). A loss that is not finite fails, naming the step, as on the CPU.
    pub async fn mos_train_lite(
        &self,
        layer: &MosParts,
        x: &[f32],
        target: &[f32],
        opts: &LiteOptions,
    ) -> Result<(MosParts, Vec<f64>)> {
        let l = self.lite_upload(layer, x, target, opts.steps + 1)?;
        let rates = lite_rates(layer, opts.lr);
        for step in 1..=opts.steps {
            self.lite_forward(&l, step - 1)?;
            self.lite_backward(&l)?;
            let (c1, c2) = adam_corrections(step);
            for (i, lr) in rates.iter().enumerate() {
                self.lite_adam(&l, i, *lr, c1, c2)?;
            }
        }
        self.lite_forward(&l, opts.steps)?;
        let mut got = self
            .lite_read(
                &l,
                &[&l.params[0], &l.params[1], &l.params[2]],
                opts.steps + 1,
            )
            .await?;
        let losses: Vec<f64> = got
            .pop()
            .unwrap_or_default()
            .iter()
            .map(|&v| v as f64)
            .collect();
        if let Some(step) = losses.iter().position(|l| !l.is_finite()) {
            return Err(Error::config(
                "binarymos",
                format!(
                    "the loss became {} at step {step} on the GPU; lower the learning rate",
                    losses[step]
                ),
            ));
        }
        let mut out = layer.clone();
        out.router = got.pop().unwrap_or_default();
        out.s_out = got.pop().unwrap_or_default();
        out.s_in = got.pop().unwrap_or_default();
        Ok((out, losses))
    }

    /// Upload a layer's inputs and tables; scratch for one step; `slots` loss slots.
    fn lite_upload(
        &self,
        layer: &MosParts,
        x: &[f32],
        target: &[f32],
        slots: usize,
    ) -> Result<Lite> {
        let (n, o, k) = (layer.cols, layer.rows, layer.experts);
        let t = x.len() / n.max(1);
        if t == 0
            || x.len() != t * n
            || target.len() != t * o
            || layer.signs.len() != o * n
            || layer.s_in.len() != k * n
            || layer.s_out.len() != k * o
            || layer.router.len() != n * k
            || !(1..=crate::format::binarymos::MAX_MOS_EXPERTS).contains(&k)
        {
            return Err(Error::config(
                "binarymos",
                format!(
                    "{} inputs and {} targets for a {o}×{n} layer of {k} experts",
                    x.len(),
                    target.len()
                ),
            ));
        }
        let up = |what: &str, v: &[f32]| {
            buffers::upload(
                &self.ctx.device,
                &self.ctx.limits,
                what,
                bytemuck::cast_slice(v),
            )
        };
        for (what, len) in [("BinaryMoS training rows", t * n.max(o)), ("signs", o * n)] {
            buffers::check_size(&self.ctx.limits, what, 4 * len)?;
        }
        Ok(Lite {
            t,
            n,
            o,
            k,
            x: up("BinaryMoS training inputs", x)?,
            target: up("BinaryMoS training targets", target)?,
            signs: up("BinaryMoS signs", &layer.signs)?,
            params: [
                up("S_in", &layer.s_in)?,
                up("S_out", &layer.s_out)?,
                up("router", &layer.router)?,
            ],
            grads: [
                self.pool.get(4 * k * n),
                self.pool.get(4 * k * o),
                self.pool.get(4 * n * k),
            ],
            moments: [k * n, k * o, n * k].map(|len| [(); 2].map(|_| self.zeroed(len))),
            g: self.pool.get(4 * t * k),
            xs: self.pool.get(4 * t * n),
            h: self.pool.get(4 * t * o),
            dyh: self.pool.get(4 * t * o),
            dh: self.pool.get(4 * t * o),
            dg: self.pool.get(4 * t * k),
            rowl: self.pool.get(4 * t),
            losses: self.pool.get(4 * slots),
        })
    }

    fn lite_params(&self, l: &Lite, step: usize) -> wgpu::Buffer {
        self.uniform(&TrainParams {
            t: u(l.t),
            n: u(l.n),
            o: u(l.o),
            k: u(l.k),
            step: u(step),
            scale: 2.0 / l.t as f32,
            pad: [0; 2],
        })
    }

    /// `c (m × n) [+]= a (m × p) · b (p × n)` through `mos_train_mm`.
    #[allow(clippy::too_many_arguments)]
    fn lite_mm(
        &self,
        a: Operand,
        b: Operand,
        c: &wgpu::Buffer,
        c_rs: usize,
        m: usize,
        n: usize,
        p: usize,
        acc: bool,
    ) -> Result<()> {
        let pipe = self.pipes.plain("mos_train_mm", "main")?;
        let params = self.uniform(&MmParams {
            m: u(m),
            n: u(n),
            p: u(p),
            a_rs: u(a.rs),
            a_cs: u(a.cs),
            b_rs: u(b.rs),
            b_cs: u(b.cs),
            c_rs: u(c_rs),
            acc: acc as u32,
            pad: [0; 3],
        });
        self.dispatch(
            &pipe,
            &[&params, a.buf, b.buf, c],
            (u(n.div_ceil(16)), u(m.div_ceil(16))),
            &|| format!("mos train mm {m}×{n}×{p}"),
        );
        Ok(())
    }

    /// The forward pass and the error, the loss into slot `slot`.
    fn lite_forward(&self, l: &Lite, slot: usize) -> Result<()> {
        let (t, n, o) = (l.t, l.n, l.o);
        let p = self.lite_params(l, slot);
        let gates = self.pipes.plain("mos_train_gates", "main")?;
        let err = self.pipes.plain("mos_train_err", "main")?;
        let loss = self.pipes.plain("mos_train_small", "loss")?;
        let [s_in, s_out, router] = &l.params;
        self.dispatch(
            &gates,
            &[&p, &l.x, router, s_in, &l.g, &l.xs],
            self.groups_1d(t, 1),
            &|| format!("mos train gates {t}×{n}"),
        );
        // H = XS·signᵀ: the signs are `o × n`, read as their transpose.
        self.lite_mm(op(&l.xs, n, 1), op(&l.signs, 1, n), &l.h, o, t, o, n, false)?;
        self.dispatch(
            &err,
            &[&p, &l.h, &l.g, s_out, &l.target, &l.dyh, &l.dh, &l.rowl],
            self.groups_1d(t, 1),
            &|| format!("mos train err {t}×{o}"),
        );
        self.dispatch(&loss, &[&p, &l.rowl, &l.losses], (1, 1), &|| {
            "mos train loss".into()
        });
        Ok(())
    }

    /// The backward pass after `lite_forward`: the three gradients into `l.grads`.
    fn lite_backward(&self, l: &Lite) -> Result<()> {
        let (t, n, o, k) = (l.t, l.n, l.o, l.k);
        let p = self.lite_params(l, 0);
        let [s_in, s_out, _] = &l.params;
        let [d_s_in, d_s_out, d_router] = &l.grads;
        // dS_out (k × o) = Gᵀ·(dY ⊙ H).
        self.lite_mm(op(&l.g, 1, k), op(&l.dyh, o, 1), d_s_out, o, k, o, t, false)?;
        // dXS (t × n) = (dY ⊙ s_out)·sign, into XS's buffer (XS is not needed again this
        // step), then ⊙ X in place: dS_in's and dG's common factor.
        self.lite_mm(
            op(&l.dh, o, 1),
            op(&l.signs, n, 1),
            &l.xs,
            n,
            t,
            n,
            o,
            false,
        )?;
        let mul = self.pipes.plain("mos_train_small", "mul")?;
        self.dispatch(
            &mul,
            &[&p, &l.x, &l.xs],
            self.groups_1d(t * n, 256),
            &|| format!("mos train mul {t}×{n}"),
        );
        // dS_in (k × n) = Gᵀ·(dXS ⊙ X).
        self.lite_mm(op(&l.g, 1, k), op(&l.xs, n, 1), d_s_in, n, k, n, t, false)?;
        // dG (t × k) = (dY ⊙ H)·S_outᵀ + (dXS ⊙ X)·S_inᵀ.
        self.lite_mm(op(&l.dyh, o, 1), op(s_out, 1, o), &l.dg, k, t, k, o, false)?;
        self.lite_mm(op(&l.xs, n, 1), op(s_in, 1, n), &l.dg, k, t, k, n, true)?;
        let back = self.pipes.plain("mos_train_small", "softmax_back")?;
        self.dispatch(&back, &[&p, &l.g, &l.dg], self.groups_1d(t, 64), &|| {
            format!("mos train softmax back {t}×{k}")
        });
        // dW_R (n × k) = Xᵀ·dZ.
        self.lite_mm(op(&l.x, 1, n), op(&l.dg, k, 1), d_router, k, n, k, t, false)
    }

    /// Adam's update of trained tensor `i` (0: `S_in`, 1: `S_out`, 2: `W_R`) with the bias
    /// corrections `c1`, `c2` of the step.
    fn lite_adam(&self, l: &Lite, i: usize, lr: f32, c1: f32, c2: f32) -> Result<()> {
        let count = [l.k * l.n, l.k * l.o, l.n * l.k][i];
        let pipe = self.pipes.plain("mos_train_adam", "main")?;
        let p = self.uniform(&AdamParams {
            count: u(count),
            lr,
            c1,
            c2,
            b1: ADAM_B1,
            b2: ADAM_B2,
            eps: ADAM_EPS,
            pad: 0,
        });
        let [m, v] = &l.moments[i];
        self.dispatch(
            &pipe,
            &[&p, &l.grads[i], &l.params[i], m, v],
            self.groups_1d(count, 256),
            &|| format!("mos train adam {count}"),
        );
        Ok(())
    }

    /// A new storage buffer of `len` floats, all zero.
    fn zeroed(&self, len: usize) -> wgpu::Buffer {
        self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("Adam moments"),
            size: buffers::padded_len(4 * len) as u64,
            usage: buffers::STORAGE,
            mapped_at_creation: false,
        })
    }

    /// Read back the three tables in `bufs` (`S_in`, `S_out`, `W_R` or their gradients) and the
    /// first `slots` losses, in one submission and one wait: the values, then the losses.
    async fn lite_read(
        &self,
        l: &Lite,
        bufs: &[&wgpu::Buffer; 3],
        slots: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let lens = [l.k * l.n, l.k * l.o, l.n * l.k, slots];
        let staged: Vec<wgpu::Buffer> = bufs
            .iter()
            .copied()
            .chain([&*l.losses])
            .zip(lens)
            .map(|(b, len)| self.stage(b, 4 * len))
            .collect();
        self.flush();
        let mut out = Vec::with_capacity(4);
        for (s, len) in staged.iter().zip(lens) {
            let bytes = self.read_back(s, None).await?;
            let v: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
            out.push(v[..len].to_vec());
        }
        self.take_error()?;
        Ok(out)
    }
}
