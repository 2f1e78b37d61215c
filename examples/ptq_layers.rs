//! The full per-layer table of tests/ptq_layers.rs: every block linear of the default model,
//! calibration 32 × 512 (the last tokens of WikiText-2 test).
//!
//!     cargo run --release --example ptq_layers

#[path = "../tests/ptq_layers.rs"]
#[allow(dead_code)]
mod ptq_layers;

fn main() {
    let layers: Vec<usize> = (0..30).collect();
    ptq_layers::compare(&layers, &quantlab::quant::calib::CalibOptions::default());
}
