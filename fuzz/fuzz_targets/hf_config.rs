//! config.json alone through `parse_hf_config`. Must hold: no panic, every failure an `Err`,
//! and an accepted config passes the model's own validation.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use quantlab::model::hf::parse_hf_config;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = parse_hf_config(data) {
        let _ = c.model.validate("config.json");
        let _ = c.model.architecture();
    }
});
