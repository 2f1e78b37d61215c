//! Hugging Face export (issue 16, item 3): a quantized model as an ordinary transformers
//! checkpoint, for every architecture QuantLab runs (the Llama family, OPT pre- and post-LN,
//! GPT-2): `config.json`, `model.safetensors` with every tensor in f16 (the block linears
//! dequantized: the quantization grid survives exactly up to f16 rounding of each weight), and
//! the tokenizer files `tokenizer.json` + `tokenizer_config.json`.
//!
//! Tensors carry the names transformers' own `save_pretrained` of the `*ForCausalLM` class
//! writes (`HfNames::saved_prefix`: `model.`, `model.decoder.`, `transformer.`), norms with their
//! biases, learned positions and OPT's `project_in`/`project_out` included; a tied head is left
//! out, as transformers leaves it out. What the loader did to a tensor is undone here:
//! - GPT-2's `Conv1D` stores `c_attn`/`c_proj`/`c_fc` as `[in, out]`; the loader transposes the
//!   block linears (`Topology::hf_transposed`), so they are transposed back. The fused q/k/v of
//!   `c_attn` stays one matrix in both (its output columns are q, k, v in that order), so
//!   transposing it is all there is to undo.
//! - A GGUF-loaded Llama keeps llama.cpp's interleaved q/k rows (its converter permutes them, so
//!   RoPE pairs `(2i, 2i+1)`); transformers pairs `(i, i + d/2)`, so those rows are put back in
//!   Hugging Face's order.
//!
//! `config.json`: a model loaded from a Hugging Face checkpoint keeps that checkpoint's fields
//! (only `architectures`, the dtype and a `quantization_config` change); any other (GGUF, a
//! QuantLab model file) gets one built from its configuration by the architecture
//! (`Arch::to_hf`). Either way the file is read back with QuantLab's own config parser and must
//! describe the weights written, so a config that would make transformers build another model
//! is an error here, not a silent mismatch there.
//!
//! The tokenizer is written as the loader read it (a `tokenizer.json` byte for byte; a GGUF or
//! vocab.json + merges.txt vocabulary as the pipeline QuantLab built), with a
//! `tokenizer_config.json` for transformers' plain `PreTrainedTokenizerFast` (which loads
//! `tokenizer.json` as it is): the special tokens and whether a BOS is added.
//!
//! Refused rather than exported as something else: a model that quantizes its activations
//! (transformers would run them in f16) and BinaryMoS weights (token-adaptive scales have no
//! dense weight).

use crate::format::Format;
use crate::io::tokenizer::Tokenizer;
use crate::model::arch::Arch;
use crate::model::config::{ModelConfig, RopeStyle};
use crate::model::weights::ModelWeights;
use crate::{Error, Result};
use half::f16;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Largest magnitude f16 holds; a larger weight cannot be exported as f16.
const F16_MAX: f32 = 65504.0;

