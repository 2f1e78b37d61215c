use super::*;
use crate::playground::session::tests::tiny_session;
use crate::quant::config::QuantConfig;
use serde_json::json;

fn config(method: serde_json::Value, default: serde_json::Value) -> QuantConfig {
    let j = json!({ "version": 1, "method": method, "default": default });
    QuantConfig::from_json(&j.to_string()).expect("valid config")
}

/// The configs the view is checked on: uniform codes with asymmetric groups (RTN), a fixed
/// codebook times group absmax (NF4), and per-column widths with sparse outliers (CMPQ).
fn configs() -> Vec<(&'static str, QuantConfig)> {
    // The defaults (the tiny tensors meet their budget; 0.25 % sparse outliers, a few a
    // tensor, which the rows checked meet).
    let cmpq = crate::quant::cmpq::CmpqOptions::default();
    vec![
        (
            "rtn",
            config(
                json!("rtn"),
                json!({ "bits": 3, "gran": { "group": 16 }, "sym": false }),
            ),
        ),
        (
            "nf4",
            config(
                json!("nf4"),
                json!({ "bits": 4, "gran": { "group": 32 }, "sym": true }),
            ),
        ),
        (
            "cmpq",
            config(
                json!({ "cmpq": cmpq }),
                json!({ "bits": 4, "gran": "per_row", "sym": true }),
            ),
        ),
    ]
}

/// The view's quantized row is the row of the tensor the quantizer produces for the same config
/// (`QuantConfig::apply_calibrated`, then the QTensor's own dequantize), its error is the error
/// of that row against the loaded one, and every value not kept as an outlier is one of its
/// group's levels. Exact comparisons: both sides run the same f32 arithmetic.
#[test]
fn the_row_is_the_quantizers_row_on_its_groups_levels() {
    let mut s = tiny_session();
    let names: Vec<String> = s.source().linears().map(|l| l.name.clone()).collect();
    let mut outliers_seen = 0;
    for (label, cfg) in configs() {
        s.set_quant(&cfg).expect(label);
        let want = cfg
            .apply_calibrated(s.source(), s.calibration(), &mut |_, _| true)
            .expect(label);
        for name in [&names[0], &names[names.len() - 1]] {
            let t = locate(&want, name).unwrap().2;
            let full = t.dequantize().unwrap();
            let loaded = locate(s.source(), name).unwrap().2.dequantize().unwrap();
            for row in 0..t.rows {
                let v = row_view(&s, name, row, 0, MAX_POINTS).expect(label);
                let cols = t.cols;
                assert_eq!(v.cols, cols);
                assert_eq!(v.basis, "loaded");
                assert_eq!(
                    v.quantized,
                    full[row * cols..(row + 1) * cols],
                    "{label} {name}"
                );
                assert_eq!(
                    v.weights,
                    loaded[row * cols..(row + 1) * cols],
                    "{label} {name}"
                );
                let (mut sq, mut max) = (0f64, 0f64);
                for (w, q) in v.weights.iter().zip(&v.quantized) {
                    let d = (w - q) as f64;
                    sq += d * d;
                    max = max.max(d.abs());
                }
                assert_eq!(v.mse, sq / cols as f64);
                assert_eq!(v.max_abs, max);
                assert!(v.has_levels && !v.lowrank, "{label}");
                assert_eq!(v.groups.first().map(|g| g.start), Some(0));
                assert_eq!(v.groups.last().map(|g| g.end), Some(cols));
                for g in &v.groups {
                    for c in g.start..g.end {
                        if v.outlier[c] {
                            outliers_seen += 1;
                            assert!(!v.clipped[c]);
                            continue;
                        }
                        assert!(
                            g.levels.contains(&v.quantized[c]),
                            "{label} {name} col {c}: {} not in {:?}",
                            v.quantized[c],
                            g.levels
                        );
                    }
                }
                if label == "cmpq" {
                    // CMPQ's groups are its columns, each with its own width.
                    assert_eq!(v.groups.len(), cols);
                    assert!(v.groups.iter().all(|g| g.end == g.start + 1));
                    assert_eq!(v.n_outliers, v.outlier.iter().filter(|&&o| o).count());
                } else {
                    assert_eq!(v.n_outliers, 0);
                }
            }
        }
    }
    assert!(
        outliers_seen > 0,
        "no sparse outlier met on the rows checked"
    );
}

