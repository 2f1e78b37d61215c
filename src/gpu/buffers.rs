//! GPU buffers: uploads (checked against the device's limits), a pool that recycles activation
//! buffers by size, and the asynchronous readback future.
//!
//! Recycling is safe without waiting for the GPU: commands execute in recording order and wgpu
//! inserts the barriers between dispatches, so a buffer returned to the pool after its last use
//! was *recorded* may be written by a later dispatch. Uploads never go into pooled buffers
//! (`Queue::write_buffer` would run before already-recorded commands that still read them).

use crate::{Error, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use wgpu::util::DeviceExt;

/// Usage of every storage buffer: bound to kernels, filled by uploads, copied for readback.
pub const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Bytes rounded up to whole u32 words (kernels read packed data as `array<u32>`), at least one
/// word because WebGPU rejects empty bindings.
pub fn padded_len(bytes: usize) -> usize {
    bytes.div_ceil(4).max(1) * 4
}

/// Check that a buffer of `bytes` can be created and bound whole on this device.
pub fn check_size(limits: &wgpu::Limits, what: &str, bytes: usize) -> Result<()> {
    let bind = limits.max_storage_buffer_binding_size;
    // Kernels compute element indices and sizes in u32, so 4 GiB is a hard cap too.
    let max = limits.max_buffer_size.min(bind).min(u32::MAX as u64);
    if bytes as u64 > max {
        return Err(Error::unsupported(
            "gpu",
            what,
            format!(
                "{bytes} bytes exceed this device's largest storage binding of {max} bytes \
                 (max_storage_buffer_binding_size {bind}, max_buffer_size {})",
                limits.max_buffer_size
            ),
        ));
    }
    Ok(())
}

/// Upload bytes into a new storage buffer, zero-padded to whole words.
pub fn upload(
    device: &wgpu::Device,
    limits: &wgpu::Limits,
    what: &str,
    bytes: &[u8],
) -> Result<wgpu::Buffer> {
    let len = padded_len(bytes.len());
    check_size(limits, what, len)?;
    let contents: std::borrow::Cow<[u8]> = if len == bytes.len() {
        bytes.into()
    } else {
        let mut v = bytes.to_vec();
        v.resize(len, 0);
        v.into()
    };
    Ok(
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(what),
            contents: &contents,
            usage: STORAGE,
        }),
    )
}

/// Recycles storage buffers by exact size, so a forward pass allocates its activations once.
pub struct Pool {
    device: wgpu::Device,
    free: RefCell<HashMap<u64, Vec<wgpu::Buffer>>>,
}

/// A pooled buffer; returns itself to the pool when dropped.
pub struct PooledBuffer {
    buf: Option<wgpu::Buffer>,
    pool: Rc<Pool>,
}

impl Pool {
    pub fn new(device: wgpu::Device) -> Rc<Self> {
        Rc::new(Pool {
            device,
            free: RefCell::new(HashMap::new()),
        })
    }

    /// A buffer of at least `bytes` (rounded up to words). Its contents are unspecified; every
    /// kernel writes its whole output.
    pub fn get(self: &Rc<Self>, bytes: usize) -> PooledBuffer {
        let size = padded_len(bytes) as u64;
        let reused = self.free.borrow_mut().get_mut(&size).and_then(|v| v.pop());
        let buf = reused.unwrap_or_else(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("activation"),
                size,
                usage: STORAGE,
                mapped_at_creation: false,
            })
        });
        PooledBuffer {
            buf: Some(buf),
            pool: self.clone(),
        }
    }

    /// Buffers currently idle in the pool and their bytes (for memory reports).
    pub fn idle(&self) -> (usize, u64) {
        let f = self.free.borrow();
        let n = f.values().map(|v| v.len()).sum();
        let bytes = f.iter().map(|(s, v)| s * v.len() as u64).sum();
        (n, bytes)
    }
}

impl std::ops::Deref for PooledBuffer {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        // Only `drop` takes the buffer out.
        self.buf.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.pool
                .free
                .borrow_mut()
                .entry(b.size())
                .or_default()
                .push(b);
        }
    }
}

/// Shared state between `map_async`'s callback and the future that waits for it.
#[derive(Default)]
struct MapState {
    done: Option<std::result::Result<(), wgpu::BufferAsyncError>>,
    waker: Option<std::task::Waker>,
}

/// Resolves when a `map_async` completes. On the web the browser's event loop completes it;
/// natively someone must poll the device (`read_back` does).
pub struct MapFuture {
    state: Arc<Mutex<MapState>>,
}

impl std::future::Future for MapFuture {
    type Output = Result<()>;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<()>> {
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        match s.done.take() {
            Some(r) => std::task::Poll::Ready(
                r.map_err(|e| Error::unsupported("gpu", "readback", format!("map failed: {e}"))),
            ),
            None => {
                s.waker = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        }
    }
}

/// Start mapping `buf` for reading; the future resolves when its bytes are readable.
pub fn map_read(buf: &wgpu::Buffer) -> MapFuture {
    let state = Arc::new(Mutex::new(MapState::default()));
    let st = state.clone();
    buf.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let mut s = match st.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        s.done = Some(r);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    });
    MapFuture { state }
}

/// Read a mappable buffer back: map, (natively) wait for the device, copy out, unmap.
/// Asynchronous, so on the web nothing blocks: the browser resolves the map.
pub async fn read_back(device: &wgpu::Device, buf: &wgpu::Buffer) -> Result<Vec<u8>> {
    read_back_after(device, buf, None).await
}

/// `read_back` of a buffer whose copy was in submission `after`: natively only that
/// submission is waited for, so work submitted later (the next window) keeps the GPU busy.
pub async fn read_back_after(
    device: &wgpu::Device,
    buf: &wgpu::Buffer,
    after: Option<wgpu::SubmissionIndex>,
) -> Result<Vec<u8>> {
    let fut = map_read(buf);
    #[cfg(not(target_arch = "wasm32"))]
    device
        .poll(wgpu::PollType::Wait {
            submission_index: after,
            timeout: None,
        })
        .map_err(|e| Error::unsupported("gpu", "poll", e))?;
    #[cfg(target_arch = "wasm32")]
    let _ = after;
    #[cfg(target_arch = "wasm32")]
    let _ = device;
    fut.await?;
    let bytes = {
        let view = buf
            .slice(..)
            .get_mapped_range()
            .map_err(|e| Error::unsupported("gpu", "readback", e))?;
        view.to_vec()
    };
    buf.unmap();
    Ok(bytes)
}
