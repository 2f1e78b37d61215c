//! The WebGPU engine: THE forward pass (`model::llama`) on wgpu compute shaders, natively
//! (Vulkan; Mesa lavapipe in tests) and in the browser (WebGPU). Depends on `model`, never the
//! reverse.
//!
//! - `context`: adapter/device set-up with the adapter's real limits (async);
//! - `shaders`: the one table of `shaders/*.wgsl` sources;
//! - `pipelines`: compute pipelines compiled once per kernel and cached;
//! - `buffers`: storage buffers, uploads and the async readback;
//! - `kernels`: thin launchers, one per kernel, recording into a command encoder;
//! - `backend`: `impl Backend for Gpu`.

pub mod context;
pub mod shaders;

pub use context::GpuContext;