/// A window lists its columns and the groups that meet it, and the error stays the whole row's.
#[test]
fn a_window_lists_part_of_the_row_and_keeps_the_rows_error() {
    let mut s = tiny_session();
    let (_, cfg) = configs().remove(0);
    s.set_quant(&cfg).unwrap();
    let name = s.source().linears().next().unwrap().name.clone();
    let all = row_view(&s, &name, 3, 0, MAX_POINTS).unwrap();
    let part = row_view(&s, &name, 3, 20, 8).unwrap();
    assert_eq!((part.start, part.weights.len()), (20, 8));
    assert_eq!(part.quantized, all.quantized[20..28]);
    assert_eq!((part.mse, part.max_abs), (all.mse, all.max_abs));
    // Groups of 16: columns 20..28 lie in the second group only.
    assert_eq!(part.groups.len(), 1);
    assert_eq!((part.groups[0].start, part.groups[0].end), (16, 32));
    // Nothing quantized: the row is its own quantization, error 0, no level grid (f32 weights).
    s.set_quant(&QuantConfig::default()).unwrap();
    let none = row_view(&s, &name, 3, 0, 16).unwrap();
    assert_eq!((none.mse, none.max_abs), (0.0, 0.0));
    assert!(!none.has_levels && none.groups.is_empty());
}

/// Rows, columns, window sizes and names outside the tensor are errors naming the field.
#[test]
fn bad_requests_name_the_field() {
    let s = tiny_session();
    let name = s.source().linears().next().unwrap().name.clone();
    let rows = locate(s.source(), &name).unwrap().2.rows;
    let e = |r: Result<RowView>| r.expect_err("refused").to_string();
    assert!(e(row_view(&s, &name, rows, 0, 8)).contains("row"));
    assert!(e(row_view(&s, &name, 0, 1 << 20, 8)).contains("row"));
    assert!(e(row_view(&s, &name, 0, 0, 0)).contains("max_points"));
    assert!(e(row_view(&s, &name, 0, 0, MAX_POINTS + 1)).contains("max_points"));
    assert!(e(row_view(&s, "blk.0.nothing", 0, 0, 8)).contains("tensor"));
}

/// Clipping is judged against half a step past the outermost level.
#[test]
fn clipped_means_beyond_half_a_step_past_the_outer_level() {
    let l = [-1.0, 0.0, 1.0];
    assert!(!clipped(1.4, &l) && !clipped(-1.49, &l) && !clipped(0.3, &l));
    assert!(clipped(1.6, &l) && clipped(-2.0, &l));
    assert!(!clipped(0.5, &[0.5]) && clipped(0.6, &[0.5]));
    assert!(!clipped(3.0, &[]));
}

/// Rounding leaves a weight within half a step of its level; the stored f16 scale may differ from
/// the one the codes were chosen with by 2^-11 relative, which moves a level of code distance
/// up to 2^bits by that much more. For 4-bit codes: half a step plus 16 · 2^-11 steps.
const HALF_STEP_SLACK: f32 = 0.5 + 16.0 / 2048.0;

/// After a scale transform (AQAS) the view shows the weights the quantizer rounded: every weight
/// not clipped lies within half a step of its stored value (in the loaded basis a smoothed
/// column's weights differ from those by its scale `s_j`).
#[test]
fn smoothed_rows_are_shown_as_the_quantizer_saw_them() {
    let mut s = tiny_session();
    let j = json!({
        "version": 1, "method": "rtn",
        "default": { "bits": 4, "gran": { "group": 16 }, "sym": false },
        "smooth": { "aqas": { "step": 0.25 } },
    });
    s.set_quant(&QuantConfig::from_json(&j.to_string()).unwrap())
        .unwrap();
    let name = s.source().linears().next().unwrap().name.clone();
    let rows = locate(s.source(), &name).unwrap().2.rows;
    for row in 0..rows {
        let v = row_view(&s, &name, row, 0, MAX_POINTS).unwrap();
        assert_eq!(v.basis, "smoothed");
        for g in &v.groups {
            let step = g.levels[1] - g.levels[0];
            for c in (g.start..g.end).filter(|&c| !v.clipped[c]) {
                let d = (v.weights[c] - v.quantized[c]).abs();
                assert!(
                    d <= HALF_STEP_SLACK * step,
                    "row {row} col {c}: |{} − {}| = {d} > half of {step}",
                    v.weights[c],
                    v.quantized[c]
                );
            }
        }
    }
}
