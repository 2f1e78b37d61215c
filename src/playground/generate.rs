//! Greedy text generation from a prompt, for the page's side-by-side view: the model as loaded
//! and the quantized model continue the same prompt, and the reader sees where they part.
//!
//! No KV cache: each new token re-runs THE forward pass (`model::arch`) on the whole growing
//! sequence and reads only the last row's argmax through `Backend::score` (so the
//! vocabulary-sized logits never leave the backend, and the GPU path stays async). At the page's
//! sizes (a short prompt and ~32 new tokens on a 135M model) that costs a few seconds; the cost
//! grows with the square of the length, hence `MAX_NEW_TOKENS`.

use crate::model::backend::Backend;
use crate::model::net::Model;
use crate::playground::engine::{Engine, Models};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The most new tokens one request may ask for.
pub const MAX_NEW_TOKENS: usize = 256;
/// The longest prompt, in characters, before tokenizing.
pub const MAX_PROMPT_CHARS: usize = 4096;

/// Which of a session's two models generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Which {
    /// The weights as loaded.
    Reference,
    /// The current quantization (the loaded weights when the config quantizes nothing).
    Quantized,
}

/// One finished generation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Generation {
    pub which: Which,
    /// Tokens of the prompt as the model saw them (BOS included when the model asks for it).
    pub prompt_tokens: usize,
    /// The new tokens, in order.
    pub tokens: Vec<u32>,
    /// `tokens` decoded by the tokenizer.
    pub text: String,
    /// Each new token's share of `text` (`token_pieces`): the page marks the tokens where two
    /// generations differ.
    pub pieces: Vec<String>,
    /// True when generation stopped at the end-of-sequence token (not included in `tokens`).
    pub stopped_at_eos: bool,
    /// True when the model's context length ended it before `n` tokens.
    pub stopped_at_ctx: bool,
    /// False when the current config quantizes nothing, so "quantized" is the loaded model.
    pub quantized: bool,
}

/// Each token's share of `text` (the decoding of all of `tokens`), one piece per token, the
/// pieces joined giving `text` back: token i's piece is what decoding `tokens[..=i]` adds to the
/// pieces before it, as a streaming view prints them. A token that ends inside a character (one
/// byte of a multi-byte UTF-8 sequence: its prefix decodes to a trailing U+FFFD) or whose prefix
/// decodes to text that does not extend the pieces so far gets "", and its text goes to the next
/// token that settles it. Decoding every prefix costs O(n²) token lookups, bounded by
/// `MAX_NEW_TOKENS`.
pub fn token_pieces(
    decode: impl Fn(&[u32]) -> Result<String>,
    tokens: &[u32],
    text: &str,
) -> Result<Vec<String>> {
    let mut pieces = Vec::with_capacity(tokens.len());
    let mut done = String::new();
    for i in 0..tokens.len() {
        let prefix = decode(&tokens[..=i])?;
        let settled = !prefix.ends_with(char::REPLACEMENT_CHARACTER) && prefix.starts_with(&done);
        let piece = if settled {
            prefix[done.len()..].to_string()
        } else {
            String::new()
        };
        done.push_str(&piece);
        pieces.push(piece);
    }
    // What no prefix settled (a text ending in U+FFFD, or a decoding that rewrites its start)
    // goes to the last token, or when the pieces do not begin `text`, all of it to the first.
    match (text.strip_prefix(done.as_str()), pieces.last_mut()) {
        (Some(rest), Some(last)) => last.push_str(rest),
        (None, Some(_)) => {
            pieces.iter_mut().for_each(String::clear);
            pieces[0] = text.to_string();
        }
        (_, None) => {}
    }
    Ok(pieces)
}

/// Check a request before any work.
pub fn check_request(prompt: &str, n: usize) -> Result<()> {
    if n == 0 || n > MAX_NEW_TOKENS {
        return Err(Error::config(
            "tokens",
            format!("asked for {n} new tokens; allowed 1..={MAX_NEW_TOKENS}"),
        ));
    }
    let chars = prompt.chars().count();
    if chars > MAX_PROMPT_CHARS {
        return Err(Error::config(
            "prompt",
            format!("{chars} characters; at most {MAX_PROMPT_CHARS}"),
        ));
    }
    Ok(())
}

/// What ended a greedy run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stop {
    pub eos: bool,
    pub ctx: bool,
}

/// Continue `prompt` (token ids, BOS already in place) greedily by up to `n` tokens with
/// `model`, stopping early at `eos` or at the model's context length. `step(new_tokens)` is
/// called after every token; returning false cancels (`Error::Cancelled`).
pub async fn greedy<B: Backend>(
    b: &B,
    model: &Model<B>,
    prompt: &[u32],
    n: usize,
    eos: Option<u32>,
    step: &mut dyn FnMut(&[u32]) -> bool,
) -> Result<(Vec<u32>, Stop)> {
    if prompt.is_empty() {
        return Err(Error::config(
            "prompt",
            "is empty and the model has no BOS token to start from",
        ));
    }
    let max_ctx = model.config.max_ctx;
    if prompt.len() >= max_ctx {
        return Err(Error::config(
            "prompt",
            format!(
                "{} tokens leave no room in the model's context of {max_ctx}",
                prompt.len()
            ),
        ));
    }
    let mut seq = prompt.to_vec();
    let mut out = Vec::with_capacity(n);
    let mut stop = Stop::default();
    while out.len() < n {
        if seq.len() >= max_ctx {
            stop.ctx = true;
            break;
        }
        let x = model.forward(b, &seq)?;
        // The target is irrelevant: only the argmax of the last row is read.
        let (pending, _) = b.score(&x, model.head(), seq.len() - 1, &[0], None, false)?;
        let scores = b.read_scores(pending).await?;
        let next = scores
            .first()
            .map(|s| s.argmax)
            .ok_or_else(|| Error::config("backend", "scored no row"))?;
        if Some(next) == eos {
            stop.eos = true;
            break;
        }
        seq.push(next);
        out.push(next);
        if !step(&out) {
            return Err(Error::Cancelled);
        }
    }
    Ok((out, stop))
}

