//! THE table of storage formats (architecture principle 2).
//!
//! Every way QuantLab stores a weight tensor is one `Format` variant, and each family of
//! variants is one module here that owns everything about it: the byte layout (documented at
//! the top of the module, with the spec it follows), the bytes it costs by component
//! (`Storage`), the CPU reference dequantizer, row slicing (for weights split across GPU
//! bindings), the parameters of its GPU decoder and its WGSL fragment(s):
//!
//!   float.rs    f32, f16, bf16
//!   int.rs      uniform integer codes with f16 group scales (RTN, GPTQ, ...); intmm.rs: their
//!               integer product with integer activation codes (W4A8, the GPU kernel's reference)
//!   ggml/       ggml's legacy blocks (legacy.rs) and K-quants (kquants.rs), as GGUF stores them
//!   codebook.rs learned per-row/per-column tables, NF4, FP4 E2M1, dINT
//!   cmpq.rs     CMPQ's per-column mixed precision
//!   onebit.rs   OneBit's 1-bit signs with an f16 value per row and per column
//!   binarymos.rs BinaryMoS: 1-bit signs with token-adaptive scale experts and a router (its
//!               GPU product is the sign fragment inside src/gpu/binarymos.rs's kernels, so it
//!               has no conformance examples: tests/gpu_binarymos.rs checks it instead)
//!   addons.rs   sparse f16 outliers and LoRC low-rank factors, after any base format
//!
//! Memory accounting, the CPU reference, the GPU upload and the GPU decoders all read these
//! modules; nothing else computes a size or an offset. A quantized tensor is a `QTensor`: a
//! format, add-ons, a shape and one byte blob whose length is exactly
//! `storage_with(format, addons, rows, cols).total()`.
//!
//! Adding a format to a family: its variant, its arms and its fragment in that family's module
//! (plus the `.wgsl` file). Adding a family: one module implementing `Family`, one `Format`
//! variant with its arm in `Format::with_family`, and one line in `FAMILIES`.

pub mod act;
pub mod addons;
pub mod binarymos;
pub mod cmpq;
pub mod codebook;
pub mod float;
pub mod ggml;
pub mod int;
pub mod intmm;
pub mod onebit;
mod packed;
pub mod tender;

pub use addons::{lowrank_factors, AddOns, LowRankSpec};
pub use cmpq::{cmpq_layout, CmpqLayout, MAX_CMPQ_COLS};
pub use codebook::{Codebook, DintParams, DINT_MAX_LEVELS, E2M1, NF4};
pub use ggml::GgmlType;
pub use int::{Granularity, IntSpec};
pub use packed::{check_bits, pack_codes, packed_bytes, unpack_code, Draw};

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// One row of the table. Serialized (snake_case, externally tagged) in QuantLab's model file
/// (`model::qlab`), where it is checked against the tensor's shape and bytes like any format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Format {
    F32,
    F16,
    #[serde(rename = "bf16")]
    BF16,
    /// A ggml block format, as loaded from GGUF (not produced by QuantLab's quantizers).
    Ggml(GgmlType),
    /// Uniform integer codes with f16 scales (and zero points when asymmetric).
    Int(IntSpec),
    /// Codes into a table of non-uniform levels.
    Codebook {
        bits: u8,
        table: Codebook,
    },
    /// CMPQ: per input column `lo` or `lo + 1` bits with its own codebook, or f16.
    Cmpq {
        lo: u8,
        n_hi: u32,
        n_f16: u32,
    },
    /// OneBit: signs with `diag(s_out)·sign(W)·diag(s_in)` (f16 vectors).
    #[serde(rename = "onebit")]
    OneBit,
    /// BinaryMoS: signs with `experts` token-mixed pairs of scale vectors and a router.
    #[serde(rename = "binarymos")]
    BinaryMos {
        experts: u8,
    },
}

/// Bytes of a stored tensor by component, for memory reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage {
    /// Quantized codes or plain values.
    pub codes: usize,
    /// Scales (and, for ggml blocks, the per-block minimums they carry).
    pub scales: usize,
    /// Zero points.
    pub zeros: usize,
    /// Sparse outliers: indices and values.
    #[serde(default)]
    pub outliers: usize,
    /// Low-rank (LoRC) factors.
    #[serde(default)]
    pub lowrank: usize,
}

impl Storage {
    pub fn total(&self) -> usize {
        self.codes + self.scales + self.zeros + self.outliers + self.lowrank
    }
    pub fn add(&mut self, o: Storage) {
        self.codes += o.codes;
        self.scales += o.scales;
        self.zeros += o.zeros;
        self.outliers += o.outliers;
        self.lowrank += o.lowrank;
    }
    /// Bytes of the base format (everything before the add-ons).
    pub fn base(&self) -> usize {
        self.codes + self.scales + self.zeros
    }
}

