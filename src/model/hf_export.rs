//! Hugging Face export (issue 16, item 3): a quantized model as an ordinary transformers
//! checkpoint — `config.json` (transformers' `LlamaConfig` / `Qwen2Config` / `MistralConfig`
//! field names), `model.safetensors` with every tensor in f16 (the block linears dequantized:
//! the quantization grid survives exactly up to f16 rounding of each weight), and the tokenizer
//! files `tokenizer.json` + `tokenizer_config.json`.
//!
//! Llama-family models only: OPT and GPT-2 checkpoints have other layouts (GPT-2's Conv1D stores
//! its weights transposed) and are refused by name. A GGUF-loaded Llama keeps llama.cpp's
//! interleaved q/k rows (its converter permutes them, so RoPE pairs `(2i, 2i+1)`); transformers
//! pairs `(i, i + d/2)`, so those rows are put back in Hugging Face's order here. A model that
//! quantizes its activations (transformers would run them in f16) or holds BinaryMoS weights
//! (token-adaptive scales have no dense weight) is refused rather than exported as something else.

use crate::format::Format;
use crate::io::tokenizer::Tokenizer;
use crate::model::arch::Arch;
use crate::model::config::{ModelConfig, RopeStyle};
use crate::model::weights::ModelWeights;
use crate::{Error, Result};
use half::f16;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::json;
use std::collections::HashMap;

/// Largest magnitude f16 holds; a larger weight cannot be exported as f16.
const F16_MAX: f32 = 65504.0;

/// The checkpoint's files, `(name, bytes)`: config.json, model.safetensors, tokenizer.json,
/// tokenizer_config.json.
pub fn export_hf(w: &ModelWeights, tok: &Tokenizer, name: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let c = &w.config;
    let arch = c.architecture()?;
    if arch != Arch::Llama {
        return Err(Error::unsupported(
            name,
            "architecture",
            format!(
                "Hugging Face export covers the Llama family; {} is not",
                c.arch
            ),
        ));
    }
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
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut add = |canonical: &str, rows: usize, cols: usize, values: &[f32]| -> Result<()> {
        if let Some(i) = values.iter().position(|v| v.abs() > F16_MAX) {
            return Err(Error::unsupported(
                name,
                canonical,
                format!("weight {i} is {}, beyond f16's range", values[i]),
            ));
        }
        let bytes = values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect();
        let shape = if rows == 1 {
            vec![cols]
        } else {
            vec![rows, cols]
        };
        tensors.push((arch.hf_name(canonical), shape, bytes));
        Ok(())
    };
    let q = &w.token_embd;
    add("token_embd.weight", q.rows, q.cols, &q.dequantize()?)?;
    if let Some(o) = &w.output {
        add("output.weight", o.rows, o.cols, &o.dequantize()?)?;
    }
    if let Some(n) = &w.output_norm {
        add(&n.name, 1, n.weight.len(), &n.weight)?;
    }
    for layer in &w.layers {
        for n in &layer.norms {
            add(&n.name, 1, n.weight.len(), &n.weight)?;
        }
        for l in &layer.linears {
            let mut v = l.w.dequantize()?;
            let heads = if l.name.ends_with(".attn_q.weight") {
                Some(c.n_head)
            } else if l.name.ends_with(".attn_k.weight") {
                Some(c.n_kv_head)
            } else {
                None
            };
            let heads_bias = heads;
            if let (Some(h), RopeStyle::Interleaved) = (heads, c.rope_style) {
                v = halves_order(&v, h, c.head_dim, l.w.cols);
            }
            add(&l.name, l.w.rows, l.w.cols, &v)?;
            if let Some(b) = &l.bias {
                let b = match (heads_bias, c.rope_style) {
                    (Some(h), RopeStyle::Interleaved) => halves_order(b, h, c.head_dim, 1),
                    _ => b.clone(),
                };
                let base = l.name.strip_suffix(".weight").unwrap_or(&l.name);
                add(&format!("{base}.bias"), 1, b.len(), &b)?;
            }
        }
    }
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
    let biased = w.linears().any(|l| l.bias.is_some());
    Ok(vec![
        ("config.json".into(), config_json(c, tok, biased)?),
        ("model.safetensors".into(), st),
        ("tokenizer.json".into(), tok.to_tokenizer_json()?),
        ("tokenizer_config.json".into(), tokenizer_config(tok)?),
    ])
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

fn to_vec(v: &serde_json::Value, what: &str) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(v).map_err(|e| Error::config(what, e))
}

fn config_json(c: &ModelConfig, tok: &Tokenizer, biased: bool) -> Result<Vec<u8>> {
    let (class, model_type) = match c.arch.as_str() {
        "qwen2" => ("Qwen2ForCausalLM", "qwen2"),
        "mistral" => ("MistralForCausalLM", "mistral"),
        _ => ("LlamaForCausalLM", "llama"),
    };
    let mut v = json!({
        "architectures": [class],
        "model_type": model_type,
        "hidden_size": c.dim,
        "intermediate_size": c.ffn_dim,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head,
        "head_dim": c.head_dim,
        "vocab_size": c.vocab,
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta,
        "max_position_embeddings": c.max_ctx,
        "tie_word_embeddings": c.tied_embeddings,
        "hidden_act": "silu",
        "torch_dtype": "float16",
        "bos_token_id": tok.bos(),
        "eos_token_id": tok.eos(),
    });
    if model_type == "llama" {
        // Which linears carry biases (QuantLab keeps the loaded model's).
        v["attention_bias"] = json!(biased);
        v["mlp_bias"] = json!(false);
    }
    to_vec(&v, "config.json")
}

fn tokenizer_config(tok: &Tokenizer) -> Result<Vec<u8>> {
    let text = |id: Option<u32>| id.and_then(|i| tok.token_str(i));
    to_vec(
        &json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": text(tok.bos()),
            "eos_token": text(tok.eos()),
            "add_bos_token": tok.add_bos(),
            "add_eos_token": false,
            "clean_up_tokenization_spaces": false,
        }),
        "tokenizer_config.json",
    )
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
}
