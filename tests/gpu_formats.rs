//! The GPU decoders of the formats beyond plain f32/f16/int (issue 3's hooks): learned
//! codebooks (per row, per column), NF4 and FP4, the remaining ggml block types, and add-ons
//! (sparse f16 outliers, LoRC low-rank factors) on top of any base format. Each GPU product is
//! checked against the CPU reference backend, which expands the same stored tensor with the
//! format table (`QTensor::dequantize`) and multiplies in f32. Seeded data, odd sizes, natively
//! on whatever adapter wgpu finds (Mesa lavapipe without a GPU).

use crate::gpu_check;
use crate::rng;
use gpu_check::{act, close, gpu, read};
use rng::Rng;

use half::f16;
use quantlab::format::ggml::GgmlType;
use quantlab::format::{
    pack_codes, storage_with, AddOns, Codebook, Format, Granularity, IntSpec, LowRankSpec, QTensor,
};
use quantlab::gpu::{Gpu, MatmulVariant};
use quantlab::model::backend::Backend;
use quantlab::model::cpu::Cpu;

/// Matrix products: f32 sums in another order than SGEMM; error relative to the output's
/// largest magnitude (as tests/gpu_kernels.rs).
const MATMUL_TOL: f32 = 1e-5;
/// Products with add-ons: the base product, the outlier correction and `Û(V̂x)` are summed in
/// three passes instead of one dot product with the expanded weight.
const ADDON_TOL: f32 = 2e-5;

/// GPU `linear` (every kernel variant) against the CPU on the same stored tensor.
fn check_linear(g: &Gpu, w: &QTensor, bias: bool, seed: u64, tol: f32) -> usize {
    let mut r = Rng(seed);
    let m = 37;
    let x = r.vec(m * w.cols);
    let b = bias.then(|| r.vec(w.rows));
    let cm = Cpu.load_matrix(w, b.as_deref()).unwrap();
    let want = Cpu.linear(&act(m, w.cols, x.clone()), &cm);
    let held0 = g.weight_bytes_held();
    let gm = g.load_matrix(w, b.as_deref()).unwrap();
    assert_eq!(g.weight_bytes_held() - held0, gm.bytes as u64);
    // GPU memory of a weight in one buffer is the format table's total (plus the f32 bias);
    // a split one repeats what its parts share (split.rs), so it holds at least that.
    let table = storage_with(w.format, w.addons, w.rows, w.cols)
        .unwrap()
        .total()
        + b.as_ref().map_or(0, |b| 4 * b.len());
    if gm.parts() == 1 {
        assert_eq!(gm.bytes, table);
    } else {
        assert!(gm.bytes >= table, "{} < {table}", gm.bytes);
    }
    let gx = g.upload_act(m, w.cols, &x).unwrap();
    for tile in MatmulVariant::ALL {
        g.force_matmul(Some(tile));
        let got = g.linear(&gx, &gm);
        assert_eq!((got.rows, got.cols), (m, w.rows));
        let got = read(g, &got);
        close(
            &got,
            &want.data,
            tol,
            &format!("{} {:?} tile {}", w.format.name(), w.addons, tile.name()),
        );
    }
    g.force_matmul(None);
    gm.parts()
}

/// A codebook tensor with random codes and tables (levels or scales in ±`span` around `lo`).
fn codebook_tensor(r: &mut Rng, bits: u8, table: Codebook, rows: usize, cols: usize) -> QTensor {
    let format = Format::Codebook { bits, table };
    let st = format.storage(rows, cols).unwrap();
    let mask = ((1u16 << bits) - 1) as u32;
    let codes: Vec<u8> = (0..rows * cols)
        .map(|_| (r.next_u32() & mask) as u8)
        .collect();
    let mut data = pack_codes(&codes, bits);
    data.extend(r.f16s(st.scales / 2, 0.0, 1.0));
    data.truncate(st.total());
    QTensor::new(format, rows, cols, data).unwrap()
}

