//! The model: configuration, host-side weights, THE forward pass (generic over a backend), the
//! CPU reference backend and evaluation.

pub mod actplan;
pub mod arch;
pub mod backend;
pub mod config;
pub mod cpu;
pub mod eval;
pub mod gguf;
pub mod gguf_export;
pub mod hf;
pub mod hf_export;
pub mod klstats;
pub mod net;
pub mod qlab;
pub mod weights;
