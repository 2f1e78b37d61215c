//! ggml K-quant quantization (Q2_K … Q6_K, `format::ggml::quantize` → quantize_k.rs) against
//! ggml's own C reference quantizers (`quantize_row_q{2..6}_K_ref`, no importance matrix), the
//! code llama-quantize runs: every byte must match (fixture and its generator:
//! tests/fixtures/README.md, `ggml_kquant.json`). Plus what the bytes are worth: dequantized, the
//! error shrinks with every extra bit.

use crate::json_fixture;

use json_fixture::{b64, f32s, fixture};
use quantlab::format::ggml::quantize::quantize;
use quantlab::format::ggml::GgmlType;
use quantlab::format::Format;

const K_TYPES: [GgmlType; 5] = [
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// One fixture tensor: name, rows, cols, f32 values, and the fixture case for its bytes.
struct Case {
    name: String,
    rows: usize,
    cols: usize,
    x: Vec<f32>,
    json: serde_json::Value,
}

fn cases() -> Vec<Case> {
    let doc = fixture("ggml_kquant.json");
    // The fixture's type ids and names are ggml's and ours.
    let types = doc["types"].as_array().expect("types");
    assert_eq!(types.len(), K_TYPES.len());
    for (v, t) in types.iter().zip(K_TYPES) {
        assert_eq!(v["type_id"].as_u64(), Some(t.id() as u64), "{}", t.name());
        assert_eq!(v["name"].as_str(), Some(t.name()));
    }
    let tensors = doc["tensors"].as_array().expect("tensors");
    tensors
        .iter()
        .map(|c| {
            let name = c["name"].as_str().expect("name").to_string();
            let rows = c["rows"].as_u64().expect("rows") as usize;
            let cols = c["cols"].as_u64().expect("cols") as usize;
            let x = f32s(&b64(&c["f32le_b64"]));
            assert_eq!(x.len(), rows * cols, "{name}: fixture values");
            Case {
                name,
                rows,
                cols,
                x,
                json: c.clone(),
            }
        })
        .collect()
}

/// Byte equality, reporting the first differing super-block (which field, and its inputs) when
/// it fails.
fn assert_same_blocks(what: &str, t: GgmlType, x: &[f32], got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: byte count");
    let ts = t.type_size();
    let first = got
        .chunks_exact(ts)
        .zip(want.chunks_exact(ts))
        .position(|(g, w)| g != w);
    if let Some(b) = first {
        let (g, w) = (&got[b * ts..(b + 1) * ts], &want[b * ts..(b + 1) * ts]);
        let bytes: Vec<usize> = (0..ts).filter(|&i| g[i] != w[i]).collect();
        panic!(
            "{what}: super-block {b} differs at byte offsets {bytes:?}\n  ours: {g:02x?}\n  \
             ggml: {w:02x?}\n  input: {:?}",
            &x[b * 256..(b + 1) * 256]
        );
    }
}

#[test]
fn every_k_type_and_tensor_matches_ggml_c_byte_for_byte() {
    let cases = cases();
    assert!(cases.len() >= 7, "{} fixture tensors", cases.len());
    let mut blocks = 0;
    for c in &cases {
        for t in K_TYPES {
            let want = b64(&c.json["expected_b64"][t.name()]);
            let total = Format::Ggml(t).storage(c.rows, c.cols).unwrap().total();
            assert_eq!(want.len(), total, "{} {}: fixture bytes", c.name, t.name());
            let got = quantize(t, &c.x, c.rows, c.cols)
                .unwrap_or_else(|e| panic!("{} {}: {e}", c.name, t.name()));
            assert_same_blocks(&format!("{} {}", c.name, t.name()), t, &c.x, &got, &want);
            blocks += total / t.type_size();
        }
    }
    // Real rows, random rows and edge super-blocks: hundreds of blocks per type.
    assert!(blocks >= 5 * 150, "{blocks} super-blocks checked");
}

/// Relative RMS error `‖x − deq(q(x))‖ / ‖x‖` of each type over the real and random fixture
/// rows (mean of the per-tensor squares). One more bit halves the grid step, so the error should
/// about halve: each type must beat the next coarser one by at least `MIN_GAIN`, and every error
/// must stay under the step-size estimate `MAX_REL_RMS`.
#[test]
fn dequantized_error_shrinks_with_every_bit() {
    /// At least this factor between consecutive types. Measured on this fixture: 1.97 (Q3_K over
    /// Q2_K), 3.2 (Q4_K over Q3_K: affine sub-blocks of 32 with a fitted min, against symmetric
    /// ones of 16), 1.70, 1.53 (Q6_K over Q5_K: symmetric against affine). A quantizer off by a
    /// bit (or not searching) falls well below.
    const MIN_GAIN: f64 = 1.4;
    /// Upper bounds of the relative RMS error, Q2_K … Q6_K: a uniform grid of 2^b levels over
    /// about ±3σ has error step/√12 ≈ 6σ/(2^b·3.46), doubled for the coarse sub-block scales
    /// (measured: 0.317, 0.161, 0.050, 0.029, 0.019).
    const MAX_REL_RMS: [f64; 5] = [0.45, 0.22, 0.11, 0.055, 0.028];
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| c.name != "synthetic.edges")
        .collect();
    let mut errs = Vec::new();
    for (k, t) in K_TYPES.into_iter().enumerate() {
        let (mut num, mut den) = (0f64, 0f64);
        for c in &cases {
            let q = quantize(t, &c.x, c.rows, c.cols).unwrap();
            let y = Format::Ggml(t).dequantize(&q, c.rows, c.cols).unwrap();
            // Per tensor, relative to its own scale, so that the 1e-4 row counts as much as the
            // 10 one.
            let (n, d) = c.x.iter().zip(&y).fold((0f64, 0f64), |(n, d), (&a, &b)| {
                (n + (a as f64 - b as f64).powi(2), d + (a as f64).powi(2))
            });
            num += n / d;
            den += 1.0;
        }
        let rel = (num / den).sqrt();
        assert!(
            rel < MAX_REL_RMS[k],
            "{}: relative RMS error {rel:.4} ≥ {}",
            t.name(),
            MAX_REL_RMS[k]
        );
        errs.push(rel);
    }
    for k in 1..errs.len() {
        assert!(
            errs[k - 1] > MIN_GAIN * errs[k],
            "{} error {:.4} is not {MIN_GAIN}× {}'s {:.4} (all: {errs:?})",
            K_TYPES[k].name(),
            errs[k],
            K_TYPES[k - 1].name(),
            errs[k - 1]
        );
    }
}