/// How a packed weight is decoded on the GPU: the fragment (`shaders/fmt_*.wgsl`, defining
/// `w_at`/`w_load4`) and the fields of `weight_common.wgsl`'s `Params` it reads. Offsets are in
/// u32 words into the uploaded blob, which is `QTensor.data` as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuDecoder {
    pub fragment: &'static str,
    pub bits: u32,
    pub group: u32,
    pub sym: u32,
    pub scale_off: u32,
    pub zero_off: u32,
    /// Large products decode this weight once into f16 first (shaders/decode_f16.wgsl) and
    /// multiply the halves: only where that gives the same values (every decoded value is an
    /// f16) and pays (the decoder is slow, so decoding it once per tile of rows costs more
    /// than one pass). CMPQ: f16 levels and f16 columns, a map entry, a code and a level per
    /// weight (src/gpu/matmul.rs `decode_first`).
    pub decode_first: bool,
}

impl GpuDecoder {
    /// A fragment that reads only the shape (`P.k`).
    pub(crate) fn plain(fragment: &'static str) -> Self {
        GpuDecoder {
            fragment,
            bits: 0,
            group: 0,
            sym: 0,
            scale_off: 0,
            zero_off: 0,
            decode_first: false,
        }
    }
}

/// The error for a tensor the GPU kernels cannot index: they use u32 element (and bit) indices.
pub(crate) fn gpu_too_big(rows: usize, cols: usize) -> Error {
    Error::unsupported(
        "gpu",
        "tensor",
        format!("{rows}×{cols} has more elements than the GPU kernels index (2^32)"),
    )
}

/// Fail unless `rows × cols` codes of `bits` bits have u32 bit offsets.
pub(crate) fn gpu_check_bits(rows: usize, cols: usize, bits: u32) -> Result<()> {
    if (rows as u64 * cols as u64).saturating_mul(bits as u64) > u32::MAX as u64 {
        return Err(gpu_too_big(rows, cols));
    }
    Ok(())
}

/// `n` as a u32 GPU parameter, or the too-big error.
pub(crate) fn gpu_u32(n: usize, rows: usize, cols: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| gpu_too_big(rows, cols))
}

/// A WGSL format fragment: `(file stem, source)`.
pub type Fragment = (&'static str, &'static str);

/// What a family of formats owns. `Format::with_family` hands out the one for a format; the
/// blob a method gets is the base format's bytes only (the add-ons are `addons.rs`'s).
pub(crate) trait Family {
    fn name(&self) -> String;
    /// Bytes of a `rows × cols` tensor by component, or an error when the shape does not fit
    /// the format.
    fn storage(&self, rows: usize, cols: usize) -> Result<Storage>;
    /// The CPU reference: expand `blob` (exactly `storage(rows, cols).total()` bytes, checked
    /// by the caller) into `out` (`rows × cols`, row-major).
    fn dequantize(&self, blob: &[u8], rows: usize, cols: usize, out: &mut [f32]) -> Result<()>;
    /// The bytes of rows `r0..r1` as a `(r1 - r0) × cols` tensor of the same format (what the
    /// whole tensor shares, e.g. a per-tensor scale or per-column tables, is repeated).
    fn row_slice(
        &self,
        blob: &[u8],
        rows: usize,
        cols: usize,
        r0: usize,
        r1: usize,
    ) -> Result<Vec<u8>>;
    /// The GPU decoder of a `rows × cols` tensor (the element count is already checked).
    fn gpu(&self, rows: usize, cols: usize) -> Result<GpuDecoder>;
    /// A valid blob of seeded random content (codes random, float fields finite and moderate).
    fn random(&self, rows: usize, cols: usize, next: Draw) -> Result<Vec<u8>>;
    /// The values the weights of row `row` can decode to, group by group (see `LevelGroup`),
    /// computed with the decoder's own arithmetic; `None` for formats without a level grid
    /// (plain floats, ggml's blocks as loaded). `blob` is checked like `dequantize`'s.
    fn row_levels(
        &self,
        _blob: &[u8],
        _rows: usize,
        _cols: usize,
        _row: usize,
    ) -> Result<Option<Vec<LevelGroup>>> {
        Ok(None)
    }
}

