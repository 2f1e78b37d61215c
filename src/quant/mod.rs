//! Quantizers and the storage-format table.

pub mod calib;
pub mod config;
pub mod format;
pub mod ggml;
pub mod gptq;
pub mod rtn;
