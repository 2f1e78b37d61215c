//! GGUF writer, version 3, little-endian: the inverse of `io::gguf`'s reader, for exporting a
//! model llama.cpp loads (`model::gguf_export`).
//!
//! Spec: the GGUF file format of ggml (`docs/gguf.md` in the ggml repository). Layout:
//!   header      magic "GGUF", version u32 (3), tensor_count u64, kv_count u64
//!   metadata    kv_count × (key: string, value_type u32, value)
//!   tensor info tensor_count × (name: string, n_dims u32, ne[n_dims] u64, ggml_type u32,
//!               offset u64 relative to the data section)
//!   padding     zeros up to a multiple of `general.alignment`
//!   data        each tensor's bytes at its offset (a multiple of the alignment), zero-padded
//! A string is a u64 byte length and UTF-8 bytes (no terminator). `ne[0]` is the innermost
//! dimension, so the outermost-first dims QuantLab uses (`RawTensor::dims`) are written
//! reversed. Value type ids (`gguf_metadata_value_type`): 0 u8, 1 i8, 2 u16, 3 i16, 4 u32,
//! 5 i32, 6 f32, 7 bool, 8 string, 9 array, 10 u64, 11 i64, 12 f64; an array is an element type
//! (u32), a count (u64) and the elements.
//!
//! The writer always states `general.alignment` (u32, 32, the spec's default): a reader then
//! never has to guess, and llama.cpp accepts the key. Every tensor, the last one included, is
//! padded to the alignment, as ggml's own writer does, so the file tiles exactly the way our
//! reader's layout check (`Gguf::check_layout`) expects.

use crate::format::GgmlType;
use crate::io::gguf::{MetaArray, MetaValue};
use crate::tensor::DType;
use crate::{Error, Result};

/// The GGUF version written.
pub const VERSION: u32 = 3;
/// Alignment of the data section and of every tensor in it (`general.alignment`).
pub const ALIGNMENT: usize = 32;
/// ggml type ids of the plain float formats (`enum ggml_type`).
const GGML_F32: u32 = 0;
const GGML_F16: u32 = 1;
const GGML_BF16: u32 = 30;

/// One tensor to write.
struct Entry {
    name: String,
    /// Outermost first, as `RawTensor::dims`.
    dims: Vec<usize>,
    type_id: u32,
    data: Vec<u8>,
}

/// A GGUF file being assembled in memory: metadata in insertion order, tensors in insertion
/// order. `finish` lays it out.
pub struct GgufWriter {
    kv: Vec<(String, MetaValue)>,
    tensors: Vec<Entry>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

/// The ggml type id of a storage type GGUF has, and its bytes for `numel` elements with rows
/// of `row` elements; an error for QuantLab's own formats, which GGUF cannot hold.
fn ggml_type(dtype: DType, numel: usize, row: usize) -> Result<(u32, usize)> {
    Ok(match dtype {
        DType::F32 => (GGML_F32, 4 * numel),
        DType::F16 => (GGML_F16, 2 * numel),
        DType::BF16 => (GGML_BF16, 2 * numel),
        DType::Ggml(t) => {
            if !row.is_multiple_of(t.block_size()) {
                return Err(Error::config(
                    "gguf tensor",
                    format!(
                        "{} needs rows that are a multiple of {}, got {row}",
                        t.name(),
                        t.block_size()
                    ),
                ));
            }
            (t.id(), numel / t.block_size() * t.type_size())
        }
        DType::Stored(f, _) => {
            return Err(Error::config(
                "gguf tensor",
                format!(
                    "{} is QuantLab's own format; GGUF has no type for it",
                    f.name()
                ),
            ))
        }
    })
}

impl GgufWriter {
    pub fn new() -> Self {
        GgufWriter {
            kv: vec![(
                "general.alignment".to_string(),
                MetaValue::U32(ALIGNMENT as u32),
            )],
            tensors: Vec::new(),
        }
    }

    /// Add a metadata pair; a key may appear once (the reader refuses duplicates).
    pub fn kv(&mut self, key: &str, value: MetaValue) -> Result<()> {
        if key.is_empty() || self.kv.iter().any(|(k, _)| k == key) {
            return Err(Error::config(
                "gguf key",
                format!("{key:?} is empty or already written"),
            ));
        }
        self.kv.push((key.to_string(), value));
        Ok(())
    }

    pub fn str(&mut self, key: &str, v: &str) -> Result<()> {
        self.kv(key, MetaValue::Str(v.to_string()))
    }
    pub fn u32(&mut self, key: &str, v: usize) -> Result<()> {
        let v = u32::try_from(v)
            .map_err(|_| Error::config("gguf key", format!("{key} = {v} exceeds u32")))?;
        self.kv(key, MetaValue::U32(v))
    }
    pub fn f32(&mut self, key: &str, v: f32) -> Result<()> {
        self.kv(key, MetaValue::F32(v))
    }
    pub fn bool(&mut self, key: &str, v: bool) -> Result<()> {
        self.kv(key, MetaValue::Bool(v))
    }