/// Random ggml blocks with sane f16 `d`/`m` (random bytes there could be NaN/inf).
fn ggml_tensor(r: &mut Rng, t: GgmlType, rows: usize, cols: usize) -> QTensor {
    let blocks = rows * cols / t.block_size();
    let mut data = Vec::new();
    let d = |r: &mut Rng| f16::from_f32(0.001 + 0.02 * r.next().abs()).to_le_bytes();
    for _ in 0..blocks {
        match t {
            GgmlType::Q4_0 => {
                data.extend(d(r));
                data.extend(r.bytes(16));
            }
            GgmlType::Q5_0 => {
                data.extend(d(r));
                data.extend(r.bytes(20));
            }
            GgmlType::Q5_1 => {
                data.extend(d(r));
                data.extend(f16::from_f32(0.1 * r.next()).to_le_bytes());
                data.extend(r.bytes(20));
            }
            GgmlType::Q4_1 => {
                data.extend(d(r));
                data.extend(f16::from_f32(0.1 * r.next()).to_le_bytes());
                data.extend(r.bytes(16));
            }
            GgmlType::Q8_0 => {
                data.extend(d(r));
                data.extend(r.bytes(32));
            }
            // K-quants: random codes and packed sub-block scales, sane f16 `d` (and `dmin`).
            GgmlType::Q2_K => {
                data.extend(r.bytes(80));
                data.extend(d(r));
                data.extend(d(r));
            }
            GgmlType::Q3_K => {
                data.extend(r.bytes(108));
                data.extend(d(r));
            }
            GgmlType::Q4_K => {
                data.extend(d(r));
                data.extend(d(r));
                data.extend(r.bytes(140));
            }
            GgmlType::Q5_K => {
                data.extend(d(r));
                data.extend(d(r));
                data.extend(r.bytes(172));
            }
            GgmlType::Q6_K => {
                data.extend(r.bytes(208));
                data.extend(d(r));
            }
        }
    }
    QTensor::new(Format::Ggml(t), rows, cols, data).unwrap()
}

#[test]
fn matmul_learned_codebooks_every_width() {
    let g = gpu();
    let mut r = Rng(31);
    // 71 × 96: codes end mid-word and tiles are partial.
    for bits in 1..=8u8 {
        for table in [Codebook::PerRow, Codebook::PerColumn] {
            let w = codebook_tensor(&mut r, bits, table, 71, 96);
            check_linear(&g, &w, bits % 2 == 1, 40 + bits as u64, MATMUL_TOL);
        }
    }
}

#[test]
fn matmul_nf4_fp4_every_granularity() {
    let g = gpu();
    let mut r = Rng(32);
    for gran in [
        Granularity::PerTensor,
        Granularity::PerRow,
        Granularity::Group(32),
        // 12 is not a multiple of 8 codes per word, and groups split vec4 loads.
        Granularity::Group(6),
    ] {
        for table in [Codebook::Nf4(gran), Codebook::Fp4(gran)] {
            let w = codebook_tensor(&mut r, 4, table, 71, 96);
            check_linear(&g, &w, true, 50, MATMUL_TOL);
        }
    }
}

#[test]
fn matmul_ggml_legacy_blocks() {
    let g = gpu();
    let mut r = Rng(33);
    // 71 × 96 = 213 blocks: the 18/22-byte blobs end mid-word.
    for t in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q5_1] {
        let w = ggml_tensor(&mut r, t, 71, 96);
        check_linear(&g, &w, false, 60, MATMUL_TOL);
        check_linear(&g, &w, true, 61, MATMUL_TOL);
        // The embedding gather uses the same fragment.
        let tokens = [3u32, 70, 0, 3];
        let want = Cpu
            .embed(&Cpu.load_matrix(&w, None).unwrap(), &tokens)
            .unwrap();
        let got = g.embed(&g.load_matrix(&w, None).unwrap(), &tokens).unwrap();
        let got = read(&g, &got);
        close(&got, &want.data, MATMUL_TOL, &format!("embed {}", t.name()));
    }
}

fn pad4(mut v: Vec<u8>) -> Vec<u8> {
    v.resize(v.len().div_ceil(4) * 4, 0);
    v
}

