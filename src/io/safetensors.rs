//! Hugging Face safetensors checkpoints (one file or several shards) as a `TensorSource`.
//!
//! Format: <https://github.com/huggingface/safetensors> (README, "Format"): an 8-byte
//! little-endian header length `N`, `N` bytes of JSON mapping tensor names to
//! `{dtype, shape, data_offsets}` (offsets relative to the byte after the header), then the data.
//! The `safetensors` crate parses the header and checks the offsets without copying; this file
//! adds what a hostile buffer needs on top (a tighter header bound, messages naming the file),
//! and translates Hugging Face tensor names of the Llama family (`model.layers.{i}.self_attn.
//! q_proj.weight`) into the canonical GGUF names the rest of QuantLab uses (`blk.{i}.attn_q.
//! weight`).
//!
//! Sharded checkpoints list their files in `model.safetensors.index.json`
//! (`{"metadata": {...}, "weight_map": {tensor name: file name}}`).

use crate::tensor::{DType, RawTensor, TensorSource};
use crate::{Error, Result};
use safetensors::{Dtype, SafeTensorError, SafeTensors};
use std::collections::{BTreeMap, HashMap};

/// Largest JSON header accepted. A header costs ~100 bytes per tensor, so 16 MiB leaves room for
/// ~150k tensors, far beyond any Llama-family checkpoint; the crate itself allows 100 MB.
pub const MAX_HEADER_BYTES: usize = 16 << 20;
/// Most shards a checkpoint (or an index file) may name.
pub const MAX_SHARDS: usize = 1024;
/// Largest `model.safetensors.index.json` accepted.
pub const MAX_INDEX_BYTES: usize = 16 << 20;

/// How an architecture names its tensors: the canonical (GGUF-style) name of a Hugging Face
/// tensor name, whether a stored tensor carries nothing QuantLab needs (RoPE inverse
/// frequencies, GPT-2's causal-mask buffers), and the family's name for messages. The
/// architecture files (`model::arch`) provide these; this parser stays free of model code.
#[derive(Clone, Copy)]
pub struct Naming<'n> {
    pub canonical: &'n dyn Fn(&str) -> Option<String>,
    pub ignored: &'n dyn Fn(&str) -> bool,
    pub family: &'n str,
}

/// The layer a canonical name belongs to (`blk.{i}.…`), if any.
pub fn layer_of(canonical: &str) -> Option<usize> {
    let rest = canonical.strip_prefix("blk.")?;
    rest.split_once('.')?.0.parse().ok()
}

fn dtype_of(d: Dtype) -> Option<DType> {
    match d {
        Dtype::F32 => Some(DType::F32),
        Dtype::F16 => Some(DType::F16),
        Dtype::BF16 => Some(DType::BF16),
        _ => None,
    }
}

/// Where a canonical tensor lives.
#[derive(Clone, Debug)]
struct Entry {
    shard: usize,
    hf_name: String,
}

/// One or more safetensors shards, parsed without copying tensor data, addressed by canonical
/// name.
pub struct SafetensorsSource<'a> {
    label: String,
    files: Vec<String>,
    shards: Vec<SafeTensors<'a>>,
    /// Canonical name → shard and Hugging Face name.
    map: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for SafetensorsSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsSource")
            .field("files", &self.files)
            .field("tensors", &self.map.len())
            .finish()
    }
}

