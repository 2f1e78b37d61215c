//! vocab.json + merges.txt (+ tokenizer_config.json when a third part is present), separated by
//! `common::SEP`, through `Tokenizer::from_bpe_files`, then encode/decode of a short text. Must
//! hold: no panic, every failure an `Err`, allocations bounded.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use quantlab::io::tokenizer::Tokenizer;

fuzz_target!(|data: &[u8]| {
    let parts = common::split(data, 3);
    let (vocab, merges, config) = match parts.as_slice() {
        [v, m] => (*v, *m, None),
        [v, m, c] => (*v, *m, Some(*c)),
        _ => return,
    };
    let Ok(tok) = Tokenizer::from_bpe_files("vocab.json", vocab, merges, config) else {
        return;
    };
    if let Ok(ids) = tok.encode(common::TEXT) {
        let _ = tok.decode(&ids);
    }
    let n = tok.vocab_size() as u32;
    let _ = tok.decode(&[0, n.saturating_sub(1), n]);
});
