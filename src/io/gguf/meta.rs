//! GGUF metadata values (spec: ggml `docs/gguf.md`, `gguf_metadata_value_type`) and their
//! typed accessors.
//!
//! Value type ids: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array,
//! 10 u64, 11 i64, 12 f64. An array is an element type (u32), a count (u64) and the elements;
//! arrays may nest. Arrays are stored as one typed `Vec` each, so a 49 152-token vocabulary is
//! one `Vec<String>` and a byte array costs one byte per element.

use super::{Gguf, Reader, MAX_ARRAY_DEPTH, MAX_ARRAY_LEN, MAX_STRING_LEN};
use crate::{Error, Result};
use std::fmt;

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(MetaArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array: all elements share one type.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    Str(Vec<String>),
    Array(Vec<MetaArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

const TYPE_NAMES: [&str; 13] = [
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
];

/// Bytes one element of value type `ty` takes at least in the file (`None`: unknown type).
fn min_size(ty: u32) -> Option<usize> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 => 8,     // u64 length, possibly empty
        9 => 4 + 8, // element type + count, possibly empty
        _ => return None,
    })
}

fn unknown_type(r: &Reader<'_, '_>, key: &str, ty: u32) -> Error {
    Error::format(
        r.label(),
        key,
        format!("unknown metadata value type {ty} (known: 0..=12)"),
    )
}

/// Read one value of type `ty`; `depth` counts enclosing arrays.
pub(super) fn read_value(
    r: &mut Reader<'_, '_>,
    ty: u32,
    key: &str,
    depth: u32,
) -> Result<MetaValue> {
    Ok(match ty {
        0 => MetaValue::U8(r.u8(key)?),
        1 => MetaValue::I8(r.u8(key)? as i8),
        2 => MetaValue::U16(r.u16(key)?),
        3 => MetaValue::I16(r.u16(key)? as i16),
        4 => MetaValue::U32(r.u32(key)?),
        5 => MetaValue::I32(r.u32(key)? as i32),
        6 => MetaValue::F32(f32::from_bits(r.u32(key)?)),
        7 => MetaValue::Bool(read_bool(r, key)?),
        8 => MetaValue::Str(r.string(MAX_STRING_LEN, key)?.to_string()),
        9 => MetaValue::Array(read_array(r, key, depth)?),
        10 => MetaValue::U64(r.u64(key)?),
        11 => MetaValue::I64(r.u64(key)? as i64),
        12 => MetaValue::F64(f64::from_bits(r.u64(key)?)),
        _ => return Err(unknown_type(r, key, ty)),
    })
}

fn read_bool(r: &mut Reader<'_, '_>, key: &str) -> Result<bool> {
    match r.u8(key)? {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(Error::format(
            r.label(),
            key,
            format!("bool byte is {b}, must be 0 or 1"),
        )),
    }
}

/// `n` fixed-size elements decoded by `f` from their little-endian bytes. The caller bounded `n`
/// by the remaining bytes, so `take` fails before any allocation for a truncated array.
fn fixed<T, const N: usize>(
    r: &mut Reader<'_, '_>,
    n: usize,
    key: &str,
    f: fn([u8; N]) -> T,
) -> Result<Vec<T>> {
    let bytes = r.take(n * N, key)?;
    Ok(bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect())
}

