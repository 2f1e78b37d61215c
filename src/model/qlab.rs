//! QuantLab's quantized-model file (`.qlab`, docs/qlab-format.md): one safetensors container
//! (<https://github.com/huggingface/safetensors>, "Format") holding a whole `ModelWeights` in its
//! storage formats, the tokenizer it was evaluated with and what the caller says about it.
//!
//! - Every matrix (block linears, embedding, head, globals) is a `U8` tensor `[bytes]` under its
//!   canonical name: `QTensor.data` exactly as the format module lays it out. Its format, add-ons
//!   and shape are in the header (below), so a reader needs no knowledge of a format beyond the
//!   format table.
//! - Norm weights and biases are `F32` tensors under their canonical names.
//! - `quantlab.tokenizer` is a `U8` tensor: the tokenizer's recipe (`Tokenizer::save`).
//! - `__metadata__` has one entry, `quantlab`: a JSON object (`Header`) with the file `version`,
//!   the `config` (`ModelConfig`), the `tensors` (format, add-ons and shape of each matrix), the
//!   `tokenizer` (`SavedSpecial`), the activation plan `act` (when the model quantizes its
//!   activations) and `info` (the caller's JSON: source identity, the quantization config,
//!   effective bits). One entry, because safetensors writes its metadata map in hash order: the
//!   same model then always gives the same bytes.
//!
//! Reading treats the file as hostile like every parser: the header is bounded, every tensor's
//! bytes are checked against its format and the config's shapes by `ModelWeights::from_source`,
//! every decoded weight must be finite, and the activation plan is checked against the topology.
//! Writing then reading gives back the same bytes, so the same perplexity.

use crate::format::{AddOns, Format, QTensor};
use crate::io::tokenizer::{SavedSpecial, Tokenizer};
use crate::model::actplan::ActPlan;
use crate::model::config::ModelConfig;
use crate::model::weights::ModelWeights;
use crate::tensor::{DType, RawTensor, TensorSource};
use crate::{Error, Result};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// The version this code writes and the only one it reads.
pub const VERSION: u32 = 1;
/// The one `__metadata__` key, holding the `Header` as JSON.
const KEY: &str = "quantlab";
/// The tensor holding the tokenizer's recipe.
const TOKENIZER_TENSOR: &str = "quantlab.tokenizer";

/// What the header says besides the tensors' offsets (read part by part, so that an error
/// names the part).
#[derive(Serialize)]
struct Header {
    version: u32,
    config: ModelConfig,
    tensors: BTreeMap<String, Stored>,
    tokenizer: SavedSpecial,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    act: Option<ActPlan>,
    #[serde(default)]
    info: serde_json::Value,
}

/// How one matrix is stored.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    format: Format,
    #[serde(default)]
    addons: AddOns,
    rows: usize,
    cols: usize,
}

/// A `.qlab` file as read: the model, its tokenizer and the writer's `info`.
#[derive(Debug)]
pub struct QlabFile {
    pub weights: ModelWeights,
    pub tokenizer: Tokenizer,
    pub info: serde_json::Value,
}

/// True when `bytes` look like a `.qlab` file (a safetensors header with QuantLab's version
/// key), so loaders can tell it from a GGUF or a plain checkpoint without trusting a file name.
pub fn sniff(bytes: &[u8]) -> bool {
    let Some(n) = bytes.get(..8) else {
        return false;
    };
    let n = u64::from_le_bytes(n.try_into().unwrap_or([0; 8]));
    if n == 0 || n > crate::io::safetensors::MAX_HEADER_BYTES as u64 {
        return false;
    }
    let Some(header) = bytes.get(8..8 + n as usize) else {
        return false;
    };
    let key = format!("\"{KEY}\":");
    header.first() == Some(&b'{') && header.windows(key.len()).any(|w| w == key.as_bytes())
}

fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `blk.0.attn_norm.weight` → `blk.0.attn_norm.bias`.
fn bias_name(weight_name: &str) -> String {
    let base = weight_name.strip_suffix(".weight").unwrap_or(weight_name);
    format!("{base}.bias")
}

/// One tensor to write: name, dtype, shape, bytes.
type Entry<'a> = (String, Dtype, Vec<usize>, Cow<'a, [u8]>);

/// A matrix: its bytes as they are, its format in the header.
fn matrix<'a>(
    name: &str,
    q: &'a QTensor,
    blobs: &mut Vec<Entry<'a>>,
    stored: &mut BTreeMap<String, Stored>,
) {
    stored.insert(
        name.to_string(),
        Stored {
            format: q.format,
            addons: q.addons,
            rows: q.rows,
            cols: q.cols,
        },
    );
    blobs.push((
        name.to_string(),
        Dtype::U8,
        vec![q.data.len()],
        Cow::Borrowed(&q.data[..]),
    ));
}