/// Add-on bytes (format.rs layout): `outliers` sorted random positions with f16 values, then
/// LoRC factors (f16, or int8 with f16 row scales) of `lowrank`.
fn addon_bytes(
    r: &mut Rng,
    rows: usize,
    cols: usize,
    outliers: usize,
    lowrank: Option<LowRankSpec>,
) -> Vec<u8> {
    let n = rows * cols;
    // Distinct positions, clustered in the first rows so some rows hold several and most none.
    let mut idx: Vec<u32> = (0..outliers * 3)
        .map(|_| r.next_u32() % (n as u32 / 3))
        .collect();
    idx.sort_unstable();
    idx.dedup();
    idx.truncate(outliers);
    assert_eq!(idx.len(), outliers, "not enough distinct outlier positions");
    let mut out: Vec<u8> = idx.iter().flat_map(|i| i.to_le_bytes()).collect();
    out.extend(r.f16s(outliers, 0.0, 4.0));
    if let Some(l) = lowrank {
        let k = l.rank;
        if l.bits8 {
            out.extend(pad4(r.bytes(rows * k)));
            out.extend(r.f16s(rows, 0.0, 0.01));
            out.extend(pad4(r.bytes(k * cols)));
            out.extend(r.f16s(k, 0.0, 0.01));
        } else {
            out.extend(r.f16s(rows * k, 0.0, 0.5));
            out.extend(r.f16s(k * cols, 0.0, 0.5));
        }
    }
    out
}

#[test]
fn matmul_ggml_k_quants() {
    let g = gpu();
    let mut r = Rng(39);
    // 23 rows of 512: two super-blocks per row; 110- and 210-byte blocks end mid-word.
    for t in [
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        let w = ggml_tensor(&mut r, t, 23, 512);
        check_linear(&g, &w, true, 62, MATMUL_TOL);
        let tokens = [22u32, 0, 7, 22];
        let want = Cpu
            .embed(&Cpu.load_matrix(&w, None).unwrap(), &tokens)
            .unwrap();
        let got = g.embed(&g.load_matrix(&w, None).unwrap(), &tokens).unwrap();
        let got = read(&g, &got);
        close(&got, &want.data, MATMUL_TOL, &format!("embed {}", t.name()));
    }
}

#[test]
fn matmul_with_outliers_and_lowrank_on_every_kind_of_base() {
    let g = gpu();
    let mut r = Rng(34);
    let (n, k) = (71, 96);
    let bases = [
        QTensor::from_f32(n, k, &r.vec(n * k)),
        {
            let spec = IntSpec {
                bits: 3,
                gran: Granularity::Group(32),
                sym: false,
            };
            let st = Format::Int(spec).storage(n, k).unwrap();
            let mut data = r.bytes(st.codes);
            data.extend(r.f16s(st.scales / 2, 0.05, 0.02));
            data.extend(r.bytes(st.zeros));
            QTensor::new(Format::Int(spec), n, k, data).unwrap()
        },
        codebook_tensor(&mut r, 4, Codebook::Nf4(Granularity::Group(32)), n, k),
        codebook_tensor(&mut r, 3, Codebook::PerRow, n, k),
        ggml_tensor(&mut r, GgmlType::Q4_0, n, k),
        ggml_tensor(&mut r, GgmlType::Q8_0, n, k),
    ];
    let cases = [
        (37, None),
        // An odd count: the f16 values end mid-word.
        (0, Some((5, false))),
        (0, Some((3, true))),
        (53, Some((8, false))),
        (101, Some((2, true))),
    ];
    for (bi, base) in bases.iter().enumerate() {
        for (ci, &(outliers, lr)) in cases.iter().enumerate() {
            let lowrank = lr.map(|(rank, bits8)| LowRankSpec { rank, bits8 });
            let addons = AddOns { outliers, lowrank };
            let bytes = addon_bytes(&mut r, n, k, outliers, lowrank);
            let w = base.with_extra(addons, &bytes).unwrap();
            // The add-ons must change the product, or this would test nothing.
            assert_ne!(w.dequantize().unwrap(), base.dequantize().unwrap());
            check_linear(&g, &w, ci % 2 == 0, 70 + (bi * 10 + ci) as u64, ADDON_TOL);
        }
    }
}

