//! ggml block dequantization against gguf-py, an independent implementation of the same formats
//! (fixtures and their generator: tests/fixtures/README.md).

use crate::json_fixture;

use json_fixture::{b64, f32s, fixture};
use quantlab::format::ggml::{self, GgmlType};
use quantlab::io::gguf::Gguf;
use quantlab::tensor::DType;

/// Largest allowed |ours - reference| relative to max(|reference|, 1e-30). Both implementations
/// do the same f32 operations in the same order, so the expected difference is zero; the margin
/// only absorbs a libm or compiler that fuses a multiply-add.
const REL_TOL: f32 = 1e-6;
/// The reference sums are f64 sums of 28M values in numpy's pairwise order; ours are sequential.
const SUM_REL_TOL: f64 = 1e-9;

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
);

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(
            err <= REL_TOL * w.abs().max(1e-30),
            "{what}[{i}]: got {g:e}, gguf-py {w:e} (|diff| {err:e}, REL_TOL {REL_TOL:e})"
        );
    }
}

#[test]
fn random_blocks_of_every_type_match_gguf_py() {
    let doc = fixture("ggml_blocks.json");
    let cases = doc["cases"].as_array().expect("cases");
    let mut seen = Vec::new();
    for case in cases {
        let name = case["type"].as_str().expect("type");
        let id = case["type_id"].as_u64().expect("type_id") as u32;
        let t = GgmlType::from_id(id).unwrap_or_else(|| panic!("type id {id} ({name}) unknown"));
        assert_eq!(t.name(), name, "name of type id {id}");
        let data = b64(&case["data_b64"]);
        let want = f32s(&b64(&case["expected_f32le_b64"]));
        let blocks = case["blocks"].as_u64().expect("blocks") as usize;
        assert_eq!(data.len(), blocks * t.type_size(), "{name}: fixture bytes");
        assert_eq!(
            want.len(),
            blocks * t.block_size(),
            "{name}: fixture values"
        );
        let mut got = vec![f32::NAN; want.len()];
        ggml::dequantize(t, &data, &mut got).expect("dequantize");
        assert_close(name, &got, &want);
        seen.push(t);
    }
    for t in GgmlType::ALL {
        assert!(seen.contains(&t), "fixture lacks {}", t.name());
    }
}

#[test]
fn wrong_lengths_are_errors_for_every_type() {
    for t in GgmlType::ALL {
        let (bs, ts) = (t.block_size(), t.type_size());
        let mut out = vec![0f32; 2 * bs];
        assert!(ggml::dequantize(t, &vec![0u8; 2 * ts], &mut out).is_ok());
        let short = ggml::dequantize(t, &vec![0u8; 2 * ts - 1], &mut out);
        assert!(short.is_err(), "{}: short data accepted", t.name());
        let long = ggml::dequantize(t, &vec![0u8; 3 * ts], &mut out);
        assert!(long.is_err(), "{}: long data accepted", t.name());
        let mut ragged = vec![0f32; bs + 1];
        let r = ggml::dequantize(t, &vec![0u8; ts], &mut ragged);
        assert!(r.is_err(), "{}: partial block accepted", t.name());
    }
}

#[test]
fn real_tensors_of_the_default_model_match_gguf_py() {
    let bytes = std::fs::read(MODEL).unwrap_or_else(|e| {
        panic!("{MODEL}: {e}; run scripts/fetch-model.sh to fetch the default model")
    });
    let gguf = Gguf::parse("SmolLM2-135M-Instruct.Q4_1.gguf", &bytes).expect("parse");
    let doc = fixture("ggml_real.json");
    for case in doc["tensors"].as_array().expect("tensors") {
        let name = case["tensor"].as_str().expect("tensor");
        let t = gguf
            .tensor(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        let DType::Ggml(g) = t.dtype else {
            panic!("{name} is {}, not a ggml block type", t.dtype.name())
        };
        assert_eq!(g.name(), case["type"].as_str().expect("type"), "{name}");
        let numel = case["numel"].as_u64().expect("numel") as usize;
        assert_eq!(t.numel(), numel, "{name}: numel");
        let mut got = vec![f32::NAN; numel];
        ggml::dequantize(g, t.data, &mut got).expect("dequantize");
        let want = f32s(&b64(&case["first_f32le_b64"]));
        assert_close(name, &got[..want.len()], &want);
        let sum: f64 = got.iter().map(|&x| x as f64).sum();
        let sum_abs: f64 = got.iter().map(|&x| x.abs() as f64).sum();
        for (what, ours, theirs) in [
            ("sum", sum, case["sum"].as_f64().expect("sum")),
            (
                "sum_abs",
                sum_abs,
                case["sum_abs"].as_f64().expect("sum_abs"),
            ),
        ] {
            let err = (ours - theirs).abs();
            assert!(
                err <= SUM_REL_TOL * theirs.abs().max(1.0),
                "{name} {what}: ours {ours}, gguf-py {theirs} (SUM_REL_TOL {SUM_REL_TOL:e})"
            );
        }
    }
}
