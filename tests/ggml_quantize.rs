//! ggml block quantization against gguf-py's `gguf.quants.quantize`, the numpy port of ggml's
//! reference quantizers and an implementation independent of QuantLab's: every byte must match
//! (fixture and its generator: tests/fixtures/README.md, `ggml_quant.json`).

use crate::json_fixture;

use json_fixture::{b64, f32s, fixture};
use quantlab::format::ggml::quantize::quantize;
use quantlab::format::ggml::GgmlType;
use quantlab::format::Format;

/// Byte equality, reporting the first differing block with its inputs when it fails.
fn assert_same_blocks(what: &str, t: GgmlType, cols: usize, x: &[f32], got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: byte count");
    let ts = t.type_size();
    let per_row = cols / t.block_size();
    let first = got
        .chunks_exact(ts)
        .zip(want.chunks_exact(ts))
        .position(|(g, w)| g != w);
    if let Some(b) = first {
        let bs = t.block_size();
        panic!(
            "{what}: block {b} (row {}, block {} of the row) differs\n  ours:   {:02x?}\n  \
             gguf-py: {:02x?}\n  input: {:?}",
            b / per_row,
            b % per_row,
            &got[b * ts..(b + 1) * ts],
            &want[b * ts..(b + 1) * ts],
            &x[b * bs..(b + 1) * bs]
        );
    }
    assert_eq!(got, want, "{what}");
}

#[test]
fn every_type_and_tensor_matches_gguf_py_byte_for_byte() {
    let doc = fixture("ggml_quant.json");
    let types: Vec<GgmlType> = doc["types"]
        .as_array()
        .expect("types")
        .iter()
        .map(|v| {
            let id = v["type_id"].as_u64().expect("type_id") as u32;
            let t = GgmlType::from_id(id).unwrap_or_else(|| panic!("type id {id} unknown"));
            assert_eq!(t.name(), v["name"].as_str().expect("name"), "type id {id}");
            t
        })
        .collect();
    for t in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
    ] {
        assert!(types.contains(&t), "fixture lacks {}", t.name());
    }
    let tensors = doc["tensors"].as_array().expect("tensors");
    assert!(tensors.len() >= 5, "{} fixture tensors", tensors.len());
    let mut checked = 0;
    for case in tensors {
        let name = case["name"].as_str().expect("name");
        let rows = case["rows"].as_u64().expect("rows") as usize;
        let cols = case["cols"].as_u64().expect("cols") as usize;
        let x = f32s(&b64(&case["f32le_b64"]));
        assert_eq!(x.len(), rows * cols, "{name}: fixture values");
        for &t in &types {
            let want = b64(&case["expected_b64"][t.name()]);
            let total = Format::Ggml(t).storage(rows, cols).unwrap().total();
            assert_eq!(want.len(), total, "{name} {}: fixture bytes", t.name());
            let got =
                quantize(t, &x, rows, cols).unwrap_or_else(|e| panic!("{name} {}: {e}", t.name()));
            assert_same_blocks(&format!("{name} {}", t.name()), t, cols, &x, &got, &want);
            checked += 1;
        }
    }
    assert_eq!(checked, tensors.len() * types.len());
}
