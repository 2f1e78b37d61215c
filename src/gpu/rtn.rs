//! RTN re-quantization on the GPU (`shaders/rtn.wgsl`): packed weights already on the device
//! become `Format::Int` weights on the device, byte for byte what `quant::rtn::quantize` makes
//! on the CPU from the same (dequantized) values, without a round trip through the host. A whole
//! model is recorded as one batch and only a status word per tensor is read back.

use crate::format::{Format, IntSpec};
use crate::gpu::backend::{Gpu, Mat};
use crate::gpu::buffers;
use crate::gpu::record::{u, WeightParams};
use crate::quant::rtn::RtnOptions;
use crate::{Error, Result};
use bytemuck::{Pod, Zeroable};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RtnParams {
    rows: u32,
    cols: u32,
    bits: u32,
    group: u32,
    sym: u32,
    groups: u32,
    code_words: u32,
    scale_words: u32,
    zero_words: u32,
    pad: [u32; 3],
}

impl Gpu {
    /// RTN-quantize every matrix in `mats` to `spec` (see `quant::rtn::quantize`; the clip
    /// search and 1-bit sign binarization have no GPU path and are refused). Biases are kept.
    pub async fn rtn_quantize_all(
        &self,
        mats: &[&Mat],
        spec: IntSpec,
        opts: &RtnOptions,
    ) -> Result<Vec<Mat>> {
        if opts.clip_search {
            return Err(Error::unsupported(
                "gpu",
                "rtn",
                "the clip search runs on the CPU only",
            ));
        }
        if spec.sym && spec.bits == 1 {
            return Err(Error::unsupported(
                "gpu",
                "rtn",
                "1-bit sign binarization (mean |w| in f64) runs on the CPU only",
            ));
        }
        let format = Format::Int(spec);
        let status = self.pool.get(4 * mats.len().max(1));
        let mut out = Vec::with_capacity(mats.len());
        for (slot, m) in mats.iter().enumerate() {
            out.push(self.record_rtn(m, format, spec, &status, slot)?);
        }
        let staging = self.stage(&status, 4 * mats.len().max(1));
        self.flush();
        let bytes = self.read_back(&staging, None).await?;
        self.take_error()?;
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
        if let Some((i, &w)) = words
            .iter()
            .take(mats.len())
            .enumerate()
            .find(|(_, &w)| w != 0)
        {
            let m = mats[i];
            let why = if w == 1 {
                "a weight is not finite".to_string()
            } else {
                "a scale exceeds the f16 range; the weights are too large".to_string()
            };
            return Err(Error::config(
                "rtn",
                format!("matrix {i} ({}×{}): {why}", m.rows, m.cols),
            ));
        }
        Ok(out)
    }

