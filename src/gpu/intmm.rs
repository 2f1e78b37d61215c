//! The integer W4A8 product (arXiv 2311.05161; `shaders/matmul_int.wgsl`, CPU reference
//! `format::intmm::int_linear`). `fake_quant_act` keeps, with the fake-quantized activations,
//! their int8 codes and per-row scales (`QuantAct` on the `Act`); `linear` then multiplies them
//! in integers with a symmetric `Int` weight of 2–8 bits whose groups fit the kernel, and
//! takes the float path (matmul.rs) for everything else. Both compute the same product of the
//! same quantized values, so the forward pass does not know which ran; the integer one is what
//! an int8 engine would execute (the speed question of the W4A8 paper).
//!
//! Writing an `Act` in place (`add`, `silu_mul`, `gelu`, `relu`, `rope`, another
//! `fake_quant_act`) drops its codes, so stale codes are never multiplied.

use crate::format::intmm::check_no_overflow;
use crate::gpu::backend::{Act, Gpu, Mat};
use crate::gpu::buffers::{self, PooledBuffer};
use crate::gpu::pipelines::{split_len, MatmulVariant, MATMUL_TILE};
use crate::gpu::record::{u, Params4};
use crate::Result;
use bytemuck::{Pod, Zeroable};

/// k per slice of `matmul_int.wgsl` (`TK`): weight groups shorter than a row must be a
/// multiple of it, so no slice straddles two groups.
const INT_TK: usize = 16;

/// Integer activation codes kept with an `Act`: `rows × kw` words of four signed bytes (element
/// `4w + j` in byte `j`; each row zero-padded to whole words) and one f32 scale per row.
pub(crate) struct QuantAct {
    pub(crate) codes: PooledBuffer,
    pub(crate) scales: PooledBuffer,
    pub(crate) kw: usize,
}

/// The integer codes an `Act` may carry: W4A8's (one scale per row, `fake_quant_act`) or
/// Tender's (per-chunk decomposition, `tender_act`; src/gpu/tender.rs).
pub(crate) enum KeptCodes {
    Uniform(QuantAct),
    Tender(crate::gpu::tender::TenderAct),
}

/// Which integer product `linear` runs (forced by tests and benchmarks with
/// `Gpu::force_int_matmul`; by default `Native` where the device offers `dot4I8Packed`, else
/// `Emulated`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntMatmul {
    /// Never: activations with codes take the float path too (the comparison baseline).
    Off,
    /// `dot4I8Packed` (WGSL language feature `packed_4x8_integer_dot_product`); where the
    /// device lacks it, the emulation runs instead.
    Native,
    /// Sign-extending bit-field extracts and i32 multiplies, on any device.
    Emulated,
}

impl IntMatmul {
    pub const ALL: [IntMatmul; 3] = [IntMatmul::Off, IntMatmul::Native, IntMatmul::Emulated];

