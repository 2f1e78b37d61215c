//! GGUF reader, versions 2 and 3, little-endian.
//!
//! Spec: the GGUF file format of ggml (`docs/gguf.md` in the ggml repository). Layout:
//!   header      magic "GGUF", version u32, tensor_count u64, kv_count u64
//!   metadata    kv_count × (key: string, value_type u32, value)
//!   tensor info tensor_count × (name: string, n_dims u32, ne[n_dims] u64, ggml_type u32,
//!               offset u64 relative to the data section)
//!   padding     to `general.alignment` (default 32)
//!   data        tensor bytes, each tensor at an offset that is a multiple of the alignment
//! A string is a u64 byte length followed by UTF-8 bytes (no terminator). `ne[0]` is the
//! innermost (fastest varying) dimension; `RawTensor` wants outermost first, so dims are
//! reversed here. v3 differs from v2 only by allowing big-endian files, which we refuse.
//!
//! Every byte is hostile: counts, lengths and dims are bounded before anything is allocated,
//! and every allocation is at most a small multiple of the bytes that remain in the buffer.
//! Tensor data is never copied: `RawTensor::data` borrows from the caller's buffer.

mod consistency;
mod meta;
mod model;
mod reader;

pub use meta::{MetaArray, MetaValue};

use crate::format::GgmlType;
use crate::tensor::{DType, RawTensor, TensorSource};
use crate::{Error, Result};
use reader::Reader;
use std::collections::HashMap;

/// Most tensors a file may declare.
pub const MAX_TENSORS: u64 = 1 << 16;
/// Most metadata key-value pairs a file may declare.
pub const MAX_KV: u64 = 1 << 16;
/// Longest metadata string value (array elements included), in bytes.
pub const MAX_STRING_LEN: u64 = 1 << 20;
/// Longest metadata key (the spec's limit).
pub const MAX_KEY_LEN: u64 = 65_535;
/// Longest tensor name (ggml itself stops at 64).
pub const MAX_TENSOR_NAME_LEN: u64 = 256;
/// Most elements in one metadata array.
pub const MAX_ARRAY_LEN: u64 = 1 << 24;
/// Deepest nesting of arrays inside arrays.
pub const MAX_ARRAY_DEPTH: u32 = 4;
/// Most dimensions of a tensor (ggml's GGML_MAX_DIMS).
pub const MAX_DIMS: u32 = 4;
/// Most elements in one tensor.
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 34;
/// Largest `general.alignment` accepted (it must also be a power of two).
pub const MAX_ALIGNMENT: u32 = 1 << 16;
/// Most tensor bytes a file may declare, checked from the header before anything of that size
/// is allocated. In a 32-bit address space (wasm32: the page's WebAssembly memory, 4 GiB at
/// most) the file's bytes and the weights read from them must fit together, so half of it;
/// natively a bound far above any model QuantLab handles.
pub const MAX_TENSOR_BYTES: u64 = if cfg!(target_pointer_width = "32") {
    2 << 30
} else {
    1 << 40
};
/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u32 = 32;

/// ggml type ids of the plain float formats.
const GGML_F32: u32 = 0;
const GGML_F16: u32 = 1;
const GGML_BF16: u32 = 30;

/// One tensor of the file, as `quantlab info` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Outermost first (reversed from the file's `ne`).
    pub dims: Vec<usize>,
    pub dtype: DType,
    /// Absolute byte offset of the tensor's data in the file.
    pub offset: usize,
    /// Bytes of data.
    pub bytes: usize,
}

/// A parsed GGUF file borrowing its bytes.
pub struct Gguf<'a> {
    label: String,
    bytes: &'a [u8],
    version: u32,
    alignment: usize,
    data_offset: usize,
    kv: Vec<(String, MetaValue)>,
    kv_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

