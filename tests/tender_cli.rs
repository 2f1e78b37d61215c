//! Tender from the command line (issue 14): `--act-method tender` with its flags on a tiny
//! checkpoint (the label says Tender; flags that contradict it are refused), and on the default
//! model the paper's headline at 4-bit activations: one window where per-token INT4 activations
//! wreck the model and Tender's decomposition keeps it usable.

use crate::cli;

use cli::{last_json, quantlab, root, run};

fn ok(args: &[&str]) -> String {
    quantlab(args).0
}

fn ppl_json(out: &str) -> (f64, serde_json::Value) {
    let v = last_json(out);
    (v["ppl"].as_f64().expect("ppl"), v)
}

#[test]
fn tender_flags_run_and_contradictions_are_refused() {
    let base = [
        "eval",
        "--model",
        "tests/fixtures/tiny/llama",
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
        "--json",
    ];
    for extra in [
        &[
            "--act-bits",
            "8",
            "--act-method",
            "tender",
            "--tender-groups",
            "4",
            "--tender-chunk",
            "64",
        ][..],
        &[
            "--act-bits",
            "4",
            "--act-method",
            "tender",
            "--act-scale",
            "static",
            "--tender-chunk",
            "64",
            "--tender-round",
            "down",
        ][..],
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let (ppl, v) = ppl_json(&ok(&args));
        assert!(ppl.is_finite() && ppl > 1.0, "{extra:?}: {ppl}");
        let wa = v["wa"].as_str().unwrap_or_default();
        assert!(wa.contains("Tender k"), "{extra:?}: {v}");
    }
    for (extra, want) in [
        (
            &["--act-bits", "6", "--act-method", "tender"][..],
            "act.bits",
        ),
        (
            &[
                "--act-bits",
                "8",
                "--act-method",
                "tender",
                "--act-gran",
                "token",
            ][..],
            "act.gran",
        ),
        (
            &[
                "--act-bits",
                "8",
                "--act-method",
                "tender",
                "--tender-chunk",
                "100",
            ][..],
            "act.tender.chunk",
        ),
        (
            &[
                "--act-bits",
                "8",
                "--act-method",
                "tender",
                "--smooth",
                "aqas",
                "--method",
                "rtn",
                "--bits",
                "4",
            ][..],
            "smooth",
        ),
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{extra:?}: {err}"
        );
    }
}

/// One window of 512 tokens of WikiText-2 on the default model, weights as loaded: per-token
/// INT4 activations (each row's absmax over 7 levels) against Tender with 8 groups. At 4 windows
/// these measured 8,229 and 68.2 (as loaded 22.1): the test asks only for a tenfold gap.
#[test]
fn on_the_default_model_tender_keeps_int4_activations_usable() {
    let model = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    assert!(
        root().join(model).exists(),
        "{model} is missing: run scripts/fetch-model.sh"
    );
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--model",
            model,
            "--text",
            "tests/data/wikitext-2-raw-test.txt",
            "--windows",
            "1",
            "--no-kl",
            "--json",
        ];
        args.extend_from_slice(extra);
        ppl_json(&ok(&args)).0
    };
    let token = eval(&["--act-bits", "4", "--act-gran", "token"]);
    let tender = eval(&[
        "--act-bits",
        "4",
        "--act-method",
        "tender",
        "--tender-groups",
        "8",
    ]);
    assert!(
        tender * 10.0 < token,
        "Tender A4 {tender} against per-token A4 {token}"
    );
}