/// The levels one run of a row's columns shares: the grid of a scale group (uniform codes,
/// NF4/FP4/dINT), a row's or a column's learned table, one column's own codebook (CMPQ), or a
/// column's `±s_out·s_in` pair (OneBit, BinaryMoS). Columns `start..end` of the row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LevelGroup {
    pub start: usize,
    pub end: usize,
    /// Code width of these columns (16 for CMPQ's f16 columns, whose one "level" is the stored
    /// value itself).
    pub bits: u8,
    /// In code order (not sorted; codes a quantizer never writes may repeat a level).
    pub levels: Vec<f32>,
}

/// The scale groups of `g` consecutive row-major elements that row `row` of `cols` columns
/// meets: `(group index, first column, end column)` within the row.
pub(crate) fn row_groups(row: usize, cols: usize, g: usize) -> Vec<(usize, usize, usize)> {
    let (a, b) = (row * cols, (row + 1) * cols);
    (a / g..b.div_ceil(g))
        .map(|gi| (gi, (gi * g).max(a) - a, ((gi + 1) * g).min(b) - a))
        .collect()
}

/// A family's entry in the list: its WGSL fragments and the formats the conformance test
/// checks (every fragment and every layout branch at least once).
struct FamilyEntry {
    fragments: fn() -> Vec<Fragment>,
    examples: fn() -> Vec<Format>,
}

/// THE list of families (one line each).
const FAMILIES: &[FamilyEntry] = &[
    FamilyEntry {
        fragments: float::fragments,
        examples: float::examples,
    },
    FamilyEntry {
        fragments: int::fragments,
        examples: int::examples,
    },
    FamilyEntry {
        fragments: ggml::fragments,
        examples: ggml::examples,
    },
    FamilyEntry {
        fragments: codebook::fragments,
        examples: codebook::examples,
    },
    FamilyEntry {
        fragments: cmpq::fragments,
        examples: cmpq::examples,
    },
    FamilyEntry {
        fragments: onebit::fragments,
        examples: onebit::examples,
    },
    FamilyEntry {
        fragments: binarymos::fragments,
        examples: binarymos::examples,
    },
];

/// Every format fragment of every family, `(file stem, source)`; `gpu::shaders` builds the
/// weight kernels from this list.
pub fn fragments() -> Vec<Fragment> {
    FAMILIES.iter().flat_map(|f| (f.fragments)()).collect()
}

/// The source of format fragment `stem`, if some family has it.
pub fn fragment_source(stem: &str) -> Option<&'static str> {
    fragments()
        .into_iter()
        .find(|(n, _)| *n == stem)
        .map(|(_, s)| s)
}

impl Format {
    /// Representative formats of every family, covering every fragment: what the conformance
    /// test (tests/format_conformance.rs) runs, so a new format is covered by being listed.
    pub fn examples() -> Vec<Format> {
        FAMILIES.iter().flat_map(|f| (f.examples)()).collect()
    }

    fn with_family<R>(&self, f: impl FnOnce(&dyn Family) -> R) -> R {
        match *self {
            Format::F32 => f(&float::Float::F32),
            Format::F16 => f(&float::Float::F16),
            Format::BF16 => f(&float::Float::BF16),
            Format::Ggml(t) => f(&t),
            Format::Int(s) => f(&s),
            Format::Codebook { bits, table } => f(&codebook::CodebookFormat { bits, table }),
            Format::Cmpq { lo, n_hi, n_f16 } => f(&cmpq::CmpqFormat { lo, n_hi, n_f16 }),
            Format::OneBit => f(&onebit::OneBitFormat),
            Format::BinaryMos { experts } => f(&binarymos::BinaryMosFormat { experts }),
        }
    }

    pub fn name(&self) -> String {
        self.with_family(|f| f.name())
    }

    /// Bytes this format needs for a `rows × cols` tensor, by component.
    pub fn storage(&self, rows: usize, cols: usize) -> Result<Storage> {
        self.with_family(|f| f.storage(rows, cols))
    }

    /// Expand a stored blob to f32, row-major `rows × cols`.
    pub fn dequantize(&self, blob: &[u8], rows: usize, cols: usize) -> Result<Vec<f32>> {
        let st = self.storage(rows, cols)?;
        if blob.len() != st.total() {
            return Err(Error::format(
                "tensor",
                "data",
                format!(
                    "{} bytes for {} {rows}×{cols}, expected {}",
                    blob.len(),
                    self.name(),
                    st.total()
                ),
            ));
        }
        let mut out = vec![0f32; rows * cols];
        self.with_family(|f| f.dequantize(blob, rows, cols, &mut out))?;
        Ok(out)
    }

