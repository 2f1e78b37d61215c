//! Shared by the targets that take several files in one input.
#![allow(dead_code)]

/// Separates the files of a multi-file input (`fuzz/make_seeds` writes seeds this way).
pub const SEP: &[u8] = b"\n--8<--\n";

/// Split `data` at the first `n - 1` separators; the last part takes the rest. Fewer parts when
/// fewer separators are present.
pub fn split(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(n);
    let mut rest = data;
    while parts.len() + 1 < n {
        match rest.windows(SEP.len()).position(|w| w == SEP) {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + SEP.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts
}

/// A short text with ASCII, digits, punctuation, spaces, a newline and non-ASCII letters, to
/// encode with every tokenizer that loads.
pub const TEXT: &str = "Hello world, 123!\n  naïve café – 日本語 <s></s>";
