//! GPTQ against a direct transcription of the paper's loop (no lazy batches, no Cholesky: the
//! inverse Hessian is updated after each column by removing it), and against RTN's output error.

use super::*;
use crate::linalg::tests::inverse;
use crate::quant::calib::output_error;
use crate::quant::rtn;

/// A seeded LCG in [-0.5, 0.5).
fn lcg(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(7);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// Calibration inputs with correlated channels and uneven scales (like real activations), and
/// one dead channel; returns (X as t × cols, Gram).
fn inputs(t: usize, cols: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let base = lcg(seed, t * cols);
    let mut x = vec![0f32; t * cols];
    for k in 0..t {
        for j in 0..cols {
            let mix = base[k * cols + j] + 0.6 * base[k * cols + (j + 1) % cols];
            x[k * cols + j] = if j == 5 {
                0.0
            } else {
                mix * (1.0 + (j % 7) as f32)
            };
        }
    }
    let mut g = vec![0f32; cols * cols];
    for i in 0..cols {
        for j in 0..cols {
            g[i * cols + j] = (0..t).map(|k| x[k * cols + i] * x[k * cols + j]).sum();
        }
    }
    (x, g)
}

/// The paper's loop, transcribed: columns in (permuted) order, error feedback through `H⁻¹`,
/// then `H⁻¹` loses the quantized column. Returns the codes in original column order.
fn reference(
    w: &[f32],
    rows: usize,
    cols: usize,
    gram: &[f32],
    n_tokens: usize,
    spec: IntSpec,
    opts: &GptqOptions,
) -> Vec<u8> {
    let ro = RtnOptions::default();
    let (h, dead) = hessian(gram, cols, n_tokens, opts.damp);
    let perm = column_order(&h, cols, opts.act_order);
    let mut hp = vec![0f64; cols * cols];
    for i in 0..cols {
        for j in 0..cols {
            hp[i * cols + j] = h[perm[i] * cols + perm[j]];
        }
    }
    let mut hinv = inverse(&hp, cols);
    let w0: Vec<f32> = w
        .iter()
        .enumerate()
        .map(|(i, &v)| if dead[i % cols] { 0.0 } else { v })
        .collect();
    let g = spec.gran.group_len(rows, cols, "ref").unwrap();
    let mut codes = vec![0u8; rows * cols];
    for r in 0..rows {
        let orig = &w0[r * cols..(r + 1) * cols];
        let mut wr: Vec<f64> = perm.iter().map(|&p| orig[p] as f64).collect();
        let mut hi = hinv.clone();
        let mut grid = None;
        for j in 0..cols {
            let oc = perm[j];
            if oc.is_multiple_of(g) || grid.is_none() {
                // Static groups with act-order (original weights); otherwise the current ones.
                let src: Vec<f32> = if opts.act_order || spec.gran == Granularity::PerRow {
                    orig[oc - oc % g..oc - oc % g + g].to_vec()
                } else {
                    wr[j..j + g].iter().map(|&v| v as f32).collect()
                };
                grid = Some(GroupGrid::choose(&src, spec, &ro, "ref").unwrap());
            }
            let gr = if opts.act_order {
                GroupGrid::choose(&orig[oc - oc % g..oc - oc % g + g], spec, &ro, "ref").unwrap()
            } else {
                grid.unwrap()
            };
            let x = wr[j] as f32;
            codes[r * cols + oc] = gr.code(x);
            let e = (wr[j] - gr.value(x) as f64) / hi[j * cols + j];
            for k in j + 1..cols {
                wr[k] -= e * hi[j * cols + k];
            }
            let d = hi[j * cols + j];
            let col: Vec<f64> = (0..cols).map(|i| hi[i * cols + j]).collect();
            let row: Vec<f64> = hi[j * cols..(j + 1) * cols].to_vec();
            for a in j + 1..cols {
                for b in j + 1..cols {
                    hi[a * cols + b] -= col[a] * row[b] / d;
                }
            }
        }
        hinv = inverse(&hp, cols);
    }
    codes
}

fn codes_of(q: &QTensor) -> Vec<u8> {
    let spec = match q.format {
        crate::format::Format::Int(s) => s,
        _ => panic!("not Int"),
    };
    (0..q.numel())
        .map(|i| crate::format::unpack_code(&q.data, i, spec.bits) as u8)
        .collect()
}

#[test]
fn prepared_factor_is_shared_and_checked() {
    let (rows, cols, t) = (8, 32, 96);
    let (_, gram) = inputs(t, cols, 5);
    let spec = IntSpec {
        bits: 3,
        gran: Granularity::Group(8),
        sym: true,
    };
    let ro = RtnOptions::default();
    let o = GptqOptions::default();
    let p = prepare(&gram, cols, t, &o, "t").unwrap();
    for seed in [1, 2] {
        let w = lcg(seed, rows * cols);
        let alone = quantize(&w, rows, cols, &gram, t, spec, &ro, &o, "t").unwrap();
        let shared = quantize_prepared(&w, rows, cols, &p, spec, &ro, &o, "t").unwrap();
        assert_eq!(alone, shared);
    }
    let w = lcg(1, rows * cols);
    let other = GptqOptions {
        act_order: false,
        ..o
    };
    assert!(quantize_prepared(&w, rows, cols, &p, spec, &ro, &other, "t").is_err());
    assert!(quantize_prepared(&w[..rows * 16], rows, 16, &p, spec, &ro, &o, "t").is_err());
}

#[test]
fn matches_the_papers_loop_exactly() {
    let (rows, cols, t) = (16, 32, 96);
    let w = lcg(11, rows * cols);
    let (_, gram) = inputs(t, cols, 5);
    for (bits, gran, sym) in [
        (4, Granularity::PerRow, true),
        (3, Granularity::PerRow, false),
        (3, Granularity::Group(8), true),
        (2, Granularity::Group(16), false),
    ] {
        for act_order in [false, true] {
            // block 4 < group 8 and 12 (not a multiple of 8) exercise the block widening.
            for block in [4, 12, 128] {
                let spec = IntSpec { bits, gran, sym };
                let opts = GptqOptions {
                    damp: 0.01,
                    act_order,
                    block,
                };
                let q = quantize(
                    &w,
                    rows,
                    cols,
                    &gram,
                    t,
                    spec,
                    &RtnOptions::default(),
                    &opts,
                    "t",
                )
                .unwrap();
                let want = reference(&w, rows, cols, &gram, t, spec, &opts);
                assert_eq!(
                    codes_of(&q),
                    want,
                    "{bits} {gran:?} {sym} act {act_order} block {block}"
                );
            }
        }
    }
}

#[test]
fn output_error_is_below_rtn() {
    let (rows, cols, t) = (16, 32, 96);
    let (_, gram) = inputs(t, cols, 9);
    for seed in 0..4 {
        let mut w = lcg(100 + seed, rows * cols);
        w[5] = 0.0; // the dead channel's weight is irrelevant to the output; keep it equal
        for (bits, gran) in [
            (4, Granularity::PerRow),
            (3, Granularity::Group(16)),
            (2, Granularity::PerRow),
        ] {
            let spec = IntSpec {
                bits,
                gran,
                sym: true,
            };
            let ro = RtnOptions::default();
            let r = rtn::quantize(&w, rows, cols, spec, &ro, "t").unwrap();
            let g = quantize(
                &w,
                rows,
                cols,
                &gram,
                t,
                spec,
                &ro,
                &GptqOptions::default(),
                "t",
            )
            .unwrap();
            let er = output_error(&w, &r.dequantize().unwrap(), cols, &gram).unwrap();
            let eg = output_error(&w, &g.dequantize().unwrap(), cols, &gram).unwrap();
            assert!(eg < er, "seed {seed} {bits} {gran:?}: gptq {eg} ≥ rtn {er}");
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    let w = lcg(1, 8 * 16);
    let (_, gram) = inputs(20, 16, 1);
    let spec = IntSpec {
        bits: 4,
        gran: Granularity::Group(5),
        sym: true,
    };
    let ro = RtnOptions::default();
    let o = GptqOptions::default();
    assert!(quantize(&w, 8, 16, &gram, 20, spec, &ro, &o, "t").is_err());
    let spec = IntSpec {
        bits: 4,
        gran: Granularity::PerRow,
        sym: true,
    };
    assert!(quantize(&w, 8, 16, &gram[1..], 20, spec, &ro, &o, "t").is_err());
    let mut bad = w.clone();
    bad[3] = f32::NAN;
    let e = quantize(&bad, 8, 16, &gram, 20, spec, &ro, &o, "blk.0.x").unwrap_err();
    assert!(e.to_string().contains("blk.0.x"), "{e}");
}

/// The f16 group scales of a fixed-table codebook tensor (after its 4-bit codes).
fn table_scales(q: &QTensor) -> Vec<f32> {
    let codes = crate::format::packed_bytes(q.rows * q.cols, 4);
    q.data[codes..]
        .chunks_exact(2)
        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect()
}

#[test]
fn onto_dint_output_error_is_below_rtn_and_values_are_on_the_grid() {
    use crate::format::{Codebook, DintParams, Format};
    use crate::quant::codebook::fixed;
    let (rows, cols, t) = (16, 32, 96);
    let (_, gram) = inputs(t, cols, 9);
    let params = [
        DintParams::default(),
        DintParams {
            denorm: 2,
            max: 7,
            zero: false,
        },
    ];
    for seed in 0..4 {
        let mut w = lcg(200 + seed, rows * cols);
        w[5] = 0.0;
        for p in params {
            let levels = p.levels().unwrap();
            for gran in [Granularity::PerRow, Granularity::Group(16)] {
                for act_order in [true, false] {
                    let table = Codebook::Dint(gran, p);
                    let o = GptqOptions {
                        act_order,
                        ..GptqOptions::default()
                    };
                    let r = fixed(&w, rows, cols, table, "t").unwrap();
                    let g = quantize_to(&w, rows, cols, &gram, t, Target::Table(table), &o, "t")
                        .unwrap();
                    assert_eq!(g.format, Format::Codebook { bits: 4, table });
                    let gd = g.dequantize().unwrap();
                    let er = output_error(&w, &r.dequantize().unwrap(), cols, &gram).unwrap();
                    let eg = output_error(&w, &gd, cols, &gram).unwrap();
                    let what = format!("seed {seed} {p:?} {gran:?} act-order {act_order}");
                    assert!(eg < er, "{what}: gptq {eg} ≥ rtn {er}");
                    // On the grid: every value is level · Δ of its group, exactly.
                    let glen = gran.group_len(rows, cols, "t").unwrap();
                    let sc = table_scales(&g);
                    for (i, &v) in gd.iter().enumerate() {
                        let s = sc[i / glen];
                        assert!(
                            levels.iter().any(|&l| l * s == v),
                            "{what}: weight {i} = {v} is not a level × {s}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn onto_tables_without_feedback_equals_rtn() {
    // A diagonal Gram makes U diagonal: no error reaches other columns, so GPTQ must round
    // every weight exactly as RTN onto the same table does (same scale rule, same ties).
    use crate::format::{Codebook, DintParams};
    use crate::quant::codebook::fixed;
    let (rows, cols) = (8, 32);
    let w = lcg(31, rows * cols);
    let gram: Vec<f32> = (0..cols * cols)
        .map(|i| {
            if i / cols == i % cols {
                1.0 + (i % 5) as f32
            } else {
                0.0
            }
        })
        .collect();
    let o = GptqOptions {
        act_order: false,
        ..GptqOptions::default()
    };
    for gran in [
        Granularity::PerTensor,
        Granularity::PerRow,
        Granularity::Group(8),
    ] {
        for table in [
            Codebook::Dint(gran, DintParams::default()),
            Codebook::Nf4(gran),
            Codebook::Fp4(gran),
        ] {
            let r = fixed(&w, rows, cols, table, "t").unwrap();
            let g = quantize_to(&w, rows, cols, &gram, 10, Target::Table(table), &o, "t").unwrap();
            assert_eq!(g.data, r.data, "{table:?}");
        }
    }
}

#[test]
fn onto_a_learned_table_or_bad_dint_is_an_error() {
    use crate::format::{Codebook, DintParams};
    let w = lcg(1, 8 * 16);
    let (_, gram) = inputs(20, 16, 1);
    let o = GptqOptions::default();
    let e = quantize_to(
        &w,
        8,
        16,
        &gram,
        20,
        Target::Table(Codebook::PerRow),
        &o,
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("codebook"), "{e}");
    let bad = Codebook::Dint(
        Granularity::PerRow,
        DintParams {
            max: 9,
            ..DintParams::default()
        },
    );
    let e = quantize_to(&w, 8, 16, &gram, 20, Target::Table(bad), &o, "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("dint.max"), "{e}");
}
