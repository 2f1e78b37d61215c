//! Tokenizing only the part of a text that is used: the start for the first evaluation windows,
//! the end for calibration from the tail. Encoding 50 MB whole to evaluate one window of 512
//! tokens once took 6–7 GB; here the bytes given to the tokenizer grow with the tokens asked
//! for (about twice what is needed at most), not with the text.
//!
//! A piece is cut where a line ends and the next one starts with a non-space character: the
//! pre-tokenizers split there (GPT-2 style regexes end a whitespace run before a word), so the
//! tokens away from the cut are those of the whole text. The `MARGIN` tokens next to the cut are
//! dropped anyway (a SentencePiece vocabulary adds a space prefix at the start of each call, and
//! a merge may reach across the cut in a tokenizer without pre-tokenizer).

use super::Tokenizer;
use crate::Result;

/// Tokens dropped next to a cut.
pub const MARGIN: usize = 64;
/// Texts up to this size are encoded whole (exactly what `encode` gives, and cheap).
pub const WHOLE_BELOW: usize = 1 << 20;

/// Some of a text's tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Partial {
    pub tokens: Vec<u32>,
    /// The whole text was encoded: `tokens` is exactly `encode(text)`.
    pub whole: bool,
    /// Bytes of the text given to the tokenizer (over all attempts).
    pub bytes_encoded: usize,
    /// The byte range of the text the tokens come from.
    pub span: std::ops::Range<usize>,
}

/// Is `i` a safe cut: just after a `\n` before a non-space character, or before a single space
/// between two non-space characters (the space then starts the next word, as in the whole text)?
fn safe_cut(text: &str, i: usize) -> bool {
    let b = text.as_bytes();
    if i == 0 || i + 1 >= b.len() {
        return false;
    }
    let word = |c: u8| !c.is_ascii_whitespace();
    (b[i - 1] == b'\n' && word(b[i]) && text.is_char_boundary(i))
        || (b[i] == b' ' && word(b[i - 1]) && word(b[i + 1]))
}

/// How far to look for a safe cut before cutting at any character boundary (a text without
/// lines or spaces) and leaving the boundary effects to `MARGIN`.
const SEARCH: usize = 64 << 10;

/// The cut at or after `at` (`None` past the end).
fn cut_after(text: &str, at: usize) -> Option<usize> {
    if at >= text.len() {
        return None;
    }
    let end = at.saturating_add(SEARCH).min(text.len());
    (at..end)
        .find(|&i| safe_cut(text, i))
        .or_else(|| (at..text.len()).find(|&i| text.is_char_boundary(i)))
}

/// The cut at or before `at` (`None` at the start).
fn cut_before(text: &str, at: usize) -> Option<usize> {
    if at == 0 {
        return None;
    }
    let start = at.saturating_sub(SEARCH).max(1);
    (start..=at)
        .rev()
        .find(|&i| safe_cut(text, i))
        .or_else(|| (1..=at).rev().find(|&i| text.is_char_boundary(i)))
}

/// First bytes to try for `min_tokens` tokens (English averages ~4 bytes a token).
fn first_guess(min_tokens: usize) -> usize {
    min_tokens
        .saturating_add(2 * MARGIN)
        .saturating_mul(6)
        .saturating_add(4096)
}

impl Tokenizer {
    /// The first tokens of `text`: at least `min_tokens` of them when the text has that many,
    /// equal to the start of `encode(text)`.
    pub fn encode_head(&self, text: &str, min_tokens: usize) -> Result<Partial> {
        let mut guess = first_guess(min_tokens);
        let mut spent = 0;
        loop {
            let cut = cut_after(text, guess);
            let Some(cut) = cut.filter(|_| text.len() > WHOLE_BELOW) else {
                let tokens = self.encode(text)?;
                return Ok(Partial {
                    tokens,
                    whole: true,
                    bytes_encoded: spent + text.len(),
                    span: 0..text.len(),
                });
            };
            let mut tokens = self.encode(&text[..cut])?;
            spent += cut;
            tokens.truncate(tokens.len().saturating_sub(MARGIN));
            if tokens.len() >= min_tokens {
                return Ok(Partial {
                    tokens,
                    whole: false,
                    bytes_encoded: spent,
                    span: 0..cut,
                });
            }
            guess = guess.saturating_mul(2);
        }
    }

    /// The last tokens of `text`: at least `min_tokens` of them when the text has that many,
    /// equal to the end of `encode(text)`.
    pub fn encode_tail(&self, text: &str, min_tokens: usize) -> Result<Partial> {
        let mut guess = first_guess(min_tokens);
        let mut spent = 0;
        loop {
            let cut = cut_before(text, text.len().saturating_sub(guess));
            let Some(cut) = cut.filter(|_| text.len() > WHOLE_BELOW) else {
                let tokens = self.encode(text)?;
                return Ok(Partial {
                    tokens,
                    whole: true,
                    bytes_encoded: spent + text.len(),
                    span: 0..text.len(),
                });
            };
            let tokens = self.encode(&text[cut..])?;
            spent += text.len() - cut;
            if tokens.len() >= min_tokens + MARGIN {
                return Ok(Partial {
                    tokens: tokens[MARGIN..].to_vec(),
                    whole: false,
                    bytes_encoded: spent,
                    span: cut..text.len(),
                });
            }
            guess = guess.saturating_mul(2);
        }
    }
}
