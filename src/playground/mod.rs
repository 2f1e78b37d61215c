//! What the page and the CLI drive: a loaded model with its tokenizer, the current quantization,
//! and evaluation. No wasm or GPU imports here.

pub mod session;
