//! The host-side model: configuration plus every tensor in its storage format. Quantizers map a
//! `ModelWeights` to a new one; backends turn one into something they can execute. Names are
//! canonical GGUF names (`blk.{i}.attn_q.weight`); the safetensors loader translates to them.

use crate::model::config::ModelConfig;
use crate::quant::format::{Format, QTensor, Storage};
use crate::tensor::{DType, RawTensor, TensorSource};
use crate::{Error, Result};
use serde::Serialize;

/// A linear layer `y = x Wᵀ (+ b)`, `W` of shape `out × in`.
#[derive(Clone, Debug)]
pub struct Linear {
    /// Canonical tensor name, for reports and per-layer overrides.
    pub name: String,
    pub w: QTensor,
    pub bias: Option<Vec<f32>>,
}

#[derive(Clone, Debug)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub ffn_norm: Vec<f32>,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub wo: Linear,
    pub w_gate: Linear,
    pub w_up: Linear,
    pub w_down: Linear,
}

impl LayerWeights {
    pub fn linears(&self) -> [&Linear; 7] {
        [
            &self.wq,
            &self.wk,
            &self.wv,
            &self.wo,
            &self.w_gate,
            &self.w_up,
            &self.w_down,
        ]
    }
    pub fn linears_mut(&mut self) -> [&mut Linear; 7] {
        [
            &mut self.wq,
            &mut self.wk,
            &mut self.wv,
            &mut self.wo,
            &mut self.w_gate,
            &mut self.w_up,
            &mut self.w_down,
        ]
    }
}

#[derive(Clone, Debug)]
pub struct ModelWeights {
    pub config: ModelConfig,
    /// `[vocab, dim]`.
    pub token_embd: QTensor,
    pub output_norm: Vec<f32>,
    /// `[vocab, dim]`; `None` when tied to `token_embd`.
    pub output: Option<QTensor>,
    pub layers: Vec<LayerWeights>,
}

/// Memory of a model by component, in bytes, plus effective bits of the quantizable weights.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MemoryReport {
    /// The linear layers inside the blocks (what quantizers act on), by component.
    pub linear: Storage,
    pub linear_params: usize,
    /// Embedding, LM head, norms, biases: kept in their loaded precision.
    pub other_bytes: usize,
    pub other_params: usize,
    /// `8 * linear.total() / linear_params`.
    pub bits_per_weight: f64,
    /// All bytes of the model.
    pub total_bytes: usize,
    /// The same model with every tensor in f16, for comparison.
    pub f16_bytes: usize,
}

impl ModelWeights {
    pub fn linears(&self) -> impl Iterator<Item = &Linear> {
        self.layers.iter().flat_map(|l| l.linears())
    }

    pub fn memory(&self) -> MemoryReport {
        let mut r = MemoryReport::default();
        for l in self.linears() {
            r.linear.add(l.w.storage());
            r.linear_params += l.w.numel();
            if let Some(b) = &l.bias {
                r.other_bytes += 4 * b.len();
                r.other_params += b.len();
            }
        }
        let mut other = |t: &QTensor| {
            r.other_bytes += t.data.len();
            r.other_params += t.numel();
        };
        other(&self.token_embd);
        if let Some(o) = &self.output {
            other(o);
        }
        let norms: usize = self.output_norm.len()
            + self
                .layers
                .iter()
                .map(|l| l.attn_norm.len() + l.ffn_norm.len())
                .sum::<usize>();
        r.other_bytes += 4 * norms;
        r.other_params += norms;
        r.bits_per_weight = 8.0 * r.linear.total() as f64 / r.linear_params.max(1) as f64;
        r.total_bytes = r.linear.total() + r.other_bytes;
        r.f16_bytes = 2 * (r.linear_params + r.other_params);
        r
    }

