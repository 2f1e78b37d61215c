//! W4A8 from the command line (issue 13): `eval` with --smooth/--act-* on every architecture's
//! tiny checkpoint (tests/fixtures/tiny), CPU and GPU backends agreeing; `slac` printing its
//! table; a sweep keeping W4A8 configurations apart; flags that contradict a config refused.

use crate::cli;

use cli::{last_json, quantlab, run};

/// CLI perplexity, GPU against CPU, relative: static A8 scales whose rounding boundaries a
/// last-bit difference can cross, on random tiny models that amplify each flip (tests/w4a8.rs).
const PPL_REL_TOL: f64 = 1e-2;

const EVAL: [&str; 14] = [
    "eval",
    "--text",
    "www/texts/prose.txt",
    "--ctx",
    "64",
    "--windows",
    "2",
    "--calib-text",
    "www/texts/dialogue.txt",
    "--calib-n",
    "4",
    "--calib-len",
    "64",
    "--calib-cpu",
];

#[test]
fn w4a8_flags_run_on_every_architecture_and_both_backends_agree() {
    for m in ["opt-pre", "opt-post", "gpt2", "llama"] {
        let model = format!("tests/fixtures/tiny/{m}");
        let ppl = |backend: &str| {
            let mut a: Vec<&str> = EVAL.to_vec();
            a.extend([
                "--model",
                &model,
                "--backend",
                backend,
                "--method",
                "rtn",
                "--bits",
                "4",
                "--group",
                "row",
                "--smooth",
                "aqas",
                "--aqas-step",
                "0.25",
                "--act-bits",
                "8",
                "--act-gran",
                "tensor",
                "--act-scale",
                "static",
                "--json",
            ]);
            let (so, se) = quantlab(&a);
            assert!(so.contains("] W4A8"), "{m}: {so}");
            assert!(
                so.contains("activations: A8 (static, per tensor)"),
                "{m}: {so}"
            );
            assert!(se.contains("aqas α per layer"), "{m}: {se}");
            let j = last_json(&so);
            assert_eq!(j["wa"], "W4A8", "{m}");
            assert_eq!(
                j["smooth"]["alpha"].as_array().map(Vec::len),
                Some(2),
                "{m}"
            );
            j["ppl"].as_f64().unwrap()
        };
        let (c, g) = (ppl("cpu"), ppl("gpu"));
        assert!(c.is_finite() && c > 1.0, "{m}: {c}");
        assert!(
            ((c - g) / c).abs() <= PPL_REL_TOL,
            "{m}: CPU {c} vs GPU {g}"
        );
    }
}

#[test]
fn slac_prints_a_row_per_calibration_length_and_a_column_per_context() {
    let (so, _) = quantlab(&[
        "slac",
        "--model",
        "tests/fixtures/tiny/llama",
        "--text",
        "www/texts/prose.txt",
        "--lens",
        "16,64",
        "--ctxs",
        "32,64",
        "--calib-tokens",
        "256",
        "--eval-tokens",
        "128",
        "--json",
    ]);
    assert!(
        so.contains("| calibration length | PPL @ ctx 32 | PPL @ ctx 64 |"),
        "{so}"
    );
    assert!(
        so.contains("| 16 (16 seqs) |") && so.contains("| 64 (4 seqs) |"),
        "{so}"
    );
    let j = last_json(&so);
    let cells = j["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 4);
    assert!(cells
        .iter()
        .all(|c| c["ppl"].as_f64().is_some_and(|p| p > 1.0)));
    // A config without static activation scales has nothing to compare.
    let out = run(&[
        "slac",
        "--model",
        "tests/fixtures/tiny/llama",
        "--text",
        "www/texts/prose.txt",
        "--config",
        r#"{"version":1,"method":"rtn","default":{"bits":4,"gran":"per_row","sym":true}}"#,
    ]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("config.act") && e.contains("static"), "{e}");
}

#[test]
fn act_flags_next_to_a_config_are_refused_and_bad_values_name_the_field() {
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "--config",
                r#"{"version":1,"method":"none","default":{"bits":4,"gran":"per_row","sym":true}}"#,
                "--act-bits",
                "8",
            ],
            "--config",
        ),
        (&["--act-bits", "9"], "act.bits"),
        (
            &[
                "--act-bits",
                "8",
                "--act-scale",
                "static",
                "--act-gran",
                "token",
            ],
            "act.gran",
        ),
    ];
    for (extra, field) in cases {
        let mut a = vec![
            "eval",
            "--model",
            "tests/fixtures/tiny/llama",
            "--text",
            "www/texts/prose.txt",
        ];
        a.extend_from_slice(extra);
        let out = run(&a);
        assert!(!out.status.success(), "{extra:?} succeeded");
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains(field), "{extra:?}: {e}");
    }
}

#[test]
fn generation_runs_with_quantized_activations() {
    // Generation re-runs the same forward pass, so the activation plan applies there too: the
    // quantized side of the side-by-side changes with A4 activations, the loaded side does not.
    let gen = |extra: &[&str]| {
        let mut a = vec![
            "generate",
            "--model",
            "tests/fixtures/tiny/llama",
            "--prompt",
            "The river",
            "--tokens",
            "12",
            "--bits",
            "4",
            "--json",
        ];
        a.extend_from_slice(extra);
        let (so, _) = quantlab(&a);
        last_json(&so)
    };
    let w4 = gen(&[]);
    let w4a4 = gen(&["--act-bits", "4", "--act-gran", "token"]);
    assert_eq!(
        w4["reference"], w4a4["reference"],
        "the model as loaded is the same"
    );
    assert_ne!(
        w4["quantized"]["tokens"], w4a4["quantized"]["tokens"],
        "A4 activations changed nothing in the quantized generation"
    );
}
