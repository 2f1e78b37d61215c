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
/// Layer indices in tensor names above this are refused before any allocation depends on them.
const MAX_LAYER_INDEX: usize = crate::model::config::ModelConfig::MAX_LAYERS;

/// Hugging Face tensors that carry no information QuantLab needs: older Llama checkpoints store
/// the RoPE inverse frequencies (recomputed from `rope_theta`).
fn is_ignored(hf_name: &str) -> bool {
    hf_name.ends_with(".self_attn.rotary_emb.inv_freq")
}

/// Canonical (GGUF-style) name of a Hugging Face Llama-family tensor, or `None` when the name is
/// not part of the supported architecture (a Qwen3 `q_norm`, a vision tower, ...).
pub fn canonical_name(hf_name: &str) -> Option<String> {
    match hf_name {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf_name.strip_prefix("model.layers.")?;
    let (index, rest) = rest.split_once('.')?;
    let layer = parse_layer_index(index)?;
    let (module, suffix) = match rest {
        "input_layernorm.weight" => ("attn_norm", "weight"),
        "post_attention_layernorm.weight" => ("ffn_norm", "weight"),
        _ => {
            let (path, suffix) = rest.rsplit_once('.')?;
            if suffix != "weight" && suffix != "bias" {
                return None;
            }
            let module = match path {
                "self_attn.q_proj" => "attn_q",
                "self_attn.k_proj" => "attn_k",
                "self_attn.v_proj" => "attn_v",
                "self_attn.o_proj" => "attn_output",
                "mlp.gate_proj" => "ffn_gate",
                "mlp.up_proj" => "ffn_up",
                "mlp.down_proj" => "ffn_down",
                _ => return None,
            };
            (module, suffix)
        }
    };
    Some(format!("blk.{layer}.{module}.{suffix}"))
}

/// The Hugging Face name of a canonical tensor name (inverse of
/// `canonical_name`), for messages about tensors that are absent.
pub fn hf_name_of(canonical: &str) -> String {
    match canonical {
        "token_embd.weight" => return "model.embed_tokens.weight".into(),
        "output_norm.weight" => return "model.norm.weight".into(),
        "output.weight" => return "lm_head.weight".into(),
        _ => {}
    }
    let Some((i, rest)) = canonical
        .strip_prefix("blk.")
        .and_then(|r| r.split_once('.'))
    else {
        return canonical.to_string();
    };
    let Some((module, suffix)) = rest.split_once('.') else {
        return canonical.to_string();
    };
    let path = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return canonical.to_string(),
    };
    format!("model.layers.{i}.{path}.{suffix}")
}

/// A decimal layer index without leading zeros (so `layers.01` cannot alias `layers.1`).
fn parse_layer_index(s: &str) -> Option<usize> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    let i: usize = s.parse().ok()?;
    (i < MAX_LAYER_INDEX).then_some(i)
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
    /// Parse the shards `(file name, bytes)`. Fails on a malformed file, a tensor name outside
    /// the Llama family, a dtype other than F32/F16/BF16, or a tensor present in two shards.
    pub fn new(shards: &[(&'a str, &'a [u8])]) -> Result<Self> {
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
                if is_ignored(hf_name) {
                    continue;
                }
                let Some(canonical) = canonical_name(hf_name) else {
                    return Err(Error::unsupported(
                        file,
                        hf_name,
                        "tensor name is not part of a Llama/Mistral/Qwen2 checkpoint",
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
fn parse_shard<'a>(file: &str, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
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
    fn maps_every_llama_name() {
        let cases = [
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("model.norm.weight", "output_norm.weight"),
            ("lm_head.weight", "output.weight"),
            (
                "model.layers.0.input_layernorm.weight",
                "blk.0.attn_norm.weight",
            ),
            (
                "model.layers.12.post_attention_layernorm.weight",
                "blk.12.ffn_norm.weight",
            ),
            (
                "model.layers.3.self_attn.q_proj.weight",
                "blk.3.attn_q.weight",
            ),
            ("model.layers.3.self_attn.k_proj.bias", "blk.3.attn_k.bias"),
            ("model.layers.3.self_attn.v_proj.bias", "blk.3.attn_v.bias"),
            (
                "model.layers.3.self_attn.o_proj.weight",
                "blk.3.attn_output.weight",
            ),
            (
                "model.layers.7.mlp.gate_proj.weight",
                "blk.7.ffn_gate.weight",
            ),
            ("model.layers.7.mlp.up_proj.weight", "blk.7.ffn_up.weight"),
            (
                "model.layers.7.mlp.down_proj.weight",
                "blk.7.ffn_down.weight",
            ),
        ];
        for (hf, want) in cases {
            assert_eq!(canonical_name(hf).as_deref(), Some(want), "{hf}");
            assert_eq!(hf_name_of(want), hf, "inverse of {want}");
        }
    }

    #[test]
    fn refuses_foreign_and_aliasing_names() {
        for hf in [
            "model.layers.01.input_layernorm.weight",
            "model.layers.-1.input_layernorm.weight",
            "model.layers.99999.input_layernorm.weight",
            "model.layers.0.self_attn.q_norm.weight",
            "model.layers.0.self_attn.q_proj.scales",
            "model.layers.0.input_layernorm.bias",
            "vision_tower.weight",
        ] {
            assert_eq!(canonical_name(hf), None, "{hf}");
        }
    }

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
