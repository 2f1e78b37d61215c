//! Every integration test file of tests/ as a module of one test binary (Cargo.toml: autotests
//! off). One binary links once and compiles the generic code the files share once, and libtest
//! schedules all their tests together instead of one binary after another. The GPU tests the GPU
//! machine runs alone stay binaries of their own (`OWN_BINARIES`).
//!
//! Run one file's tests with its module name as the filter: `cargo test --release --test all
//! gguf_export::`.

// The shared helpers, once for every file (each file `use`s those it needs).
#[path = "../common/cli.rs"]
mod cli;
#[path = "../common/gpu_check.rs"]
mod gpu_check;
#[path = "../common/hf_export_arch.rs"]
mod hf_export_arch_common;
#[path = "../common/hf_fixture.rs"]
mod hf_fixture;
#[path = "../common/json_fixture.rs"]
mod json_fixture;
#[path = "../common/rng.rs"]
mod rng;
#[path = "../common/synthetic.rs"]
#[allow(dead_code)] // not every test file uses every helper
mod synthetic;
#[path = "../common/tiny_llama.rs"]
mod tiny_llama;

// The test files.
#[path = "../arch_all.rs"]
mod arch_all;
#[path = "../arch_cli.rs"]
mod arch_cli;
#[path = "../arch_reference.rs"]
mod arch_reference;
#[path = "../auto_cli.rs"]
mod auto_cli;
#[path = "../binarize_full.rs"]
mod binarize_full;
#[path = "../calib_held_out.rs"]
mod calib_held_out;
#[path = "../cancel_window.rs"]
mod cancel_window;
#[path = "../cli_hostile.rs"]
mod cli_hostile;
#[path = "../cmpq_reference.rs"]
mod cmpq_reference;
#[path = "../cpu_reference.rs"]
mod cpu_reference;
#[path = "../determinism.rs"]
mod determinism;
#[path = "../format_conformance.rs"]
mod format_conformance;
#[path = "../fuzz_seeds.rs"]
mod fuzz_seeds;
#[path = "../ggml_dequant.rs"]
mod ggml_dequant;
#[path = "../ggml_imatrix.rs"]
mod ggml_imatrix;
#[path = "../ggml_quantize.rs"]
mod ggml_quantize;
#[path = "../ggml_quantize_k.rs"]
mod ggml_quantize_k;
#[path = "../gguf_export.rs"]
mod gguf_export;
#[path = "../gguf_malformed.rs"]
mod gguf_malformed;
#[path = "../gguf_model.rs"]
mod gguf_model;
#[path = "../gpu_binarymos.rs"]
mod gpu_binarymos;
#[path = "../gpu_calib.rs"]
mod gpu_calib;
#[path = "../gpu_formats.rs"]
mod gpu_formats;
#[path = "../gpu_intmm.rs"]
mod gpu_intmm;
#[path = "../gpu_model.rs"]
mod gpu_model;
#[path = "../gpu_mos_train.rs"]
mod gpu_mos_train;
#[path = "../gpu_rtn.rs"]
mod gpu_rtn;
#[path = "../gpu_session.rs"]
mod gpu_session;
#[path = "../gpu_tender.rs"]
mod gpu_tender;
#[path = "../gpu_train.rs"]
mod gpu_train;
#[path = "../hf_export.rs"]
mod hf_export;
#[path = "../hf_export_arch.rs"]
mod hf_export_arch;
#[path = "../hf_load.rs"]
mod hf_load;
#[path = "../kl_stats.rs"]
mod kl_stats;
#[path = "../lessons.rs"]
mod lessons;
#[path = "../lite_resume.rs"]
mod lite_resume;
#[path = "../llamacpp_kl.rs"]
mod llamacpp_kl;
#[path = "../nonfinite.rs"]
mod nonfinite;
#[path = "../perplexity.rs"]
mod perplexity;
#[path = "../ptq_layers.rs"]
mod ptq_layers;
#[path = "../qlab.rs"]
mod qlab;
#[path = "../qlab_cli.rs"]
mod qlab_cli;
#[path = "../quant_cmpq.rs"]
mod quant_cmpq;
#[path = "../quant_ptq.rs"]
mod quant_ptq;
#[path = "../quant_rtn.rs"]
mod quant_rtn;
#[path = "../sweep.rs"]
mod sweep;
#[path = "../sweep_shard.rs"]
mod sweep_shard;
#[path = "../tender.rs"]
mod tender;
#[path = "../tender_cli.rs"]
mod tender_cli;
#[path = "../tender_page.rs"]
mod tender_page;
#[path = "../tokenizer.rs"]
mod tokenizer;
#[path = "../w4a8.rs"]
mod w4a8;
#[path = "../w4a8_cli.rs"]
mod w4a8_cli;

/// Test files that are binaries of their own (Cargo.toml's `[[test]]` entries).
const OWN_BINARIES: [&str; 4] = ["gpu_kernels", "gpu_coop", "gpu_f16", "gpu_cmpq"];

/// A new file of tests/ must be a module above (or its own binary in Cargo.toml): with autotests
/// off, cargo would otherwise never compile or run it.
#[test]
fn every_test_file_is_compiled_and_run() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests");
    let main = include_str!("main.rs");
    let manifest = include_str!("../../Cargo.toml");
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        files += 1;
        if OWN_BINARIES.contains(&stem.as_str()) {
            let entry = format!("[[test]]\nname = \"{stem}\"\npath = \"tests/{stem}.rs\"");
            assert!(
                manifest.contains(&entry),
                "Cargo.toml has no [[test]] {stem}"
            );
            assert!(
                !main.contains(&format!("mod {stem};")),
                "{stem} is built twice"
            );
        } else {
            let module = format!("#[path = \"../{stem}.rs\"]\nmod {stem};");
            assert!(
                main.contains(&module),
                "tests/{stem}.rs is not a module of tests/all/main.rs"
            );
        }
    }
    assert!(files > 50, "{files} test files in {dir}");
}
