//! The tiny Llama of tests/fixtures/tiny/llama (2 blocks of 7 linears) in a session, and the
//! BinaryMoS pieces the lite-training tests share (tests/gpu_mos_train.rs, tests/lite_resume.rs).

use quantlab::io::tokenizer::TokenizerFiles;
use quantlab::playground::engine::Device;
use quantlab::playground::session::Session;
use quantlab::quant::binarymos::BinaryMosOptions;
use quantlab::quant::config::{LayerQuant, Method, QuantConfig};

pub const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny/llama");

/// The tiny Llama loaded on `device`, not calibrated.
pub fn load(device: &Device) -> Session {
    let read =
        |f: &str| std::fs::read(format!("{TINY}/{f}")).unwrap_or_else(|e| panic!("{f}: {e}"));
    let tok = read("tokenizer.json");
    Session::load_hf_on(
        "tiny-llama",
        &read("config.json"),
        TokenizerFiles::Json(&tok),
        &[("model.safetensors", &read("model.safetensors"))],
        device,
    )
    .expect("tiny llama loads")
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
