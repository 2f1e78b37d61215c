//! Reading the JSON fixtures in tests/fixtures/ (written by Python generators): the file, and its
//! base64 byte strings and little-endian f32 arrays.

#![allow(dead_code)] // not every test file uses every helper

use base64::Engine;
use serde_json::Value;

/// tests/fixtures/`name`, parsed.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A base64 string of the fixture, as bytes.
pub fn b64(v: &Value) -> Vec<u8> {
    let s = v.as_str().expect("base64 string in fixture");
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("valid base64 in fixture")
}

/// Little-endian f32 values.
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
