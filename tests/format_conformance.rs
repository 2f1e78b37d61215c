//! One conformance test for every storage format (src/format/): the list is
//! `Format::examples()`, which each family module fills, so a new format is covered by being
//! listed there (and `format::tests` fails if a WGSL fragment has no example). For each format,
//! on seeded random content from the format's own generator (`Format::random`), at every test
//! shape the format accepts:
//!   * bytes = the table: the generator's blob, `QTensor::new` and the GPU's held bytes are all
//!     `storage(rows, cols).total()`;
//!   * CPU dequantize = GPU decode: the embedding gather of every row, and `linear` against the
//!     identity with every matmul variant (a product with one nonzero term per output is exact,
//!     so both see the decoded weight itself);
//!   * row slicing: slicing rows, then dequantizing = dequantizing, then slicing (exactly), and
//!     the GPU split by rows (a forced small binding limit) decodes the same;
//!   * add-ons on top: outliers and LoRC factors through `linear` against the CPU reference.
//!
//! Natively on whatever adapter wgpu finds (Mesa lavapipe without a GPU).

use crate::gpu_check;
use gpu_check::{act, close, gpu, read};

use quantlab::format::{storage_with, AddOns, Format, LowRankSpec, QTensor};
use quantlab::gpu::{Gpu, MatmulVariant};
use quantlab::model::backend::Backend;
use quantlab::model::cpu::Cpu;
use quantlab::testkit::Rng;

/// Shapes every format is tried at (those it accepts): 71 × 96 has partial tiles and codes
/// ending mid-word; 23 × 512 fits the K-quants' 256-weight super-blocks twice per row.
const SHAPES: [(usize, usize); 2] = [(71, 96), (23, 512)];
/// GPU decode against the CPU reference, relative to the largest |w|: the K-quant decoders
/// compute `d·sc·q − dmin·m`, which a GPU compiler may contract into an FMA.
const DECODE_TOL: f32 = 1e-6;
/// Products with add-ons: the base product, the outlier correction and `Û(V̂x)` are summed in
/// three passes instead of one dot product with the expanded weight (as tests/gpu_formats.rs).
const ADDON_TOL: f32 = 2e-5;

/// A random tensor of `format` at `rows × cols`, its bytes checked against the table.
fn random_tensor(format: Format, rows: usize, cols: usize, seed: u64) -> QTensor {
    let mut r = Rng(seed);
    let data = format
        .random(rows, cols, &mut || r.next_u32())
        .unwrap_or_else(|e| panic!("{}: random: {e}", format.name()));
    let st = format.storage(rows, cols).unwrap();
    assert_eq!(
        data.len(),
        st.total(),
        "{}: generator vs table",
        format.name()
    );
    QTensor::new(format, rows, cols, data).unwrap()
}

/// The GPU's decode of every weight of `w`, through the embedding gather of all rows.
fn gpu_rows(g: &Gpu, w: &QTensor) -> Vec<f32> {
    let m = g.load_matrix(w, None).unwrap();
    let tokens: Vec<u32> = (0..w.rows as u32).collect();
    read(g, &g.embed(&m, &tokens).unwrap())
}

/// The decoded weight, transposed (`cols × rows`), as `linear` against the identity returns it.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols * rows)
        .map(|i| w[(i % rows) * cols + i / rows])
        .collect()
}

