//! Putting weights on the device: one buffer per weight holding `QTensor.data` as is (base
//! bytes, then add-ons), or row parts when it exceeds the largest storage binding (split.rs);
//! and the accounting of weight memory, so that a model that cannot fit fails with the numbers.
//!
//! wgpu reports no total device memory, so two guards stand in for it: a budget the caller may
//! set (`Gpu::set_memory_budget`; tests, or a page that knows its device), and natively an
//! out-of-memory error scope around every weight upload. In the browser an allocation failure
//! arrives later, through the device's uncaptured-error handler, and is reported at the next
//! readback.

use crate::format::{binarymos, storage_with, Format, QTensor};
use crate::gpu::addons::addon_layout;
use crate::gpu::backend::{Gpu, Mat, Vector};
use crate::gpu::buffers;
use crate::gpu::split;
use crate::{Error, Result};
use std::cell::Cell;
use std::rc::Rc;

/// Bytes of weights held on the device while this lives (one per weight or vector).
pub struct Held {
    bytes: u64,
    counter: Rc<Cell<u64>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.counter
            .set(self.counter.get().saturating_sub(self.bytes));
    }
}

/// Most bytes of decoded f16 weight copies kept at once (`Gpu::hold_h16`): a 135M-parameter
/// model and its as-loaded reference take 2 × 270 MB; larger models decode per product past it.
pub const H16_CACHE_BYTES: u64 = 1 << 30;

impl Mat {
    /// Another handle on the same device buffers (wgpu's are reference counted): a model that
    /// differs from a loaded one only in some tensors shares the others instead of uploading
    /// them again (`Engine::rtn_on_device`, `Engine::set_quantized_from`). The bytes stay counted once, by
    /// the original's `Held`.
    pub(crate) fn share(&self) -> Mat {
        Mat {
            rows: self.rows,
            cols: self.cols,
            bytes: self.bytes,
            w: self.w.clone(),
            bias: self.bias.clone(),
            fmt: self.fmt,
            addons: self.addons,
            mos: self.mos,
            parts: self.parts.iter().map(Mat::share).collect(),
            _held: None,
            h16: self.h16.clone(),
        }
    }
}

impl Vector {
    /// As `Mat::share`: the same buffer, its bytes counted once.
    pub(crate) fn share(&self) -> Vector {
        Vector {
            len: self.len,
            buf: self.buf.clone(),
            _held: Held {
                bytes: 0,
                counter: self._held.counter.clone(),
            },
        }
    }
}

impl Gpu {
    /// The largest storage binding weights may use: the device's (and the kernels' u32
    /// indexing limit), or a smaller one set by `limit_storage_binding`.
    pub fn binding_limit(&self) -> u64 {
        let l = &self.ctx.limits;
        let dev = l
            .max_storage_buffer_binding_size
            .min(l.max_buffer_size)
            .min(u32::MAX as u64);
        self.binding_override.get().map_or(dev, |o| o.min(dev))
    }

    /// Pretend the device's largest storage binding is `bytes` (tests of tensor splitting, or
    /// to mimic WebGPU's 128 MiB default); None restores the device's own. Applies to weights
    /// loaded afterwards.
    pub fn limit_storage_binding(&self, bytes: Option<u64>) {
        self.binding_override.set(bytes);
    }

    /// Refuse weights beyond `bytes` in total (None: only the device's own failures).
    pub fn set_memory_budget(&self, bytes: Option<u64>) {
        self.memory_budget.set(bytes);
    }

    /// Bytes of weights (packed matrices, biases, vectors) currently held on the device.
    pub fn weight_bytes_held(&self) -> u64 {
        self.weights_held.get()
    }

    /// Account for `bytes` more of weights, or fail naming what is needed against the budget.
    pub(crate) fn hold(&self, what: &str, bytes: usize) -> Result<Held> {
        let held = self.weights_held.get();
        let need = held + bytes as u64;
        if let Some(budget) = self.memory_budget.get() {
            if need > budget {
                return Err(Error::unsupported(
                    "gpu",
                    "memory",
                    format!(
                        "the model does not fit: {what} needs {bytes} bytes on top of {held} \
                         already held, {need} bytes in all, more than the {budget}-byte budget"
                    ),
                ));
            }
        }
        self.weights_held.set(need);
        Ok(Held {
            bytes: bytes as u64,
            counter: self.weights_held.clone(),
        })
    }

    /// Account for a weight's decoded f16 copy (`Mat::h16`), or None where the copies would
    /// pass their cap (`H16_CACHE_BYTES`, at most a quarter of a memory budget): the product
    /// then decodes into scratch each time, as before. Counted apart from the weights, so that
    /// copies never make a later model refused for memory.
    pub(crate) fn hold_h16(&self, bytes: usize) -> Option<Held> {
        let cap = self
            .memory_budget
            .get()
            .map_or(H16_CACHE_BYTES, |b| (b / 4).min(H16_CACHE_BYTES));
        let need = self.h16_held.get() + bytes as u64;
        (need <= cap).then(|| {
            self.h16_held.set(need);
            Held {
                bytes: bytes as u64,
                counter: self.h16_held.clone(),
            }
        })
    }