/// The checkpoint's files, `(name, bytes)`: config.json, model.safetensors, tokenizer.json,
/// tokenizer_config.json. `name` labels the model in messages; `source_config` is the
/// config.json of the Hugging Face checkpoint the model was loaded from, if it was.
pub fn export_hf(
    w: &ModelWeights,
    tok: &Tokenizer,
    name: &str,
    source_config: Option<&Map<String, Value>>,
) -> Result<Vec<(String, Vec<u8>)>> {
    let arch = w.config.architecture()?;
    if w.act.is_some() {
        return Err(Error::unsupported(
            name,
            "act",
            "the model quantizes its activations, which a transformers checkpoint cannot say; \
             export its weights without --act-bits",
        ));
    }
    if let Some(l) = w
        .linears()
        .find(|l| matches!(l.w.format, Format::BinaryMos { .. }))
    {
        return Err(Error::unsupported(
            name,
            &l.name,
            "BinaryMoS scales depend on each token, so no dense weight represents the layer",
        ));
    }
    let tensors = tensors(w, arch, name)?;
    let views = tensors
        .iter()
        .map(|(n, shape, b)| {
            TensorView::new(Dtype::F16, shape.clone(), b)
                .map(|v| (n.as_str(), v))
                .map_err(|e| Error::format(name, n, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let st = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::format(name, "model.safetensors", e))?;
    let config = config_json(w, arch, tok, name, source_config)?;
    let tokenizer_config = tokenizer_config(tok, &config)?;
    Ok(vec![
        (
            "config.json".into(),
            to_vec(&Value::Object(config), "config.json")?,
        ),
        ("model.safetensors".into(), st),
        ("tokenizer.json".into(), tok.to_tokenizer_json()?),
        ("tokenizer_config.json".into(), tokenizer_config),
    ])
}

/// A tensor of the checkpoint: Hugging Face name, shape, f16 bytes.
type F16Tensor = (String, Vec<usize>, Vec<u8>);

/// Every tensor of `w`, laid out as transformers stores it.
fn tensors(w: &ModelWeights, arch: Arch, name: &str) -> Result<Vec<F16Tensor>> {
    let c = &w.config;
    let topo = arch.topology(c);
    let mut out = Vec::new();
    let mut add = |canonical: &str, shape: Vec<usize>, values: &[f32]| -> Result<()> {
        let hf = arch.hf_saved_name(canonical);
        if let Some(i) = values
            .iter()
            .position(|v| !v.is_finite() || v.abs() > F16_MAX)
        {
            return Err(Error::unsupported(
                name,
                &hf,
                format!(
                    "value {i} is {}, beyond f16's range (±{F16_MAX})",
                    values[i]
                ),
            ));
        }
        let bytes = values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect();
        out.push((hf, shape, bytes));
        Ok(())
    };
    let q = &w.token_embd;
    add("token_embd.weight", vec![q.rows, q.cols], &q.dequantize()?)?;
    // A tied head is the embedding: transformers saves it once, under the embedding's name.
    if let Some(o) = &w.output {
        add("output.weight", vec![o.rows, o.cols], &o.dequantize()?)?;
    }
    let norms = w
        .output_norm
        .iter()
        .chain(w.layers.iter().flat_map(|l| &l.norms));
    for n in norms {
        add(&n.name, vec![n.weight.len()], &n.weight)?;
        if let Some(b) = &n.bias {
            add(&bias_name(&n.name), vec![b.len()], b)?;
        }
    }
    // Learned positions and OPT's projections: `[rows, cols]` as the loader read them.
    for g in &w.globals {
        add(&g.name, vec![g.w.rows, g.w.cols], &g.w.dequantize()?)?;
    }
    for layer in &w.layers {
        for l in &layer.linears {
            let (rows, cols) = (l.w.rows, l.w.cols);
            let mut v = l.w.dequantize()?;
            let mut bias = l.bias.clone();
            // RoPE'd projections of a GGUF Llama: rows back to Hugging Face's order, the
            // bias's entries with them.
            let heads = if l.name.ends_with(".attn_q.weight") {
                Some(c.n_head)
            } else if l.name.ends_with(".attn_k.weight") {
                Some(c.n_kv_head)
            } else {
                None
            };
            if let (Some(h), RopeStyle::Interleaved) = (heads, c.rope_style) {
                v = halves_order(&v, h, c.head_dim, cols);
                bias = bias.map(|b| halves_order(&b, h, c.head_dim, 1));
            }
            if topo.hf_transposed {
                add(&l.name, vec![cols, rows], &transposed(&v, rows, cols))?;
            } else {
                add(&l.name, vec![rows, cols], &v)?;
            }
            if let Some(b) = &bias {
                add(&bias_name(&l.name), vec![b.len()], b)?;
            }
        }
    }
    Ok(out)
}

/// `blk.0.attn_norm.weight` → `blk.0.attn_norm.bias`.
fn bias_name(weight: &str) -> String {
    format!("{}.bias", weight.strip_suffix(".weight").unwrap_or(weight))
}

/// A `rows × cols` row-major matrix as `cols × rows` (GPT-2's `Conv1D` layout `[in, out]`).
fn transposed(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for r in 0..rows {
        for (k, x) in v[r * cols..(r + 1) * cols].iter().enumerate() {
            out[k * rows + r] = *x;
        }
    }
    out
}

/// Rows of a `heads × head_dim` projection from llama.cpp's interleaved order (row `2i + h` of
/// a head is Hugging Face's row `h·head_dim/2 + i`) back to Hugging Face's.
fn halves_order(v: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let mut out = vec![0f32; v.len()];
    for head in 0..heads {
        for i in 0..half {
            for h in 0..2 {
                let from = (head * head_dim + 2 * i + h) * cols;
                let to = (head * head_dim + h * half + i) * cols;
                out[to..to + cols].copy_from_slice(&v[from..from + cols]);
            }
        }
    }
    out
}

fn to_vec(v: &Value, what: &str) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(v).map_err(|e| Error::config(what, e))
}

/// config.json: the source checkpoint's fields, or the architecture's built from the model
/// configuration; checked against the weights by reading it back.
fn config_json(
    w: &ModelWeights,
    arch: Arch,
    tok: &Tokenizer,
    name: &str,
    source: Option<&Map<String, Value>>,
) -> Result<Map<String, Value>> {
    let c = &w.config;
    let biased = w.linears().any(|l| l.bias.is_some());
    let built = arch.to_hf(c, biased);
    let mut o = match source {
        Some(s) => {
            let mut o = s.clone();
            // The weights are plain f16 now, whatever the source stored.
            o.remove("quantization_config");
            o
        }
        None => {
            let mut o = built.clone();
            for (key, id) in [("bos_token_id", tok.bos()), ("eos_token_id", tok.eos())] {
                o.insert(key.into(), id.map_or(Value::Null, Value::from));
            }
            o
        }
    };
    // The class whose tensor names the checkpoint carries (a source saved from `OPTModel` or
    // `GPT2Model` becomes the *ForCausalLM class: the head is there).
    if let Some(class) = built.get("architectures") {
        o.insert("architectures".into(), class.clone());
    }
    // transformers 5 writes `dtype`, earlier versions `torch_dtype`; keep the source's key.
    let mut dtype_written = false;
    for key in ["dtype", "torch_dtype"] {
        if let Some(v) = o.get_mut(key) {
            *v = json!("float16");
            dtype_written = true;
        }
    }
    if !dtype_written {
        o.insert("torch_dtype".into(), json!("float16"));
    }
    check_config(&o, c, name)?;
    Ok(o)
}

/// The written config.json, read back by QuantLab's own parser, must give the model's
/// configuration (RoPE in Hugging Face's order, which the export writes).
fn check_config(o: &Map<String, Value>, c: &ModelConfig, name: &str) -> Result<()> {
    let bytes = to_vec(&Value::Object(o.clone()), "config.json")?;
    let back = crate::model::hf::parse_config(&bytes)?;
    let want = ModelConfig {
        rope_style: RopeStyle::Half,
        ..c.clone()
    };
    if back == want {
        return Ok(());
    }
    let (a, b) = (
        serde_json::to_value(&back).unwrap_or_default(),
        serde_json::to_value(&want).unwrap_or_default(),
    );
    let differ: Vec<String> = b
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| a.get(k.as_str()) != Some(v))
        .map(|(k, v)| {
            format!(
                "{k}: config.json gives {}, the model has {v}",
                a[k.as_str()]
            )
        })
        .collect();
    Err(Error::format(
        name,
        "config.json",
        format!(
            "the exported config would not describe the weights ({})",
            differ.join("; ")
        ),
    ))
}

/// tokenizer_config.json for transformers' `PreTrainedTokenizerFast`: it loads tokenizer.json
/// as written; an explicit `add_bos_token` makes transformers rebuild the post-processor as
/// "BOS (if added) + text", which is what QuantLab feeds the model. Special ids the tokenizer
/// does not know (a tokenizer.json says no EOS) come from config.json.
fn tokenizer_config(tok: &Tokenizer, config: &Map<String, Value>) -> Result<Vec<u8>> {
    let id = |key: &str| match config.get(key) {
        Some(Value::Array(a)) => a.first().and_then(Value::as_u64),
        Some(v) => v.as_u64(),
        None => None,
    };
    let id = |key: &str| id(key).and_then(|i| u32::try_from(i).ok());
    let text = |i: Option<u32>| i.and_then(|i| tok.token_str(i));
    let mut v = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": text(tok.bos().or(id("bos_token_id"))),
        "eos_token": text(tok.eos().or(id("eos_token_id"))),
        "add_bos_token": tok.add_bos(),
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
    });
    if let Some(pad) = text(id("pad_token_id")) {
        v["pad_token"] = json!(pad);
    }
    to_vec(&v, "tokenizer_config.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_rows_go_back_to_halves() {
        // One head of 4 rows, 1 column: llama.cpp's order is HF's rows [0, 2, 1, 3].
        let gguf = [0.0, 2.0, 1.0, 3.0];
        assert_eq!(halves_order(&gguf, 1, 4, 1), vec![0.0, 1.0, 2.0, 3.0]);
        // Two heads, two columns: each head on its own.
        let gguf: Vec<f32> = [0, 2, 1, 3, 4, 6, 5, 7]
            .iter()
            .flat_map(|&r| [r as f32, 10.0 + r as f32])
            .collect();
        let hf: Vec<f32> = (0..8).flat_map(|r| [r as f32, 10.0 + r as f32]).collect();
        assert_eq!(halves_order(&gguf, 2, 4, 2), hf);
    }

    #[test]
    fn transposing_puts_rows_into_columns() {
        // [[1, 2, 3], [4, 5, 6]] → [[1, 4], [2, 5], [3, 6]].
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(transposed(&v, 2, 3), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        assert_eq!(transposed(&transposed(&v, 2, 3), 3, 2), v.to_vec());
    }

    #[test]
    fn norm_and_linear_biases_are_named_after_their_weights() {
        assert_eq!(bias_name("blk.3.attn_norm.weight"), "blk.3.attn_norm.bias");
        assert_eq!(bias_name("output_norm.weight"), "output_norm.bias");
    }
}
