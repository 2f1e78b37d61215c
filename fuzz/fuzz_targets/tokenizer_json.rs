//! tokenizer.json through the tokenizer wrapper, then encode/decode of a short text. Any panic
//! counts, including one the wrapper would catch natively: the wasm build aborts on panic, so
//! the load-time checks must refuse what makes the `tokenizers` crate panic.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use quantlab::io::tokenizer::Tokenizer;

fuzz_target!(|data: &[u8]| {
    let Ok(tok) = Tokenizer::from_tokenizer_json("tokenizer.json", data) else {
        return;
    };
    for text in ["", common::TEXT] {
        if let Ok(ids) = tok.encode(text) {
            let _ = tok.decode(&ids);
        }
        if let Ok(ids) = tok.encode_with_special(text) {
            let _ = tok.decode(&ids);
        }
    }
    let n = tok.vocab_size() as u32;
    let _ = tok.decode(&[0, n.saturating_sub(1), n]);
    let _ = tok.token_str(0);
    let _ = tok.token_piece(n.saturating_sub(1));
});
