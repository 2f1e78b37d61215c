//! Recording activation fake-quantization (`shaders/actquant.wgsl`; the rule and CPU reference
//! are `quant::actquant`): for dynamic scales the absmax is reduced on the GPU (per row, then
//! over rows for a per-tensor scale), so nothing is read back.

use crate::format::act::{ActGranularity, ActQuantSpec, ActScale};
use crate::gpu::backend::{Act, Gpu};
use crate::gpu::record::{u, Params8};
use crate::Result;

impl Gpu {
    pub(crate) fn record_fake_quant(&self, x: &mut Act, spec: &ActQuantSpec) -> Result<()> {
        spec.check()?;
        let (rows, cols) = (x.rows, x.cols);
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let (mode, scale) = match (spec.scale, spec.gran) {
            (ActScale::Dynamic, ActGranularity::PerTensor) => (0u32, 0f32),
            (ActScale::Dynamic, ActGranularity::PerToken) => (1, 0.0),
            (ActScale::Static(s), _) => (2, s),
        };
        let params = self.uniform(&Params8([
            u(rows),
            u(cols),
            mode,
            spec.qmax().to_bits(),
            scale.to_bits(),
            0,
            0,
            0,
        ]));
        let absmax = self.pool.get(4 * (rows + 1));
        if mode != 2 {
            let pipe = self.pipes.plain("actquant", "absmax_rows")?;
            self.dispatch(
                &pipe,
                &[&params, &absmax, &x.buf],
                self.groups_1d(rows, 1),
                &|| format!("actquant absmax_rows {rows}×{cols}"),
            );
        }
        if mode == 0 {
            let pipe = self.pipes.plain("actquant", "absmax_all")?;
            self.dispatch(&pipe, &[&params, &absmax], (1, 1), &|| {
                format!("actquant absmax_all {rows}")
            });
        }
        let pipe = self.pipes.plain("actquant", "quant")?;
        self.dispatch(
            &pipe,
            &[&params, &absmax, &x.buf],
            self.groups_1d(rows * cols, 256),
            &|| format!("actquant quant {}b {rows}×{cols}", spec.bits),
        );
        Ok(())
    }
}