    /// Add a tensor of `dims` (outermost first: `[rows, cols]` for a matrix, `[len]` for a
    /// vector) stored as `dtype`; `data` must be exactly the bytes that type needs.
    pub fn tensor(
        &mut self,
        name: &str,
        dims: &[usize],
        dtype: DType,
        data: Vec<u8>,
    ) -> Result<()> {
        let err = |msg: String| Error::config(format!("gguf tensor {name}"), msg);
        if name.is_empty() || name.len() > 63 {
            // ggml's GGML_MAX_NAME is 64 bytes, terminator included.
            return Err(err("names must be 1..=63 bytes".into()));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(err("written twice".into()));
        }
        if dims.is_empty() || dims.len() > 4 || dims.contains(&0) {
            return Err(err(format!("dims {dims:?}: 1 to 4 dims, each ≥ 1")));
        }
        let numel: usize = dims.iter().product();
        let (type_id, want) = ggml_type(dtype, numel, dims[dims.len() - 1])?;
        if data.len() != want {
            return Err(err(format!(
                "{} bytes for {} {dims:?}, expected {want}",
                data.len(),
                dtype.name()
            )));
        }
        self.tensors.push(Entry {
            name: name.to_string(),
            dims: dims.to_vec(),
            type_id,
            data,
        });
        Ok(())
    }

    /// The file's bytes.
    pub fn finish(self) -> Vec<u8> {
        let pad = |n: usize| n.div_ceil(ALIGNMENT) * ALIGNMENT;
        let data_len: usize = self.tensors.iter().map(|t| pad(t.data.len())).sum();
        let mut out = Vec::with_capacity(data_len + (1 << 20));
        out.extend_from_slice(b"GGUF");
        put_u32(&mut out, VERSION);
        put_u64(&mut out, self.tensors.len() as u64);
        put_u64(&mut out, self.kv.len() as u64);
        for (k, v) in &self.kv {
            put_str(&mut out, k);
            put_u32(&mut out, v.type_id());
            put_value(&mut out, v);
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            put_u32(&mut out, t.dims.len() as u32);
            for &d in t.dims.iter().rev() {
                put_u64(&mut out, d as u64);
            }
            put_u32(&mut out, t.type_id);
            put_u64(&mut out, offset as u64);
            offset += pad(t.data.len());
        }
        out.resize(pad(out.len()), 0);
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            out.resize(pad(out.len()), 0);
        }
        out
    }
}

