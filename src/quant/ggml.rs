//! ggml's block formats are a format family (`crate::format::ggml`); QuantLab has no ggml
//! quantizer, so this path only re-exports the decoder for its callers.

pub use crate::format::ggml::{dequantize, GgmlType, QK_K};
