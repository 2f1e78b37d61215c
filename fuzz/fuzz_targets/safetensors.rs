//! One safetensors shard through `SafetensorsSource` with the Llama naming, then every tensor
//! it maps. Must hold: no panic, every failure an `Err`, allocations bounded.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use quantlab::io::safetensors::{Naming, SafetensorsSource};
use quantlab::model::arch::Arch;
use quantlab::tensor::TensorSource;

fuzz_target!(|data: &[u8]| {
    let arch = Arch::Llama;
    let (canonical, ignored) = (|h: &str| arch.canonical_name(h), |h: &str| arch.ignored(h));
    let naming = Naming {
        canonical: &canonical,
        ignored: &ignored,
        family: "llama",
    };
    let Ok(src) = SafetensorsSource::new(&[("fuzz.safetensors", data)], naming) else {
        return;
    };
    for name in src.names() {
        if let Some(t) = src.get(&name) {
            assert!(t.data.len() <= data.len(), "{name}: data outside the file");
        }
        let _ = src.hf_name(&name);
        let _ = src.file_of(&name);
    }
});
