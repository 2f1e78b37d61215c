//! The tiny Llama of tests/fixtures/tiny/llama (2 blocks of 7 linears) in a session (and any
//! other tiny checkpoint of tests/fixtures/tiny), and the BinaryMoS pieces the lite-training
//! tests share (tests/gpu_mos_train.rs, tests/lite_resume.rs).
#![allow(dead_code)] // not every test file uses every helper

use quantlab::io::tokenizer::TokenizerFiles;
use quantlab::playground::engine::Device;
use quantlab::playground::session::Session;
use quantlab::quant::binarymos::BinaryMosOptions;
use quantlab::quant::config::{LayerQuant, Method, QuantConfig};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny");

/// The tiny Llama loaded on `device`, not calibrated.
pub fn load(device: &Device) -> Session {
    load_arch("llama", "tiny-llama", device)
}

/// The tiny checkpoint tests/fixtures/tiny/`arch` loaded on `device` as `label`.
pub fn load_arch(arch: &str, label: &str, device: &Device) -> Session {
    let read = |f: &str| {
        std::fs::read(format!("{FIXTURES}/{arch}/{f}")).unwrap_or_else(|e| panic!("{f}: {e}"))
    };
    Session::load_hf_on(
        label,
        &read("config.json"),
        TokenizerFiles::Json(&read("tokenizer.json")),
        &[("model.safetensors", &read("model.safetensors"))],
        device,
    )
    .unwrap_or_else(|e| panic!("tiny {arch} loads: {e}"))
}

/// BinaryMoS with lite training on every block linear at 1 bit.
pub fn mos_config(experts: usize, steps: usize, lr: f32) -> QuantConfig {
    QuantConfig {
        method: Method::BinaryMos(BinaryMosOptions { experts, steps, lr }),
        default: LayerQuant {
            bits: 1,
            ..LayerQuant::default()
        },
        ..QuantConfig::default()
    }
}

/// The packed bytes of every block linear of the session's quantized model.
pub fn packed(s: &Session) -> Vec<(String, Vec<u8>)> {
    s.quantized_weights()
        .expect("read back")
        .expect("a quantized model")
        .linears()
        .map(|l| (l.name.clone(), l.w.data.clone()))
        .collect()
}