fn check_format(g: &Gpu, format: Format, rows: usize, cols: usize, seed: u64) {
    let name = format!("{} {rows}×{cols}", format.name());
    let w = random_tensor(format, rows, cols, seed);
    let want = w.dequantize().unwrap();
    assert!(want.iter().all(|v| v.is_finite()), "{name}: non-finite");

    // Bytes: what the GPU holds is the table's total.
    let held0 = g.weight_bytes_held();
    let gm = g.load_matrix(&w, None).unwrap();
    assert_eq!(gm.parts(), 1);
    assert_eq!(gm.bytes, w.storage().total(), "{name}: GPU bytes");
    assert_eq!(g.weight_bytes_held() - held0, gm.bytes as u64);

    // Decode: the gather, and the identity product with every kernel variant.
    close(
        &gpu_rows(g, &w),
        &want,
        DECODE_TOL,
        &format!("{name}: embed"),
    );
    let eye: Vec<f32> = (0..cols * cols)
        .map(|i| if i / cols == i % cols { 1.0 } else { 0.0 })
        .collect();
    let x = g.upload_act(cols, cols, &eye).unwrap();
    let want_t = transpose(&want, rows, cols);
    for v in MatmulVariant::ALL {
        g.force_matmul(Some(v));
        let got = read(g, &g.linear(&x, &gm));
        close(
            &got,
            &want_t,
            DECODE_TOL,
            &format!("{name}: linear {}", v.name()),
        );
    }
    g.force_matmul(None);
    drop(gm);

    // Row slicing on the CPU: slice then dequantize = dequantize then slice, exactly.
    for (r0, r1) in [
        (0, 1),
        (rows / 3, rows / 3 + 5),
        (rows - 7, rows),
        (0, rows),
    ] {
        let part = w.row_slice(r0, r1).unwrap();
        assert_eq!((part.rows, part.cols, part.format), (r1 - r0, cols, format));
        let got = part.dequantize().unwrap();
        assert!(
            got == want[r0 * cols..r1 * cols],
            "{name}: rows {r0}..{r1} sliced then dequantized differ"
        );
    }
    // ... and on the GPU, split across bindings that hold a third of the rows (plus what every
    // part repeats: per-column tables, CMPQ's map and books).
    let third = [
        (0, rows / 3),
        (rows / 3, 2 * rows / 3),
        (2 * rows / 3, rows),
    ]
    .iter()
    .map(|&(a, b)| w.row_slice(a, b).unwrap().data.len().div_ceil(4) * 4)
    .max()
    .unwrap();
    g.limit_storage_binding(Some(third as u64));
    let parts = g.load_matrix(&w, None).unwrap().parts();
    assert!(parts >= 2, "{name}: {parts} parts");
    close(
        &gpu_rows(g, &w),
        &want,
        DECODE_TOL,
        &format!("{name}: split"),
    );
    g.limit_storage_binding(None);
}

/// Outliers and LoRC factors on top of `format`: GPU `linear` against the CPU reference.
fn check_addons(g: &Gpu, format: Format, rows: usize, cols: usize, seed: u64) {
    let base = random_tensor(format, rows, cols, seed);
    let mut r = Rng(seed ^ 0x5eed);
    let cases = [
        (37, None),
        // An odd count: the f16 values end mid-word.
        (0, Some((5, false))),
        (53, Some((3, true))),
    ];
    let (outliers, lr) = cases[seed as usize % cases.len()];
    let addons = AddOns {
        outliers,
        lowrank: lr.map(|(rank, bits8)| LowRankSpec { rank, bits8 }),
    };
    let bytes = addons.random(rows, cols, &mut || r.next_u32()).unwrap();
    let w = base.with_extra(addons, &bytes).unwrap();
    let name = format!("{} {rows}×{cols} {addons:?}", format.name());
    assert_eq!(
        w.data.len(),
        storage_with(format, addons, rows, cols).unwrap().total()
    );
    // The add-ons must change the weight, or this would test nothing.
    assert_ne!(
        w.dequantize().unwrap(),
        base.dequantize().unwrap(),
        "{name}"
    );
    let m = 37;
    let x = r.vec(m * cols);
    let cm = Cpu.load_matrix(&w, None).unwrap();
    let want = Cpu.linear(&act(m, cols, x.clone()), &cm);
    let gm = g.load_matrix(&w, None).unwrap();
    assert_eq!(gm.bytes, w.data.len(), "{name}: GPU bytes");
    let gx = g.upload_act(m, cols, &x).unwrap();
    let got = read(g, &g.linear(&gx, &gm));
    close(&got, &want.data, ADDON_TOL, &name);
}

#[test]
fn every_format_conforms() {
    let g = gpu();
    let formats = Format::examples();
    assert!(formats.len() >= 20, "the format list lost its entries");
    for (i, &format) in formats.iter().enumerate() {
        let shapes: Vec<_> = SHAPES
            .into_iter()
            .filter(|&(r, c)| format.storage(r, c).is_ok())
            .collect();
        assert!(!shapes.is_empty(), "{}: no test shape fits", format.name());
        for (j, &(rows, cols)) in shapes.iter().enumerate() {
            let seed = 1000 + 10 * i as u64 + j as u64;
            check_format(&g, format, rows, cols, seed);
            check_addons(&g, format, rows, cols, seed);
        }
    }
}
