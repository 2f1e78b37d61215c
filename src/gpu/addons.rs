//! Add-ons on the GPU (layout at the top of src/format/addons.rs): sparse f16 outliers
//! (`shaders/outliers.wgsl`) and LoRC low-rank factors (`shaders/lowrank.wgsl`, ZeroQuant-V2,
//! arXiv 2303.08302), applied after the base product of any format. The add-on bytes stay where
//! the format table puts them, after the base bytes in the weight's one buffer, so the GPU holds
//! exactly `storage_with(..).total()` bytes; the kernels get byte offsets into it.

use crate::format::QTensor;
use crate::gpu::backend::{Gpu, Mat};
use crate::gpu::record::{u, Params4, WeightParams};
use crate::Result;
use bytemuck::{Pod, Zeroable};

/// Where a weight's add-ons lie in its buffer, in bytes: they follow the base bytes directly,
/// and ggml bases (18-, 22-, 34-byte blocks) can end mid-word, so offsets are not word aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AddonLayout {
    pub(crate) outliers: u32,
    pub(crate) idx_off: u32,
    pub(crate) val_off: u32,
    pub(crate) lowrank: Option<LowRankLayout>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LowRankLayout {
    pub(crate) rank: u32,
    pub(crate) bits8: bool,
    pub(crate) u_off: u32,
    pub(crate) us_off: u32,
    pub(crate) v_off: u32,
    pub(crate) vs_off: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct LowRankParams {
    m: u32,
    n: u32,
    k: u32,
    rank: u32,
    x_row0: u32,
    bits8: u32,
    u_off: u32,
    us_off: u32,
    v_off: u32,
    vs_off: u32,
    pad: [u32; 2],
}

/// The add-on layout of `w` (None without add-ons): the format's offsets
/// (`AddOns::offsets`) after the base bytes. Outlier indices are checked here (strictly
/// increasing, inside the tensor) because the kernel's binary search relies on it.
pub(crate) fn addon_layout(w: &QTensor) -> Result<Option<AddonLayout>> {
    if w.addons.is_empty() {
        return Ok(None);
    }
    let (base, extra) = w.split_data()?;
    w.addons.outlier_indices(extra, w.rows * w.cols)?;
    let base = base.len();
    let o = w.addons.offsets(w.rows, w.cols, base);
    let lowrank = w
        .addons
        .lowrank
        .zip(o.lowrank)
        .map(|(l, lo)| LowRankLayout {
            rank: u(l.rank),
            bits8: l.bits8,
            u_off: u(lo.u),
            us_off: u(lo.us),
            v_off: u(lo.v),
            vs_off: u(lo.vs),
        });
    Ok(Some(AddonLayout {
        outliers: u(w.addons.outliers),
        idx_off: u(o.idx),
        val_off: u(o.val),
        lowrank,
    }))
}

impl Gpu {
    /// Record the add-on passes of `w` onto `out` (`m × w.rows`, already holding the base
    /// product of rows `x_row0..x_row0+m` of `x`); the sparse outliers only with `outliers`
    /// (the all-f16 product has them in its copy of the weight: matmul.rs `h16_weight`).
    pub(crate) fn record_addons(
        &self,
        x: &wgpu::Buffer,
        x_row0: usize,
        m: usize,
        w: &Mat,
        out: &wgpu::Buffer,
        outliers: bool,
    ) {
        let Some(a) = w.addons else { return };
        let (n, k) = (w.rows, w.cols);
        if a.outliers > 0 && outliers {
            let pipe = match self.pipes.weight("outliers", w.fmt.fragment) {
                Ok(p) => p,
                Err(e) => return self.fail("outliers", e.to_string()),
            };
            let p = self.uniform(&WeightParams {
                m: u(m),
                n: u(n),
                k: u(k),
                has_bias: 0,
                x_row0: u(x_row0),
                bits: w.fmt.bits,
                group: w.fmt.group,
                sym: w.fmt.sym,
                scale_off: w.fmt.scale_off,
                zero_off: w.fmt.zero_off,
                k_split: 0,
                pad: 0,
            });
            let ap = self.uniform(&Params4([a.outliers, a.idx_off, a.val_off, 0]));
            self.dispatch(
                &pipe,
                &[&p, &w.w, &ap, x, out],
                self.groups_1d(m * n, 256),
                &|| format!("outliers {} ×{} {m}×{k}→{n}", w.fmt.fragment, a.outliers),
            );
        }
        if let Some(l) = a.lowrank {
            let (vx, uy) = match (
                self.pipes.plain("lowrank", "vx"),
                self.pipes.plain("lowrank", "uy"),
            ) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => return self.fail("lowrank", e.to_string()),
            };
            let r = l.rank as usize;
            let p = self.uniform(&LowRankParams {
                m: u(m),
                n: u(n),
                k: u(k),
                rank: l.rank,
                x_row0: u(x_row0),
                bits8: l.bits8 as u32,
                u_off: l.u_off,
                us_off: l.us_off,
                v_off: l.v_off,
                vs_off: l.vs_off,
                pad: [0; 2],
            });
            let t = self.pool.get(m * r * 4);
            self.dispatch(&vx, &[&p, &w.w, x, &t], self.groups_1d(m * r, 256), &|| {
                format!("lowrank vx r{r} {m}×{k}")
            });
            self.dispatch(
                &uy,
                &[&p, &w.w, &t, out],
                self.groups_1d(m * n, 256),
                &|| format!("lowrank uy r{r} {m}→{n}"),
            );
        }
    }
}