    pub fn name(self) -> &'static str {
        match self {
            IntMatmul::Off => "f32",
            IntMatmul::Native => "dot4I8Packed",
            IntMatmul::Emulated => "emulated",
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct IntParams {
    m: u32,
    n: u32,
    k: u32,
    has_bias: u32,
    kw: u32,
    bits: u32,
    group: u32,
    gk: u32,
    scale_off: u32,
    k_split: u32,
    pad: [u32; 2],
}

/// The weights per scale within one row when `w` can be multiplied in integers by
/// `matmul_int.wgsl`, else None: a whole (unsplit) symmetric `Int` weight of 2–8 bits with
/// per-tensor or per-row scales, or groups that are a multiple of `INT_TK` and divide the row,
/// and rows short enough that no i32 sum overflows.
fn row_group(w: &Mat) -> Option<usize> {
    let f = &w.fmt;
    let (k, group) = (w.cols, f.group as usize);
    let ok = f.fragment == "fmt_int"
        && f.sym == 1
        && (2..=8).contains(&f.bits)
        && w.parts.is_empty()
        && w.rows > 0
        && k > 0
        && check_no_overflow(k, f.bits as u8).is_ok();
    if !ok {
        return None;
    }
    if group >= k {
        // Per row (group = k) or per tensor (group = rows·k): one scale per row.
        group.is_multiple_of(k).then_some(k)
    } else {
        (group.is_multiple_of(INT_TK) && k.is_multiple_of(group)).then_some(group)
    }
}

impl Gpu {
    /// Record `out = x Wᵀ + b` as an integer product when `x` carries codes and `w` allows it
    /// (then its add-ons run after it, on the fake-quantized `x`, as after the float product);
    /// false, recording nothing, when the float path must run.
    pub(crate) fn record_int_matmul(&self, x: &Act, w: &Mat, out: &wgpu::Buffer) -> bool {
        let Some(KeptCodes::Uniform(q)) = &x.q else {
            return false;
        };
        let native = match self.int_matmul.get() {
            Some(IntMatmul::Off) => return false,
            Some(IntMatmul::Native) | None => self.ctx.dot4,
            Some(IntMatmul::Emulated) => false,
        };
        let Some(gk) = row_group(w) else { return false };
        let (m, n, k) = (x.rows, w.rows, w.cols);
        if m == 0 || x.cols != k {
            return false;
        }
        let pipe = match self.pipes.int_matmul(native) {
            Ok(p) => p,
            Err(e) => {
                self.fail("linear", e.to_string());
                return true;
            }
        };
        // Split-K exactly where the float product splits (small products, `split_len`).
        let k_split = match self.matmul_variant.get().unwrap_or(MatmulVariant::SplitK) {
            MatmulVariant::SplitK => split_len(
                m,
                n,
                k,
                (MATMUL_TILE, MATMUL_TILE),
                self.matmul_variant.get().is_some(),
            ),
            _ => 0,
        };
        let splits = if k_split > 0 { k.div_ceil(k_split) } else { 1 };
        let p = IntParams {
            m: u(m),
            n: u(n),
            k: u(k),
            has_bias: w.bias.is_some() as u32,
            kw: u(q.kw),
            bits: w.fmt.bits,
            group: w.fmt.group,
            gk: u(gk),
            scale_off: w.fmt.scale_off,
            k_split: u(k_split),
            pad: [0; 2],
        };
        let params = self.uniform(&p);
        let bias = w.bias.as_ref().unwrap_or(&self.dummy_ro);
        let tiles = (u(n.div_ceil(MATMUL_TILE)), u(m.div_ceil(MATMUL_TILE)));
        let label = || {
            let v = if native { "dot4" } else { "emul" };
            format!("matmul_int {v} ×{splits} int{} {m}×{k}→{n}", w.fmt.bits)
        };
        self.int_products.set(self.int_products.get() + 1);
        if k_split == 0 {
            self.dispatch(
                &pipe,
                &[&params, &w.w, &q.codes, &q.scales, bias, out],
                tiles,
                &label,
            );
            self.record_addons(&x.buf, 0, m, w, out, true);
            return true;
        }
        if let Err(e) =
            buffers::check_size(&self.ctx.limits, "split-K partials", splits * m * n * 4)
        {
            self.fail("linear", e.to_string());
            return true;
        }
        let part = self.pool.get(splits * m * n * 4);
        self.dispatch_3d(
            &pipe,
            &[&params, &w.w, &q.codes, &q.scales, &self.dummy_ro, &part],
            (tiles.0, tiles.1, u(splits)),
            &label,
        );
        let sum = match self.pipes.plain("splitk", "main") {
            Ok(p) => p,
            Err(e) => {
                self.fail("linear", e.to_string());
                return true;
            }
        };
        let sp = self.uniform(&Params4([
            u(m * n),
            u(n),
            u(splits),
            w.bias.is_some() as u32,
        ]));
        self.dispatch(
            &sum,
            &[&sp, &part, bias, out],
            self.groups_1d(m * n, 256),
            &|| format!("splitk sum ×{splits} {m}×{n}"),
        );
        self.record_addons(&x.buf, 0, m, w, out, true);
        true
    }

    /// Run the integer product as `v` (tests, benchmarks), or None for the default.
    pub fn force_int_matmul(&self, v: Option<IntMatmul>) {
        self.int_matmul.set(v);
    }

    /// Integer products recorded since the backend was created.
    pub fn int_products(&self) -> usize {
        self.int_products.get()
    }

    /// The W4A8 integer codes (`rows × cols`, padding dropped) and row scales `x` carries, or
    /// None (tests and inspection; Tender's: `read_tender`).
    pub async fn read_act_codes(&self, x: &Act) -> Result<Option<(Vec<i8>, Vec<f32>)>> {
        let Some(KeptCodes::Uniform(q)) = &x.q else {
            return Ok(None);
        };
        let codes = self.stage(&q.codes, 4 * x.rows * q.kw);
        let scales = self.stage(&q.scales, 4 * x.rows);
        self.flush();
        let cb = self.read_back(&codes, None).await?;
        let sb = self.read_back(&scales, None).await?;
        self.take_error()?;
        let row_bytes = 4 * q.kw;
        let codes = cb
            .chunks_exact(row_bytes)
            .take(x.rows)
            .flat_map(|r| r[..x.cols].iter().map(|&b| b as i8))
            .collect();
        let scales = bytemuck::pod_collect_to_vec::<u8, f32>(&sb)
            .into_iter()
            .take(x.rows)
            .collect();
        Ok(Some((codes, scales)))
    }
}
