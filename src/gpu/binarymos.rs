//! BinaryMoS's token-adaptive product on the GPU (Jo et al., arXiv 2406.12311; docs/binarymos.md).
//! The layout and the CPU reference (`MosParts::forward`) are src/format/binarymos.rs's; the
//! weight buffer holds the tensor's bytes as they are, so the GPU holds exactly the format
//! table's total. Three dispatches per product, for `m` tokens:
//!   1. `binarymos.wgsl` `gates`: per token, `g = softmax(x·W_R)` (into a small `m × 16` buffer)
//!      and `xs = x ⊙ g·S_in` (into an `m × k` scratch buffer);
//!   2. the ordinary tiled product (split-K where it has few tiles, like any weight) of `xs` by
//!      the signs, decoded as ±1 by `fmt_sign.wgsl`: `h = xs·signᵀ`;
//!   3. `scale`: `y = h ⊙ g·S_out + b`, in place.
//!
//! Folding the input scales into `x` before the product, rather than into the weight, keeps the
//! product a plain matmul (one weight for every token), so it gets every optimisation of the
//! tiled kernel; the gates are computed once per token and product.

use crate::format::binarymos::{MosGpuLayout, MAX_MOS_EXPERTS};
use crate::gpu::backend::{Gpu, Mat};
use crate::gpu::buffers;
use crate::gpu::record::u;
use bytemuck::{Pod, Zeroable};

/// Gates stored per token (`binarymos.wgsl` `MAXE`: four vec4 of logits per invocation).
const GATES_PER_TOKEN: usize = 16;
const _: () = assert!(MAX_MOS_EXPERTS == GATES_PER_TOKEN);

/// `binarymos.wgsl`'s `MosParams`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MosParams {
    m: u32,
    n: u32,
    k: u32,
    experts: u32,
    x_row0: u32,
    has_bias: u32,
    s_in_off: u32,
    s_out_off: u32,
    router_off: u32,
    pad: [u32; 3],
}

impl Gpu {
    /// Record `out (m × w.rows) = MoS(x[x_row0 .. x_row0+m]) + b` for the BinaryMoS weight `w`
    /// (whole, not split: a split weight's parts each come here with their own layout).
    pub(crate) fn record_mos(
        &self,
        x: &wgpu::Buffer,
        x_row0: usize,
        m: usize,
        w: &Mat,
        mos: &MosGpuLayout,
        out: &wgpu::Buffer,
    ) {
        let (n, k) = (w.rows, w.cols);
        if let Err(e) = buffers::check_size(&self.ctx.limits, "BinaryMoS scaled input", m * k * 4) {
            return self.fail("linear", e.to_string());
        }
        let (gates, scale) = match (
            self.pipes.plain("binarymos", "gates"),
            self.pipes.plain("binarymos", "scale"),
        ) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return self.fail("binarymos", e.to_string()),
        };
        let p = self.uniform(&MosParams {
            m: u(m),
            n: u(n),
            k: u(k),
            experts: mos.experts,
            x_row0: u(x_row0),
            has_bias: w.bias.is_some() as u32,
            s_in_off: mos.s_in_off,
            s_out_off: mos.s_out_off,
            router_off: mos.router_off,
            pad: [0; 3],
        });
        let g = self.pool.get(m * GATES_PER_TOKEN * 4);
        let xs = self.pool.get(m * k * 4);
        let e = mos.experts;
        // One workgroup per token.
        self.dispatch(
            &gates,
            &[&p, &w.w, x, &g, &xs],
            self.groups_1d(m, 1),
            &|| format!("binarymos gates ×{e} {m}×{k}"),
        );
        // The sign product; its bias is added after the output scale, as the CPU does.
        self.record_product(&xs, 0, m, w, None, out);
        let bias = w.bias.as_ref().unwrap_or(&self.dummy_ro);
        self.dispatch(
            &scale,
            &[&p, &w.w, bias, &g, out],
            self.groups_1d(m * n, 256),
            &|| format!("binarymos scale ×{e} {m}×{n}"),
        );
    }
}
