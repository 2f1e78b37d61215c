//! The `BinaryMos` family: 1-bit weights with token-adaptive scales (Jo et al., "Mixture of
//! Scales", arXiv 2406.12311; docs/binarymos.md). All little-endian, sections 4-byte aligned:
//!   signs  : `rows*cols` bits, row-major, packed into u32 words from bit 0 up; 1 is `+`
//!   s_in   : `experts × cols` f16, expert-major (the input scale experts)
//!   s_out  : `experts × rows` f16, expert-major (the output scale experts)
//!   router : `cols × experts` f16, row-major (`W_R`)
//! A token `x` is multiplied as `g = softmax(x·W_R)`, `y = ((x ⊙ g·S_in)·signᵀ) ⊙ g·S_out`
//! (`mos_forward`, the CPU reference). Every stored bit counts: the signs, both expert tables
//! and the router.
//!
//! There is no single weight matrix: each token has its own. `dequantize` gives the one a token
//! with uniform gates sees, `diag(mean S_out)·sign·diag(mean S_in)` (exactly that token's
//! product), for the inspectors and LoRC; the CPU backend multiplies with `mos_forward`.
//!
//! GPU: `gpu_layout` says how src/gpu/binarymos.rs multiplies the tensor from its own bytes: the
//! signs are the weight of the ordinary tiled product, decoded as ±1 by shaders/fmt_sign.wgsl,
//! and shaders/binarymos.wgsl reads the three tables at the word offsets given here for each
//! token's gates and scales. The generic decoder (`Family::gpu`, what a gather or a GPU
//! re-quantization would read) refuses the tensor rather than decode the signs, or the
//! uniform-gate weight, as if either were the layer.

use super::packed::{align4, code_range, pack_codes, packed_bytes, random_codes, random_f16s};
use super::{
    gpu_check_bits, gpu_u32, Draw, Family, Format, Fragment, GpuDecoder, LevelGroup, QTensor,
    Storage,
};
use crate::linalg::{sgemm, CpuGemm, Gemm};
use crate::{Error, Result};
use half::f16;

mod grad;
pub use grad::MosGrads;

/// Most scale experts a tensor may have.
pub const MAX_MOS_EXPERTS: usize = 16;

/// The BinaryMoS format with `experts` scale experts.
pub(crate) struct BinaryMosFormat {
    pub experts: u8,
}

/// Bytes of each section: (signs, s_in, s_out, router).
fn sections(rows: usize, cols: usize, k: usize) -> (usize, usize, usize, usize) {
    (
        packed_bytes(rows * cols, 1),
        align4(2 * k * cols),
        align4(2 * k * rows),
        align4(2 * cols * k),
    )
}

fn halves(bytes: &[u8], n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| f16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]).to_f32())
        .collect()
}

fn to_halves(v: &[f32]) -> Vec<u8> {
    let mut b: Vec<u8> = v
        .iter()
        .flat_map(|x| f16::from_f32(*x).to_le_bytes())
        .collect();
    b.resize(align4(b.len()), 0);
    b
}

/// A BinaryMoS tensor unpacked for the CPU product: signs as ±1 and the tables in f32.
#[derive(Clone, Debug, PartialEq)]
pub struct MosParts {
    pub rows: usize,
    pub cols: usize,
    pub experts: usize,
    /// `rows × cols`, ±1.0.
    pub signs: Vec<f32>,
    /// `experts × cols`.
    pub s_in: Vec<f32>,
    /// `experts × rows`.
    pub s_out: Vec<f32>,
    /// `cols × experts`.
    pub router: Vec<f32>,
}

/// What `mos_forward` computes on the way, for training's backward pass.
pub struct MosTrace {
    /// Gates, `t × experts`.
    pub g: Vec<f32>,
    /// `(x ⊙ s_in)·signᵀ`, `t × rows`.
    pub h: Vec<f32>,
    /// Per-token output scales, `t × rows`.
    pub sout: Vec<f32>,
    /// The output, `t × rows`.
    pub y: Vec<f32>,
}

impl MosParts {
    fn check(&self) -> Result<()> {
        let (r, c, k) = (self.rows, self.cols, self.experts);
        if !(1..=MAX_MOS_EXPERTS).contains(&k)
            || self.signs.len() != r * c
            || self.s_in.len() != k * c
            || self.s_out.len() != k * r
            || self.router.len() != c * k
        {
            return Err(Error::config(
                "binarymos",
                format!("parts that do not make a {r}×{c} tensor of {k} experts"),
            ));
        }
        Ok(())
    }