#[test]
fn addons_are_checked_on_load_and_refused_where_unsupported() {
    let g = gpu();
    let mut r = Rng(35);
    let base = QTensor::from_f32(4, 32, &r.vec(128));
    // Out-of-order outlier indices: the kernel's binary search needs them sorted.
    let mut bytes: Vec<u8> = [9u32, 3].iter().flat_map(|i| i.to_le_bytes()).collect();
    bytes.extend(r.f16s(2, 0.0, 1.0));
    let addons = AddOns {
        outliers: 2,
        lowrank: None,
    };
    let w = QTensor::with_addons(
        Format::F32,
        addons,
        4,
        32,
        [base.data.clone(), bytes].concat(),
    )
    .unwrap();
    let e = g.load_matrix(&w, None).err().expect("unsorted outliers");
    assert!(e.to_string().contains("out of order"), "{e}");
    // An embedding table with add-ons is refused (add-ons are for linear layers).
    let bytes = addon_bytes(&mut r, 4, 32, 3, None);
    let w = base
        .with_extra(
            AddOns {
                outliers: 3,
                lowrank: None,
            },
            &bytes,
        )
        .unwrap();
    let m = g.load_matrix(&w, None).unwrap();
    assert!(g.embed(&m, &[1]).is_err());
}

/// Binding limit forced for the row-contiguous formats: a 71 × 96 f32 weight (27 KB) needs 7
/// parts, the Q8_0 one (7 KB) 2.
const SMALL_BINDING: u64 = 4096;

#[test]
fn weights_past_the_binding_limit_are_split_by_rows() {
    let g = gpu();
    let mut r = Rng(36);
    let (n, k) = (71, 96);
    let int = |r: &mut Rng, spec: IntSpec| {
        let st = Format::Int(spec).storage(n, k).unwrap();
        let mut data = r.bytes(st.codes);
        data.extend(r.f16s(st.scales / 2, 0.05, 0.02));
        data.extend(r.bytes(st.zeros));
        QTensor::new(Format::Int(spec), n, k, data).unwrap()
    };
    let mut weights = vec![
        QTensor::from_f32(n, k, &r.vec(n * k)),
        int(
            &mut r,
            IntSpec {
                bits: 3,
                gran: Granularity::Group(32),
                sym: false,
            },
        ),
        int(
            &mut r,
            IntSpec {
                bits: 5,
                gran: Granularity::PerTensor,
                sym: false,
            },
        ),
        codebook_tensor(&mut r, 4, Codebook::Nf4(Granularity::PerRow), n, k),
        codebook_tensor(&mut r, 6, Codebook::PerRow, n, k),
        codebook_tensor(&mut r, 2, Codebook::PerColumn, n, k),
        ggml_tensor(&mut r, GgmlType::Q8_0, n, k),
    ];
    let q4 = ggml_tensor(&mut r, GgmlType::Q4_0, n, k);
    for (outliers, bits8) in [(40, false), (25, true)] {
        let lowrank = Some(LowRankSpec { rank: 3, bits8 });
        let bytes = addon_bytes(&mut r, n, k, outliers, lowrank);
        weights.push(q4.with_extra(AddOns { outliers, lowrank }, &bytes).unwrap());
    }
    for (i, w) in weights.iter().enumerate() {
        // A third of the weight's bytes: at least three parts.
        let limit = (w.data.len() as u64 / 3).div_ceil(4) * 4;
        g.limit_storage_binding(Some(limit));
        assert_eq!(g.binding_limit(), limit);
        let tol = if w.addons.is_empty() {
            MATMUL_TOL
        } else {
            ADDON_TOL
        };
        let parts = check_linear(&g, w, i % 2 == 0, 90 + i as u64, tol);
        assert!(parts >= 3, "{}: {parts} parts", w.format.name());
    }
    g.limit_storage_binding(Some(SMALL_BINDING));
    // Formats whose rows are contiguous bytes hold exactly the table's total when split.
    for w in [&weights[0], &weights[6]] {
        let m = g.load_matrix(w, None).unwrap();
        assert!(m.parts() > 1);
        assert_eq!(m.bytes, w.data.len(), "{}", w.format.name());
    }
    // The embedding gather from a split table, tokens from every part and repeated.
    let table = &weights[6];
    let tokens: Vec<u32> = (0..20).map(|i| (i * 37 % n) as u32).collect();
    let want = Cpu
        .embed(&Cpu.load_matrix(table, None).unwrap(), &tokens)
        .unwrap();
    let gm = g.load_matrix(table, None).unwrap();
    assert!(gm.parts() > 1);
    let got = g.embed(&gm, &tokens).unwrap();
    let got = read(&g, &got);
    close(&got, &want.data, MATMUL_TOL, "embed from a split table");
    // A single row larger than the limit cannot be split: the error gives both numbers.
    g.limit_storage_binding(Some(256));
    let e = g
        .load_matrix(&weights[0], None)
        .err()
        .expect("a 384-byte row");
    let msg = e.to_string();
    assert!(
        msg.contains("take 384 bytes") && msg.contains("256 bytes"),
        "{msg}"
    );
    g.limit_storage_binding(None);
    assert!(g.binding_limit() > SMALL_BINDING);
}