/// Refuse a file whose tensors, as its header declares them, need more than `limit` bytes: the
/// error names the file, the size and the limit (and, in wasm, the page's memory).
pub fn check_declared_size(
    label: &str,
    sizes: impl Iterator<Item = u64>,
    limit: u64,
) -> Result<()> {
    let total = sizes.fold(0u64, |a, b| a.saturating_add(b));
    if total <= limit {
        return Ok(());
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let why = if cfg!(target_arch = "wasm32") {
        " (the page's WebAssembly memory holds at most 4 GiB, the file and the weights read \
         from it together)"
    } else {
        ""
    };
    Err(Error::unsupported(
        label,
        "tensors",
        format!(
            "the header declares {total} bytes ({:.2} GiB) of tensors, more than the {:.2} GiB \
             a model may need here{why}",
            gib(total),
            gib(limit)
        ),
    ))
}

impl<'a> Gguf<'a> {
    /// Parse a whole GGUF file. `label` (usually the file name) prefixes every error.
    pub fn parse(label: &str, bytes: &'a [u8]) -> Result<Gguf<'a>> {
        let mut r = Reader::new(label, bytes);
        let magic = r.array::<4>("magic")?;
        if &magic != b"GGUF" {
            return Err(Error::format(
                label,
                "magic",
                format!("expected \"GGUF\", found {magic:02x?}: not a GGUF file"),
            ));
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            let why = if (2..=3).contains(&version.swap_bytes()) {
                "a big-endian file".to_string()
            } else {
                format!("version {version}")
            };
            return Err(Error::unsupported(
                label,
                "version",
                format!("{why}; only little-endian GGUF versions 2 and 3 are read"),
            ));
        }
        let n_tensors = r.u64("tensor_count")?;
        let n_kv = r.u64("kv_count")?;
        if n_tensors > MAX_TENSORS {
            return Err(Error::format(
                label,
                "tensor_count",
                format!("{n_tensors} tensors exceeds the limit {MAX_TENSORS}"),
            ));
        }
        // Smallest key-value pair: key length (8) + 1 key byte + type (4) + a 1-byte value.
        let n_kv = r.bounded(n_kv, MAX_KV, 14, "kv_count", "key-value count")?;

        let mut kv = Vec::with_capacity(n_kv);
        let mut kv_index = HashMap::with_capacity(n_kv);
        for i in 0..n_kv {
            let field = format!("metadata key #{i}");
            let key = r.string(MAX_KEY_LEN, &field)?;
            if key.is_empty() {
                return Err(Error::format(label, field, "empty key"));
            }
            let ty = r.u32(key)?;
            let value = meta::read_value(&mut r, ty, key, 0)?;
            if kv_index.insert(key.to_string(), kv.len()).is_some() {
                return Err(Error::format(label, key, "key appears twice"));
            }
            kv.push((key.to_string(), value));
        }

        // Smallest tensor info: name length (8) + n_dims (4) + one dim (8) + type (4) + offset (8).
        let n_tensors = r.bounded(n_tensors, MAX_TENSORS, 32, "tensor_count", "tensor count")?;
        let mut raw = Vec::with_capacity(n_tensors);
        for i in 0..n_tensors {
            raw.push(read_tensor_info(&mut r, i)?);
        }

        check_declared_size(label, raw.iter().map(|t| t.bytes), MAX_TENSOR_BYTES)?;

        let mut g = Gguf {
            label: label.to_string(),
            bytes,
            version,
            alignment: DEFAULT_ALIGNMENT as usize,
            data_offset: 0,
            kv,
            kv_index,
            tensors: Vec::with_capacity(n_tensors),
            tensor_index: HashMap::with_capacity(n_tensors),
        };
        let alignment = match g.get_u32("general.alignment")? {
            None => DEFAULT_ALIGNMENT,
            Some(a) if a.is_power_of_two() && a <= MAX_ALIGNMENT => a,
            Some(a) => {
                return Err(Error::format(
                    label,
                    "general.alignment",
                    format!("{a} is not a power of two in 1..={MAX_ALIGNMENT}"),
                ))
            }
        } as usize;
        g.alignment = alignment;
        // r.pos <= bytes.len(), so this cannot overflow by more than the alignment.
        g.data_offset = r.pos().div_ceil(alignment) * alignment;
        if g.data_offset > bytes.len() && n_tensors > 0 {
            return Err(Error::format(
                label,
                "data section",
                format!(
                    "truncated: the data section starts at offset {} (after padding to \
                     general.alignment {alignment}) but the file ends at {}",
                    g.data_offset,
                    bytes.len()
                ),
            ));
        }
        let data_len = bytes.len().saturating_sub(g.data_offset);
        for t in raw {
            let info = g.place(t, data_len)?;
            g.tensor_index.insert(info.name.clone(), g.tensors.len());
            g.tensors.push(info);
        }
        g.check_layout(data_len)?;
        Ok(g)
    }

    /// Check one tensor's offset and size against the data section and make its `TensorInfo`.
    fn place(&self, t: RawInfo, data_len: usize) -> Result<TensorInfo> {
        let label = &self.label;
        if self.tensor_index.contains_key(&t.name) {
            return Err(Error::format(label, &t.name, "tensor name appears twice"));
        }
        if !t.offset.is_multiple_of(self.alignment as u64) {
            return Err(Error::format(
                label,
                &t.name,
                format!(
                    "data offset {} is not a multiple of general.alignment {}",
                    t.offset, self.alignment
                ),
            ));
        }
        if t.offset > data_len as u64 {
            return Err(Error::format(
                label,
                &t.name,
                format!(
                    "data offset {} is past the end of the data section ({data_len} bytes)",
                    t.offset
                ),
            ));
        }
        let end = t.offset.checked_add(t.bytes);
        if end.is_none_or(|e| e > data_len as u64) {
            return Err(Error::format(
                label,
                &t.name,
                format!(
                    "{} {:?} needs {} bytes at data offset {}, past the end of the data \
                     section ({data_len} bytes): file truncated?",
                    t.dtype.name(),
                    t.dims,
                    t.bytes,
                    t.offset
                ),
            ));
        }
        // Both fit in data_len, a usize.
        Ok(TensorInfo {
            name: t.name,
            dims: t.dims,
            dtype: t.dtype,
            offset: self.data_offset + t.offset as usize,
            bytes: t.bytes as usize,
        })
    }

    /// The tensors, in offset order, must tile the data section as a writer lays it out. Each
    /// one's size (from its type and shape) fits before the next one's data (tensors must not
    /// share bytes: a file that aliases them is malformed) and before the end of the data
    /// section (`place`), and what follows it up to the next tensor or the end is only padding:
    /// the room it is given is less than its size rounded up to `general.alignment` plus one
    /// alignment. A larger unused gap means its type or shape was changed to a smaller one (a
    /// tensor relabelled from F32 to Q8_0 or from Q4_1 to Q4_0 would otherwise decode its
    /// bytes as garbage weights, caught only where they happen to become non-finite).
    fn check_layout(&self, data_len: usize) -> Result<()> {
        let mut order: Vec<&TensorInfo> = self.tensors.iter().collect();
        order.sort_by_key(|t| t.offset);
        // Overlaps first, for every pair: an aliased tensor leaves a gap where it belongs,
        // and the overlap is the error that names the cause.
        for w in order.windows(2) {
            if let [a, b] = w {
                if a.offset + a.bytes > b.offset {
                    return Err(Error::format(
                        &self.label,
                        &b.name,
                        format!(
                            "data at file offset {} overlaps {} (bytes {}..{})",
                            b.offset,
                            a.name,
                            a.offset,
                            a.offset + a.bytes
                        ),
                    ));
                }
            }
        }
        let data_end = self.data_offset + data_len;
        let align = self.alignment;
        for (i, t) in order.iter().enumerate() {
            let (until, what) = match order.get(i + 1) {
                Some(n) => (n.offset, format!("the next tensor, {}", n.name)),
                None => (data_end, "the end of the data section".to_string()),
            };
            // `place` and the overlap check above put t.offset + t.bytes <= until.
            let room = until - t.offset;
            let most = t
                .bytes
                .div_ceil(align)
                .saturating_mul(align)
                .saturating_add(align);
            if room >= most {
                return Err(Error::format(
                    &self.label,
                    &t.name,
                    format!(
                        "{} {:?} needs {} bytes, but the layout gives it {room} (from file \
                         offset {} to {what} at {until}); only padding to general.alignment \
                         {align} may follow a tensor, so its type or shape does not match its \
                         data (relabelled?)",
                        t.dtype.name(),
                        t.dims,
                        t.bytes,
                        t.offset,
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn label(&self) -> &str {
        &self.label
    }
    pub fn version(&self) -> u32 {
        self.version
    }
    /// Alignment of tensor data (`general.alignment`, default 32).
    pub fn alignment(&self) -> usize {
        self.alignment
    }
    /// Absolute file offset of the data section.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }
    /// Metadata in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.kv
    }
    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }
    /// Name, dims, dtype and size of every tensor, for `quantlab info`.
    pub fn summary(&self) -> Vec<TensorInfo> {
        self.tensors.clone()
    }

    /// A tensor by name, borrowing the file's bytes. (Also `TensorSource::get`; the inherent
    /// `get` is the metadata lookup.)
    pub fn tensor(&self, name: &str) -> Option<RawTensor<'a>> {
        let t = self.tensors.get(*self.tensor_index.get(name)?)?;
        Some(RawTensor {
            name: t.name.clone(),
            dims: t.dims.clone(),
            dtype: t.dtype,
            data: self.bytes.get(t.offset..t.offset + t.bytes)?,
        })
    }
}

/// Counts only: the derived form would print the whole file buffer.
impl std::fmt::Debug for Gguf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf")
            .field("label", &self.label)
            .field("version", &self.version)
            .field("bytes", &self.bytes.len())
            .field("kv", &self.kv.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

impl TensorSource for Gguf<'_> {
    fn label(&self) -> &str {
        &self.label
    }
    fn get(&self, name: &str) -> Option<RawTensor<'_>> {
        self.tensor(name)
    }
    fn names(&self) -> Vec<String> {
        self.tensors.iter().map(|t| t.name.clone()).collect()
    }
}

/// A tensor info as read, before its offset is checked against the data section.
struct RawInfo {
    name: String,
    dims: Vec<usize>,
    dtype: DType,
    /// Relative to the data section.
    offset: u64,
    bytes: u64,
}

fn read_tensor_info(r: &mut Reader<'_, '_>, i: usize) -> Result<RawInfo> {
    let label = r.label();
    let name = r
        .string(MAX_TENSOR_NAME_LEN, &format!("tensor #{i} name"))?
        .to_string();
    let n_dims = r.u32(&name)?;
    if !(1..=MAX_DIMS).contains(&n_dims) {
        return Err(Error::format(
            label,
            &name,
            format!("n_dims {n_dims} is outside 1..={MAX_DIMS}"),
        ));
    }
    let mut ne = [0u64; MAX_DIMS as usize];
    let mut numel: u64 = 1;
    for d in ne.iter_mut().take(n_dims as usize) {
        *d = r.u64(&name)?;
        numel = numel.saturating_mul(*d);
        if *d == 0 || numel > MAX_TENSOR_ELEMENTS {
            return Err(Error::format(
                label,
                &name,
                format!(
                    "dims {:?}: each must be ≥ 1 and their product ≤ {MAX_TENSOR_ELEMENTS}",
                    &ne[..n_dims as usize]
                ),
            ));
        }
    }
    let ne = &ne[..n_dims as usize];
    let type_id = r.u32(&name)?;
    let dtype = match type_id {
        GGML_F32 => DType::F32,
        GGML_F16 => DType::F16,
        GGML_BF16 => DType::BF16,
        id => match GgmlType::from_id(id) {
            Some(t) => DType::Ggml(t),
            None => {
                return Err(Error::unsupported(
                    label,
                    &name,
                    format!(
                        "ggml type id {id} is not one QuantLab reads (F32, F16, BF16, Q4_0, \
                         Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K)"
                    ),
                ))
            }
        },
    };
    let offset = r.u64(&name)?;
    let bytes = match dtype {
        DType::F32 => 4 * numel,
        DType::F16 | DType::BF16 => 2 * numel,
        DType::Ggml(t) => {
            let bs = t.block_size() as u64;
            if !ne[0].is_multiple_of(bs) {
                return Err(Error::format(
                    label,
                    &name,
                    format!(
                        "{} rows of {} elements are not a multiple of its block size {bs}",
                        t.name(),
                        ne[0]
                    ),
                ));
            }
            numel / bs * t.type_size() as u64
        }
        // GGUF type ids map only to the types above.
        DType::Stored(..) => return Err(Error::format(label, &name, "not a GGUF type")),
    };
    let mut dims = Vec::with_capacity(ne.len());
    for &d in ne.iter().rev() {
        dims.push(usize::try_from(d).map_err(|_| {
            Error::unsupported(
                label,
                &name,
                format!("dim {d} exceeds this platform's usize"),
            )
        })?);
    }
    if usize::try_from(numel).is_err() {
        return Err(Error::unsupported(
            label,
            &name,
            format!("{numel} elements exceed this platform's usize"),
        ));
    }
    Ok(RawInfo {
        name,
        dims,
        dtype,
        offset,
        bytes,
    })
}