    /// The product for `t` input rows (`x` is `t × cols`), keeping the intermediate values.
    pub fn forward_trace(&self, x: &[f32]) -> MosTrace {
        self.forward_trace_on(x, &CpuGemm)
    }

    /// `forward_trace` with its large product (`xs · signᵀ`) on `gemm` (the trainer's seam);
    /// the gates and scales (`experts` wide) stay on the CPU.
    pub fn forward_trace_on(&self, x: &[f32], gemm: &dyn Gemm) -> MosTrace {
        let (n, o, k) = (self.cols, self.rows, self.experts);
        let t = x.len() / n;
        // g = softmax(x · W_R), row by row.
        let mut g = vec![0f32; t * k];
        sgemm(t, n, k, x, n, 1, &self.router, k, 1, &mut g, k);
        for row in g.chunks_mut(k) {
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let mut s = 0.0;
            for v in row.iter_mut() {
                *v = (*v - m).exp();
                s += *v;
            }
            row.iter_mut().for_each(|v| *v /= s);
        }
        let mut sin = vec![0f32; t * n];
        sgemm(t, k, n, &g, k, 1, &self.s_in, n, 1, &mut sin, n);
        let xs: Vec<f32> = x.iter().zip(&sin).map(|(a, b)| a * b).collect();
        // h = xs · signᵀ (`mul_t`: sign read through strides).
        let h = gemm.mul_t_w(&xs, &self.signs, t, n, o);
        let mut sout = vec![0f32; t * o];
        sgemm(t, k, o, &g, k, 1, &self.s_out, o, 1, &mut sout, o);
        let y = h.iter().zip(&sout).map(|(a, b)| a * b).collect();
        MosTrace { g, h, sout, y }
    }

    /// The product for `t` input rows: `t × rows`.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        self.forward_trace(x).y
    }

    /// Pack into a `Format::BinaryMos` tensor (the tables rounded to f16).
    pub fn to_qtensor(&self) -> Result<QTensor> {
        self.check()?;
        let bits: Vec<u8> = self.signs.iter().map(|&s| (s >= 0.0) as u8).collect();
        let mut data = pack_codes(&bits, 1);
        for v in [&self.s_in, &self.s_out, &self.router] {
            data.extend(to_halves(v));
        }
        QTensor::new(
            Format::BinaryMos {
                experts: self.experts as u8,
            },
            self.rows,
            self.cols,
            data,
        )
    }

    /// Unpack a `Format::BinaryMos` tensor.
    pub fn from_qtensor(q: &QTensor) -> Result<Self> {
        let Format::BinaryMos { experts } = q.format else {
            return Err(Error::config(
                "binarymos",
                format!("a {} tensor is not BinaryMoS", q.format.name()),
            ));
        };
        let (rows, cols, k) = (q.rows, q.cols, experts as usize);
        let (ns, ni, no, _) = sections(rows, cols, k);
        let d = &q.data;
        Ok(MosParts {
            rows,
            cols,
            experts: k,
            signs: {
                let mut v = vec![0f32; rows * cols];
                super::onebit::signed_outer(&d[..ns], &vec![1.0; rows], &vec![1.0; cols], &mut v);
                v
            },
            s_in: halves(&d[ns..], k * cols),
            s_out: halves(&d[ns + ni..], k * rows),
            router: halves(&d[ns + ni + no..], cols * k),
        })
    }
}

fn check_experts(k: u8) -> Result<usize> {
    if (1..=MAX_MOS_EXPERTS).contains(&(k as usize)) {
        Ok(k as usize)
    } else {
        Err(Error::config(
            "binarymos.experts",
            format!("{k} is outside 1..={MAX_MOS_EXPERTS}"),
        ))
    }
}

impl BinaryMosFormat {
    /// The mean expert's `(s_out, s_in)`: the scales under uniform gates.
    fn mean_scales(&self, blob: &[u8], rows: usize, cols: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let k = check_experts(self.experts)?;
        let (ns, ni, _, _) = sections(rows, cols, k);
        let s_in = halves(&blob[ns..], k * cols);
        let s_out = halves(&blob[ns + ni..], k * rows);
        let mean =
            |t: &[f32], n: usize, j: usize| (0..k).map(|e| t[e * n + j]).sum::<f32>() / k as f32;
        let mo = (0..rows).map(|r| mean(&s_out, rows, r)).collect();
        let mi = (0..cols).map(|c| mean(&s_in, cols, c)).collect();
        Ok((mo, mi))
    }
}

impl Family for BinaryMosFormat {
    fn name(&self) -> String {
        format!("binarymos{}", self.experts)
    }