    /// Bytes of decoded f16 weight copies held (`hold_h16`; tests).
    pub fn h16_bytes_held(&self) -> u64 {
        self.h16_held.get()
    }

    /// Upload weight bytes; natively, a device out-of-memory is caught here and reported with
    /// the weight bytes already held.
    pub(crate) fn upload_weight(&self, what: &str, bytes: &[u8]) -> Result<wgpu::Buffer> {
        #[cfg(not(target_arch = "wasm32"))]
        let scope = self
            .ctx
            .device
            .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buf = buffers::upload(&self.ctx.device, &self.ctx.limits, what, bytes)?;
        #[cfg(not(target_arch = "wasm32"))]
        {
            // Natively the scope's result is ready at once (wgpu validates synchronously).
            let mut fut = std::pin::pin!(scope.pop());
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            if let std::task::Poll::Ready(Some(e)) =
                std::future::Future::poll(fut.as_mut(), &mut cx)
            {
                let held = self.weights_held.get();
                return Err(Error::unsupported(
                    "gpu",
                    "memory",
                    format!(
                        "the model does not fit: {what} needs {} bytes on top of {held} already \
                         held ({} in all): {e}",
                        bytes.len(),
                        held + bytes.len() as u64
                    ),
                ));
            }
        }
        Ok(buf)
    }

    /// `Backend::load_matrix`: one buffer, or row parts past the binding limit.
    pub(crate) fn load_mat(&self, w: &QTensor, bias: Option<&[f32]>) -> Result<Mat> {
        let want = storage_with(w.format, w.addons, w.rows, w.cols)?.total();
        if w.data.len() != want {
            return Err(Error::format(
                "tensor",
                "data",
                format!("{} bytes, {} needs {want}", w.data.len(), w.format.name()),
            ));
        }
        if let Some(b) = bias {
            if b.len() != w.rows {
                return Err(Error::config(
                    "bias",
                    format!("{} values for {} output rows", b.len(), w.rows),
                ));
            }
        }
        let limit = self.binding_limit();
        if buffers::padded_len(w.data.len()) as u64 <= limit {
            return self.load_whole(w, bias);
        }
        let mut parts = Vec::new();
        for (r0, r1) in split::plan(w, limit)? {
            let part = w.row_slice(r0, r1)?;
            parts.push(self.load_whole(&part, bias.map(|b| &b[r0..r1]))?);
        }
        let fmt = parts
            .first()
            .map(|p| p.fmt)
            .ok_or_else(|| Error::config("tensor", "a weight with no rows"))?;
        Ok(Mat {
            rows: w.rows,
            cols: w.cols,
            bytes: parts.iter().map(|p| p.bytes).sum(),
            w: self.dummy_ro.clone(),
            bias: None,
            fmt,
            addons: None,
            mos: None,
            parts,
            _held: None,
            h16: Default::default(),
        })
    }

    fn load_whole(&self, w: &QTensor, bias: Option<&[f32]>) -> Result<Mat> {
        // BinaryMoS: the format module says where the signs (the product's weight) and the
        // tables lie; the bytes are uploaded as they are, like any format's.
        let (fmt, mos) = match w.format {
            Format::BinaryMos { experts } => {
                let l = binarymos::gpu_layout(experts, w.rows, w.cols)?;
                (l.signs, Some(l))
            }
            _ => (w.format.gpu_decoder(w.rows, w.cols)?, None),
        };
        if mos.is_some() && !w.addons.is_empty() {
            // The outlier pass re-decodes base weights through `fmt` (signs here, not weights),
            // and LoRC's factors compensate the uniform-gate weight, which no token multiplies.
            return Err(Error::unsupported(
                "gpu",
                "binarymos",
                format!(
                    "a BinaryMoS weight with outliers or low-rank factors ({}×{})",
                    w.rows, w.cols
                ),
            ));
        }
        let addons = addon_layout(w)?;
        let bytes = w.data.len() + bias.map_or(0, |b| 4 * b.len());
        let what = format!("the {} {}×{} weight", w.format.name(), w.rows, w.cols);
        let held = self.hold(&what, bytes)?;
        let buf = self.upload_weight(&what, &w.data)?;
        let bias = match bias {
            Some(b) => Some(self.upload_weight("a bias", bytemuck::cast_slice(b))?),
            None => None,
        };
        Ok(Mat {
            rows: w.rows,
            cols: w.cols,
            bytes,
            w: buf,
            bias,
            fmt,
            addons,
            mos,
            parts: Vec::new(),
            _held: Some(held),
            h16: Default::default(),
        })
    }
}
