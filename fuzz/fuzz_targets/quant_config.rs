//! Share links and QuantConfig JSON: the input is tried as both a `v1.` link and as JSON. Must
//! hold: no panic, every failure an `Err`, and an accepted config survives its own round trips
//! (JSON and link) unchanged.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use quantlab::quant::config::QuantConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for c in [QuantConfig::from_url(s), QuantConfig::from_json(s)]
        .into_iter()
        .flatten()
    {
        let json = c.to_json();
        let back = QuantConfig::from_json(&json).expect("an accepted config's JSON is refused");
        assert_eq!(back, c, "JSON round trip changed the config");
        let link = c.to_url();
        let back = QuantConfig::from_url(&link).expect("an accepted config's link is refused");
        assert_eq!(back, c, "link round trip changed the config");
    }
});