impl<'a> SafetensorsSource<'a> {
    /// Parse the shards `(file name, bytes)`, addressing tensors by `naming`'s canonical names.
    /// Fails on a malformed file, a tensor name outside the architecture, a dtype other than
    /// F32/F16/BF16, or a tensor present in two shards.
    pub fn new(shards: &[(&'a str, &'a [u8])], naming: Naming<'_>) -> Result<Self> {
        if shards.is_empty() {
            return Err(Error::format("safetensors", "shards", "no files given"));
        }
        if shards.len() > MAX_SHARDS {
            return Err(Error::format(
                "safetensors",
                "shards",
                format!("{} files, at most {MAX_SHARDS} accepted", shards.len()),
            ));
        }
        let mut files = Vec::with_capacity(shards.len());
        let mut parsed = Vec::with_capacity(shards.len());
        let mut map: BTreeMap<String, Entry> = BTreeMap::new();
        for (si, &(file, bytes)) in shards.iter().enumerate() {
            let st = parse_shard(file, bytes)?;
            // Sorted so that errors do not depend on hash order.
            let mut names: Vec<(&str, _)> = st.iter().collect();
            names.sort_by(|a, b| a.0.cmp(b.0));
            for (hf_name, view) in names {
                if (naming.ignored)(hf_name) {
                    continue;
                }
                let Some(canonical) = (naming.canonical)(hf_name) else {
                    return Err(Error::unsupported(
                        file,
                        hf_name,
                        format!("tensor name is not part of a {} checkpoint", naming.family),
                    ));
                };
                if dtype_of(view.dtype()).is_none() {
                    return Err(Error::unsupported(
                        file,
                        hf_name,
                        format!("dtype {} (supported: F32, F16, BF16)", view.dtype()),
                    ));
                }
                if let Some(prev) = map.get(&canonical) {
                    let prev_file = files.get(prev.shard).map_or("?", |s: &String| s.as_str());
                    return Err(Error::format(
                        file,
                        hf_name,
                        format!("tensor also present in {prev_file}"),
                    ));
                }
                map.insert(
                    canonical,
                    Entry {
                        shard: si,
                        hf_name: hf_name.to_string(),
                    },
                );
            }
            files.push(file.to_string());
            parsed.push(st);
        }
        let label = match files.as_slice() {
            [one] => one.clone(),
            [first, ..] => format!("{first} (+{} more shards)", files.len() - 1),
            [] => String::new(),
        };
        Ok(SafetensorsSource {
            label,
            files,
            shards: parsed,
            map,
        })
    }

    /// The Hugging Face name stored in the checkpoint for a canonical name.
    pub fn hf_name(&self, canonical: &str) -> Option<&str> {
        self.map.get(canonical).map(|e| e.hf_name.as_str())
    }

    /// The shard file holding a canonical tensor.
    pub fn file_of(&self, canonical: &str) -> Option<&str> {
        let e = self.map.get(canonical)?;
        self.files.get(e.shard).map(String::as_str)
    }

    /// Check the shards against a `model.safetensors.index.json`: every tensor its weight map
    /// lists is in the file it names, and every tensor in the shards is listed.
    pub fn verify_index(&self, index_json: &[u8]) -> Result<()> {
        let weight_map = parse_index(index_json)?;
        let by_file: HashMap<&str, &SafeTensors<'a>> = self
            .files
            .iter()
            .map(String::as_str)
            .zip(&self.shards)
            .collect();
        let mut listed = 0usize;
        for (hf_name, file) in &weight_map {
            let Some(st) = by_file.get(file.as_str()) else {
                return Err(Error::format(
                    INDEX_FILE,
                    format!("weight_map.{hf_name}"),
                    format!("names file {file}, which was not given"),
                ));
            };
            if st.tensor(hf_name).is_err() {
                return Err(Error::format(
                    INDEX_FILE,
                    format!("weight_map.{hf_name}"),
                    format!("tensor is not in {file}"),
                ));
            }
            listed += 1;
        }
        let total: usize = self.shards.iter().map(|s| s.len()).sum();
        if total != listed {
            return Err(Error::format(
                INDEX_FILE,
                "weight_map",
                format!("lists {listed} tensors but the shards hold {total}"),
            ));
        }
        Ok(())
    }
}

impl TensorSource for SafetensorsSource<'_> {
    fn label(&self) -> &str {
        &self.label
    }

    /// The tensor under its canonical name; `RawTensor::name` is the Hugging Face name (what
    /// the user sees in the file), so shape errors point at the checkpoint's own naming.
    fn get(&self, name: &str) -> Option<RawTensor<'_>> {
        let e = self.map.get(name)?;
        let view = self.shards.get(e.shard)?.tensor(&e.hf_name).ok()?;
        Some(RawTensor {
            name: e.hf_name.clone(),
            dims: view.shape().to_vec(),
            dtype: dtype_of(view.dtype())?,
            data: view.data(),
        })
    }

    fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }
}

const INDEX_FILE: &str = "model.safetensors.index.json";

