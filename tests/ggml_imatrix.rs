//! ggml's importance-weighted quantizers (`format::ggml::imatrix`: Q4_0, Q4_1, Q5_0, Q5_1, Q3_K,
//! Q4_K, Q5_K with `quant_weights`, what `llama-quantize --imatrix` runs) against ggml's own C code:
//! every byte must match (fixture and its generator: tests/fixtures/README.md,
//! `ggml_imatrix.json`).

use crate::json_fixture;

use json_fixture::{b64, f32s, fixture};
use quantlab::format::ggml::imatrix::quantize;
use quantlab::format::ggml::GgmlType;

fn ggml_type(name: &str) -> GgmlType {
    (0..64)
        .filter_map(GgmlType::from_id)
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("no ggml type {name}"))
}

#[test]
fn importance_weighted_blocks_are_ggml_bytes() {
    let doc = fixture("ggml_imatrix.json");
    let mut compared = 0;
    for c in doc["tensors"].as_array().expect("tensors") {
        let name = c["name"].as_str().expect("name");
        let rows = c["rows"].as_u64().expect("rows") as usize;
        let cols = c["cols"].as_u64().expect("cols") as usize;
        let x = f32s(&b64(&c["f32le_b64"]));
        let qw = f32s(&b64(&c["importance_f32le_b64"]));
        assert_eq!((x.len(), qw.len()), (rows * cols, cols), "{name}");
        for (t, want) in c["expected_b64"].as_object().expect("expected_b64") {
            let t = ggml_type(t);
            let want = b64(want);
            let got = quantize(t, &x, rows, cols, &qw).expect("quantize");
            assert_eq!(got.len(), want.len(), "{name} {}", t.name());
            let ts = t.type_size();
            if let Some(b) = got
                .chunks_exact(ts)
                .zip(want.chunks_exact(ts))
                .position(|(g, w)| g != w)
            {
                panic!(
                    "{name} {}: block {b} differs\n  ours: {:02x?}\n  ggml: {:02x?}",
                    t.name(),
                    &got[b * ts..(b + 1) * ts],
                    &want[b * ts..(b + 1) * ts]
                );
            }
            compared += 1;
        }
    }
    // 7 tensors × 7 types, 2 with all-one importances × 7 (fewer if a fixture row is not whole
    // super-blocks: none is).
    assert_eq!(compared, 63);
}
