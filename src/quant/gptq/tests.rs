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