    /// Build from any tensor source with canonical names. Every shape is checked against the
    /// config, so a mismatched config and weight file fails here with both numbers.
    pub fn from_source(config: ModelConfig, src: &dyn TensorSource) -> Result<Self> {
        let file = src.label().to_string();
        config.validate(&file)?;
        let c = &config;
        let q = c.n_head * c.head_dim;
        let kv = c.n_kv_head * c.head_dim;
        let get = |name: &str| -> Result<RawTensor<'_>> {
            src.get(name)
                .ok_or_else(|| Error::format(&file, name, "tensor is missing"))
        };
        let matrix = |name: &str, rows: usize, cols: usize| -> Result<QTensor> {
            let t = get(name)?;
            to_qtensor(&file, &t, rows, cols)
        };
        let vector = |name: &str, len: usize| -> Result<Vec<f32>> {
            let t = get(name)?;
            to_qtensor(&file, &t, 1, len)?.dequantize()
        };
        let opt_vector = |name: &str, len: usize| -> Result<Option<Vec<f32>>> {
            match src.get(name) {
                Some(t) => Ok(Some(to_qtensor(&file, &t, 1, len)?.dequantize()?)),
                None => Ok(None),
            }
        };
        let linear = |base: &str, rows: usize, cols: usize| -> Result<Linear> {
            Ok(Linear {
                name: format!("{base}.weight"),
                w: matrix(&format!("{base}.weight"), rows, cols)?,
                bias: opt_vector(&format!("{base}.bias"), rows)?,
            })
        };
        let token_embd = matrix("token_embd.weight", c.vocab, c.dim)?;
        let output = if c.tied_embeddings || src.get("output.weight").is_none() {
            None
        } else {
            Some(matrix("output.weight", c.vocab, c.dim)?)
        };
        // Grown as layers load: a file claiming many layers but holding few allocates little.
        let mut layers = Vec::new();
        for i in 0..c.n_layer {
            let p = format!("blk.{i}");
            layers.push(LayerWeights {
                attn_norm: vector(&format!("{p}.attn_norm.weight"), c.dim)?,
                ffn_norm: vector(&format!("{p}.ffn_norm.weight"), c.dim)?,
                wq: linear(&format!("{p}.attn_q"), q, c.dim)?,
                wk: linear(&format!("{p}.attn_k"), kv, c.dim)?,
                wv: linear(&format!("{p}.attn_v"), kv, c.dim)?,
                wo: linear(&format!("{p}.attn_output"), c.dim, q)?,
                w_gate: linear(&format!("{p}.ffn_gate"), c.ffn_dim, c.dim)?,
                w_up: linear(&format!("{p}.ffn_up"), c.ffn_dim, c.dim)?,
                w_down: linear(&format!("{p}.ffn_down"), c.dim, c.ffn_dim)?,
            });
        }
        let output_norm = vector("output_norm.weight", c.dim)?;
        let mut config = config;
        config.tied_embeddings = output.is_none();
        Ok(ModelWeights {
            output_norm,
            config,
            token_embd,
            output,
            layers,
        })
    }
}

/// Copy a file tensor into a `QTensor`, checking it has `rows × cols` elements.
fn to_qtensor(file: &str, t: &RawTensor<'_>, rows: usize, cols: usize) -> Result<QTensor> {
    let want = if rows == 1 {
        vec![cols]
    } else {
        vec![rows, cols]
    };
    if t.dims != want {
        return Err(Error::format(
            file,
            &t.name,
            format!(
                "shape {:?} does not match the config, which implies {:?}",
                t.dims, want
            ),
        ));
    }
    let format = match t.dtype {
        DType::F32 => Format::F32,
        DType::F16 => Format::F16,
        DType::BF16 => Format::BF16,
        DType::Ggml(g) => Format::Ggml(g),
    };
    let st = format
        .storage(rows, cols)
        .map_err(|e| Error::format(file, &t.name, e))?;
    if t.data.len() != st.total() {
        return Err(Error::format(
            file,
            &t.name,
            format!(
                "{} bytes of data, {} {rows}×{cols} needs {}",
                t.data.len(),
                format.name(),
                st.total()
            ),
        ));
    }
    crate::io::finite::check_finite(file, &t.name, format, t.data)?;
    Ok(QTensor {
        format,
        addons: Default::default(),
        rows,
        cols,
        data: t.data.to_vec(),
    })
}
