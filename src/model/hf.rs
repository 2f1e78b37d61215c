//! Hugging Face checkpoints: `config.json` → `ModelConfig` (each architecture's file in
//! `model::arch` reads its own keys, with the JSON field readers below), and `config.json` +
//! safetensors shards → `ModelWeights`, every tensor checked against the architecture's
//! topology (presence, shape, biases, no extra layers).
//!
//! Where `transformers` has a default for a size (e.g. `hidden_size = 4096`), the architectures
//! require the field instead: a config without it is broken, and a 7B default would only surface
//! later as a confusing shape mismatch.
//!
//! RoPE order: Hugging Face checkpoints rotate pairs `(i, i + d/2)` of each head
//! (`RopeStyle::Half`). llama.cpp's converter permutes q/k rows into interleaved order for GGUF
//! `llama`; QuantLab keeps the checkpoint's order and tells the forward pass which style it is.

use crate::io::safetensors::{layer_of, Naming, SafetensorsSource};
use crate::model::arch::{Arch, BiasRule};
use crate::model::config::ModelConfig;
use crate::model::weights::{ModelWeights, TransposedSource};
use crate::tensor::TensorSource;
use crate::{Error, Result};
use serde_json::{Map, Value};

const FILE: &str = "config.json";
/// Largest `config.json` accepted.
pub const MAX_CONFIG_BYTES: usize = crate::io::MAX_CONFIG_JSON_BYTES;
/// Largest context length accepted from `max_position_embeddings` / `sliding_window`.
pub const MAX_CONTEXT: usize = 1 << 24;

/// A parsed `config.json`: the model configuration plus what the loader checks against the
/// tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct HfConfig {
    pub model: ModelConfig,
    /// The linears (canonical base names) whose bias the topology leaves to the file
    /// (`BiasRule::Optional`) that this config says carry one (Qwen2's q/k/v, Llama with
    /// `attention_bias`); the others must have none.
    pub biased: Vec<&'static str>,
    /// `torch_dtype` (or `dtype` in newer files), informational: the tensors' own dtypes rule.
    pub torch_dtype: Option<String>,
    /// The `config.json` key of the layer count, for messages (`num_hidden_layers`, `n_layer`).
    pub layers_key: &'static str,
}

/// Parse a `config.json` into the model configuration. See the module comment for defaults.
pub fn parse_config(json: &[u8]) -> Result<ModelConfig> {
    Ok(parse_hf_config(json)?.model)
}

/// Parse a `config.json`, keeping the bias layout and dtype as well.
pub fn parse_hf_config(json: &[u8]) -> Result<HfConfig> {
    if json.len() > MAX_CONFIG_BYTES {
        return Err(Error::format(
            FILE,
            "size",
            format!("{} bytes, at most {MAX_CONFIG_BYTES} accepted", json.len()),
        ));
    }
    let v: Value =
        serde_json::from_slice(json).map_err(|e| Error::format(FILE, "json", e.to_string()))?;
    let o = v
        .as_object()
        .ok_or_else(|| Error::format(FILE, "json", "top level is not an object"))?;

    let model_type =
        string(o, "model_type")?.ok_or_else(|| Error::format(FILE, "model_type", "missing"))?;
    let hf = match Arch::of(model_type) {
        Some(a) => a.from_hf(o)?,
        None => {
            return Err(Error::unsupported(
                FILE,
                "model_type",
                format!("{model_type:?} (supported: {})", Arch::names().join(", ")),
            ))
        }
    };
    hf.model.validate(FILE).map_err(hf_field_names)?;
    Ok(hf)
}

/// `ModelConfig::validate` names its own fields; say the `config.json` key the user can fix.
fn hf_field_names(e: Error) -> Error {
    match e {
        Error::Format { file, field, msg } => {
            let key = match field.as_str() {
                "n_layer" => "num_hidden_layers",
                "dim" => "hidden_size",
                "ffn_dim" => "intermediate_size",
                "n_head" => "num_attention_heads",
                "n_kv_head" => "num_key_value_heads",
                "vocab" => "vocab_size",
                "norm_eps" => "rms_norm_eps",
                other => other,
            };
            Error::format(file, key, msg)
        }
        other => other,
    }
}

