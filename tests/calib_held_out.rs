//! Held-out calibration by default (issue 18): `quantlab eval` with a calibrated method never
//! calibrates on tokens of an evaluated window unless `--calib-overlap` asks for it, and says
//! what it used in the text output and `--json` (`calibration`: kind, text, token range). The
//! tiny Llama checkpoint on the built-in prose text (2,940 tokens with its tokenizer, so the
//! whole text is one token stream and ranges compare directly); GPTQ with 4 × 64 tokens.

use crate::cli;

use cli::{last_json, quantlab};

const CTX: usize = 64;

fn eval(protocol: &str, extra: &[&str]) -> (serde_json::Value, String) {
    let mut a = vec![
        "eval",
        "--model",
        "tests/fixtures/tiny/llama",
        "--text",
        "www/texts/prose.txt",
        "--ctx",
        "64",
        "--protocol",
        protocol,
        "--method",
        "gptq",
        "--bits",
        "4",
        "--group",
        "row",
        "--calib-n",
        "4",
        "--calib-len",
        "64",
        "--no-kl",
        "--json",
    ];
    a.extend(extra);
    let (so, _) = quantlab(&a);
    (last_json(&so), so)
}

fn range(c: &serde_json::Value) -> (usize, usize) {
    let t = &c["tokens"];
    (
        t["start"].as_u64().unwrap() as usize,
        t["end"].as_u64().unwrap() as usize,
    )
}

#[test]
fn calibration_is_held_out_for_both_protocols_and_whole_text_evaluation() {
    for protocol in ["llamacpp", "gptq"] {
        // Ten windows: the end of the text lies past them.
        let (j, out) = eval(protocol, &["--windows", "10"]);
        let c = &j["calibration"];
        assert_eq!(c["kind"], "eval-tail", "{c}");
        assert_eq!(c["overlap"], 0);
        let (start, end) = range(c);
        assert_eq!(end - start, 4 * 64);
        let evaluated = j["windows"].as_u64().unwrap() as usize * CTX;
        assert!(
            start >= evaluated,
            "{protocol}: calibration {start}..{end}, evaluation 0..{evaluated}"
        );
        assert!(out.contains("calibration: 4 × 64 tokens"), "{out}");
        assert!(!out.contains("warning"), "{out}");

        // Every window: no room is left, so the built-in texts other than prose are used.
        let (j, out) = eval(protocol, &[]);
        let c = &j["calibration"];
        assert_eq!(c["kind"], "builtin", "{c}");
        assert_eq!(c["text"], "built-in: dialogue+code");
        assert_eq!(c["overlap"], 0);
        assert!(out.contains("of built-in: dialogue+code"), "{out}");
    }
}

#[test]
fn overlap_only_when_asked_and_then_with_a_warning() {
    let (j, out) = eval("llamacpp", &["--calib-overlap"]);
    let c = &j["calibration"];
    assert_eq!(c["kind"], "eval-overlap", "{c}");
    let (start, end) = range(c);
    let evaluated = j["windows"].as_u64().unwrap() as usize * CTX;
    // The calibration tokens inside 0..evaluated, counted by hand.
    let shared = end.min(evaluated).saturating_sub(start);
    assert!(shared > 0);
    assert_eq!(c["overlap"].as_u64().unwrap() as usize, shared);
    assert!(
        out.contains(&format!("warning: {shared} calibration tokens lie inside")),
        "{out}"
    );
    // With room to hold the calibration out, the flag changes nothing.
    let (j, _) = eval("llamacpp", &["--calib-overlap", "--windows", "10"]);
    assert_eq!(j["calibration"]["kind"], "eval-tail");
}
