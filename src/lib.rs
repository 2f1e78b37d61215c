//! QuantLab: an LLM quantization playground.
//!
//! Dependencies point one way: error ← tensor ← io/quant ← model ← gpu ← playground ← web/CLI.
//! Nothing in `io`, `quant` or `model` touches wasm or GPU APIs.

pub mod error;
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

#[cfg(not(target_arch = "wasm32"))]
pub mod serve;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