/// Refuse a config whose `field` (absent: `default`) is not one of `allowed`; `what` says what
/// is implemented.
pub(crate) fn require_str(
    o: &Map<String, Value>,
    field: &str,
    default: &str,
    allowed: &[&str],
    what: &str,
) -> Result<()> {
    let v = string(o, field)?.unwrap_or(default);
    if allowed.contains(&v) {
        return Ok(());
    }
    Err(Error::unsupported(FILE, field, format!("{v:?} ({what})")))
}

/// Refuse a config in which a present boolean `field` differs from the one value implemented.
pub(crate) fn require_bools(o: &Map<String, Value>, fields: &[(&str, bool)]) -> Result<()> {
    for &(field, want) in fields {
        if opt_bool(o, field)?.is_some_and(|v| v != want) {
            return Err(Error::unsupported(
                FILE,
                field,
                format!("{} (only {want} is implemented)", !want),
            ));
        }
    }
    Ok(())
}

/// `dim / n_head`, refused (naming the keys) when the heads do not divide the width.
pub(crate) fn head_dim(dim: usize, n_head: usize, dim_key: &str, heads_key: &str) -> Result<usize> {
    if !dim.is_multiple_of(n_head) {
        return Err(Error::format(
            FILE,
            heads_key,
            format!("{dim_key} {dim} is not divisible by {n_head} heads"),
        ));
    }
    Ok(dim / n_head)
}

pub(crate) fn present<'v>(o: &'v Map<String, Value>, field: &str) -> Option<&'v Value> {
    o.get(field).filter(|v| !v.is_null())
}

pub(crate) fn string<'v>(o: &'v Map<String, Value>, field: &str) -> Result<Option<&'v str>> {
    match present(o, field) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| Error::format(FILE, field, format!("{v} is not a string"))),
    }
}

pub(crate) fn opt_bool(o: &Map<String, Value>, field: &str) -> Result<Option<bool>> {
    match present(o, field) {
        None => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| Error::format(FILE, field, format!("{v} is not true or false"))),
    }
}

/// A positive integer no larger than `max`, if present.
pub(crate) fn opt_size(o: &Map<String, Value>, field: &str, max: usize) -> Result<Option<usize>> {
    let Some(v) = present(o, field) else {
        return Ok(None);
    };
    match v.as_u64() {
        Some(n) if n >= 1 && n <= max as u64 => Ok(Some(n as usize)),
        _ => Err(Error::format(
            FILE,
            field,
            format!("{v} is not an integer in 1..={max}"),
        )),
    }
}

pub(crate) fn size(o: &Map<String, Value>, field: &str, max: usize) -> Result<usize> {
    opt_size(o, field, max)?.ok_or_else(|| Error::format(FILE, field, "missing"))
}

pub(crate) fn opt_f32(o: &Map<String, Value>, field: &str) -> Result<Option<f32>> {
    let Some(v) = present(o, field) else {
        return Ok(None);
    };
    match v.as_f64() {
        Some(x) if x.is_finite() && x > 0.0 && x < f32::MAX as f64 => Ok(Some(x as f32)),
        _ => Err(Error::format(
            FILE,
            field,
            format!("{v} is not a positive finite number"),
        )),
    }
}

/// An f32 configuration value as config.json writes it: the shortest decimal that reads back as
/// the same f32 (`1e-5`, not the f64 widening `9.999999747378752e-6`), so a value that came
/// from a config.json goes back unchanged and Python reads the number a person would write.
pub(crate) fn json_f32(x: f32) -> Value {
    // Rust's `Display` for f32 is the shortest round-trip decimal; every finite f32 parses.
    match x.to_string().parse::<f64>() {
        Ok(v) if v.is_finite() => Value::from(v),
        _ => Value::Null,
    }
}