#[test]
fn a_model_past_the_memory_budget_fails_with_the_numbers() {
    let g = gpu();
    let mut r = Rng(37);
    let w = QTensor::from_f32(71, 96, &r.vec(71 * 96)); // 27264 bytes
    let base = g.weight_bytes_held();
    g.set_memory_budget(Some(base + 30_000));
    let first = g.load_matrix(&w, None).unwrap();
    assert_eq!(g.weight_bytes_held(), base + 27_264);
    let e = g.load_matrix(&w, None).err().expect("over budget");
    let msg = e.to_string();
    assert!(
        msg.contains("27264 bytes on top of")
            && msg.contains(&format!("{} bytes in all", base + 2 * 27_264))
            && msg.contains(&format!("{}-byte budget", base + 30_000)),
        "{msg}"
    );
    // Dropping a weight gives its bytes back.
    drop(first);
    assert_eq!(g.weight_bytes_held(), base);
    let again = g.load_matrix(&w, None).unwrap();
    assert_eq!(again.bytes, 27_264);
    g.set_memory_budget(None);
}

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
);
/// Per-token NLL of the default model, GPU vs CPU, nats (as tests/gpu_model.rs).
const NLL_ABS_TOL: f64 = 1e-3;
/// A binding limit that splits the 30 MB Q8_0 token embedding (also the tied LM head) into
/// four parts and leaves every other weight whole.
const MODEL_BINDING: u64 = 8 << 20;

/// The real default model with its embedding/LM-head table split by rows: the same scores as
/// the CPU, and the same weight memory as unsplit (Q8_0 rows are contiguous blocks).
#[test]
fn default_model_with_a_split_embedding_matches_cpu() {
    use quantlab::io::gguf::Gguf;
    use quantlab::model::net::Model;
    use quantlab::model::weights::ModelWeights;
    let bytes = std::fs::read(MODEL).unwrap_or_else(|e| {
        panic!("{MODEL}: {e}; run scripts/fetch-model.sh to fetch the default model")
    });
    let gg = Gguf::parse("default model", &bytes).expect("parse");
    let w = ModelWeights::from_source(gg.model_config().expect("config"), &gg).expect("weights");
    let g = gpu();
    let whole = {
        let m = Model::load(&g, &w).expect("gpu load");
        assert!(m.matrices().all(|m| m.parts() == 1));
        g.weight_bytes_held()
    };
    assert_eq!(g.weight_bytes_held(), 0, "weights given back on drop");
    g.limit_storage_binding(Some(MODEL_BINDING));
    let gm = Model::load(&g, &w).expect("gpu load, split");
    assert_eq!(gm.head().parts(), 4);
    assert_eq!(gm.matrices().filter(|m| m.parts() > 1).count(), 1);
    assert_eq!(g.weight_bytes_held(), whole);
    let cm = Model::load(&Cpu, &w).expect("cpu load");
    let mut r = Rng(38);
    let toks: Vec<u32> = (0..48).map(|_| r.next_u32() % 49152).collect();
    let targets = &toks[1..];
    let cx = cm.forward(&Cpu, &toks).unwrap();
    let (cs, _) = Cpu.score(&cx, cm.head(), 0, targets, None, false).unwrap();
    let gx = gm.forward(&g, &toks).unwrap();
    let (p, _) = g.score(&gx, gm.head(), 0, targets, None, false).unwrap();
    let gs = pollster::block_on(g.read_scores(p)).unwrap();
    assert_eq!(gs.len(), cs.len());
    let worst = gs
        .iter()
        .zip(&cs)
        .map(|(a, b)| (a.nll - b.nll).abs())
        .fold(0f64, f64::max);
    eprintln!("split embedding: max |Δnll| {worst:e}");
    assert!(worst < NLL_ABS_TOL, "per-token NLL differs by {worst}");
    g.limit_storage_binding(None);
}
