//! GPU RTN (`Gpu::rtn_quantize_all`, shaders/rtn.wgsl) against the CPU quantizer
//! (`quant::rtn::quantize`): the packed bytes must be identical for the same input values, on
//! seeded data that includes exact ties (x/s = n + ½, where round-half-even decides), tiny and
//! zero groups, every width and granularity. Natively on whatever adapter wgpu finds (lavapipe).

use crate::gpu_check;
use crate::rng;
use gpu_check::gpu;
use rng::Rng;

use quantlab::format::{Format, Granularity, IntSpec, QTensor};
use quantlab::gpu::Gpu;
use quantlab::model::backend::Backend;
use quantlab::quant::rtn::{quantize, RtnOptions};

/// Rows of several kinds: plain random, ties on a grid of step 1/16 whose extremes make the
/// scale exactly 1/16 for `spec`, tiny magnitudes (subnormal f16 scales), and all zeros.
fn weights(r: &mut Rng, rows: usize, cols: usize, spec: IntSpec) -> Vec<f32> {
    let step = 0.0625f32;
    let levels = ((1u32 << spec.bits) - 1) as i32;
    let qmax = (1i32 << (spec.bits - 1)) - 1;
    let mut w = Vec::with_capacity(rows * cols);
    for row in 0..rows {
        for c in 0..cols {
            let v = match row % 4 {
                0 => r.next() * 0.3,
                1 => {
                    // Ties: (n + ½)·step inside the grid; the group's extremes set s = step.
                    let (lo, hi) = if spec.sym {
                        (-qmax, qmax)
                    } else {
                        (-(levels / 2), levels - levels / 2)
                    };
                    if c % 16 == 0 {
                        hi as f32 * step
                    } else if c % 16 == 1 {
                        lo as f32 * step
                    } else {
                        let n = lo + (r.next_u32() % (hi - lo).max(1) as u32) as i32;
                        (n as f32 + 0.5) * step
                    }
                }
                2 => r.next() * 1e-7,
                _ => 0.0,
            };
            w.push(v);
        }
    }
    w
}

fn check(g: &Gpu, r: &mut Rng, rows: usize, cols: usize, spec: IntSpec, f16_src: bool) {
    let w = weights(r, rows, cols, spec);
    let (src, vals) = if f16_src {
        let h: Vec<u8> = w
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let t = QTensor::new(Format::F16, rows, cols, h).unwrap();
        let vals = t.dequantize().unwrap();
        (t, vals)
    } else {
        (QTensor::from_f32(rows, cols, &w), w)
    };
    let want = quantize(&vals, rows, cols, spec, &RtnOptions::default(), "t").unwrap();
    let m = g.load_matrix(&src, None).unwrap();
    let out = pollster::block_on(g.rtn_quantize_all(&[&m], spec, &RtnOptions::default())).unwrap();
    let got = pollster::block_on(g.read_mat(&out[0], &Format::Int(spec))).unwrap();
    let name = format!("{} from {}", Format::Int(spec).name(), src.format.name());
    assert_eq!(got.len(), want.data.len(), "{name}: length");
    if let Some(i) = got.iter().zip(&want.data).position(|(a, b)| a != b) {
        panic!(
            "{name}: byte {i} of {} differs: gpu {:#04x} cpu {:#04x}",
            got.len(),
            got[i],
            want.data[i]
        );
    }
    // The result is usable as a weight on the GPU: same bytes, so the same products.
    assert_eq!(out[0].bytes, want.data.len());
}

#[test]
fn gpu_rtn_equals_cpu_rtn_byte_for_byte() {
    let g = gpu();
    let mut r = Rng(42);
    // 29 × 80: 3-, 5-, 6- and 7-bit codes end mid-word; 145 groups of 16 end mid scale-word.
    let (rows, cols) = (29, 80);
    for bits in 2..=8u8 {
        for sym in [true, false] {
            for gran in [
                Granularity::Group(16),
                Granularity::PerRow,
                Granularity::PerTensor,
            ] {
                let spec = IntSpec { bits, gran, sym };
                check(&g, &mut r, rows, cols, spec, false);
            }
        }
    }
    let asym1 = IntSpec {
        bits: 1,
        gran: Granularity::Group(16),
        sym: false,
    };
    check(&g, &mut r, rows, cols, asym1, false);
    let int4 = IntSpec {
        bits: 4,
        gran: Granularity::Group(16),
        sym: false,
    };
    check(&g, &mut r, rows, cols, int4, true);
}

#[test]
fn gpu_rtn_refuses_what_it_cannot_do_exactly() {
    let g = gpu();
    let spec = IntSpec {
        bits: 4,
        gran: Granularity::PerRow,
        sym: true,
    };
    let m = g
        .load_matrix(&QTensor::from_f32(2, 8, &[0.5; 16]), None)
        .unwrap();
    let clip = RtnOptions { clip_search: true };
    assert!(pollster::block_on(g.rtn_quantize_all(&[&m], spec, &clip)).is_err());
    let sign = IntSpec { bits: 1, ..spec };
    let plain = RtnOptions::default();
    assert!(pollster::block_on(g.rtn_quantize_all(&[&m], sign, &plain)).is_err());
    let mut v = vec![0.25f32; 16];
    v[9] = f32::INFINITY;
    let bad = g.load_matrix(&QTensor::from_f32(2, 8, &v), None).unwrap();
    let e = pollster::block_on(g.rtn_quantize_all(&[&m, &bad], spec, &plain))
        .err()
        .expect("non-finite weight");
    assert!(e.to_string().contains("matrix 1"), "{e}");
    let huge = g
        .load_matrix(&QTensor::from_f32(2, 8, &[1e9; 16]), None)
        .unwrap();
    let e = pollster::block_on(g.rtn_quantize_all(&[&huge], spec, &plain))
        .err()
        .expect("scale beyond f16");
    assert!(e.to_string().contains("f16"), "{e}");
}