/// Load a Hugging Face checkpoint: `config.json` bytes and the safetensors shards
/// `(file name, bytes)`. Every tensor is checked against the config (presence, shape, the bias
/// layout of the architecture, no extra layers); tensors keep their stored dtype.
pub fn load_hf(config_json: &[u8], shards: &[(&str, &[u8])]) -> Result<ModelWeights> {
    let cfg = parse_hf_config(config_json)?;
    let arch = cfg.model.architecture()?;
    let canonical = |hf: &str| arch.canonical_name(hf);
    let ignored = |hf: &str| arch.ignored(hf);
    let family = format!("{} ({})", cfg.model.arch, arch.names_of().join("/"));
    let naming = Naming {
        canonical: &canonical,
        ignored: &ignored,
        family: &family,
    };
    let src = SafetensorsSource::new(shards, naming)?;
    check_tensor_set(&cfg, arch, &src)?;
    let topo = arch.topology(&cfg.model);
    if topo.hf_transposed {
        let names: Vec<String> = (0..cfg.model.n_layer)
            .flat_map(|i| {
                topo.linears
                    .iter()
                    .map(move |l| format!("blk.{i}.{}.weight", l.name))
            })
            .collect();
        let t = TransposedSource::new(&src, &names)?;
        return ModelWeights::from_source(cfg.model, &t);
    }
    ModelWeights::from_source(cfg.model, &src)
}

/// The checks `ModelWeights::from_source` cannot make on its own: it treats the LM head (and
/// the Llama family's biases) as optional, where a Hugging Face config says exactly which exist.
fn check_tensor_set(cfg: &HfConfig, arch: Arch, src: &SafetensorsSource<'_>) -> Result<()> {
    let c = &cfg.model;
    let label = src.label();
    for name in src.names() {
        if let Some(i) = layer_of(&name) {
            if i >= c.n_layer {
                return Err(Error::format(
                    src.file_of(&name).unwrap_or(label),
                    src.hf_name(&name).unwrap_or(&name),
                    format!(
                        "layer {i} is beyond {} = {} in config.json \
                         (mismatched config vs weights)",
                        cfg.layers_key, c.n_layer
                    ),
                ));
            }
        }
    }
    let topo = arch.topology(c);
    let mut required: Vec<String> = vec!["token_embd.weight".into()];
    if let Some(n) = &topo.output_norm {
        required.push(format!("{}.weight", n.name));
        if n.bias {
            required.push(format!("{}.bias", n.name));
        }
    }
    if !c.tied_embeddings {
        required.push("output.weight".into());
    }
    required.extend(topo.globals.iter().map(|g| format!("{}.weight", g.name)));
    for i in 0..c.n_layer {
        for l in &topo.linears {
            required.push(format!("blk.{i}.{}.weight", l.name));
            let bias = format!("blk.{i}.{}.bias", l.name);
            let has_bias = match l.bias {
                BiasRule::Required => true,
                BiasRule::Forbidden => false,
                BiasRule::Optional => cfg.biased.contains(&l.name),
            };
            if has_bias {
                required.push(bias);
            } else if src.get(&bias).is_some() {
                return Err(Error::format(
                    src.file_of(&bias).unwrap_or(label),
                    src.hf_name(&bias).unwrap_or(&bias),
                    format!(
                        "unexpected bias: config.json (model_type {}) declares none here",
                        c.arch
                    ),
                ));
            }
        }
        for n in &topo.norms {
            required.push(format!("blk.{i}.{}.weight", n.name));
            if n.bias {
                required.push(format!("blk.{i}.{}.bias", n.name));
            }
        }
    }
    for name in &required {
        if src.get(name).is_none() {
            return Err(Error::format(
                label,
                arch.hf_name(name),
                format!("tensor is missing (config.json, model_type {})", c.arch),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_values_go_back_as_their_shortest_decimal() {
        for (x, want) in [
            (1e-5f32, 1e-5f64),
            (1e-6, 1e-6),
            (10_000.0, 10_000.0),
            (0.1, 0.1),
        ] {
            assert_eq!(json_f32(x), Value::from(want), "{x}");
            // ... which reads back as the same f32.
            assert_eq!(json_f32(x).as_f64().unwrap() as f32, x);
        }
        assert_eq!(json_f32(f32::NAN), Value::Null);
    }
}
