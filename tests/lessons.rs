//! The built-in guided lessons (www/lessons/*.json, docs/lessons.md; issue 19): every step's
//! configuration is a valid `QuantConfig` that survives its share-link form
//! (`QuantConfig::to_url` / `from_url`, the path the page sends it through), and passes the
//! page's pre-run check (`playground::check::check_run`: the schema's limits, group sizes
//! against the model, calibration size, windows) on the tiny Llama checkpoint, with the step's
//! own evaluation settings. The lesson format itself (fields, limits, messages) is tested in
//! tests/browser/lesson_format.test.mjs, where its validator lives.

use quantlab::io::tokenizer::TokenizerFiles;
use quantlab::model::eval::{EvalOptions, Protocol};
use quantlab::playground::check::check_run;
use quantlab::playground::session::Session;
use quantlab::quant::config::QuantConfig;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tiny_session() -> Session {
    let dir = root().join("tests/fixtures/tiny/llama");
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let (config, tok, shard) = (
        read("config.json"),
        read("tokenizer.json"),
        read("model.safetensors"),
    );
    Session::load_hf(
        "tiny-llama",
        &config,
        TokenizerFiles::Json(&tok),
        &[("model.safetensors", &shard)],
    )
    .unwrap()
}

/// A share link's "calib" field, "NxL".
fn calib_of(v: Option<&serde_json::Value>) -> Option<(usize, usize)> {
    let s = v?.as_str().expect("calib is text like 16x128");
    let (n, l) = s.split_once('x').expect("calib is NxL");
    Some((n.parse().unwrap(), l.parse().unwrap()))
}

#[test]
fn every_built_in_lesson_step_passes_the_pre_run_check() {
    let session = tiny_session();
    let mut files: Vec<_> = std::fs::read_dir(root().join("www/lessons"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    // The seven lessons issue 19 asks for (docs/lessons.md lists them).
    assert_eq!(files.len(), 7, "{files:?}");
    let mut steps = 0;
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let lesson: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for (i, step) in lesson["steps"].as_array().unwrap().iter().enumerate() {
            let at = format!("{name} step {i}");
            let setup = &step["setup"];
            let cfg = QuantConfig::from_json(&setup["q"].to_string())
                .unwrap_or_else(|e| panic!("{at}: {e}"));
            let back = QuantConfig::from_url(&cfg.to_url()).unwrap();
            assert_eq!(back, cfg, "{at}: the share link changes the config");
            let proto = match setup["proto"].as_str().unwrap_or("llamacpp") {
                "llamacpp" => Protocol::Llamacpp,
                "gptq" => Protocol::Gptq,
                p => panic!("{at}: protocol {p}"),
            };
            let ctx: usize = setup["ctx"].as_str().unwrap_or("256").parse().unwrap();
            let win = setup["win"].as_str().unwrap_or("4");
            let opts = EvalOptions {
                protocol: proto,
                ctx,
                max_windows: (win != "all").then(|| win.parse().unwrap()),
                kl: true,
            };
            let text_name = setup["text"].as_str().unwrap_or("prose");
            let text =
                std::fs::read_to_string(root().join(format!("www/texts/{text_name}.txt"))).unwrap();
            check_run(&session, &cfg, calib_of(setup.get("calib")), &text, &opts)
                .unwrap_or_else(|e| panic!("{at}: {e}"));
            // A step that calibrates says how much, as a link does (else the page's default
            // 32 × 512 would be used, far more than a lesson step needs).
            assert_eq!(
                cfg.needs_calibration(),
                setup.get("calib").is_some(),
                "{at}: calib given iff the config calibrates"
            );
            steps += 1;
        }
    }
    assert!(steps >= 7 * 2, "{steps} steps");
}
