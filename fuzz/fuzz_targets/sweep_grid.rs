//! Sweep grid files through `parse_grid`. Must hold: no panic, every failure an `Err`, and every
//! config of an accepted grid validates.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use quantlab::sweep::grid::parse_grid;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(configs) = parse_grid(s, "fuzz-grid.json") {
        for c in &configs {
            c.validate()
                .expect("a config of an accepted grid does not validate");
        }
    }
});
