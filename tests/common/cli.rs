//! Helpers shared by the command-line tests: run the release CLI from the repository root,
//! insist on success (printing both streams when it fails), and read the JSON line `--json`
//! ends its output with.

#![allow(dead_code)] // not every test file uses every helper

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `quantlab args…` from the repository root, whatever its exit status.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quantlab"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run quantlab")
}

/// `quantlab args…`, which must succeed: (stdout, stderr).
pub fn quantlab(args: &[&str]) -> (String, String) {
    let out = run(args);
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(
        out.status.success(),
        "quantlab {args:?} failed:\n{so}\n{se}"
    );
    (so, se)
}

/// The last line of `out`, as JSON.
pub fn last_json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.lines().last().unwrap_or("")).expect("a JSON last line")
}