    fn storage(&self, rows: usize, cols: usize) -> Result<Storage> {
        let k = check_experts(self.experts)?;
        if rows == 0 || cols == 0 {
            return Err(Error::config(
                "binarymos",
                format!("a {rows}×{cols} tensor has no weights"),
            ));
        }
        let (ns, ni, no, nr) = sections(rows, cols, k);
        Ok(Storage {
            codes: ns,
            scales: ni + no + nr,
            ..Default::default()
        })
    }

    fn dequantize(&self, blob: &[u8], rows: usize, cols: usize, out: &mut [f32]) -> Result<()> {
        let (mo, mi) = self.mean_scales(blob, rows, cols)?;
        let ns = sections(rows, cols, self.experts as usize).0;
        super::onebit::signed_outer(&blob[..ns], &mo, &mi, out);
        Ok(())
    }

    /// The levels of `dequantize`'s weight (uniform gates: the mean expert's scales); a token
    /// whose router prefers one expert sees that expert's scales instead.
    fn row_levels(
        &self,
        blob: &[u8],
        rows: usize,
        cols: usize,
        row: usize,
    ) -> Result<Option<Vec<LevelGroup>>> {
        let (mo, mi) = self.mean_scales(blob, rows, cols)?;
        Ok(Some(super::onebit::sign_levels(mo[row], &mi)))
    }

    fn row_slice(
        &self,
        blob: &[u8],
        rows: usize,
        cols: usize,
        r0: usize,
        r1: usize,
    ) -> Result<Vec<u8>> {
        let k = check_experts(self.experts)?;
        let (ns, ni, no, nr) = sections(rows, cols, k);
        let mut d = code_range(&blob[..ns], r0 * cols, r1 * cols, 1);
        // Every row reads all of s_in and the router; s_out keeps rows r0..r1 of each expert.
        d.extend_from_slice(&blob[ns..ns + ni]);
        let s_out = &blob[ns + ni..ns + ni + no];
        let mut so = Vec::new();
        for e in 0..k {
            so.extend_from_slice(&s_out[2 * (e * rows + r0)..2 * (e * rows + r1)]);
        }
        so.resize(align4(so.len()), 0);
        d.extend(so);
        d.extend_from_slice(&blob[ns + ni + no..ns + ni + no + nr]);
        Ok(d)
    }

    fn gpu(&self, _rows: usize, _cols: usize) -> Result<GpuDecoder> {
        Err(Error::unsupported(
            "gpu",
            "binarymos",
            "a BinaryMoS tensor has no single weight to decode (each token mixes its own \
             scales): the GPU multiplies it only as a linear layer (`gpu_layout`), never \
             gathers or re-quantizes it",
        ))
    }

    fn random(&self, rows: usize, cols: usize, next: Draw) -> Result<Vec<u8>> {
        let k = check_experts(self.experts)?;
        let mut d = random_codes(rows * cols, 1, next);
        d.extend(random_f16s(k * cols, 1.0, 0.5, next));
        d.extend(random_f16s(k * rows, 0.05, 0.03, next));
        d.extend(random_f16s(cols * k, 0.0, 0.1, next));
        Ok(d)
    }
}

/// How the GPU multiplies a BinaryMoS tensor from its own bytes (src/gpu/binarymos.rs): the
/// signs are the weight of the ordinary tiled product (`signs`, the `fmt_sign` fragment: ±1,
/// bit `r·cols + c` from word 0), and the three f16 tables lie at these word offsets (sections
/// are 4-byte aligned), read by shaders/binarymos.wgsl for each token's gates and scales.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MosGpuLayout {
    pub signs: GpuDecoder,
    pub experts: u32,
    pub s_in_off: u32,
    pub s_out_off: u32,
    pub router_off: u32,
}

/// The GPU layout of a `rows × cols` BinaryMoS tensor of `experts` experts, or the error for a
/// shape or expert count the format (or the kernels' u32 indices) cannot hold.
pub fn gpu_layout(experts: u8, rows: usize, cols: usize) -> Result<MosGpuLayout> {
    let k = check_experts(experts)?;
    BinaryMosFormat { experts }.storage(rows, cols)?;
    gpu_check_bits(rows, cols, 1)?;
    let (ns, ni, no, nr) = sections(rows, cols, k);
    // Every table index the kernels form (`e·cols + c`, `c·experts + e`) stays below the end
    // of the blob in elements, so the blob's size in u32 bounds them all.
    gpu_u32(2 * (ns + ni + no + nr), rows, cols)?;
    Ok(MosGpuLayout {
        signs: GpuDecoder {
            fragment: "fmt_sign",
            bits: 1,
            group: 0,
            sym: 1,
            scale_off: 0,
            zero_off: 0,
            decode_first: false,
        },
        experts: k as u32,
        s_in_off: gpu_u32(ns / 4, rows, cols)?,
        s_out_off: gpu_u32((ns + ni) / 4, rows, cols)?,
        router_off: gpu_u32((ns + ni + no) / 4, rows, cols)?,
    })
}