/// Parse one shard, turning the crate's errors into messages naming the file and the limit.
pub(crate) fn parse_shard<'a>(file: &str, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(Error::format(
            file,
            "header length",
            format!(
                "file is {} bytes, shorter than the 8-byte header length",
                bytes.len()
            ),
        ));
    };
    let mut le = [0u8; 8];
    le.copy_from_slice(len_bytes);
    let n = u64::from_le_bytes(le);
    if n > MAX_HEADER_BYTES as u64 {
        return Err(Error::format(
            file,
            "header length",
            format!("{n} bytes, at most {MAX_HEADER_BYTES} accepted"),
        ));
    }
    let n = n as usize;
    let rest = bytes.len() - 8;
    if n > rest {
        return Err(Error::format(
            file,
            "header length",
            format!("{n} bytes but only {rest} follow (file truncated?)"),
        ));
    }
    SafeTensors::deserialize(bytes).map_err(|e| match e {
        SafeTensorError::MetadataIncompleteBuffer => {
            let have = rest - n;
            let need = bytes
                .get(8..8 + n)
                .and_then(data_end)
                .map_or_else(|| "a different size".to_string(), |e| e.to_string());
            Error::format(
                file,
                "data",
                format!(
                    "{have} data bytes after the header, the tensors it lists need {need} \
                     (file truncated or padded?)"
                ),
            )
        }
        SafeTensorError::InvalidOffset(t) => {
            Error::format(file, t, "data_offsets overlap or leave gaps")
        }
        other => Error::format(file, "header", other),
    })
}

/// The end of the last tensor's data as the header declares it (for the truncation message).
fn data_end(header: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(header).ok()?;
    v.as_object()?
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .filter_map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
}

/// The shard file names a `model.safetensors.index.json` lists, sorted and deduplicated, each
/// checked to be a plain `*.safetensors` file name (no directories), so a caller can fetch them
/// next to the index.
pub fn shards_from_index(index_json: &[u8]) -> Result<Vec<String>> {
    let weight_map = parse_index(index_json)?;
    let mut files: Vec<String> = weight_map.into_values().collect();
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err(Error::format(INDEX_FILE, "weight_map", "lists no tensors"));
    }
    if files.len() > MAX_SHARDS {
        return Err(Error::format(
            INDEX_FILE,
            "weight_map",
            format!("names {} files, at most {MAX_SHARDS} accepted", files.len()),
        ));
    }
    Ok(files)
}

/// `weight_map` of an index file: tensor name → shard file name.
fn parse_index(index_json: &[u8]) -> Result<HashMap<String, String>> {
    if index_json.len() > MAX_INDEX_BYTES {
        return Err(Error::format(
            INDEX_FILE,
            "size",
            format!(
                "{} bytes, at most {MAX_INDEX_BYTES} accepted",
                index_json.len()
            ),
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(index_json).map_err(|e| Error::format(INDEX_FILE, "json", e))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::format(INDEX_FILE, "weight_map", "missing or not an object"))?;
    let mut out = HashMap::with_capacity(map.len());
    for (name, file) in map {
        let field = || format!("weight_map.{name}");
        let file = file
            .as_str()
            .ok_or_else(|| Error::format(INDEX_FILE, field(), "file name is not a string"))?;
        let plain = !file.is_empty()
            && file.len() <= 255
            && file.ends_with(".safetensors")
            && !file.contains(['/', '\\'])
            && !file.starts_with('.');
        if !plain {
            return Err(Error::format(
                INDEX_FILE,
                field(),
                format!("{file:?} is not a plain *.safetensors file name"),
            ));
        }
        out.insert(name.clone(), file.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_rejects_paths() {
        let bad = br#"{"weight_map": {"a": "../etc/x.safetensors"}}"#;
        assert!(shards_from_index(bad).is_err());
        let good = br#"{"metadata": {"total_size": 4},
            "weight_map": {"a": "m-2.safetensors", "b": "m-1.safetensors", "c": "m-2.safetensors"}}"#;
        assert_eq!(
            shards_from_index(good).unwrap(),
            vec!["m-1.safetensors".to_string(), "m-2.safetensors".to_string()]
        );
    }
}
