//! Tiny Hugging Face checkpoints built in code: a `config.json` and safetensors shards with
//! seeded values, plus the expected values to compare the loader against.
//!
//! The tensor names here are written out by hand (not taken from the loader's mapping), so a
//! wrong mapping in `src/io/safetensors.rs` cannot make its own test pass.

#![allow(dead_code)]

use half::{bf16, f16};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// Shape and flavour of a tiny model.
#[derive(Clone, Debug)]
pub struct Tiny {
    pub model_type: &'static str,
    pub dim: usize,
    pub ffn: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    pub tied: bool,
    /// q/k/v biases (Qwen2).
    pub qkv_bias: bool,
    pub dtype: Dtype,
}

impl Tiny {
    /// The 2-layer Llama of the tests: d 64, 4 heads / 2 KV heads, vocab 128.
    pub fn llama(dtype: Dtype, tied: bool) -> Self {
        Tiny {
            model_type: "llama",
            dim: 64,
            ffn: 96,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vocab: 128,
            tied,
            qkv_bias: false,
            dtype,
        }
    }

    pub fn qwen2(dtype: Dtype) -> Self {
        Tiny {
            model_type: "qwen2",
            qkv_bias: true,
            tied: true,
            ..Tiny::llama(dtype, true)
        }
    }

    pub fn head_dim(&self) -> usize {
        self.dim / self.heads
    }

    pub fn config_value(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": self.model_type,
            "hidden_size": self.dim,
            "intermediate_size": self.ffn,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "vocab_size": self.vocab,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "rope_theta": 100000.0,
            "rope_scaling": null,
            "hidden_act": "silu",
            "tie_word_embeddings": self.tied,
            "torch_dtype": "float32",
        })
    }

    pub fn config_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.config_value()).expect("json")
    }

    /// Every tensor of the checkpoint, HF name → (shape, values already rounded to `dtype`).
    pub fn tensors(&self) -> Vec<Tensor> {
        let d = self.dim;
        let q = self.heads * self.head_dim();
        let kv = self.kv_heads * self.head_dim();
        let mut out = Vec::new();
        let mut seed = 1u64;
        let mut add = |name: String, shape: Vec<usize>| {
            seed += 1;
            out.push(Tensor::seeded(name, shape, seed, self.dtype));
        };
        add("model.embed_tokens.weight".into(), vec![self.vocab, d]);
        add("model.norm.weight".into(), vec![d]);
        if !self.tied {
            add("lm_head.weight".into(), vec![self.vocab, d]);
        }
        for i in 0..self.layers {
            let p = format!("model.layers.{i}");
            add(format!("{p}.input_layernorm.weight"), vec![d]);
            add(format!("{p}.post_attention_layernorm.weight"), vec![d]);
            add(format!("{p}.self_attn.q_proj.weight"), vec![q, d]);
            add(format!("{p}.self_attn.k_proj.weight"), vec![kv, d]);
            add(format!("{p}.self_attn.v_proj.weight"), vec![kv, d]);
            add(format!("{p}.self_attn.o_proj.weight"), vec![d, q]);
            if self.qkv_bias {
                add(format!("{p}.self_attn.q_proj.bias"), vec![q]);
                add(format!("{p}.self_attn.k_proj.bias"), vec![kv]);
                add(format!("{p}.self_attn.v_proj.bias"), vec![kv]);
            }
            add(format!("{p}.mlp.gate_proj.weight"), vec![self.ffn, d]);
            add(format!("{p}.mlp.up_proj.weight"), vec![self.ffn, d]);
            add(format!("{p}.mlp.down_proj.weight"), vec![d, self.ffn]);
        }
        out
    }
}

/// One tensor of a fixture.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    /// The exact values the file holds (rounded to `dtype` where it is narrower than f32).
    pub values: Vec<f32>,
}

impl Tensor {
    /// Seeded values in about [-1, 1], rounded to `dtype` so the expected values are exact.
    pub fn seeded(name: String, shape: Vec<usize>, seed: u64, dtype: Dtype) -> Self {
        let n: usize = shape.iter().product();
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let values = (0..n)
            .map(|_| {
                // xorshift64*: deterministic, no dependency.
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                let u = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
                round_to(dtype, 2.0 * u - 1.0)
            })
            .collect();
        Tensor {
            name,
            shape,
            dtype,
            values,
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        encode(self.dtype, &self.values)
    }
}

pub fn round_to(dtype: Dtype, x: f32) -> f32 {
    match dtype {
        Dtype::F16 => f16::from_f32(x).to_f32(),
        Dtype::BF16 => bf16::from_f32(x).to_f32(),
        _ => x,
    }
}

pub fn encode(dtype: Dtype, values: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F16 => values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        Dtype::BF16 => values
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect(),
        Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        other => panic!("fixture encodes only float dtypes, not {other}"),
    }
}

/// Serialize `(name, dtype, shape, bytes)` entries into one safetensors file.
pub fn serialize_raw(entries: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = entries
        .iter()
        .map(|(n, dt, shape, bytes)| {
            let v = TensorView::new(*dt, shape.clone(), bytes).expect("view");
            (n.clone(), v)
        })
        .collect();
    safetensors::serialize(views, None).expect("serialize")
}

/// Serialize fixture tensors into one safetensors file.
pub fn serialize(tensors: &[Tensor]) -> Vec<u8> {
    let entries: Vec<_> = tensors
        .iter()
        .map(|t| (t.name.clone(), t.dtype, t.shape.clone(), t.bytes()))
        .collect();
    serialize_raw(&entries)
}
