//! What the page's pictures draw, computed from a session: the layer map (bits and error per
//! layer and tensor), the histogram of one weight tensor with its quantized values, the
//! per-channel activation magnitudes calibration saw, and (CMPQ, arXiv 2410.13056 as restated
//! in docs/methods.md §3) the per-channel map of one tensor: each input column's width and
//! sparse outliers against its activation magnitude. Plain serde data; no drawing here.

use crate::format::{Format, QTensor, Storage, MAX_CMPQ_COLS};
use crate::model::weights::{Linear, ModelWeights};
use crate::playground::session::Session;
use crate::quant::calib::{CalibFrom, CalibOptions};
use crate::quant::cmpq::ActStat;
use crate::quant::config::Method;
use crate::{Error, Result};
use serde::Serialize;

/// Most histogram bins accepted.
pub const MAX_BINS: usize = 512;
/// Most quantization levels listed for one row (a per-row grid has at most 2^8).
pub const MAX_LEVELS: usize = 256;

/// One block linear in the layer map.
#[derive(Clone, Debug, Serialize)]
pub struct TensorCell {
    pub layer: usize,
    /// Index into `LayerMap::kinds` (the topology's linears).
    pub kind: usize,
    pub name: String,
    pub format: String,
    pub bits_per_weight: f64,
    pub storage: Storage,
    /// `‖W − Ŵ‖² / ‖W‖²` against the weights as loaded; 0 when kept as loaded.
    pub rel_error: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LayerMap {
    pub kinds: Vec<&'static str>,
    pub n_layer: usize,
    pub cells: Vec<TensorCell>,
}

fn rel_error(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let d = (x - y) as f64;
        num += d * d;
        den += (x as f64) * (x as f64);
    }
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
}

/// The current model's block linears against the loaded ones.
pub fn layer_map(s: &Session) -> Result<LayerMap> {
    let src = s.source();
    let cur = s.quantized_weights()?.unwrap_or(src);
    let topo = src.topology();
    let kinds: Vec<&'static str> = topo.linears.iter().map(|l| l.name).collect();
    let mut cells = Vec::with_capacity(src.layers.len() * kinds.len());
    for (li, (a, b)) in src.layers.iter().zip(&cur.layers).enumerate() {
        for (k, (la, lb)) in a.linears().iter().zip(b.linears()).enumerate() {
            let err = if std::ptr::eq(src, cur) || la.w == lb.w {
                0.0
            } else {
                rel_error(&la.w.dequantize()?, &lb.w.dequantize()?)
            };
            cells.push(TensorCell {
                layer: li,
                kind: k,
                name: lb.name.clone(),
                format: lb.w.format.name(),
                bits_per_weight: lb.w.bits_per_weight(),
                storage: lb.w.storage(),
                rel_error: err,
            });
        }
    }
    Ok(LayerMap {
        kinds,
        n_layer: src.layers.len(),
        cells,
    })
}

/// A weight tensor's values as loaded and as quantized, binned alike.
#[derive(Clone, Debug, Serialize)]
pub struct Histogram {
    pub name: String,
    /// `bins + 1` edges.
    pub edges: Vec<f32>,
    pub loaded: Vec<u32>,
    /// The quantized values on the same bins: spikes at the quantization levels.
    pub quantized: Vec<u32>,
    /// The distinct quantized values of row `row` (the levels one row's weights can take).
    pub row: usize,
    pub row_levels: Vec<f32>,
    /// Row `row` alone, as loaded and as quantized, on the same bins: what the Row field picks
    /// out of the whole tensor's histogram.
    pub row_loaded: Vec<u32>,
    pub row_quantized: Vec<u32>,
    /// Weights outside the range their row's quantized values span (clipped), and weights the
    /// format keeps exactly as sparse outliers.
    pub clipped: usize,
    pub outliers: usize,
}

fn find<'a>(w: &'a ModelWeights, name: &str) -> Result<&'a Linear> {
    w.linears()
        .find(|l| l.name == name)
        .ok_or_else(|| Error::config("tensor", format!("no block linear named \"{name}\"")))
}

fn bin_counts(values: &[f32], lo: f32, width: f32, bins: usize) -> Vec<u32> {
    let mut counts = vec![0u32; bins];
    for &v in values {
        let i = ((v - lo) / width).floor();
        let i = if i.is_finite() && i > 0.0 {
            (i as usize).min(bins - 1)
        } else {
            0
        };
        counts[i] += 1;
    }
    counts
}

