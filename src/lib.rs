//! QuantLab: an LLM quantization playground.
//!
//! Dependencies point one way (docs/architecture.md): error, linalg, par ← storage formats
//! (`format`: one module per family) ← tensor ← io (bytes → plain data) ← model (configs,
//! weights, the `Backend` trait, `model::arch`: one file per architecture with its topology and
//! forward pass) ← quant (methods and the whole-model drivers, which read the topology) ← train
//! (full BinaryMoS distillation: loss, AdamW, checkpoints) ← gpu ←
//! playground, sweep ← web/CLI. `testkit` (seeded data and tiny models for tests) sits on model.
//! Nothing below `gpu` touches wgpu; only `web` touches wasm-bindgen.

pub mod error;
pub mod format;
pub mod gpu;
pub mod io;
pub mod linalg;
pub mod model;
pub mod par;
pub mod playground;
pub mod quant;
pub mod sweep;
pub mod tensor;
pub mod testkit;
pub mod train;

#[cfg(not(target_arch = "wasm32"))]
pub mod serve;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
