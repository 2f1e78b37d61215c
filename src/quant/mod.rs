//! Quantizers (the storage formats they produce are `crate::format`).

pub mod act;
pub mod auto;
pub mod awq;
pub mod binary;
pub mod binarymos;
pub mod calib;
pub mod calib_source;
pub mod cmpq;
pub mod cmpq_alloc;
pub mod cmpq_cache;
mod cmpq_fit;
mod cmpq_outliers;
mod cmpq_pack;
pub mod codebook;
pub mod config;
pub mod gptq;
pub mod lorc;
pub mod rtn;
pub mod smooth;
#[cfg(test)]
pub(crate) mod testutil;
pub mod underflow;
