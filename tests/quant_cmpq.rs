//! CMPQ (quant::cmpq, arXiv 2410.13056; docs/methods.md §3) on seeded data: the allocation hits
//! the budget, codebooks reproduce columns with few distinct values exactly, outlier extraction
//! keeps exactly the requested counts, re-clustering lowers the error, ablations do what they
//! say, a corrupted column map is an error rather than a panic, and cached quantization
//! (`FitCache`, `CmpqCache`) gives the same tensors as a fresh one across steps that change
//! widths, sparse outliers, outlier fractions, magnitudes and the source model.

use crate::rng;
use rng::Rng;

use quantlab::format::{Format, QTensor};
use quantlab::model::weights::ModelWeights;
use quantlab::quant::calib::{CalibOptions, Calibration, SiteStats};
use quantlab::quant::cmpq::{self, Ablation, ActStat, Class, CmpqOptions};
use quantlab::quant::cmpq_alloc::{allocate, check_budget, Allocation, BUDGET_TOL};

/// Levels are f16-rounded, and a column of f16 values with ≤ 2^b distinct values maps exactly.
const EXACT_TOL: f32 = 0.0;

/// Heavy-tailed activation magnitudes: mostly around 1, a few channels 10–100× larger.
fn profile(r: &mut Rng, cols: usize) -> Vec<f32> {
    (0..cols)
        .map(|_| {
            let base = 0.5 + r.next().abs();
            if r.next_u32().is_multiple_of(50) {
                base * (10.0 + 90.0 * r.next().abs())
            } else {
                base
            }
        })
        .collect()
}

fn weights(r: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| r.normal() * 0.05).collect()
}

/// The seven linear shapes of SmolLM2-135M (rows × cols).
const SMOL_SHAPES: [(usize, usize); 4] = [(576, 576), (192, 576), (1536, 576), (576, 1536)];

fn budgets() -> impl Iterator<Item = f32> {
    (0..=40).map(|i| 2.0 + 0.05 * i as f32)
}

