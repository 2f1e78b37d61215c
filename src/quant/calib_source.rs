//! Where calibration tokens come from (issue 18, "held-out calibration by default").
//!
//! Calibration (GPTQ, AWQ, CMPQ, SmoothQuant, static activation scales, OneBit/BinaryMoS fits, …)
//! must not see the tokens it is then evaluated on, or the perplexity is optimistic. So by default
//! the sequences come, in this order of preference, from:
//!
//! 1. a text the user named (`--calib-text`), which is not the evaluation text;
//! 2. the end of the evaluation text *past every evaluated window*, when the text is long enough
//!    to hold both (`held_out_tail`; the CLI also tokenizes that end apart from the evaluated
//!    start, `Tokenizer::encode_tail`, which is disjoint by its byte span);
//! 3. the built-in calibration text (`builtin_text`: the page's built-in texts, www/texts/, other
//!    than any the evaluation text contains — the page calibrates on the same texts), with fewer
//!    sequences than asked when it is too short (`fit_to`), and that said.
//!
//! Calibration on the evaluated windows happens only when asked for (`--calib-overlap`), and
//! every report then carries the count of shared tokens and a warning (`CalibSource::warning`).

use crate::model::eval::EvalOptions;
use crate::quant::calib::{eval_overlap, CalibFrom, CalibOptions};
use crate::{Error, Result};
use serde::Serialize;
use std::ops::Range;

/// The built-in texts (written for QuantLab, under its licence; see www/texts/README.md), in
/// the order the built-in calibration text joins them.
pub const BUILTIN_TEXTS: [(&str, &str); 3] = [
    ("prose", include_str!("../../www/texts/prose.txt")),
    ("dialogue", include_str!("../../www/texts/dialogue.txt")),
    ("code", include_str!("../../www/texts/code.txt")),
];

/// What kind of text the calibration tokens were cut from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CalibKind {
    /// A text given for calibration.
    File,
    /// The end of the evaluation text, past every evaluated window.
    EvalTail,
    /// The built-in calibration text.
    Builtin,
    /// The end of the evaluation text although it overlaps evaluated windows (asked for).
    EvalOverlap,
}

/// What calibration used, for every report (text output, `--json`, sweep titles, the page).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CalibSource {
    pub kind: CalibKind,
    /// The text's name: a file name, "evaluation text" or "built-in: dialogue+code".
    pub text: String,
    /// Tokens of the stream the sequences were cut from (the whole text, or the piece of its
    /// end tokenized apart: then `bytes` says where that piece lies).
    pub text_tokens: usize,
    /// The token range of that stream the sequences cover.
    pub tokens: Range<usize>,
    /// The byte range of the text the stream covers.
    pub bytes: Range<usize>,
    /// Sequences × length used, and asked for (they differ when a text is too short).
    pub n_seq: usize,
    pub seq_len: usize,
    pub asked_n_seq: usize,
    pub asked_seq_len: usize,
    /// Calibration tokens inside an evaluated window (0 unless `EvalOverlap`).
    pub overlap: usize,
}

impl CalibSource {
    /// One line for the text output, e.g. "calibration: 32 × 512 tokens 288446..304830 of the
    /// evaluation text (held out: after the evaluated windows)".
    pub fn describe(&self) -> String {
        let why = match self.kind {
            CalibKind::File => "a separate text",
            CalibKind::EvalTail => "held out: after the evaluated windows",
            CalibKind::Builtin => "held out: a different text",
            CalibKind::EvalOverlap => "overlap asked for",
        };
        let asked = if (self.n_seq, self.seq_len) != (self.asked_n_seq, self.asked_seq_len) {
            format!(
                " (asked {} × {}: the text has {} tokens)",
                self.asked_n_seq, self.asked_seq_len, self.text_tokens
            )
        } else {
            String::new()
        };
        format!(
            "calibration: {} × {} tokens {}..{} of {} [bytes {}..{}]{asked} ({why})",
            self.n_seq,
            self.seq_len,
            self.tokens.start,
            self.tokens.end,
            self.text,
            self.bytes.start,
            self.bytes.end
        )
    }

    /// The warning every report shows when calibration shares tokens with evaluation.
    pub fn warning(&self) -> Option<String> {
        (self.overlap > 0).then(|| {
            format!(
                "warning: {} calibration tokens lie inside the evaluated windows (asked for); \
                 the perplexity is optimistic",
                self.overlap
            )
        })
    }

    /// The options that calibrate on exactly `tokens` of the stream.
    pub fn options(&self) -> CalibOptions {
        CalibOptions {
            n_seq: self.n_seq,
            seq_len: self.seq_len,
            from: CalibFrom::Offset(self.tokens.start),
        }
    }
}

/// The last `n_seq × seq_len` tokens of a stream of `n_tokens` when they lie past every window
/// `eval` evaluates (held out), else `None`.
pub fn held_out_tail(
    n_tokens: usize,
    eval: &EvalOptions,
    calib: &CalibOptions,
) -> Option<Range<usize>> {
    let r = CalibOptions {
        from: CalibFrom::Tail,
        ..*calib
    }
    .range(n_tokens)
    .ok()?;
    (eval_overlap(r.clone(), n_tokens, eval) == 0).then_some(r)
}