/// Histogram of tensor `name` in `bins` bins; levels of row `row`.
pub fn histogram(s: &Session, name: &str, bins: usize, row: usize) -> Result<Histogram> {
    if !(2..=MAX_BINS).contains(&bins) {
        return Err(Error::config(
            "bins",
            format!("{bins} is outside 2..={MAX_BINS}"),
        ));
    }
    let la = find(s.source(), name)?;
    let lb = match s.quantized_weights()? {
        Some(q) => find(q, name)?,
        None => la,
    };
    if row >= la.w.rows {
        return Err(Error::config(
            "row",
            format!("{row} is past the last row {} of {name}", la.w.rows - 1),
        ));
    }
    let a = la.w.dequantize()?;
    let b = lb.w.dequantize()?;
    let (lo, hi) = a
        .iter()
        .chain(&b)
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let (lo, hi) = if lo < hi {
        (lo, hi)
    } else {
        (lo - 1.0, lo + 1.0)
    };
    let width = (hi - lo) / bins as f32;
    let edges = (0..=bins).map(|i| lo + width * i as f32).collect();
    let cols = la.w.cols;
    let mut clipped = 0;
    for r in 0..la.w.rows {
        let (ra, rb) = (&a[r * cols..(r + 1) * cols], &b[r * cols..(r + 1) * cols]);
        let (qlo, qhi) = rb
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        clipped += ra.iter().filter(|&&v| v < qlo || v > qhi).count();
    }
    let (row_a, row_b) = (
        &a[row * cols..(row + 1) * cols],
        &b[row * cols..(row + 1) * cols],
    );
    let mut levels: Vec<f32> = row_b.to_vec();
    levels.sort_by(f32::total_cmp);
    levels.dedup();
    levels.truncate(MAX_LEVELS);
    Ok(Histogram {
        name: name.to_string(),
        edges,
        loaded: bin_counts(&a, lo, width, bins),
        quantized: bin_counts(&b, lo, width, bins),
        row,
        row_levels: levels,
        row_loaded: bin_counts(row_a, lo, width, bins),
        row_quantized: bin_counts(row_b, lo, width, bins),
        clipped,
        outliers: lb.w.addons.outliers,
    })
}