    fn record_rtn(
        &self,
        m: &Mat,
        format: Format,
        spec: IntSpec,
        status: &wgpu::Buffer,
        slot: usize,
    ) -> Result<Mat> {
        let (rows, cols) = (m.rows, m.cols);
        if !m.parts.is_empty() {
            return Err(Error::unsupported(
                "gpu",
                "rtn",
                format!("re-quantizing a weight split into {} parts", m.parts.len()),
            ));
        }
        if m.is_mos() {
            // Its `fmt` decodes the signs alone; the weight differs for every token.
            return Err(Error::unsupported(
                "gpu",
                "rtn",
                "re-quantizing a BinaryMoS weight (its scales depend on each token)",
            ));
        }
        if m.addons.is_some() {
            // The source is read through its base fragment only, which would drop the add-ons.
            return Err(Error::unsupported(
                "gpu",
                "rtn",
                "re-quantizing a weight with outliers or low-rank factors",
            ));
        }
        let st = format.storage(rows, cols)?;
        let fmt = format.gpu_decoder(rows, cols)?;
        let group = spec.gran.group_len(rows, cols, "rtn")?;
        let groups = rows * cols / group;
        buffers::check_size(&self.ctx.limits, "rtn output", st.total())?;
        buffers::check_size(&self.ctx.limits, "rtn grid", 4 + 8 * groups)?;
        let w = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("rtn weight"),
            size: buffers::padded_len(st.total()) as u64,
            usage: buffers::STORAGE,
            mapped_at_creation: false,
        });
        let grid = self.pool.get(4 + 8 * groups);
        self.with_encoder(|e| e.clear_buffer(&grid, 0, Some(4)));
        let src = self.uniform(&WeightParams {
            m: 0,
            n: u(rows),
            k: u(cols),
            has_bias: 0,
            x_row0: 0,
            bits: m.fmt.bits,
            group: m.fmt.group,
            sym: m.fmt.sym,
            scale_off: m.fmt.scale_off,
            zero_off: m.fmt.zero_off,
            k_split: 0,
            pad: 0,
        });
        let words = [st.codes / 4, st.scales / 4, st.zeros / 4];
        let rp = self.uniform(&RtnParams {
            rows: u(rows),
            cols: u(cols),
            bits: spec.bits as u32,
            group: u(group),
            sym: spec.sym as u32,
            groups: u(groups),
            code_words: u(words[0]),
            scale_words: u(words[1]),
            zero_words: u(words[2]),
            pad: [0; 3],
        });
        let frag = m.fmt.fragment;
        let grid_pipe = self.pipes.weight_entry("rtn", frag, "grid")?;
        let pack_pipe = self.pipes.weight_entry("rtn", frag, "pack")?;
        self.dispatch(
            &grid_pipe,
            &[&src, &m.w, &rp, &grid],
            self.groups_1d(groups, 1),
            &|| format!("rtn grid {frag} {rows}×{cols}"),
        );
        self.dispatch(
            &pack_pipe,
            &[&src, &m.w, &rp, &grid, &w],
            self.groups_1d(words.iter().sum(), 64),
            &|| format!("rtn pack {frag} {rows}×{cols}"),
        );
        self.with_encoder(|e| e.copy_buffer_to_buffer(&grid, 0, status, 4 * slot as u64, 4));
        let bias = m.bias.as_ref().map(|b| {
            let nb = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bias"),
                size: b.size(),
                usage: buffers::STORAGE,
                mapped_at_creation: false,
            });
            self.with_encoder(|e| e.copy_buffer_to_buffer(b, 0, &nb, 0, b.size()));
            nb
        });
        let bytes = st.total() + bias.as_ref().map_or(0, |_| 4 * rows);
        let held = self.hold(&format!("the RTN {rows}×{cols} weight"), bytes)?;
        Ok(Mat {
            rows,
            cols,
            bytes,
            w,
            bias,
            fmt,
            addons: None,
            mos: None,
            parts: Vec::new(),
            _held: Some(held),
            h16: Default::default(),
        })
    }

    /// The packed bytes of a weight on the GPU (`QTensor.data` of its format), read back.
    pub async fn read_mat(&self, m: &Mat, format: &Format) -> Result<Vec<u8>> {
        let mut one = self.read_mats(&[(m, *format)]).await?;
        Ok(one.pop().unwrap_or_default())
    }

    /// The packed bytes of several weights, with one submission and one wait: a whole model's
    /// re-quantized linears come back in one round trip instead of one per weight.
    pub async fn read_mats(&self, mats: &[(&Mat, Format)]) -> Result<Vec<Vec<u8>>> {
        let mut staged = Vec::with_capacity(mats.len());
        for (m, format) in mats {
            if !m.parts.is_empty() {
                return Err(Error::unsupported(
                    "gpu",
                    "read_mat",
                    "a weight split into row parts",
                ));
            }
            let n = format.storage(m.rows, m.cols)?.total();
            staged.push((self.stage(&m.w, n), n));
        }
        self.flush();
        let mut out = Vec::with_capacity(staged.len());
        for (staging, n) in staged {
            let mut bytes = self.read_back(&staging, None).await?;
            bytes.truncate(n);
            out.push(bytes);
        }
        self.take_error()?;
        Ok(out)
    }
}
