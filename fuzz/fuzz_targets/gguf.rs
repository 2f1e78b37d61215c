//! GGUF: the container parser, then everything a loader derives from it (model config,
//! tokenizer metadata and tokenizer, the model weights). Must hold: no panic, every failure an
//! `Err`, allocations bounded (common.rs, -rss_limit_mb).
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use quantlab::io::gguf::Gguf;
use quantlab::io::tokenizer::Tokenizer;
use quantlab::model::weights::ModelWeights;
use quantlab::tensor::TensorSource;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = Gguf::parse("fuzz.gguf", data) else {
        return;
    };
    let _ = g.summary();
    if let Ok(meta) = g.tokenizer_meta() {
        if let Ok(tok) = Tokenizer::from_gguf(&meta) {
            if let Ok(ids) = tok.encode("Hello world, 123!") {
                let _ = tok.decode(&ids);
            }
        }
    }
    if let Ok(cfg) = g.model_config() {
        let _ = ModelWeights::from_source(cfg, &g as &dyn TensorSource);
    }
});