/// Per-channel input magnitudes of one layer's linears, from calibration.
#[derive(Clone, Debug, Serialize)]
pub struct Activations {
    pub layer: usize,
    /// "attn_in", "attn_out", "ffn_in", "down_in".
    pub sites: Vec<SiteMagnitudes>,
    /// Tokens the statistics came from.
    pub tokens: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct SiteMagnitudes {
    pub site: &'static str,
    pub mean_abs: Vec<f32>,
    pub max_abs: Vec<f32>,
    /// `max|x_j| / s_j` under the current config's scale transform (SmoothQuant, AWQ, AQAS),
    /// when it scaled this site: the ranges the activation quantizer sees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smoothed_max_abs: Option<Vec<f32>>,
    /// The α the transform chose for this site of this layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f32>,
}

/// Longest sequence a quick activation probe runs (when no calibration exists yet).
pub const PROBE_TOKENS: usize = 256;

/// Activation magnitudes of `layer`: from the session's calibration, or from a quick one over
/// at most `PROBE_TOKENS` tokens of `text` when there is none.
pub fn activations(s: &mut Session, text: &str, layer: usize) -> Result<Activations> {
    if s.calibration().is_none() {
        let tokens = s.tokenize(text)?;
        let len = tokens.len().min(PROBE_TOKENS);
        if len < 2 {
            return Err(Error::config(
                "text",
                "too short to observe activations (fewer than 2 tokens)",
            ));
        }
        let opts = CalibOptions {
            n_seq: 1,
            seq_len: len,
            from: CalibFrom::Offset(0),
        };
        s.calibrate(&tokens, &opts, &mut |_, _| true)?;
    }
    let c = s
        .calibration()
        .ok_or_else(|| Error::config("calibration", "none available"))?;
    let mut sites = Vec::new();
    for (site, spec) in s.source().topology().sites.iter().enumerate() {
        let st = c.site(layer, site)?;
        let scales = s
            .smooth_report()
            .and_then(|r| r.scales.get(layer))
            .and_then(|l| l.get(site))
            .filter(|v| v.len() == st.dim);
        sites.push(SiteMagnitudes {
            site: spec.name,
            mean_abs: st.mean_abs.clone(),
            max_abs: st.max_abs.clone(),
            smoothed_max_abs: scales
                .map(|v| st.max_abs.iter().zip(v).map(|(m, f)| m / f).collect()),
            alpha: s
                .smooth_report()
                .and_then(|r| r.alpha.get(layer))
                .and_then(|l| l.get(site).copied().flatten()),
        });
    }
    Ok(Activations {
        layer,
        sites,
        tokens: c.range.len(),
    })
}

/// The width the per-channel map gives a column kept in f16 (outlier extraction A).
pub const F16_COLUMN_BITS: u8 = 16;

/// One CMPQ tensor, column by column (the per-channel map).
#[derive(Clone, Debug, Serialize)]
pub struct ChannelMap {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    /// The narrower code width; the wider one is `lo + 1`.
    pub lo: u8,
    /// Per input column: `lo`, `lo + 1`, or `F16_COLUMN_BITS` (kept in f16).
    pub bits: Vec<u8>,
    /// Per input column: how many of its weights are sparse f16 outliers (extraction B).
    pub sparse: Vec<u32>,
    /// Per input column: the magnitude `a_j` the allocation ranked the columns by.
    pub act: Vec<f32>,
    pub act_stat: ActStat,
    pub n_lo: usize,
    pub n_hi: usize,
    pub n_f16: usize,
    pub n_sparse: usize,
    /// The budget asked for and the effective bits this tensor achieved.
    pub budget: f32,
    pub bits_per_weight: f64,
}

/// Each column's width and sparse-outlier count, read from a `Format::Cmpq` tensor's own bytes
/// (its column map and its outlier indices; both are checked, never trusted).
pub fn cmpq_columns(t: &QTensor, name: &str) -> Result<(u8, Vec<u8>, Vec<u32>)> {
    let Format::Cmpq { lo, n_hi, n_f16 } = t.format else {
        return Err(Error::config(
            "tensor",
            format!("{name} is {}, not a CMPQ tensor", t.format.name()),
        ));
    };
    let (rows, cols) = (t.rows, t.cols);
    let counts = [
        cols.saturating_sub(n_hi as usize + n_f16 as usize),
        n_hi as usize,
        n_f16 as usize,
    ];
    let widths = [lo, lo.saturating_add(1), F16_COLUMN_BITS];
    let mut bits = Vec::with_capacity(cols.min(MAX_CMPQ_COLS));
    for c in 0..cols {
        let e = t
            .data
            .get(2 * c..2 * c + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
            .ok_or_else(|| {
                Error::format(
                    name,
                    "cmpq.map",
                    format!("ends before column {c} of {cols}"),
                )
            })?;
        let (class, idx) = (e >> 14, e & (MAX_CMPQ_COLS - 1));
        match (counts.get(class), widths.get(class)) {
            (Some(&n), Some(&w)) if idx < n => bits.push(w),
            _ => {
                return Err(Error::format(
                    name,
                    "cmpq.map",
                    format!(
                        "column {c}: class {class} index {idx} is outside the classes {counts:?}"
                    ),
                ))
            }
        }
    }
    for (class, (&n, &w)) in counts.iter().zip(&widths).enumerate() {
        let got = bits.iter().filter(|&&b| b == w).count();
        if got != n {
            return Err(Error::format(
                name,
                "cmpq.map",
                format!("{got} columns of class {class}, the format says {n}"),
            ));
        }
    }
    // The sparse outliers' row-major indices start the add-on bytes after the base format.
    let base = t.format.storage(rows, cols)?.total();
    let mut sparse = vec![0u32; cols];
    for i in 0..t.addons.outliers {
        let at = base + 4 * i;
        let idx = t
            .data
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .filter(|&x| x < rows * cols)
            .ok_or_else(|| {
                Error::format(
                    name,
                    "outliers",
                    format!(
                        "index {i} of {} is missing or outside {rows}×{cols}",
                        t.addons.outliers
                    ),
                )
            })?;
        sparse[idx % cols] += 1;
    }
    Ok((lo, bits, sparse))
}

/// The per-channel map of tensor `name` in the session's current CMPQ quantization, with the
/// activation magnitudes (of the statistic the config ranks by) from its calibration.
pub fn channel_map(s: &Session, name: &str) -> Result<ChannelMap> {
    let Method::Cmpq(o) = &s.quant().method else {
        return Err(Error::config(
            "method",
            format!(
                "the per-channel map shows CMPQ; the current method is {}",
                s.quant().method.name()
            ),
        ));
    };
    let q = s
        .quantized_weights()?
        .ok_or_else(|| Error::config("method", "nothing is quantized"))?;
    let (li, k) = q
        .layers
        .iter()
        .enumerate()
        .find_map(|(li, l)| {
            l.linears()
                .iter()
                .position(|x| x.name == name)
                .map(|k| (li, k))
        })
        .ok_or_else(|| Error::config("tensor", format!("no block linear named \"{name}\"")))?;
    let t = &find(q, name)?.w;
    let (lo, bits, sparse) = cmpq_columns(t, name)?;
    let c = s
        .calibration()
        .ok_or_else(|| Error::config("calibration", "CMPQ was applied without statistics"))?;
    let act = o
        .magnitudes(c.site(li, s.source().topology().site_of(k))?)
        .to_vec();
    if act.len() != t.cols {
        return Err(Error::config(
            "calibration",
            format!(
                "{} magnitudes for the {} columns of {name}",
                act.len(),
                t.cols
            ),
        ));
    }
    let count = |w: u8| bits.iter().filter(|&&b| b == w).count();
    Ok(ChannelMap {
        name: name.to_string(),
        rows: t.rows,
        cols: t.cols,
        lo,
        n_lo: count(lo),
        n_hi: count(lo.saturating_add(1)),
        n_f16: count(F16_COLUMN_BITS),
        n_sparse: t.addons.outliers,
        bits,
        sparse,
        act,
        act_stat: o.act,
        budget: o.budget,
        bits_per_weight: t.bits_per_weight(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: f32 = 1e-6;

    #[test]
    fn bins_cover_the_range_and_count_every_value() {
        let v = [0.0, 0.1, 0.5, 0.99, 1.0];
        let c = bin_counts(&v, 0.0, 0.25, 4);
        assert_eq!(c, vec![2, 0, 1, 2]);
        assert_eq!(c.iter().sum::<u32>() as usize, v.len());
    }

    /// A seeded `rows × cols` tensor and column magnitudes that rise with the column index
    /// (so the allocation's ranking is known: the last columns are the largest).
    fn cmpq_tensor(rows: usize, cols: usize, o: &crate::quant::cmpq::CmpqOptions) -> QTensor {
        let w = crate::quant::testutil::lcg(7, rows * cols);
        let a: Vec<f32> = (0..cols).map(|j| 0.1 + j as f32 / cols as f32).collect();
        crate::quant::cmpq::quantize(&w, rows, cols, &a, o, "t").expect("cmpq quantizes")
    }

    /// The columns read back from the bytes are those the allocation chose: f16 for the
    /// `round(f_A · cols)` largest magnitudes, `lo + 1` for the next `n_hi`, `lo` for the rest,
    /// and the sparse outliers per column add up to `round(f_B · rows · cols)`.
    #[test]
    fn cmpq_columns_read_the_allocation_back() {
        let (rows, cols) = (128, 512);
        let o = crate::quant::cmpq::CmpqOptions {
            budget: 3.0,
            outlier_cols: 0.01,
            outlier_sparse: 0.002,
            ..Default::default()
        };
        let t = cmpq_tensor(rows, cols, &o);
        let Format::Cmpq { lo, n_hi, n_f16 } = t.format else {
            panic!("not cmpq: {}", t.format.name())
        };
        let (got_lo, bits, sparse) = cmpq_columns(&t, "t").expect("columns");
        assert_eq!(got_lo, lo);
        let n_f16_want = (0.01 * cols as f64).round() as usize;
        assert_eq!(n_f16 as usize, n_f16_want);
        // Magnitudes rise with the index: the top columns are f16, then the wider codes.
        let hi_from = cols - n_f16_want - n_hi as usize;
        for (j, &b) in bits.iter().enumerate() {
            let want = if j >= cols - n_f16_want {
                F16_COLUMN_BITS
            } else if j >= hi_from {
                lo + 1
            } else {
                lo
            };
            assert_eq!(b, want, "column {j}");
        }
        let n_sparse = (0.002 * (rows * cols) as f64).round() as u32;
        assert_eq!(sparse.iter().sum::<u32>(), n_sparse);
        assert_eq!(t.addons.outliers as u32, n_sparse);
        // f16 columns hold no sparse outliers (extraction B ranks code columns only).
        assert!(bits
            .iter()
            .zip(&sparse)
            .all(|(&b, &n)| b != F16_COLUMN_BITS || n == 0));
        assert!(sparse.iter().filter(|&&n| n > 0).count() > 1);
    }

    /// A corrupt column map or outlier index is an error naming the field, never a panic, and
    /// a tensor of another format is refused.
    #[test]
    fn cmpq_columns_refuse_bad_bytes() {
        let o = crate::quant::cmpq::CmpqOptions::default();
        let t = cmpq_tensor(64, 256, &o);
        let mut bad = t.clone();
        bad.data[1] = 0xff; // column 0: class 3
        let e = cmpq_columns(&bad, "t").expect_err("class 3").to_string();
        assert!(e.contains("cmpq.map"), "{e}");
        let mut bad = t.clone();
        bad.data[0] = 0xff;
        bad.data[1] = 0x3f; // column 0: lo index 16383, past the lo columns
        assert!(cmpq_columns(&bad, "t").is_err());
        let mut bad = t.clone();
        bad.addons.outliers += 1_000_000; // more indices than bytes
        let e = cmpq_columns(&bad, "t").expect_err("short").to_string();
        assert!(e.contains("outliers"), "{e}");
        let mut bad = t.clone();
        bad.data.truncate(10);
        assert!(cmpq_columns(&bad, "t").is_err());
        let f = QTensor::from_f32(2, 2, &[0.0; 4]);
        assert!(cmpq_columns(&f, "f").is_err());
    }

    #[test]
    fn rel_error_is_zero_for_equal_and_one_for_zeroed() {
        let a = [1.0f32, -2.0, 3.0];
        assert!(rel_error(&a, &a).abs() < TOL as f64);
        assert!((rel_error(&a, &[0.0; 3]) - 1.0).abs() < TOL as f64);
    }

    /// Bin of `v` found by searching the edges (a different route from `bin_counts`' division):
    /// the last edge at or below `v`, the top edge belonging to the last bin.
    fn bin_by_search(edges: &[f32], v: f32) -> usize {
        let bins = edges.len() - 1;
        edges[..bins].partition_point(|&e| e <= v).saturating_sub(1)
    }

    /// The Row field's bins: row `r` of the tensor alone, as loaded and as quantized, on the
    /// whole tensor's edges; they count that row's `cols` weights, change with the row, and the
    /// quantized row lies only on bins holding its levels (2-bit per-row RTN: at most 4 values).
    #[test]
    fn row_bins_count_the_chosen_row_alone() {
        let mut s = crate::playground::session::tests::tiny_session();
        let q = crate::quant::config::QuantConfig::from_json(
            &serde_json::json!({
                "version": 1, "method": "rtn",
                "default": { "bits": 2, "gran": "per_row", "sym": true },
            })
            .to_string(),
        )
        .expect("config");
        s.set_quant(&q).expect("quantizes");
        let name = s.source().linears().next().expect("a linear").name.clone();
        let la = find(s.source(), &name).expect("source");
        let lb = find(
            s.quantized_weights().expect("read").expect("quantized"),
            &name,
        )
        .expect("quantized");
        let (a, b, cols) = (
            la.w.dequantize().expect("a"),
            lb.w.dequantize().expect("b"),
            la.w.cols,
        );
        let mut seen = Vec::new();
        for row in [0, 3, la.w.rows - 1] {
            let h = histogram(&s, &name, 64, row).expect("histogram");
            for (counts, values) in [
                (&h.row_loaded, &a[row * cols..(row + 1) * cols]),
                (&h.row_quantized, &b[row * cols..(row + 1) * cols]),
            ] {
                let mut want = vec![0u32; 64];
                for &v in values {
                    want[bin_by_search(&h.edges, v)] += 1;
                }
                assert_eq!(counts, &want, "row {row}");
                assert_eq!(counts.iter().sum::<u32>() as usize, cols);
            }
            let spikes = h.row_quantized.iter().filter(|&&c| c > 0).count();
            assert!(
                spikes <= h.row_levels.len() && h.row_levels.len() <= 4,
                "{spikes} {h:?}"
            );
            seen.push(h.row_loaded.clone());
        }
        assert!(seen[0] != seen[1] && seen[1] != seen[2], "rows differ");
    }
}