    /// The GPU decoder of a `rows × cols` tensor of this format, or an error naming what the
    /// kernels cannot index.
    pub fn gpu_decoder(&self, rows: usize, cols: usize) -> Result<GpuDecoder> {
        // Kernels index weights as `row * cols + col` in u32.
        gpu_check_bits(rows, cols, 1)?;
        self.storage(rows, cols)?;
        self.with_family(|f| f.gpu(rows, cols))
    }

    /// The levels of row `row` of a stored `rows × cols` base blob (`Family::row_levels`).
    pub fn row_levels(
        &self,
        blob: &[u8],
        rows: usize,
        cols: usize,
        row: usize,
    ) -> Result<Option<Vec<LevelGroup>>> {
        let want = self.storage(rows, cols)?.total();
        if blob.len() != want || row >= rows {
            return Err(Error::format(
                "tensor",
                "data",
                format!(
                    "row {row} of {} bytes for {} {rows}×{cols} (expected {want} bytes)",
                    blob.len(),
                    self.name()
                ),
            ));
        }
        self.with_family(|f| f.row_levels(blob, rows, cols, row))
    }

    /// A blob of seeded random content for a `rows × cols` tensor (tests, benchmarks).
    pub fn random(&self, rows: usize, cols: usize, next: Draw) -> Result<Vec<u8>> {
        self.storage(rows, cols)?;
        self.with_family(|f| f.random(rows, cols, next))
    }
}

/// A stored tensor: its format, add-ons, shape (`rows × cols`, row-major) and bytes (the base
/// format's, then the add-ons').
#[derive(Clone, Debug, PartialEq)]
pub struct QTensor {
    pub format: Format,
    pub addons: AddOns,
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<u8>,
}

/// Bytes of a tensor of `format` with `addons`, by component.
pub fn storage_with(format: Format, addons: AddOns, rows: usize, cols: usize) -> Result<Storage> {
    let mut st = format.storage(rows, cols)?;
    addons.check(rows, cols)?;
    let (o, l) = addons.bytes(rows, cols);
    st.outliers = o;
    st.lowrank = l;
    Ok(st)
}

impl QTensor {
    /// Build from parts, checking the blob length against the table.
    pub fn new(format: Format, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self> {
        Self::with_addons(format, AddOns::default(), rows, cols, data)
    }

    /// As `new`, with add-ons whose bytes follow the base format's in `data`.
    pub fn with_addons(
        format: Format,
        addons: AddOns,
        rows: usize,
        cols: usize,
        data: Vec<u8>,
    ) -> Result<Self> {
        let want = storage_with(format, addons, rows, cols)?.total();
        if data.len() != want {
            return Err(Error::format(
                "tensor",
                "data",
                format!(
                    "{} bytes for {} {rows}×{cols}, expected {want}",
                    data.len(),
                    format.name()
                ),
            ));
        }
        Ok(QTensor {
            format,
            addons,
            rows,
            cols,
            data,
        })
    }

    /// Plain f32 storage of a dense matrix.
    pub fn from_f32(rows: usize, cols: usize, values: &[f32]) -> Self {
        QTensor {
            format: Format::F32,
            addons: AddOns::default(),
            rows,
            cols,
            data: bytemuck::cast_slice(values).to_vec(),
        }
    }

    pub fn numel(&self) -> usize {
        self.rows * self.cols
    }
    pub fn storage(&self) -> Storage {
        // new() checked the format accepts this shape.
        storage_with(self.format, self.addons, self.rows, self.cols).unwrap_or_default()
    }

    /// The base bytes and the add-on bytes, after checking the length against the table.
    pub(crate) fn split_data(&self) -> Result<(&[u8], &[u8])> {
        let st = storage_with(self.format, self.addons, self.rows, self.cols)?;
        if self.data.len() != st.total() {
            return Err(Error::format(
                "tensor",
                "data",
                format!("{} bytes, expected {}", self.data.len(), st.total()),
            ));
        }
        Ok(self.data.split_at(st.base()))
    }

    /// The dense f32 values: base format, then outliers replaced, then `+ ÛV̂`.
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        let (b, extra) = self.split_data()?;
        let mut out = self.format.dequantize(b, self.rows, self.cols)?;
        if !self.addons.is_empty() {
            self.addons.apply(extra, self.rows, self.cols, &mut out)?;
        }
        Ok(out)
    }

