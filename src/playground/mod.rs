//! What the page and the CLI drive: a loaded model with its tokenizer, the current quantization,
//! and evaluation, on the CPU or the GPU backend (`engine`). No wasm imports here.

pub mod check;
pub mod engine;
pub mod generate;
pub mod gpulite;
pub mod inspect;
pub mod lite;
pub mod load;
pub mod mos_view;
pub mod probe;
pub mod row_view;
pub mod saved;
pub mod schema;
pub mod session;
/// Native only: it blocks on calibration (the page runs the same study as a preset).
#[cfg(not(target_arch = "wasm32"))]
pub mod slac;
pub mod tender_view;
