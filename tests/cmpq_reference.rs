//! CMPQ's pipeline (quant::cmpq_fit: column-major sources, parallel phases, cached fits and
//! error lists, a threshold selection, tiled packing) gives the very bytes of a plain serial
//! transcription of the method (docs/methods.md §3) and of the format (src/format/cmpq.rs):
//! each column gathered from the row-major weights, every error ranked by a full sort, every
//! re-fit made afresh, the codes packed through `format::pack_codes`. Anything that reorders,
//! caches or parallelises that work has to keep these bytes.

use crate::rng;
use rng::Rng;

use half::f16;
use quantlab::format::pack_codes;
use quantlab::quant::cmpq::{self, Class, CmpqOptions, FitCache};
use quantlab::quant::cmpq_alloc::allocate;

/// The method and the format written out directly, one column and one weight at a time.
fn reference(w: &[f32], rows: usize, cols: usize, a: &[f32], o: &CmpqOptions) -> Vec<u8> {
    let n_f16 = ((o.outlier_cols as f64) * cols as f64).round() as usize;
    let n_sparse = ((o.outlier_sparse as f64) * (rows * cols) as f64).round() as usize;
    let n_sparse = n_sparse.min(rows * (cols - n_f16));
    let alloc = allocate(o.budget as f64, rows, cols, n_f16, n_sparse).unwrap();
    let class = cmpq::classes(a, &alloc, o.act_alloc);
    let bits = |j: usize| alloc.lo + (class[j] == Class::Hi) as u8;
    let column = |j: usize, out: &[usize]| -> Vec<f32> {
        (0..rows)
            .filter(|r| !out.contains(r))
            .map(|r| w[r * cols + j])
            .collect()
    };
    let code_cols: Vec<usize> = (0..cols).filter(|&j| class[j] != Class::F16).collect();
    let mut levels: Vec<Vec<f32>> = vec![Vec::new(); cols];
    for &j in &code_cols {
        levels[j] = cmpq::fit_levels(&column(j, &[]), bits(j), o.kmeans);
    }
    // Extraction B: every code-column error, ranked by one sort (ties to the lower index).
    let mut err = Vec::new();
    for &j in &code_cols {
        for r in 0..rows {
            let x = w[r * cols + j];
            let q = levels[j][cmpq::nearest(&levels[j], x) as usize];
            err.push(((x - q).abs() * a[j], r * cols + j));
        }
    }
    err.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    let mut pos: Vec<usize> = err[..n_sparse].iter().map(|e| e.1).collect();
    pos.sort_unstable();
    for &j in &code_cols {
        let out: Vec<usize> = pos
            .iter()
            .filter(|&&i| i % cols == j)
            .map(|&i| i / cols)
            .collect();
        if !out.is_empty() {
            levels[j] = cmpq::fit_levels(&column(j, &out), bits(j), o.kmeans);
        }
    }

    let pad = |d: &mut Vec<u8>| d.resize(d.len().div_ceil(4) * 4, 0);
    let half = |v: f32| f16::from_f32(v).to_le_bytes();
    let order = [Class::Lo, Class::Hi, Class::F16];
    let mut data = Vec::new();
    let mut seen = [0usize; 3];
    for &c in &class {
        let k = order.iter().position(|&o| o == c).unwrap();
        data.extend_from_slice(&(((k << 14) | seen[k]) as u16).to_le_bytes());
        seen[k] += 1;
    }
    pad(&mut data);
    let members: Vec<Vec<usize>> = order
        .iter()
        .map(|&c| (0..cols).filter(|&j| class[j] == c).collect())
        .collect();
    for m in &members[..2] {
        m.iter()
            .for_each(|&j| levels[j].iter().for_each(|&v| data.extend(half(v))));
    }
    for (m, b) in members.iter().zip([alloc.lo, alloc.lo + 1]) {
        let matrix: Vec<u8> = (0..rows)
            .flat_map(|r| m.iter().map(move |&j| (r, j)))
            .map(|(r, j)| cmpq::nearest(&levels[j], w[r * cols + j]))
            .collect();
        data.extend(pack_codes(&matrix, b));
    }
    for r in 0..rows {
        members[2]
            .iter()
            .for_each(|&j| data.extend(half(w[r * cols + j])));
    }
    pad(&mut data);
    pos.iter()
        .for_each(|&i| data.extend((i as u32).to_le_bytes()));
    pos.iter().for_each(|&i| data.extend(half(w[i])));
    pad(&mut data);
    data
}

#[test]
fn pipeline_bytes_equal_a_plain_serial_transcription() {
    let mut r = Rng(2410);
    // Shapes with more rows than a packing tile and not a multiple of it; one on a coarse grid
    // (many equal errors, so the ties of the selection matter).
    for (rows, cols, grid) in [(130, 48, false), (77, 96, true), (200, 64, false)] {
        let w: Vec<f32> = (0..rows * cols)
            .map(|_| {
                let x = r.normal() * 0.05;
                if grid {
                    (x * 64.0).round() / 64.0
                } else {
                    x
                }
            })
            .collect();
        let mut a: Vec<f32> = (0..cols)
            .map(|_| 0.5 + r.next().abs() * [1.0, 40.0][r.next_u32().is_multiple_of(8) as usize])
            .collect();
        a[3] = a[4]; // equal magnitudes: the class order's ties
        for (kmeans, act_alloc) in [(true, true), (false, false)] {
            let mut cache = FitCache::default();
            // A walk of the slider and the outlier fractions on one cache, as the page does.
            for (budget, sparse) in [(3.5, 0.01), (3.55, 0.01), (4.0, 0.01), (3.55, 0.02)] {
                let o = CmpqOptions {
                    budget,
                    outlier_cols: 0.05,
                    outlier_sparse: sparse,
                    kmeans,
                    act_alloc,
                    ..CmpqOptions::default()
                };
                let want = reference(&w, rows, cols, &a, &o);
                let cached =
                    cmpq::quantize_cached(&w, rows, cols, &a, &o, "t", &mut cache).unwrap();
                let fresh = cmpq::quantize(&w, rows, cols, &a, &o, "t").unwrap();
                let what =
                    format!("{rows}×{cols} at {budget} bits, sparse {sparse}, k-means {kmeans}");
                assert_eq!(fresh.data, want, "fresh, {what}");
                assert_eq!(cached.data, want, "cached, {what}");
                assert!(
                    fresh.addons.outliers > 0,
                    "{what}: no sparse outliers to test"
                );
            }
        }
    }
}
