//! A Hugging Face checkpoint: config.json and one safetensors shard (separated by
//! `common::SEP`) through `load_hf`. Must hold: no panic, every failure an `Err`, allocations
//! bounded.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use quantlab::model::hf::load_hf;

fuzz_target!(|data: &[u8]| {
    let parts = common::split(data, 2);
    let (config, shard) = match parts.as_slice() {
        [c, s] => (*c, *s),
        _ => return,
    };
    let _ = load_hf(config, &[("model.safetensors", shard)]);
});