fn read_array(r: &mut Reader<'_, '_>, key: &str, depth: u32) -> Result<MetaArray> {
    if depth >= MAX_ARRAY_DEPTH {
        return Err(Error::format(
            r.label(),
            key,
            format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"),
        ));
    }
    let ty = r.u32(key)?;
    let min = min_size(ty).ok_or_else(|| unknown_type(r, key, ty))?;
    let n = r.u64(key)?;
    let n = r.bounded(n, MAX_ARRAY_LEN, min, key, "array length")?;
    Ok(match ty {
        0 => MetaArray::U8(r.take(n, key)?.to_vec()),
        1 => MetaArray::I8(fixed(r, n, key, |[b]| b as i8)?),
        2 => MetaArray::U16(fixed(r, n, key, u16::from_le_bytes)?),
        3 => MetaArray::I16(fixed(r, n, key, i16::from_le_bytes)?),
        4 => MetaArray::U32(fixed(r, n, key, u32::from_le_bytes)?),
        5 => MetaArray::I32(fixed(r, n, key, i32::from_le_bytes)?),
        6 => MetaArray::F32(fixed(r, n, key, f32::from_le_bytes)?),
        7 => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(read_bool(r, key)?);
            }
            MetaArray::Bool(v)
        }
        8 => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(r.string(MAX_STRING_LEN, key)?.to_string());
            }
            MetaArray::Str(v)
        }
        9 => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(read_array(r, key, depth + 1)?);
            }
            MetaArray::Array(v)
        }
        10 => MetaArray::U64(fixed(r, n, key, u64::from_le_bytes)?),
        11 => MetaArray::I64(fixed(r, n, key, i64::from_le_bytes)?),
        12 => MetaArray::F64(fixed(r, n, key, f64::from_le_bytes)?),
        _ => return Err(unknown_type(r, key, ty)),
    })
}

impl MetaArray {
    pub fn len(&self) -> usize {
        match self {
            MetaArray::U8(v) => v.len(),
            MetaArray::I8(v) => v.len(),
            MetaArray::U16(v) => v.len(),
            MetaArray::I16(v) => v.len(),
            MetaArray::U32(v) => v.len(),
            MetaArray::I32(v) => v.len(),
            MetaArray::F32(v) => v.len(),
            MetaArray::Bool(v) => v.len(),
            MetaArray::Str(v) => v.len(),
            MetaArray::Array(v) => v.len(),
            MetaArray::U64(v) => v.len(),
            MetaArray::I64(v) => v.len(),
            MetaArray::F64(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// GGUF name of the element type.
    pub fn elem_type_name(&self) -> &'static str {
        TYPE_NAMES[self.type_id() as usize]
    }
    /// GGUF type id of the element type (`gguf_metadata_value_type`; the writer uses it too).
    pub fn type_id(&self) -> u32 {
        match self {
            MetaArray::U8(_) => 0,
            MetaArray::I8(_) => 1,
            MetaArray::U16(_) => 2,
            MetaArray::I16(_) => 3,
            MetaArray::U32(_) => 4,
            MetaArray::I32(_) => 5,
            MetaArray::F32(_) => 6,
            MetaArray::Bool(_) => 7,
            MetaArray::Str(_) => 8,
            MetaArray::Array(_) => 9,
            MetaArray::U64(_) => 10,
            MetaArray::I64(_) => 11,
            MetaArray::F64(_) => 12,
        }
    }
    /// Elements as i64 when they are integers.
    fn ints(&self) -> Option<Vec<i64>> {
        Some(match self {
            MetaArray::U8(v) => v.iter().map(|&x| x as i64).collect(),
            MetaArray::I8(v) => v.iter().map(|&x| x as i64).collect(),
            MetaArray::U16(v) => v.iter().map(|&x| x as i64).collect(),
            MetaArray::I16(v) => v.iter().map(|&x| x as i64).collect(),
            MetaArray::U32(v) => v.iter().map(|&x| x as i64).collect(),
            MetaArray::I32(v) => v.iter().map(|&x| x as i64).collect(),
            MetaArray::I64(v) => v.clone(),
            MetaArray::U64(v) => v.iter().map(|&x| x.min(i64::MAX as u64) as i64).collect(),
            _ => return None,
        })
    }
}

impl MetaValue {
    /// GGUF name of the value type ("u32", "string", "array", ...).
    pub fn type_name(&self) -> &'static str {
        TYPE_NAMES[self.type_id() as usize]
    }

    /// GGUF type id of the value (`gguf_metadata_value_type`; the writer uses it too).
    pub fn type_id(&self) -> u32 {
        match self {
            MetaValue::U8(_) => 0,
            MetaValue::I8(_) => 1,
            MetaValue::U16(_) => 2,
            MetaValue::I16(_) => 3,
            MetaValue::U32(_) => 4,
            MetaValue::I32(_) => 5,
            MetaValue::F32(_) => 6,
            MetaValue::Bool(_) => 7,
            MetaValue::Str(_) => 8,
            MetaValue::Array(_) => 9,
            MetaValue::U64(_) => 10,
            MetaValue::I64(_) => 11,
            MetaValue::F64(_) => 12,
        }
    }

    /// The value as an integer, whatever its integer width.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(x) => x as i128,
            MetaValue::I8(x) => x as i128,
            MetaValue::U16(x) => x as i128,
            MetaValue::I16(x) => x as i128,
            MetaValue::U32(x) => x as i128,
            MetaValue::I32(x) => x as i128,
            MetaValue::U64(x) => x as i128,
            MetaValue::I64(x) => x as i128,
            _ => return None,
        })
    }
}