/// The bytes of a `.qlab` file holding `w`, `tok` and the caller's `info` (a JSON object).
pub fn write(w: &ModelWeights, tok: &Tokenizer, info: &serde_json::Value) -> Result<Vec<u8>> {
    let (special, tok_bytes) = tok.save()?;
    // Matrices are borrowed (the model's bytes are copied once, into the file); only the f32
    // vectors and the tokenizer are made here.
    let mut blobs: Vec<Entry<'_>> = Vec::new();
    let mut stored: BTreeMap<String, Stored> = BTreeMap::new();
    let vector = |name: String, v: &[f32], blobs: &mut Vec<_>| {
        blobs.push((name, Dtype::F32, vec![v.len()], Cow::Owned(vector_bytes(v))));
    };
    matrix("token_embd.weight", &w.token_embd, &mut blobs, &mut stored);
    if let Some(o) = &w.output {
        matrix("output.weight", o, &mut blobs, &mut stored);
    }
    let norms = w
        .output_norm
        .iter()
        .chain(w.layers.iter().flat_map(|l| &l.norms));
    for n in norms {
        vector(n.name.clone(), &n.weight, &mut blobs);
        if let Some(b) = &n.bias {
            vector(bias_name(&n.name), b, &mut blobs);
        }
    }
    for l in w.globals.iter().chain(w.linears()) {
        matrix(&l.name, &l.w, &mut blobs, &mut stored);
        if let Some(b) = &l.bias {
            vector(bias_name(&l.name), b, &mut blobs);
        }
    }
    blobs.push((
        TOKENIZER_TENSOR.to_string(),
        Dtype::U8,
        vec![tok_bytes.len()],
        Cow::Owned(tok_bytes),
    ));
    let header = Header {
        version: VERSION,
        config: w.config.clone(),
        tensors: stored,
        tokenizer: special,
        act: w.act.clone(),
        info: info.clone(),
    };
    let meta = HashMap::from([(KEY.to_string(), json(&header)?)]);
    let views = blobs
        .iter()
        .map(|(n, d, shape, b)| {
            TensorView::new(*d, shape.clone(), b.as_ref())
                .map(|v| (n.as_str(), v))
                .map_err(|e| Error::format("qlab", n, e))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(meta)).map_err(|e| Error::format("qlab", "serialize", e))
}

/// A metadata value as JSON.
fn json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::format("qlab", "metadata", e))
}

/// The parsed container as a `TensorSource` in canonical names: matrices as `DType::Stored`.
struct Source<'a> {
    label: String,
    st: SafeTensors<'a>,
    stored: BTreeMap<String, Stored>,
}

impl TensorSource for Source<'_> {
    fn label(&self) -> &str {
        &self.label
    }
    fn get(&self, name: &str) -> Option<RawTensor<'_>> {
        if name == TOKENIZER_TENSOR {
            return None;
        }
        let view = self.st.tensor(name).ok()?;
        let (dims, dtype) = match (self.stored.get(name), view.dtype()) {
            (Some(s), Dtype::U8) => (
                if s.rows == 1 {
                    vec![s.cols]
                } else {
                    vec![s.rows, s.cols]
                },
                DType::Stored(s.format, s.addons),
            ),
            (None, Dtype::F32) => (view.shape().to_vec(), DType::F32),
            // Anything else is refused by `check_dtypes` before the model is built.
            _ => return None,
        };
        Some(RawTensor {
            name: name.to_string(),
            dims,
            dtype,
            data: view.data(),
        })
    }
    fn names(&self) -> Vec<String> {
        self.st
            .names()
            .into_iter()
            .filter(|n| *n != TOKENIZER_TENSOR)
            .map(str::to_string)
            .collect()
    }
}

