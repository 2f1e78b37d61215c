//! What the page and the CLI drive: a loaded model with its tokenizer, the current quantization,
//! and evaluation, on the CPU or the GPU backend (`engine`). No wasm imports here.

pub mod engine;
pub mod generate;
pub mod inspect;
pub mod schema;
pub mod session;
