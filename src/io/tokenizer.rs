//! (stub)

/// Tokenizer fields of a GGUF file (`tokenizer.ggml.*`).
#[derive(Clone, Debug, Default)]
pub struct GgufTokenizerMeta {
    pub model: String,       // tokenizer.ggml.model: "gpt2", "llama", ...
    pub pre: Option<String>, // tokenizer.ggml.pre: "smollm", "llama-bpe", "qwen2", ...
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>, // may be empty
    pub scores: Vec<f32>,      // may be empty
    pub merges: Vec<String>,   // may be empty (SentencePiece)
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
}
