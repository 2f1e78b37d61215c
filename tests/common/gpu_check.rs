//! Helpers shared by the GPU tests: the device (whatever adapter wgpu finds; Mesa lavapipe on
//! machines without a GPU), readback, activation builders and the relative max-abs comparison
//! against the CPU reference. Tolerances stay in each test file, next to the reason for them.

#![allow(dead_code)] // not every test file uses every helper

use quantlab::gpu::Gpu;
use quantlab::model::backend::Backend;
use quantlab::model::cpu;

pub fn gpu() -> Gpu {
    pollster::block_on(Gpu::create()).expect("a wgpu adapter (lavapipe: mesa-vulkan-drivers)")
}

pub fn read(g: &Gpu, a: &<Gpu as Backend>::Act) -> Vec<f32> {
    pollster::block_on(g.read_act(a)).expect("readback")
}

/// A CPU activation of `rows` × `cols` values.
pub fn act(rows: usize, cols: usize, data: Vec<f32>) -> cpu::Act {
    cpu::Act { rows, cols, data }
}

/// Max |a − b| relative to the largest |b| must stay under `tol`.
pub fn close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let (mut worst, mut at) = (0f32, 0);
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let e = (a - b).abs() / scale;
        if e > worst || e.is_nan() {
            worst = e;
            at = i;
        }
    }
    // Where the values that are not numbers are (first, last, how many): a kernel's NaN
    // usually comes from one place, and the pattern tells which.
    let nans: Vec<usize> = (0..got.len()).filter(|&i| !got[i].is_finite()).collect();
    assert!(
        worst <= tol,
        "{what}: relative error {worst:e} > {tol:e} at {at}: gpu {} cpu {}; {} of {} not finite \
         (first at {:?}, last at {:?})",
        got[at],
        want[at],
        nans.len(),
        got.len(),
        nans.first(),
        nans.last()
    );
}
