//! What the page's pictures draw, computed from a session: the layer map (bits and error per
//! layer and tensor), the histogram of one weight tensor with its quantized values, and the
//! per-channel activation magnitudes calibration saw. Plain serde data; no drawing here.

use crate::model::llama::Site;
use crate::model::weights::{Linear, ModelWeights};
use crate::playground::session::Session;
use crate::quant::calib::{CalibFrom, CalibOptions};
use crate::quant::format::Storage;
use crate::{Error, Result};
use serde::Serialize;

/// Names of the seven block linears, in `LayerWeights::linears()` order.
pub const KINDS: [&str; 7] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];
/// Most histogram bins accepted.
pub const MAX_BINS: usize = 512;
/// Most quantization levels listed for one row (a per-row grid has at most 2^8).
pub const MAX_LEVELS: usize = 256;

/// One block linear in the layer map.
#[derive(Clone, Debug, Serialize)]
pub struct TensorCell {
    pub layer: usize,
    /// Index into `KINDS`.
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
    let cur = s.quantized_weights().unwrap_or(src);
    let mut cells = Vec::with_capacity(src.layers.len() * KINDS.len());
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
        kinds: KINDS.to_vec(),
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
    let lb = match s.quantized_weights() {
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
    let mut levels: Vec<f32> = b[row * cols..(row + 1) * cols].to_vec();
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
    let names = ["attn_in", "attn_out", "ffn_in", "down_in"];
    let mut sites = Vec::new();
    for (site, name) in Site::ALL.iter().zip(names) {
        let st = c.site(layer, *site)?;
        sites.push(SiteMagnitudes {
            site: name,
            mean_abs: st.mean_abs.clone(),
            max_abs: st.max_abs.clone(),
        });
    }
    Ok(Activations {
        layer,
        sites,
        tokens: c.range.len(),
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

    #[test]
    fn rel_error_is_zero_for_equal_and_one_for_zeroed() {
        let a = [1.0f32, -2.0, 3.0];
        assert!(rel_error(&a, &a).abs() < TOL as f64);
        assert!((rel_error(&a, &[0.0; 3]) - 1.0).abs() < TOL as f64);
    }
}
