//! Recording activation fake-quantization (`shaders/actquant.wgsl`; the rule and CPU reference
//! are `quant::actquant`): for dynamic scales the absmax is reduced on the GPU (per row, then
//! over rows for a per-tensor scale), so nothing is read back. The same pass keeps the integer
//! codes (int8, four per word) and each row's scale on the `Act` (`Act::q`), which `linear`
//! multiplies in integers where the weight allows (src/gpu/intmm.rs, W4A8).

use crate::format::act::{ActGranularity, ActQuantSpec, ActScale};
use crate::gpu::backend::{Act, Gpu};
use crate::gpu::intmm::{KeptCodes, QuantAct};
use crate::gpu::record::{u, Params8};
use crate::Result;

impl Gpu {
    pub(crate) fn record_fake_quant(&self, x: &mut Act, spec: &ActQuantSpec) -> Result<()> {
        // Whatever happens below, codes from an earlier quantization no longer apply.
        x.q = None;
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
        // Codes are packed four per word, each row padded to whole words.
        let kw = cols.div_ceil(4);
        let params = self.uniform(&Params8([
            u(rows),
            u(cols),
            mode,
            spec.qmax().to_bits(),
            scale.to_bits(),
            u(kw),
            (1.0 / spec.qmax()).to_bits(),
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
        let q = QuantAct {
            codes: self.pool.get(4 * rows * kw),
            scales: self.pool.get(4 * rows),
            kw,
        };
        self.dispatch(
            &pipe,
            &[&params, &absmax, &x.buf, &q.codes, &q.scales],
            self.groups_1d(rows * kw, 256),
            &|| format!("actquant quant {}b {rows}×{cols}", spec.bits),
        );
        x.q = Some(KeptCodes::Uniform(q));
        Ok(())
    }
}