pub(super) fn fragments() -> Vec<Fragment> {
    vec![("fmt_sign", include_str!("../../shaders/fmt_sign.wgsl"))]
}

/// None for the conformance test, which holds a GPU decode to `dequantize`: a BinaryMoS
/// product is not its dequantized weight's. tests/gpu_binarymos.rs holds the GPU product to
/// `MosParts::forward` instead.
pub(super) fn examples() -> Vec<Format> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::Rng;

    fn parts(rows: usize, cols: usize, k: usize, seed: u64) -> MosParts {
        let mut r = Rng(seed);
        // Values that f16 holds exactly (multiples of 1/64 in a small range), so packing is exact.
        let mut q = |lo: f32| lo + (r.next() * 32.0).round() / 64.0;
        MosParts {
            rows,
            cols,
            experts: k,
            signs: (0..rows * cols)
                .map(|_| if q(0.0) < 0.0 { -1.0 } else { 1.0 })
                .collect(),
            s_in: (0..k * cols).map(|_| q(1.0)).collect(),
            s_out: (0..k * rows).map(|_| q(1.0) / 16.0).collect(),
            router: (0..cols * k).map(|_| q(0.0)).collect(),
        }
    }

    #[test]
    fn storage_counts_signs_experts_and_router() {
        let f = Format::BinaryMos { experts: 4 };
        let s = f.storage(8, 64).unwrap();
        // 512 sign bits; 4·64 + 4·8 + 64·4 f16.
        assert_eq!((s.codes, s.scales), (64, 512 + 64 + 512));
        assert!(Format::BinaryMos { experts: 0 }.storage(8, 64).is_err());
        assert!(Format::BinaryMos { experts: 17 }.storage(8, 64).is_err());
        // No generic decode; the linear product's layout instead, its offsets at the sections.
        assert!(f
            .gpu_decoder(8, 64)
            .unwrap_err()
            .to_string()
            .contains("no single weight"));
        let l = gpu_layout(4, 8, 64).unwrap();
        assert_eq!(l.signs.fragment, "fmt_sign");
        assert_eq!(
            (l.experts, l.s_in_off, l.s_out_off, l.router_off),
            (4, 16, 144, 160)
        );
        assert!(gpu_layout(0, 8, 64).is_err() && gpu_layout(17, 8, 64).is_err());
        assert!(gpu_layout(4, 0, 64).is_err());
    }

    #[test]
    fn packing_round_trips_and_uniform_gates_give_the_dequantized_weight() {
        let (rows, cols, k) = (5, 12, 3);
        let p = parts(rows, cols, k, 4);
        let q = p.to_qtensor().unwrap();
        assert_eq!(MosParts::from_qtensor(&q).unwrap(), p);
        // A zero router gives uniform gates: the product is x · dequantize()ᵀ.
        let p0 = MosParts {
            router: vec![0.0; cols * k],
            ..p.clone()
        };
        let w = p0.to_qtensor().unwrap().dequantize().unwrap();
        let x = Rng(8).vec(4 * cols);
        let y = p0.forward(&x);
        for t in 0..4 {
            for r in 0..rows {
                let want: f32 = (0..cols).map(|c| x[t * cols + c] * w[r * cols + c]).sum();
                let got = y[t * rows + r];
                assert!(
                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "({t}, {r}): {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn row_slices_keep_their_rows_of_every_expert() {
        let (rows, cols, k) = (7, 8, 2);
        let p = parts(rows, cols, k, 6);
        let q = p.to_qtensor().unwrap();
        let x = Rng(3).vec(3 * cols);
        let y = p.forward(&x);
        for (r0, r1) in [(0, 1), (2, 5), (6, 7)] {
            let s = q.row_slice(r0, r1).unwrap();
            let ys = MosParts::from_qtensor(&s).unwrap().forward(&x);
            for t in 0..3 {
                assert_eq!(
                    ys[t * (r1 - r0)..(t + 1) * (r1 - r0)],
                    y[t * rows + r0..t * rows + r1]
                );
            }
        }
    }
}
