//! The WebGPU engine: THE forward pass (`model::arch`) on wgpu compute shaders, natively
//! (Vulkan; Mesa lavapipe in tests) and in the browser (WebGPU). Depends on `model`, never the
//! reverse.
//!
//! - `context`: adapter/device set-up with the adapter's real limits (async);
//! - `shaders`: the one table of `shaders/*.wgsl` sources;
//! - `pipelines`: compute pipelines compiled once per kernel and cached;
//! - `buffers`: storage buffers, uploads, the activation pool and the async readback;
//! - `record`: recording dispatches into command encoders, submitted in batches;
//! - `matmul`: recording a matrix product (kernel variant, split-K);
//! - `profile`: per-dispatch GPU time from timestamp queries;
//! - `pace`: paced evaluation (the browser): recorded work held back and run a block at a time,
//!   so that progress and cancellation reach inside a window;
//! - `actquant`: activation fake-quantization (the W4A8/Tender hook);
//! - `intmm`: the integer W4A8 product from the codes `actquant` keeps (`matmul_int.wgsl`);
//! - `tender`: Tender's decomposed activation quantization and its integer product with shift
//!   accumulation (arXiv 2406.12930; `tender_*.wgsl`);
//! - `addons`: sparse outliers and LoRC factors applied after a product;
//! - `binarymos`: BinaryMoS's token-adaptive product (gates and scales around a sign product);
//! - `mos_train`: BinaryMoS lite training of one linear (forward, backward, Adam; no read-back
//!   between steps);
//! - `load`: weights onto the device, weight-memory accounting and its limits;
//! - `split`: row parts of weights larger than one storage binding;
//! - `backend`: `impl Backend for Gpu`;
//! - `rtn`: RTN re-quantization of weights on the GPU, byte-exact with `quant::rtn`;
//! - `calib`: calibration statistics (XᵀX, mean/max |x|) accumulated on the GPU;
//! - `train_gemm`: the full-distillation trainer's f32 products (`linalg::Gemm`), natively.

mod actquant;
mod addons;
pub mod backend;
mod binarymos;
pub mod buffers;
pub mod calib;
pub mod context;
mod intmm;
mod load;
mod matmul;
mod mos_train;
mod pace;
pub mod pipelines;
mod profile;
mod record;
pub mod rtn;
mod score;
pub mod shaders;
mod split;
mod tender;
#[cfg(not(target_arch = "wasm32"))]
pub mod train_gemm;

pub use backend::Gpu;
pub use context::GpuContext;
pub use intmm::IntMatmul;
pub use pipelines::{AttentionVariant, MatmulGen, MatmulVariant, Precision, ShaderChecks};
#[cfg(not(target_arch = "wasm32"))]
pub use train_gemm::TrainGemm;
