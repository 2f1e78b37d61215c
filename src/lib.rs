//! QuantLab: an LLM quantization playground.
//!
//! Dependencies point one way: error ← format ← tensor ← io/quant ← model ← gpu ← playground ←
//! web/CLI.
//! Nothing in `format`, `io`, `quant` or `model` touches wasm or GPU APIs.

pub mod error;
pub mod format;
pub mod gpu;
pub mod io;
pub mod model;
pub mod playground;
pub mod quant;
pub mod sweep;
pub mod tensor;
pub mod testkit;

#[cfg(not(target_arch = "wasm32"))]
pub mod serve;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