async fn on_models<B: Backend>(
    b: &B,
    m: &Models<B>,
    which: Which,
    prompt: &[u32],
    n: usize,
    eos: Option<u32>,
    step: &mut dyn FnMut(&[u32]) -> bool,
) -> Result<(Vec<u32>, Stop)> {
    let model = match which {
        Which::Reference => &m.loaded,
        Which::Quantized => m.quantized.as_ref().unwrap_or(&m.loaded),
    };
    greedy(b, model, prompt, n, eos, step).await
}

impl Engine {
    /// `greedy` on the reference or the quantized model of this engine.
    pub async fn generate(
        &self,
        which: Which,
        prompt: &[u32],
        n: usize,
        eos: Option<u32>,
        step: &mut dyn FnMut(&[u32]) -> bool,
    ) -> Result<(Vec<u32>, Stop)> {
        match self {
            Engine::Cpu(m) => {
                on_models(&crate::model::cpu::Cpu, m, which, prompt, n, eos, step).await
            }
            Engine::Gpu(g, m) => on_models(g.as_ref(), m, which, prompt, n, eos, step).await,
        }
    }

    /// True when the engine holds a quantized model beside the loaded one.
    pub fn has_quantized(&self) -> bool {
        match self {
            Engine::Cpu(m) => m.quantized.is_some(),
            Engine::Gpu(_, m) => m.quantized.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tiny fixture's byte-level tokenizer (tests/fixtures/tiny/llama) writes "é" as two
    /// byte tokens: the first settles nothing, the second carries the character, and the pieces
    /// join to the tokenizer's decoding of the whole.
    #[test]
    fn token_pieces_join_to_the_text_and_hold_split_characters() {
        let session = crate::playground::session::tests::tiny_session();
        let tok = session.tokenizer();
        let ids = tok.encode("ab é, cd").expect("encode");
        let text = tok.decode(&ids).expect("decode");
        let pieces = token_pieces(|t| tok.decode(t), &ids, &text).expect("pieces");
        assert_eq!(pieces.len(), ids.len());
        assert_eq!(pieces.concat(), text);
        let split = pieces
            .iter()
            .position(|p| p.contains('é'))
            .expect("é has a token");
        assert!(
            split > 0 && pieces[split - 1].is_empty(),
            "{pieces:?} for {ids:?}"
        );
        for (i, p) in pieces.iter().enumerate().filter(|(_, p)| !p.is_empty()) {
            let before = tok.decode(&ids[..i]).expect("decode");
            assert_eq!(
                tok.decode(&ids[..=i]).expect("decode"),
                format!("{}{p}", before.trim_end_matches('\u{fffd}'))
            );
        }
        assert!(token_pieces(|t| tok.decode(t), &[], "")
            .expect("none")
            .is_empty());
    }

    #[test]
    fn requests_are_bounded() {
        assert!(check_request("hello", 32).is_ok());
        assert!(check_request("hello", 0).is_err());
        assert!(check_request("hello", MAX_NEW_TOKENS + 1).is_err());
        let long = "x".repeat(MAX_PROMPT_CHARS + 1);
        assert!(check_request(&long, 1).is_err());
    }

    const MODEL: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    );

    /// Each generated token is the argmax of the full logits row (`Backend::logits_row`, a
    /// separate path from `score`) after its prefix, and the text is the tokenizer's decoding.
    #[test]
    fn greedy_tokens_are_the_argmax_of_the_logits() {
        use crate::model::backend::Backend;
        use crate::model::cpu::Cpu;
        use crate::playground::session::Session;
        let bytes = std::fs::read(MODEL)
            .unwrap_or_else(|e| panic!("{MODEL}: {e}: run scripts/fetch-model.sh"));
        let s = Session::load_gguf("model", bytes).expect("load");
        let n = 5;
        let mut streamed = Vec::new();
        let g = s
            .generate(
                "The capital of France is",
                n,
                Which::Reference,
                &mut |t, k| {
                    streamed.push((t.to_string(), k));
                    true
                },
            )
            .expect("generate");
        assert_eq!(g.tokens.len(), n, "stopped early: {g:?}");
        assert_eq!(streamed.len(), n);
        assert_eq!(streamed.last().map(|x| x.0.as_str()), Some(g.text.as_str()));
        assert_eq!(g.text, s.tokenizer().decode(&g.tokens).expect("decode"));
        assert!(!g.quantized);
        let model = Model::load(&Cpu, s.source()).expect("cpu model");
        let mut seq: Vec<u32> = s.bos().into_iter().collect();
        seq.extend(s.tokenize("The capital of France is").expect("tokens"));
        assert_eq!(seq.len(), g.prompt_tokens);
        for &t in &g.tokens {
            let x = model.forward(&Cpu, &seq).expect("forward");
            let row = Cpu
                .logits_row(&x, model.head(), seq.len() - 1)
                .expect("logits");
            let best = row
                .iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |a, (i, &v)| {
                    if v > a.1 {
                        (i, v)
                    } else {
                        a
                    }
                })
                .0;
            assert_eq!(t as usize, best, "token after {seq:?}");
            seq.push(t);
        }
    }
}