/// `DType` of a ggml type id this writer produces (the reader's mapping, for tests).
pub fn dtype_of(id: u32) -> Option<DType> {
    match id {
        GGML_F32 => Some(DType::F32),
        GGML_F16 => Some(DType::F16),
        GGML_BF16 => Some(DType::BF16),
        id => GgmlType::from_id(id).map(DType::Ggml),
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.push(*x as u8),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => put_u32(out, *x),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(*x as u8),
        MetaValue::Str(s) => put_str(out, s),
        MetaValue::Array(a) => put_array(out, a),
        MetaValue::U64(x) => put_u64(out, *x),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_array(out: &mut Vec<u8>, a: &MetaArray) {
    put_u32(out, a.type_id());
    put_u64(out, a.len() as u64);
    fn each<T>(out: &mut Vec<u8>, v: &[T], f: impl Fn(&mut Vec<u8>, &T)) {
        for x in v {
            f(out, x);
        }
    }
    match a {
        MetaArray::U8(v) => out.extend_from_slice(v),
        MetaArray::I8(v) => each(out, v, |o, x| o.push(*x as u8)),
        MetaArray::U16(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        MetaArray::I16(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        MetaArray::U32(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        MetaArray::I32(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        MetaArray::F32(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        MetaArray::Bool(v) => each(out, v, |o, x| o.push(*x as u8)),
        MetaArray::Str(v) => each(out, v, |o, s| put_str(o, s)),
        MetaArray::Array(v) => each(out, v, put_array),
        MetaArray::U64(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        MetaArray::I64(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        MetaArray::F64(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Format;
    use crate::io::gguf::Gguf;
    use crate::tensor::TensorSource;
    use half::f16;

    #[test]
    fn round_trip_through_our_parser() {
        let mut w = GgufWriter::new();
        w.str("general.architecture", "llama").unwrap();
        w.u32("llama.block_count", 30).unwrap();
        w.f32("llama.rope.freq_base", 100_000.0).unwrap();
        w.bool("tokenizer.ggml.add_bos_token", false).unwrap();
        let toks = vec!["a".to_string(), "ü".to_string(), String::new()];
        w.kv(
            "tokenizer.ggml.tokens",
            MetaValue::Array(MetaArray::Str(toks.clone())),
        )
        .unwrap();
        w.kv(
            "tokenizer.ggml.token_type",
            MetaValue::Array(MetaArray::I32(vec![1, -3, 6])),
        )
        .unwrap();
        w.kv(
            "tokenizer.ggml.scores",
            MetaValue::Array(MetaArray::F32(vec![0.5, -1.25, f32::MIN_POSITIVE])),
        )
        .unwrap();
        let nested = MetaValue::Array(MetaArray::Array(vec![
            MetaArray::U8(vec![1, 2]),
            MetaArray::F64(vec![1.5]),
        ]));
        w.kv("x.nested", nested.clone()).unwrap();
        assert!(w.u32("llama.block_count", 1).is_err(), "duplicate key");

        // A Q4_0 matrix (2 rows of 64), an odd-sized F32 vector (3 × 4 bytes: padding follows),
        // an F16 matrix and a BF16 one.
        let q4: Vec<u8> = (0..2 * 2 * 18).map(|i| (i * 7) as u8).collect();
        let mut q4 = q4;
        for b in q4.chunks_exact_mut(18) {
            b[..2].copy_from_slice(&f16::from_f32(0.25).to_le_bytes());
        }
        let v: Vec<u8> = [1.0f32, -2.0, 3.5]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let h: Vec<u8> = (0..5 * 3)
            .flat_map(|i| f16::from_f32(i as f32).to_le_bytes())
            .collect();
        w.tensor(
            "m.weight",
            &[2, 64],
            DType::Ggml(GgmlType::Q4_0),
            q4.clone(),
        )
        .unwrap();
        w.tensor("v.weight", &[3], DType::F32, v.clone()).unwrap();
        w.tensor("h.weight", &[5, 3], DType::F16, h.clone())
            .unwrap();
        w.tensor("b.weight", &[1, 2], DType::BF16, vec![0, 0x3f, 0, 0xc0])
            .unwrap();
        // Wrong sizes, bad shapes and QuantLab formats are refused.
        assert!(w
            .tensor("x", &[2, 64], DType::Ggml(GgmlType::Q4_0), vec![0; 71])
            .is_err());
        assert!(w
            .tensor("y", &[2, 48], DType::Ggml(GgmlType::Q4_0), vec![0; 54])
            .is_err());
        assert!(w.tensor("m.weight", &[3], DType::F32, v.clone()).is_err());
        assert!(w
            .tensor(
                "z",
                &[1],
                DType::Stored(Format::OneBit, Default::default()),
                vec![]
            )
            .is_err());
        let bytes = w.finish();
        assert_eq!(bytes.len() % ALIGNMENT, 0);

        let g = Gguf::parse("written.gguf", &bytes).expect("our parser reads it");
        assert_eq!(g.version(), 3);
        assert_eq!(g.alignment(), 32);
        assert_eq!(g.metadata().len(), 9);
        assert_eq!(g.get_str("general.architecture").unwrap(), Some("llama"));
        assert_eq!(g.get_u32("llama.block_count").unwrap(), Some(30));
        assert_eq!(g.get_f32("llama.rope.freq_base").unwrap(), Some(100_000.0));
        assert_eq!(
            g.get_bool("tokenizer.ggml.add_bos_token").unwrap(),
            Some(false)
        );
        assert_eq!(
            g.get_str_array("tokenizer.ggml.tokens").unwrap(),
            Some(&toks[..])
        );
        assert_eq!(
            g.get_i32_array("tokenizer.ggml.token_type").unwrap(),
            Some(vec![1, -3, 6])
        );
        assert_eq!(
            g.get_f32_array("tokenizer.ggml.scores").unwrap(),
            Some(vec![0.5, -1.25, f32::MIN_POSITIVE])
        );
        assert_eq!(g.get("x.nested"), Some(&nested));
        let names: Vec<String> = g.names();
        assert_eq!(names, ["m.weight", "v.weight", "h.weight", "b.weight"]);
        let m = g.tensor("m.weight").unwrap();
        assert_eq!(
            (m.dims.clone(), m.dtype, m.data),
            (vec![2, 64], DType::Ggml(GgmlType::Q4_0), &q4[..])
        );
        let t = g.tensor("v.weight").unwrap();
        assert_eq!(
            (t.dims.clone(), t.dtype, t.data),
            (vec![3], DType::F32, &v[..])
        );
        let t = g.tensor("h.weight").unwrap();
        assert_eq!(
            (t.dims.clone(), t.dtype, t.data),
            (vec![5, 3], DType::F16, &h[..])
        );
        let t = g.tensor("b.weight").unwrap();
        assert_eq!(t.dtype, DType::BF16);
        for info in g.tensors() {
            assert_eq!(
                (info.offset - g.data_offset()) % ALIGNMENT,
                0,
                "{}",
                info.name
            );
        }
        assert_eq!(dtype_of(2), Some(DType::Ggml(GgmlType::Q4_0)));
        assert_eq!(dtype_of(30), Some(DType::BF16));
        assert_eq!(dtype_of(4), None);
    }

    #[test]
    fn empty_file_parses() {
        let bytes = GgufWriter::new().finish();
        let g = Gguf::parse("empty.gguf", &bytes).unwrap();
        assert_eq!(g.tensors().len(), 0);
        assert_eq!(g.metadata().len(), 1);
    }
}