#[test]
fn budget_slider_is_validated() {
    for b in budgets() {
        check_budget(b).unwrap_or_else(|e| panic!("{b}: {e}"));
    }
    for bad in [1.95, 4.05, 3.02, 2.999, f32::NAN, -3.0] {
        assert!(check_budget(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn allocation_hits_every_budget_on_real_shapes() {
    let mut r = Rng(7);
    for (rows, cols) in SMOL_SHAPES {
        for b in budgets() {
            for _ in 0..3 {
                let n_f16 = (r.next_u32() % 8) as usize;
                let n_sparse = (r.next_u32() as usize) % (rows * cols / 200);
                let a = allocate(b as f64, rows, cols, n_f16, n_sparse)
                    .unwrap_or_else(|e| panic!("{rows}×{cols} at {b}: {e}"));
                assert!(
                    (a.bits - b as f64).abs() <= BUDGET_TOL,
                    "{rows}×{cols} at {b}: {} bits",
                    a.bits
                );
                assert_eq!((a.n_f16, a.n_sparse), (n_f16, n_sparse));
                assert!(a.n_hi + a.n_f16 <= cols);
            }
        }
    }
    // Below what 1-bit codes cost, the allocator says so instead of missing silently.
    assert!(allocate(1.0, 192, 576, 0, 0).is_err());
}

#[test]
fn quantized_tensors_hit_the_budget_on_random_activation_profiles() {
    let mut r = Rng(11);
    for (i, (rows, cols)) in [(192usize, 576usize), (160, 320), (256, 200)]
        .into_iter()
        .enumerate()
    {
        let w = weights(&mut r, rows * cols);
        let a = profile(&mut r, cols);
        for b in [2.0f32, 2.35, 2.5, 3.0, 3.55, 4.0] {
            let opts = CmpqOptions {
                budget: b,
                outlier_cols: [0.0, 0.005, 0.02][i],
                outlier_sparse: [0.0025, 0.0, 0.01][i],
                ..CmpqOptions::default()
            };
            let q = cmpq::quantize(&w, rows, cols, &a, &opts, "t").unwrap();
            let got = q.bits_per_weight();
            assert!(
                (got - b as f64).abs() <= BUDGET_TOL,
                "{rows}×{cols} at {b}: {got} effective bits"
            );
            // The bytes are the format table's (QTensor::with_addons checked them).
            assert_eq!(q.data.len(), q.storage().total());
        }
    }
}

#[test]
fn higher_width_goes_to_the_largest_activations() {
    let mut r = Rng(3);
    let a = profile(&mut r, 300);
    let alloc = allocate(3.0, 200, 300, 4, 0).unwrap();
    let class = cmpq::classes(&a, &alloc, true);
    let min_of = |c: Class| {
        (0..300)
            .filter(|&j| class[j] == c)
            .map(|j| a[j])
            .fold(f32::INFINITY, f32::min)
    };
    let max_of = |c: Class| {
        (0..300)
            .filter(|&j| class[j] == c)
            .map(|j| a[j])
            .fold(0f32, f32::max)
    };
    assert_eq!(class.iter().filter(|&&c| c == Class::F16).count(), 4);
    assert_eq!(
        class.iter().filter(|&&c| c == Class::Hi).count(),
        alloc.n_hi
    );
    assert!(min_of(Class::F16) >= max_of(Class::Hi));
    assert!(min_of(Class::Hi) >= max_of(Class::Lo));
    // Without activation-guided allocation the hi columns are spread over the index range.
    let spread = cmpq::classes(&a, &alloc, false);
    let hi: Vec<usize> = (0..300).filter(|&j| spread[j] == Class::Hi).collect();
    assert_eq!(hi.len(), alloc.n_hi);
    let gaps = hi.windows(2).map(|p| p[1] - p[0]).max().unwrap_or(0);
    let even = 300usize.div_ceil(alloc.n_hi.max(1));
    assert!(gaps <= even + 5, "largest gap {gaps}, even spacing {even}");
}

#[test]
fn columns_with_few_distinct_values_are_exact() {
    let mut r = Rng(5);
    let (rows, cols) = (128, 256);
    // Column j draws from 2^lo values (lo = 2 at a budget of 2.5: see the allocation below),
    // all exact in f16.
    let alloc = allocate(2.5, rows, cols, 0, 0).unwrap();
    let k = 1usize << alloc.lo;
    let mut w = vec![0f32; rows * cols];
    for j in 0..cols {
        let vals: Vec<f32> = (0..k).map(|v| (v as f32 - 1.5 + j as f32) / 64.0).collect();
        for row in 0..rows {
            w[row * cols + j] = vals[r.next_u32() as usize % k];
        }
    }
    let a = profile(&mut r, cols);
    let opts = CmpqOptions {
        budget: 2.5,
        outlier_cols: 0.0,
        outlier_sparse: 0.0,
        ..CmpqOptions::default()
    };
    let q = cmpq::quantize(&w, rows, cols, &a, &opts, "t").unwrap();
    assert_eq!(
        q.format,
        Allocation {
            lo: alloc.lo,
            n_hi: alloc.n_hi,
            n_f16: 0,
            n_sparse: 0,
            bits: 0.0
        }
        .format()
    );
    let d = q.dequantize().unwrap();
    let worst = d
        .iter()
        .zip(&w)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst <= EXACT_TOL, "max error {worst}");
}

fn weighted_err(w: &[f32], d: &[f32], a: &[f32]) -> f64 {
    let cols = a.len();
    w.iter()
        .zip(d)
        .enumerate()
        .map(|(i, (x, y))| ((x - y) * a[i % cols]) as f64)
        .map(|e| e * e)
        .sum()
}

#[test]
fn outlier_extraction_keeps_exactly_the_requested_counts() {
    let mut r = Rng(9);
    let (rows, cols) = (200, 400);
    let w = weights(&mut r, rows * cols);
    let a = profile(&mut r, cols);
    let opts = CmpqOptions {
        budget: 3.0,
        outlier_cols: 0.01,
        outlier_sparse: 0.004,
        ..CmpqOptions::default()
    };
    let q = cmpq::quantize(&w, rows, cols, &a, &opts, "t").unwrap();
    let Format::Cmpq { n_f16, .. } = q.format else {
        panic!("format {}", q.format.name())
    };
    assert_eq!(n_f16, 4); // round(0.01 · 400)
    assert_eq!(q.addons.outliers, 320); // round(0.004 · 200 · 400)
    let d = q.dequantize().unwrap();
    // The f16 columns are the four largest a_j, stored exactly (to f16).
    let mut order: Vec<usize> = (0..cols).collect();
    order.sort_by(|&x, &y| a[y].total_cmp(&a[x]));
    for &j in &order[..4] {
        for row in 0..rows {
            let want = half::f16::from_f32(w[row * cols + j]).to_f32();
            assert_eq!(d[row * cols + j], want, "f16 column {j} row {row}");
        }
    }
    // At least the sparse outliers are exact too, and the extraction lowers the
    // activation-weighted error against the same setting without it.
    let exact = d
        .iter()
        .zip(&w)
        .filter(|(x, y)| **x == half::f16::from_f32(**y).to_f32())
        .count();
    assert!(exact >= 320 + 4 * rows, "{exact} exact weights");
    let without = cmpq::quantize(
        &w,
        rows,
        cols,
        &a,
        &opts.ablate(Ablation::NoOutlierSparse),
        "t",
    )
    .unwrap();
    assert_eq!(without.addons.outliers, 0);
    let (e_with, e_without) = (
        weighted_err(&w, &d, &a),
        weighted_err(&w, &without.dequantize().unwrap(), &a),
    );
    assert!(e_with < e_without, "with B {e_with}, without {e_without}");
}

#[test]
fn kmeans_beats_uniform_grids_and_more_bits_beat_fewer() {
    let mut r = Rng(13);
    let (rows, cols) = (192, 384);
    let w = weights(&mut r, rows * cols);
    let a = profile(&mut r, cols);
    let err = |o: CmpqOptions| {
        let q = cmpq::quantize(&w, rows, cols, &a, &o, "t").unwrap();
        weighted_err(&w, &q.dequantize().unwrap(), &a)
    };
    let base = CmpqOptions::default();
    let full = err(base);
    let alloc_only = err(base.ablate(Ablation::AllocationOnly));
    let books_only = err(base.ablate(Ablation::CodebooksOnly));
    assert!(
        full < alloc_only,
        "full {full} vs allocation only {alloc_only}"
    );
    assert!(
        full < books_only,
        "full {full} vs codebooks only {books_only}"
    );
    let at = |b: f32| err(CmpqOptions { budget: b, ..base });
    let (e25, e30, e35) = (at(2.5), at(3.0), at(3.5));
    assert!(e25 > e30 && e30 > e35, "{e25} {e30} {e35}");
}

#[test]
fn options_are_validated() {
    let bad = [
        CmpqOptions {
            budget: 3.01,
            ..CmpqOptions::default()
        },
        CmpqOptions {
            outlier_cols: 0.5,
            ..CmpqOptions::default()
        },
        CmpqOptions {
            outlier_sparse: -0.1,
            ..CmpqOptions::default()
        },
    ];
    let w = vec![0.01f32; 64 * 64];
    for o in bad {
        assert!(o.validate().is_err(), "{o:?}");
        assert!(cmpq::quantize(&w, 64, 64, &[1.0; 64], &o, "t").is_err());
    }
    // Activation magnitudes must match the columns and be finite.
    let o = CmpqOptions::default();
    assert!(cmpq::quantize(&w, 64, 64, &[1.0; 63], &o, "t").is_err());
    let mut a = vec![1.0f32; 64];
    a[3] = f32::NAN;
    assert!(cmpq::quantize(&w, 64, 64, &a, &o, "t").is_err());
}

#[test]
fn corrupted_map_is_an_error_not_a_panic() {
    let mut r = Rng(17);
    let (rows, cols) = (96, 256);
    let w = weights(&mut r, rows * cols);
    let a = profile(&mut r, cols);
    let q = cmpq::quantize(&w, rows, cols, &a, &CmpqOptions::default(), "t").unwrap();
    for (entry, value) in [(0usize, 0xffffu16), (5, 0x3fff), (7, 0x8000 | 0x3000)] {
        let mut data = q.data.clone();
        data[2 * entry..2 * entry + 2].copy_from_slice(&value.to_le_bytes());
        let bad = QTensor::with_addons(q.format, q.addons, rows, cols, data).unwrap();
        assert!(bad.dequantize().is_err(), "entry {entry} = {value:#x}");
    }
    // A blob of the wrong length is refused by the table.
    assert!(QTensor::new(q.format, rows, cols, vec![0; 16]).is_err());
}

#[test]
fn cached_fits_give_the_same_tensor_as_a_fresh_quantization() {
    let mut r = Rng(23);
    let (rows, cols) = (192, 320);
    let w = weights(&mut r, rows * cols);
    let a = profile(&mut r, cols);
    let mut cache = cmpq::FitCache::default();
    let mut sizes = Vec::new();
    for (b, kmeans) in [
        (3.0, true),
        (3.05, true),
        (3.0, true),
        (2.5, false),
        (3.05, true),
    ] {
        let o = CmpqOptions {
            budget: b,
            kmeans,
            ..CmpqOptions::default()
        };
        let cached = cmpq::quantize_cached(&w, rows, cols, &a, &o, "t", &mut cache).unwrap();
        let fresh = cmpq::quantize(&w, rows, cols, &a, &o, "t").unwrap();
        assert_eq!(cached, fresh, "budget {b} kmeans {kmeans}");
        sizes.push(cache.len());
    }
    // A step to a budget seen before fits nothing new beyond its outlier re-fits.
    assert!(sizes[2] <= sizes[1], "{sizes:?}");
}

#[test]
fn config_round_trips_through_a_share_link_and_checks_the_budget() {
    use quantlab::quant::config::{Method, QuantConfig};
    let c = QuantConfig {
        method: Method::Cmpq(CmpqOptions {
            budget: 2.75,
            outlier_cols: 0.01,
            ..CmpqOptions::default()
        }),
        ..QuantConfig::default()
    };
    assert!(c.method.needs_calibration());
    assert_eq!(QuantConfig::from_url(&c.to_url()).unwrap(), c);
    let bad = c.to_json().replace("2.75", "2.77");
    assert!(QuantConfig::from_json(&bad).is_err(), "{bad}");
}

/// A two-layer Llama-shaped model (d = 256, FFN 512, 4 heads of 64, 4 KV heads) with
/// `weights(seed)` everywhere, large enough that every linear can hit a budget within
/// `BUDGET_TOL`, and statistics with heavy-tailed magnitudes for every site.
fn cmpq_model(seed: u64) -> (ModelWeights, Calibration) {
    use quantlab::model::config::{ModelConfig, RopeStyle};
    let (d, ffn) = (256usize, 512usize);
    let config = ModelConfig {
        arch: "llama".into(),
        n_layer: 2,
        dim: d,
        ffn_dim: ffn,
        n_head: 4,
        n_kv_head: 4,
        head_dim: 64,
        vocab: 32,
        rope_theta: 10_000.0,
        rope_style: RopeStyle::Interleaved,
        norm_eps: 1e-5,
        max_ctx: 128,
        tied_embeddings: true,
        proj_dim: None,
        post_norm: false,
    };
    let mut r = Rng(seed);
    let model = ModelWeights::from_fn(config, &mut |name, rows, cols| {
        if name.contains("norm") {
            vec![1.0; cols]
        } else {
            weights(&mut r, rows * cols)
        }
    })
    .unwrap();
    let mut r = Rng(seed + 1000);
    // Layer 0 heavy-tailed (sparse outliers gather in a few columns), layer 1 mild (they spread
    // over many columns, so a width step also moves some of them).
    let stats = |r: &mut Rng, dim: usize, heavy: bool| {
        let mean_abs = if heavy {
            profile(r, dim)
        } else {
            (0..dim).map(|_| 0.5 + r.next().abs()).collect()
        };
        SiteStats {
            dim,
            rows: 100,
            gram: vec![0.0; dim * dim],
            max_abs: mean_abs.iter().map(|x| 4.0 * x).collect(),
            l2: mean_abs.iter().map(|x| 10.0 * x).collect(),
            mean_abs,
            samples: Vec::new(),
            pos_max: Vec::new(),
            pos_min: Vec::new(),
        }
    };
    let layers = (0..2usize)
        .map(|l| {
            let h = l == 0;
            vec![
                stats(&mut r, d, h),
                stats(&mut r, d, h),
                stats(&mut r, d, h),
                stats(&mut r, ffn, h),
            ]
        })
        .collect();
    let calib = Calibration {
        opts: CalibOptions::default(),
        range: 0..0,
        layers,
        seqs: Vec::new(),
    };
    (model, calib)
}

/// Flat indices of a CMPQ tensor's sparse outliers (the add-on's leading u32 indices).
fn outlier_positions(q: &QTensor) -> Vec<u32> {
    let st = q.storage();
    let tail = &q.data[q.data.len() - st.outliers..];
    tail.chunks_exact(4)
        .take(q.addons.outliers)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn cached_model_steps_equal_fresh_quantization() {
    use quantlab::quant::cmpq_cache::CmpqCache;
    use quantlab::quant::config::{Method, QuantConfig};
    let (src, calib) = cmpq_model(31);
    // The sites are in topology order: attention input, attention output, FFN input, down.
    assert_eq!(src.topology().site_of(6), 3);
    let cfg = |o: CmpqOptions| QuantConfig {
        method: Method::Cmpq(o),
        ..QuantConfig::default()
    };
    let base = CmpqOptions::default();
    let steps = [
        base,
        CmpqOptions {
            budget: 3.05,
            ..base
        },
        CmpqOptions {
            budget: 3.1,
            outlier_sparse: 0.004,
            ..base
        },
        CmpqOptions {
            budget: 2.5,
            outlier_cols: 0.01,
            outlier_sparse: 0.001,
            ..base
        },
        CmpqOptions {
            budget: 3.05,
            ..base
        },
        CmpqOptions {
            budget: 3.05,
            kmeans: false,
            ..base
        },
        CmpqOptions {
            budget: 3.0,
            act: ActStat::L2,
            ..base
        },
    ];
    let mut cache = CmpqCache::default();
    let mut prev: Option<ModelWeights> = None;
    let mut new_fits = Vec::new();
    for (i, o) in steps.into_iter().enumerate() {
        let c = cfg(o);
        let cached = cache.apply(&c, &src, &calib).unwrap();
        let fresh = c
            .apply_calibrated(&src, Some(&calib), &mut |_, _| true)
            .unwrap();
        for (x, y) in cached.linears().zip(fresh.linears()) {
            assert_eq!(x.name, y.name);
            assert_eq!(x.w, y.w, "step {i} ({o:?}): {}", x.name);
        }
        assert_eq!(cached.token_embd, fresh.token_embd);
        assert_eq!(
            cached.memory().bits_per_weight,
            fresh.memory().bits_per_weight
        );
        if i == 1 {
            // 3.00 → 3.05 moves columns to the wider class AND moves sparse outliers.
            let p = prev.as_ref().unwrap();
            let widths = p
                .linears()
                .zip(cached.linears())
                .filter(|(a, b)| a.w.format != b.w.format);
            assert!(widths.count() > 0, "no width changed");
            let moved = p
                .linears()
                .zip(cached.linears())
                .filter(|(a, b)| outlier_positions(&a.w) != outlier_positions(&b.w))
                .count();
            assert!(moved > 0, "no sparse outlier moved");
            assert!(cached.linears().all(|l| l.w.addons.outliers > 0));
        }
        new_fits.push(cache.times().new_fits);
        prev = Some(cached);
    }
    // The step re-fits a small part of the columns. Plain fits are kept only at the widths the
    // last call used (the cache stays bounded), so returning to 3.05 after 2.5 re-fits the
    // width-4 columns, and repeating the last configuration re-fits none.
    assert!(new_fits[1] * 5 < new_fits[0], "{new_fits:?}");
    assert!(new_fits[4] > 0, "{new_fits:?}");
    let last = cfg(CmpqOptions {
        budget: 3.0,
        act: ActStat::L2,
        ..base
    });
    let held = cache.fits();
    cache.apply(&last, &src, &calib).unwrap();
    assert_eq!(cache.times().new_fits, 0);
    assert_eq!(cache.fits(), held);

    // The wasm mode (one tensor at a time, sources released between calls) gives the same
    // tensors and, on a repeat, re-fits nothing either.
    let mut low = CmpqCache::low_memory();
    for o in [
        base,
        CmpqOptions {
            budget: 2.5,
            ..base
        },
    ] {
        let c = cfg(o);
        let a = low.apply(&c, &src, &calib).unwrap();
        let b = cache.apply(&c, &src, &calib).unwrap();
        for (x, y) in a.linears().zip(b.linears()) {
            assert_eq!(x.w, y.w, "low-memory {o:?}: {}", x.name);
        }
    }
    low.apply(
        &cfg(CmpqOptions {
            budget: 2.5,
            ..base
        }),
        &src,
        &calib,
    )
    .unwrap();
    assert_eq!(low.times().new_fits, 0);

    // Another model (same names and shapes, other weights) and other magnitudes through the
    // same cache: nothing stale is reused.
    let (src2, calib2) = cmpq_model(77);
    for (s, c) in [(&src2, &calib), (&src2, &calib2), (&src, &calib2)] {
        let q = cfg(base);
        let cached = cache.apply(&q, s, c).unwrap();
        let fresh = q.apply_calibrated(s, Some(c), &mut |_, _| true).unwrap();
        for (x, y) in cached.linears().zip(fresh.linears()) {
            assert_eq!(x.w, y.w, "{}", x.name);
        }
    }
}

#[test]
fn cached_single_tensor_follows_outlier_fractions_and_magnitudes() {
    let mut r = Rng(29);
    let (rows, cols) = (256, 384);
    let w = weights(&mut r, rows * cols);
    let a1 = profile(&mut r, cols);
    let a2 = profile(&mut r, cols);
    let mut cache = cmpq::FitCache::default();
    for (b, cols_f, sparse, a) in [
        (3.0, 0.005, 0.0025, &a1),
        (3.05, 0.005, 0.0025, &a1),
        (3.05, 0.005, 0.01, &a1),
        (3.05, 0.02, 0.01, &a1),
        (3.05, 0.02, 0.01, &a2),
        (3.5, 0.0, 0.03, &a2),
    ] {
        let o = CmpqOptions {
            budget: b,
            outlier_cols: cols_f,
            outlier_sparse: sparse,
            ..CmpqOptions::default()
        };
        let cached = cmpq::quantize_cached(&w, rows, cols, a, &o, "t", &mut cache).unwrap();
        let fresh = cmpq::quantize(&w, rows, cols, a, &o, "t").unwrap();
        assert_eq!(cached, fresh, "{o:?}");
    }
}

#[test]
fn a_cancelled_apply_stops_between_tensors_and_leaves_the_cache_usable() {
    use quantlab::quant::cmpq_cache::CmpqCache;
    use quantlab::quant::config::{Method, QuantConfig};
    use quantlab::Error;
    let (src, calib) = cmpq_model(3);
    let cfg = QuantConfig {
        method: Method::Cmpq(CmpqOptions {
            budget: 2.5,
            ..CmpqOptions::default()
        }),
        ..QuantConfig::default()
    };
    // Low-memory mode (as in wasm) reports every tensor: stop after the third.
    let mut cache = CmpqCache::low_memory();
    let mut calls = Vec::new();
    let r = cache.apply_with(&cfg, &src, &calib, &mut |done, total| {
        calls.push((done, total));
        done < 3
    });
    assert!(matches!(r, Err(Error::Cancelled)), "{:?}", r.err());
    let total = src.linears().count();
    assert_eq!(calls, (0..=3).map(|d| (d, total)).collect::<Vec<_>>());
    // The fits made before the stop are kept and the next call gives the fresh result.
    assert!(cache.fits() > 0);
    let mut seen = Vec::new();
    let cached = cache
        .apply_with(&cfg, &src, &calib, &mut |d, _| {
            seen.push(d);
            true
        })
        .unwrap();
    assert_eq!(seen, (0..=total).collect::<Vec<_>>());
    let fresh = cfg
        .apply_calibrated(&src, Some(&calib), &mut |_, _| true)
        .unwrap();
    for (x, y) in cached.linears().zip(fresh.linears()) {
        assert_eq!(x.w, y.w, "{}", x.name);
    }
    // Natively the whole model is one part: progress at the start and at the end.
    let mut native = CmpqCache::default();
    let mut ends = Vec::new();
    native
        .apply_with(&cfg, &src, &calib, &mut |d, t| {
            ends.push((d, t));
            true
        })
        .unwrap();
    assert_eq!(ends, vec![(0, total), (total, total)]);
}

/// `cmpq::nearest` (a branch-free count since session 14) against the binary search it
/// replaced, code for code, on sorted levels with duplicates and exact ties; and its level is
/// always at the smallest distance.
#[test]
fn nearest_equals_the_binary_search_and_is_closest() {
    let search = |levels: &[f32], x: f32| -> usize {
        let i = levels.partition_point(|&l| l < x);
        if i == 0 {
            0
        } else if i == levels.len() {
            levels.len() - 1
        } else if x - levels[i - 1] <= levels[i] - x {
            i - 1
        } else {
            i
        }
    };
    let mut r = Rng(5);
    for k in [2usize, 4, 8, 16] {
        for trial in 0..50 {
            let mut levels: Vec<f32> = (0..k).map(|_| (r.next() * 8.0).round() / 4.0).collect();
            if trial % 3 == 0 {
                levels[k / 2] = levels[k / 2 - 1];
            }
            levels.sort_by(f32::total_cmp);
            for i in 0..200 {
                // Half the points on the eighth grid: exact ties between levels.
                let x = if i % 2 == 0 {
                    (r.next() * 24.0).round() / 8.0
                } else {
                    r.next() * 3.0
                };
                let got = cmpq::nearest(&levels, x) as usize;
                assert_eq!(got, search(&levels, x), "x {x} levels {levels:?}");
                let best = levels
                    .iter()
                    .map(|l| (x - l).abs())
                    .fold(f32::INFINITY, f32::min);
                assert_eq!((x - levels[got]).abs(), best, "x {x} levels {levels:?}");
            }
        }
    }
}