/// Short human form for `quantlab info`: arrays show their type, length and first elements.
impl fmt::Display for MetaValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaValue::Str(s) if s.chars().count() > 60 => {
                let head: String = s.chars().take(60).collect();
                write!(f, "{head:?}… ({} bytes)", s.len())
            }
            MetaValue::Str(s) => write!(f, "{s:?}"),
            MetaValue::Bool(b) => write!(f, "{b}"),
            MetaValue::F32(x) => write!(f, "{x}"),
            MetaValue::F64(x) => write!(f, "{x}"),
            MetaValue::Array(a) => write!(f, "[{}; {}]", a.elem_type_name(), a.len()),
            v => match v.as_i128() {
                Some(i) => write!(f, "{i}"),
                None => write!(f, "{v:?}"),
            },
        }
    }
}

impl Gguf<'_> {
    /// A metadata value by key. (Tensors: `Gguf::tensor` or `TensorSource::get`.)
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        let i = *self.kv_index.get(key)?;
        self.kv.get(i).map(|(_, v)| v)
    }

    fn type_error(&self, key: &str, v: &MetaValue, want: &str) -> Error {
        Error::format(
            &self.label,
            key,
            format!("is a {} ({v}), expected {want}", v.type_name()),
        )
    }

    /// An unsigned integer of any width that fits in u32. `Ok(None)` when the key is absent.
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.as_i128().map(u32::try_from) {
            Some(Ok(x)) => Ok(Some(x)),
            Some(Err(_)) => Err(Error::format(
                &self.label,
                key,
                format!("{v} does not fit in 0..={}", u32::MAX),
            )),
            None => Err(self.type_error(key, v, "an unsigned integer")),
        }
    }

    /// An f32 (or f64 narrowed to f32).
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::F32(x)) => Ok(Some(*x)),
            Some(MetaValue::F64(x)) => Ok(Some(*x as f32)),
            Some(v) => Err(self.type_error(key, v, "a float")),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Str(s)) => Ok(Some(s)),
            Some(v) => Err(self.type_error(key, v, "a string")),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.type_error(key, v, "a bool")),
        }
    }

    pub fn get_str_array(&self, key: &str) -> Result<Option<&[String]>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Array(MetaArray::Str(v))) => Ok(Some(v)),
            Some(v) => Err(self.type_error(key, v, "an array of strings")),
        }
    }

    /// An array of integers of any width, each of which must fit in i32.
    pub fn get_i32_array(&self, key: &str) -> Result<Option<Vec<i32>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        if let MetaValue::Array(MetaArray::I32(a)) = v {
            return Ok(Some(a.clone()));
        }
        let ints = match v {
            MetaValue::Array(a) => a.ints(),
            _ => None,
        }
        .ok_or_else(|| self.type_error(key, v, "an array of integers"))?;
        ints.iter()
            .enumerate()
            .map(|(i, &x)| {
                i32::try_from(x).map_err(|_| {
                    Error::format(
                        &self.label,
                        key,
                        format!("element {i} ({x}) does not fit i32"),
                    )
                })
            })
            .collect::<Result<Vec<i32>>>()
            .map(Some)
    }

    /// An array of f32 (or f64 narrowed to f32).
    pub fn get_f32_array(&self, key: &str) -> Result<Option<Vec<f32>>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Array(MetaArray::F32(a))) => Ok(Some(a.clone())),
            Some(MetaValue::Array(MetaArray::F64(a))) => {
                Ok(Some(a.iter().map(|&x| x as f32).collect()))
            }
            Some(v) => Err(self.type_error(key, v, "an array of floats")),
        }
    }
}