    /// Rows `r0..r1` as a tensor of the same format and add-ons (the outliers of those rows,
    /// the rows of `Û`). What the whole tensor shares is repeated, so the parts of a split
    /// tensor may hold a few bytes more than the whole.
    pub fn row_slice(&self, r0: usize, r1: usize) -> Result<QTensor> {
        if r0 >= r1 || r1 > self.rows {
            return Err(Error::config(
                "rows",
                format!("rows {r0}..{r1} of a tensor of {} rows", self.rows),
            ));
        }
        let (base, extra) = self.split_data()?;
        let (rows, cols) = (self.rows, self.cols);
        let mut data = self
            .format
            .with_family(|f| f.row_slice(base, rows, cols, r0, r1))?;
        let (addons, bytes) = self.addons.row_slice(extra, rows, cols, r0, r1)?;
        data.extend(bytes);
        QTensor::with_addons(self.format, addons, r1 - r0, cols, data)
    }

    /// This tensor with add-ons appended (replacing any it had).
    pub fn with_extra(&self, addons: AddOns, bytes: &[u8]) -> Result<QTensor> {
        let base = self.format.storage(self.rows, self.cols)?.total();
        let mut data = self.data[..base.min(self.data.len())].to_vec();
        data.extend_from_slice(bytes);
        QTensor::with_addons(self.format, addons, self.rows, self.cols, data)
    }
    /// The levels row `row`'s weights can take before the add-ons (`Format::row_levels`).
    pub fn row_levels(&self, row: usize) -> Result<Option<Vec<LevelGroup>>> {
        let (b, _) = self.split_data()?;
        self.format.row_levels(b, self.rows, self.cols, row)
    }

    /// The sparse outliers' flat indices (row-major), checked in range and increasing.
    pub fn outlier_indices(&self) -> Result<Vec<usize>> {
        let (_, extra) = self.split_data()?;
        self.addons.outlier_indices(extra, self.numel())
    }

    /// Effective bits per weight: every stored bit over the number of weights.
    pub fn bits_per_weight(&self) -> f64 {
        8.0 * self.data.len() as f64 / self.numel().max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// For every example format with a level grid, on seeded random bytes: the groups of a row
    /// tile its columns, and every decoded weight is exactly one of its group's levels (both
    /// use the decoder's arithmetic, so no tolerance). Rows in the middle and at the end, so
    /// groups that straddle rows (per-tensor) and per-column tables are both met.
    #[test]
    fn every_decoded_weight_is_one_of_its_groups_levels() {
        let (rows, cols) = (6, 64);
        let mut seed = 0x9e37_79b9u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let mut with_levels = 0;
        for f in Format::examples() {
            let Ok(blob) = f.random(rows, cols, &mut next) else {
                continue; // the shape does not fit this example (e.g. a wider group)
            };
            let w = f.dequantize(&blob, rows, cols).unwrap();
            for row in [2, rows - 1] {
                let Some(groups) = f.row_levels(&blob, rows, cols, row).unwrap() else {
                    continue;
                };
                with_levels += 1;
                let mut next_col = 0;
                for g in &groups {
                    assert_eq!(
                        g.start,
                        next_col,
                        "{} row {row}: groups tile the row",
                        f.name()
                    );
                    next_col = g.end;
                    for c in g.start..g.end {
                        let v = w[row * cols + c];
                        assert!(
                            g.levels.contains(&v),
                            "{} row {row} col {c}: {v} not in {:?}",
                            f.name(),
                            g.levels
                        );
                    }
                }
                assert_eq!(next_col, cols, "{}", f.name());
            }
        }
        assert!(with_levels >= 10, "only {with_levels} rows had levels");
        assert!(Format::F32
            .row_levels(&[0; 4 * 64], 1, 64, 0)
            .unwrap()
            .is_none());
        // A row past the end or a short blob is an error, not a panic.
        let f = Format::Int(IntSpec {
            bits: 4,
            gran: Granularity::Group(32),
            sym: false,
        });
        let blob = f.random(2, 64, &mut next).unwrap();
        assert!(f.row_levels(&blob, 2, 64, 2).is_err());
        assert!(f.row_levels(&blob[1..], 2, 64, 0).is_err());
    }

    #[test]
    fn every_fragment_is_used_by_an_example_and_names_are_unique() {
        let frags = fragments();
        let mut names: Vec<&str> = frags.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a fragment is listed twice");
        // BinaryMoS has no conformance example (its product is not its dequantized weight's);
        // its sign fragment is the one its GPU layout names.
        let mos = binarymos::gpu_layout(4, 71, 96).unwrap().signs.fragment;
        for (stem, _) in &frags {
            let used = *stem == mos
                || Format::examples().iter().any(|f| {
                    [(71, 96), (23, 512)]
                        .iter()
                        .any(|&(r, c)| f.gpu_decoder(r, c).is_ok_and(|d| d.fragment == *stem))
                });
            assert!(used, "no example format decodes with {stem}");
        }
    }
}