/// Read a `.qlab` file; `label` names it in messages.
pub fn read(label: &str, bytes: &[u8]) -> Result<QlabFile> {
    let st = crate::io::safetensors::parse_shard(label, bytes)?;
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| Error::format(label, "header", e))?;
    let text = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(KEY))
        .ok_or_else(|| {
            Error::format(
                label,
                KEY,
                "missing from the header: not a QuantLab model file",
            )
        })?;
    // The version first, so a newer file is named as such rather than failing on a new field.
    let raw: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::format(label, KEY, e))?;
    match raw.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == VERSION as u64 => {}
        v => {
            return Err(Error::unsupported(
                label,
                "quantlab.version",
                format!(
                    "file version {}; this QuantLab reads version {VERSION}",
                    v.map_or("missing".to_string(), |v| v.to_string())
                ),
            ))
        }
    }
    // Each part parsed on its own, so an error names the part (`quantlab.tensors`, ...).
    let mut raw = match raw {
        serde_json::Value::Object(m) => m,
        _ => return Err(Error::format(label, KEY, "not a JSON object")),
    };
    for k in raw.keys() {
        if !["version", "config", "tensors", "tokenizer", "act", "info"].contains(&k.as_str()) {
            return Err(Error::format(
                label,
                format!("quantlab.{k}"),
                "unknown field",
            ));
        }
    }
    fn part<T: serde::de::DeserializeOwned>(
        label: &str,
        raw: &mut serde_json::Map<String, serde_json::Value>,
        key: &str,
    ) -> Result<Option<T>> {
        raw.remove(key)
            .map(|v| serde_json::from_value(v))
            .transpose()
            .map_err(|e| Error::format(label, format!("quantlab.{key}"), e))
    }
    fn required<T: serde::de::DeserializeOwned>(
        label: &str,
        raw: &mut serde_json::Map<String, serde_json::Value>,
        key: &str,
    ) -> Result<T> {
        part(label, raw, key)?
            .ok_or_else(|| Error::format(label, format!("quantlab.{key}"), "missing"))
    }
    let config: ModelConfig = required(label, &mut raw, "config")?;
    let stored: BTreeMap<String, Stored> = required(label, &mut raw, "tensors")?;
    let special: SavedSpecial = required(label, &mut raw, "tokenizer")?;
    let act: Option<ActPlan> = part(label, &mut raw, "act")?;
    let info: serde_json::Value = part(label, &mut raw, "info")?.unwrap_or_default();
    let src = Source {
        label: label.to_string(),
        st,
        stored,
    };
    check_dtypes(&src)?;
    let tok_bytes = src
        .st
        .tensor(TOKENIZER_TENSOR)
        .map_err(|_| Error::format(label, TOKENIZER_TENSOR, "tensor is missing"))?;
    if tok_bytes.dtype() != Dtype::U8 {
        return Err(Error::format(label, TOKENIZER_TENSOR, "not a U8 tensor"));
    }
    let tokenizer = Tokenizer::from_saved(label, &special, tok_bytes.data())?;
    let mut weights = ModelWeights::from_source(config, &src)?;
    if tokenizer.vocab_size() > weights.config.vocab {
        return Err(Error::format(
            label,
            TOKENIZER_TENSOR,
            format!(
                "{} token ids for a model of vocabulary {}",
                tokenizer.vocab_size(),
                weights.config.vocab
            ),
        ));
    }
    if let Some(a) = act {
        check_act(label, &weights, &a)?;
        weights.act = Some(a);
    }
    Ok(QlabFile {
        weights,
        tokenizer,
        info,
    })
}

/// Every tensor is a described `U8` matrix or an `F32` vector, and every described matrix
/// exists: anything else is a file QuantLab did not write.
fn check_dtypes(src: &Source<'_>) -> Result<()> {
    for name in src.stored.keys() {
        if src.st.tensor(name).is_err() {
            return Err(Error::format(
                &src.label,
                "quantlab.tensors",
                format!("describes {name}, which the file does not hold"),
            ));
        }
    }
    for (name, view) in src.st.iter() {
        if name == TOKENIZER_TENSOR {
            continue;
        }
        let ok = match view.dtype() {
            Dtype::U8 => src.stored.contains_key(name),
            Dtype::F32 => !src.stored.contains_key(name) && view.shape().len() == 1,
            _ => false,
        };
        if !ok {
            return Err(Error::format(
                &src.label,
                name,
                format!(
                    "{} tensor of shape {:?}: a QuantLab file holds described U8 matrices \
                     and F32 vectors",
                    view.dtype(),
                    view.shape()
                ),
            ));
        }
    }
    Ok(())
}

/// The activation plan fits the model: layers and sites (`ActPlan::check`), and every Tender
/// chunk its site's width.
fn check_act(label: &str, w: &ModelWeights, a: &ActPlan) -> Result<()> {
    let topo = w.topology();
    let err = |e: Error| Error::format(label, "quantlab.act", e);
    a.check(w.layers.len(), topo.sites.len()).map_err(err)?;
    if let Some(t) = &a.tender {
        for layer in t.chunks.iter().flatten() {
            for (site, chunks) in topo.sites.iter().zip(layer) {
                for c in chunks {
                    c.check(site.width, &t.spec).map_err(err)?;
                }
            }
        }
    }
    Ok(())
}
