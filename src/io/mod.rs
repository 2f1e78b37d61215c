//! Model file readers (and `gguf_write`, the GGUF writer of `quantlab export --to gguf`). Each
//! reader parses a `&[u8]` (so browser buffers work) and treats every byte as hostile: counts
//! and sizes are bounded, offsets checked, errors name the file and field.

#[cfg(not(target_arch = "wasm32"))]
pub mod file;
pub mod finite;
pub mod gguf;
pub mod gguf_write;
pub mod safetensors;
pub mod tokenizer;

/// Largest `config.json` accepted (real ones are a few kB): the reader's bound and the parser's.
pub const MAX_CONFIG_JSON_BYTES: usize = 1 << 20;
