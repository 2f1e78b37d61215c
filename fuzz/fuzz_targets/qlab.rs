//! QuantLab's own model file (`model::qlab::read`): the safetensors container, its header (config,
//! tensor formats, tokenizer, activation plan) and every tensor through the format table. Must
//! hold: no panic, every failure an `Err`, allocations bounded by the input.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use quantlab::model::qlab;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = qlab::read("fuzz.qlab", data) else {
        return;
    };
    // What loaded is usable: every weight decodes (the reader checked they are finite) and the
    // tokenizer encodes.
    for l in f.weights.linears() {
        let w = l.w.dequantize().expect("a loaded tensor decodes");
        assert!(
            w.iter().all(|v| v.is_finite()),
            "{}: non-finite weight",
            l.name
        );
    }
    let _ = f.tokenizer.encode(common::TEXT);
});