/// The built-in calibration text for an evaluation text `eval_text`: the built-in texts it does
/// not contain, joined by blank lines (as the page joins them), with their names.
pub fn builtin_text(eval_text: &str) -> (String, String) {
    let parts: Vec<(&str, &str)> = BUILTIN_TEXTS
        .iter()
        .copied()
        .filter(|(_, t)| !eval_text.contains(t.trim()))
        .collect();
    let names: Vec<&str> = parts.iter().map(|p| p.0).collect();
    let text: Vec<&str> = parts.iter().map(|p| p.1).collect();
    (format!("built-in: {}", names.join("+")), text.join("\n\n"))
}

/// Fit `asked` to a stream of `n_tokens`: as many whole sequences as fit (at least one, shorter
/// when the stream is shorter than one), from the end. An error only when the stream has fewer
/// than 2 tokens.
pub fn fit_to(n_tokens: usize, asked: &CalibOptions) -> Result<CalibOptions> {
    if n_tokens < 2 {
        return Err(Error::config(
            "calibration",
            format!("the calibration text has {n_tokens} tokens; at least 2 are needed"),
        ));
    }
    let seq_len = asked.seq_len.min(n_tokens);
    let n_seq = asked.n_seq.min(n_tokens / seq_len.max(1)).max(1);
    Ok(CalibOptions {
        n_seq,
        seq_len,
        from: CalibFrom::Tail,
    })
}

/// A source covering `opts.range(n_tokens)` of a text; `overlap` as measured by the caller.
pub fn source(
    kind: CalibKind,
    text: String,
    n_tokens: usize,
    bytes: Range<usize>,
    opts: &CalibOptions,
    asked: &CalibOptions,
    overlap: usize,
) -> Result<CalibSource> {
    Ok(CalibSource {
        kind,
        text,
        text_tokens: n_tokens,
        tokens: opts.range(n_tokens)?,
        bytes,
        n_seq: opts.n_seq,
        seq_len: opts.seq_len,
        asked_n_seq: asked.n_seq,
        asked_seq_len: asked.seq_len,
        overlap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::eval::{windows, Protocol};

    fn eval(protocol: Protocol, ctx: usize, max_windows: Option<usize>) -> EvalOptions {
        EvalOptions {
            protocol,
            ctx,
            max_windows,
            kl: false,
        }
    }

    /// Every token a window of either protocol reads (by value: token `i` is `i`) lies outside
    /// the held-out range, which is the last `n × len` tokens.
    #[test]
    fn held_out_tail_is_disjoint_from_every_window_of_both_protocols() {
        let n_tokens = 5000;
        let stream: Vec<u32> = (0..n_tokens as u32).collect();
        let calib = CalibOptions {
            n_seq: 4,
            seq_len: 100,
            from: CalibFrom::Tail,
        };
        for protocol in [Protocol::Llamacpp, Protocol::Gptq] {
            for (ctx, w) in [(128, Some(3)), (256, Some(17)), (64, Some(71))] {
                let e = eval(protocol, ctx, w);
                let r = held_out_tail(n_tokens, &e, &calib).expect("room for both");
                assert_eq!(r, 4600..5000);
                for win in windows(&stream, None, &e).unwrap() {
                    for &t in &win.tokens {
                        assert!(
                            !r.contains(&(t as usize)),
                            "{protocol:?} ctx {ctx}: token {t}"
                        );
                    }
                }
            }
            // 72 windows of 64 reach token 4608, inside the last 400: no held-out tail.
            assert_eq!(
                held_out_tail(n_tokens, &eval(protocol, 64, Some(72)), &calib),
                None
            );
            // Whole-text evaluation leaves no tail: the built-in text is used instead.
            assert_eq!(
                held_out_tail(n_tokens, &eval(protocol, 128, None), &calib),
                None
            );
            // A text with a remainder shorter than one window past the last one: still none.
            assert_eq!(
                held_out_tail(5100, &eval(protocol, 100, None), &calib),
                None
            );
        }
    }

    #[test]
    fn builtin_text_leaves_out_the_evaluated_text() {
        let (name, all) = builtin_text("something else");
        assert_eq!(name, "built-in: prose+dialogue+code");
        assert!(BUILTIN_TEXTS.iter().all(|(_, t)| all.contains(t)));
        let prose = BUILTIN_TEXTS[0].1;
        let (name, rest) = builtin_text(prose);
        assert_eq!(name, "built-in: dialogue+code");
        assert!(!rest.contains(prose.trim()));
    }

    #[test]
    fn fit_to_takes_what_fits_and_says_so() {
        let asked = CalibOptions {
            n_seq: 32,
            seq_len: 512,
            from: CalibFrom::Tail,
        };
        let f = fit_to(3000, &asked).unwrap();
        assert_eq!((f.n_seq, f.seq_len), (5, 512));
        let f = fit_to(300, &asked).unwrap();
        assert_eq!((f.n_seq, f.seq_len), (1, 300));
        assert_eq!(fit_to(1 << 20, &asked).unwrap(), asked);
        assert!(fit_to(1, &asked).is_err());
        let s = source(
            CalibKind::Builtin,
            "built-in: code".into(),
            3000,
            0..100,
            &fit_to(3000, &asked).unwrap(),
            &asked,
            0,
        )
        .unwrap();
        assert_eq!(s.tokens, 440..3000);
        assert!(s.describe().contains("asked 32 × 512"), "{}", s.describe());
        assert_eq!(s.warning(), None);
        let o = CalibSource {
            kind: CalibKind::EvalOverlap,
            overlap: 7,
            ..s
        };
        assert!(o.warning().unwrap().contains("7 calibration tokens"));
    }
}
