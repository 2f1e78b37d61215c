//! The host-side model: configuration plus every tensor in its storage format. Quantizers map a
//! `ModelWeights` to a new one; backends turn one into something they can execute. Names are
//! canonical GGUF names (`blk.{i}.attn_q.weight`); the safetensors loader translates to them.

use crate::format::{storage_with, AddOns, Format, QTensor, Storage};
use crate::model::arch::{BiasRule, Topology};
use crate::model::config::ModelConfig;
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

/// A norm's vectors (length `dim`): RMSNorm has a weight, LayerNorm a weight and a bias.
#[derive(Clone, Debug, PartialEq)]
pub struct Norm {
    /// Canonical name of the weight (`blk.0.attn_norm.weight`).
    pub name: String,
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

impl Norm {
    fn len(&self) -> usize {
        self.weight.len() + self.bias.as_ref().map_or(0, Vec::len)
    }
}

/// One block's tensors, in the order of the architecture's topology (`model::arch::Topology`:
/// `norms[i]` is `Topology::norms[i]`, `linears[k]` is `Topology::linears[k]`).
#[derive(Clone, Debug)]
pub struct LayerWeights {
    pub norms: Vec<Norm>,
    pub linears: Vec<Linear>,
}

impl LayerWeights {
    pub fn linears(&self) -> &[Linear] {
        &self.linears
    }
    pub fn linears_mut(&mut self) -> &mut [Linear] {
        &mut self.linears
    }
    /// The linear whose canonical base name is `base` (`attn_q` for `blk.3.attn_q.weight`).
    pub fn linear(&self, base: &str) -> Option<&Linear> {
        self.linears.iter().find(|l| base_name(&l.name) == base)
    }
    /// The norm whose canonical base name is `base` (`attn_norm`).
    pub fn norm(&self, base: &str) -> Option<&Norm> {
        self.norms.iter().find(|n| base_name(&n.name) == base)
    }
}

/// `blk.{i}.{base}.weight` → `base`.
fn base_name(name: &str) -> &str {
    let rest = name
        .strip_prefix("blk.")
        .and_then(|r| r.split_once('.'))
        .map_or(name, |(_, r)| r);
    rest.strip_suffix(".weight").unwrap_or(rest)
}

#[derive(Clone, Debug)]
pub struct ModelWeights {
    pub config: ModelConfig,
    /// `[vocab, embed_dim]`.
    pub token_embd: QTensor,
    /// The norm before the head; `None` where the architecture has none (post-LN OPT).
    pub output_norm: Option<Norm>,
    /// `[vocab, embed_dim]`; `None` when tied to `token_embd`.
    pub output: Option<QTensor>,
    /// Whole-model tensors the topology lists in `globals` (learned positions, OPT's
    /// projections), in that order, kept as loaded.
    pub globals: Vec<Linear>,
    pub layers: Vec<LayerWeights>,
    /// How the block linears' inputs are quantized in the forward pass (`None`: kept in f32).
    pub act: Option<crate::model::actplan::ActPlan>,
}

/// Memory of a model by component, in bytes, plus effective bits of the quantizable weights.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
#[serde(default)]
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
    /// The activation quantization the model runs with (`ActPlan::label`), `None` for f32
    /// inputs: activations are not stored, but a memory line must not call a W4A8 model W4.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub act: Option<String>,
    /// The same model with every tensor in f16, for comparison.
    pub f16_bytes: usize,
}

impl ModelWeights {
    pub fn linears(&self) -> impl Iterator<Item = &Linear> {
        self.layers.iter().flat_map(|l| l.linears())
    }

    pub fn memory(&self) -> MemoryReport {
        self.memory_as(&|_, _, l| l.w.storage())
    }

    /// `memory` with block `layer`'s linear `k` stored as `storage(layer, k, linear)` says: the
    /// report of a model that differs from this one only in its block linears' formats, made
    /// without building it (RTN on the device, whose bytes stay there).
    pub fn memory_as(&self, storage: &dyn Fn(usize, usize, &Linear) -> Storage) -> MemoryReport {
        let mut r = MemoryReport::default();
        let linears = self.layers.iter().enumerate().flat_map(|(li, layer)| {
            layer
                .linears()
                .iter()
                .enumerate()
                .map(move |(k, l)| (li, k, l))
        });
        for (li, k, l) in linears {
            r.linear.add(storage(li, k, l));
            r.linear_params += l.w.numel();
            if let Some(b) = &l.bias {
                r.other_bytes += 4 * b.len();
                r.other_params += b.len();
            }
        }
        let mut other = |t: &QTensor, bias: Option<&Vec<f32>>| {
            r.other_bytes += t.data.len() + 4 * bias.map_or(0, Vec::len);
            r.other_params += t.numel() + bias.map_or(0, Vec::len);
        };
        other(&self.token_embd, None);
        if let Some(o) = &self.output {
            other(o, None);
        }
        for g in &self.globals {
            other(&g.w, g.bias.as_ref());
        }
        let norms: usize = self.output_norm.as_ref().map_or(0, Norm::len)
            + self
                .layers
                .iter()
                .flat_map(|l| &l.norms)
                .map(Norm::len)
                .sum::<usize>();
        r.other_bytes += 4 * norms;
        r.other_params += norms;
        r.bits_per_weight = 8.0 * r.linear.total() as f64 / r.linear_params.max(1) as f64;
        r.total_bytes = r.linear.total() + r.other_bytes;
        r.f16_bytes = 2 * (r.linear_params + r.other_params);
        r.act = self.act.as_ref().map(|p| p.label());
        r
    }

    /// The topology of this model's architecture.
    pub fn topology(&self) -> Topology {
        // `config` was validated when the weights were built, so its architecture is known.
        self.config
            .architecture()
            .map(|a| a.topology(&self.config))
            .unwrap_or_else(|_| crate::model::arch::Arch::Llama.topology(&self.config))
    }

    /// A model of `config` whose every tensor is f32 from `values(name, rows, cols)` (`rows` is
    /// 1 for vectors: norms and biases), in the architecture's topology: synthetic models for
    /// tests and benchmarks, of any architecture. Biases exist where the topology requires them.
    pub fn from_fn(
        config: ModelConfig,
        values: &mut dyn FnMut(&str, usize, usize) -> Vec<f32>,
    ) -> Result<Self> {
        config.validate("synthetic model")?;
        let topo = config.architecture()?.topology(&config);
        let d = config.dim;
        let mut mat = |name: &str, rows: usize, cols: usize| {
            QTensor::from_f32(rows, cols, &values(name, rows, cols))
        };
        let token_embd = mat("token_embd.weight", config.vocab, topo.embed_dim);
        let output =
            (!config.tied_embeddings).then(|| mat("output.weight", config.vocab, topo.embed_dim));
        let mut vector = |name: &str, len: usize| values(name, 1, len);
        let mut norm = |base: &str, bias: bool| Norm {
            name: format!("{base}.weight"),
            weight: vector(&format!("{base}.weight"), d),
            bias: bias.then(|| vector(&format!("{base}.bias"), d)),
        };
        let output_norm = topo.output_norm.as_ref().map(|n| norm(n.name, n.bias));
        let layers = (0..config.n_layer)
            .map(|i| LayerWeights {
                norms: topo
                    .norms
                    .iter()
                    .map(|n| norm(&format!("blk.{i}.{}", n.name), n.bias))
                    .collect(),
                linears: Vec::new(),
            })
            .collect::<Vec<_>>();
        let mut linear = |base: String, rows: usize, cols: usize, bias: bool| Linear {
            w: QTensor::from_f32(rows, cols, &values(&format!("{base}.weight"), rows, cols)),
            bias: bias.then(|| values(&format!("{base}.bias"), 1, rows)),
            name: format!("{base}.weight"),
        };
        let globals = topo
            .globals
            .iter()
            .map(|g| linear(g.name.to_string(), g.rows, g.cols, false))
            .collect();
        let mut layers = layers;
        for (i, layer) in layers.iter_mut().enumerate() {
            layer.linears = topo
                .linears
                .iter()
                .map(|l| {
                    let bias = l.bias == BiasRule::Required;
                    linear(format!("blk.{i}.{}", l.name), l.rows, l.cols, bias)
                })
                .collect();
        }
        Ok(ModelWeights {
            config,
            token_embd,
            output_norm,
            output,
            globals,
            layers,
            act: None,
        })
    }

    /// Build from any tensor source with canonical names, as the architecture's topology lists
    /// them. Every shape is checked against the config, so a mismatched config and weight file
    /// fails here with both numbers. Biases follow the topology's rule for each linear.
    pub fn from_source(config: ModelConfig, src: &dyn TensorSource) -> Result<Self> {
        let file = src.label().to_string();
        config.validate(&file)?;
        let topo = config.architecture()?.topology(&config);
        let c = &config;
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
            float_vector(&file, &t)?;
            to_qtensor(&file, &t, 1, len)?.dequantize()
        };
        let opt_vector = |name: &str, len: usize| -> Result<Option<Vec<f32>>> {
            match src.get(name) {
                Some(t) => {
                    float_vector(&file, &t)?;
                    Ok(Some(to_qtensor(&file, &t, 1, len)?.dequantize()?))
                }
                None => Ok(None),
            }
        };
        let norm = |base: &str, bias: bool| -> Result<Norm> {
            let name = format!("{base}.weight");
            Ok(Norm {
                weight: vector(&name, c.dim)?,
                bias: if bias {
                    Some(vector(&format!("{base}.bias"), c.dim)?)
                } else {
                    None
                },
                name,
            })
        };
        let linear = |base: &str, rows: usize, cols: usize, rule: BiasRule| -> Result<Linear> {
            let bias_name = format!("{base}.bias");
            let bias = match rule {
                BiasRule::Required => Some(vector(&bias_name, rows)?),
                BiasRule::Optional => opt_vector(&bias_name, rows)?,
                BiasRule::Forbidden => {
                    if src.get(&bias_name).is_some() {
                        return Err(Error::format(
                            &file,
                            &bias_name,
                            format!("unexpected bias: {} has none here", c.arch),
                        ));
                    }
                    None
                }
            };
            Ok(Linear {
                name: format!("{base}.weight"),
                w: matrix(&format!("{base}.weight"), rows, cols)?,
                bias,
            })
        };
        let token_embd = matrix("token_embd.weight", c.vocab, topo.embed_dim)?;
        let output = if c.tied_embeddings || src.get("output.weight").is_none() {
            None
        } else {
            Some(matrix("output.weight", c.vocab, topo.embed_dim)?)
        };
        let globals = topo
            .globals
            .iter()
            .map(|g| linear(g.name, g.rows, g.cols, BiasRule::Forbidden))
            .collect::<Result<Vec<_>>>()?;
        // Grown as layers load: a file claiming many layers but holding few allocates little.
        let mut layers = Vec::new();
        for i in 0..c.n_layer {
            let p = format!("blk.{i}");
            let norms = topo
                .norms
                .iter()
                .map(|n| norm(&format!("{p}.{}", n.name), n.bias))
                .collect::<Result<Vec<_>>>()?;
            let linears = topo
                .linears
                .iter()
                .map(|l| linear(&format!("{p}.{}", l.name), l.rows, l.cols, l.bias))
                .collect::<Result<Vec<_>>>()?;
            layers.push(LayerWeights { norms, linears });
        }
        let output_norm = topo
            .output_norm
            .as_ref()
            .map(|n| norm(n.name, n.bias))
            .transpose()?;
        let mut config = config;
        config.tied_embeddings = output.is_none();
        Ok(ModelWeights {
            output_norm,
            config,
            token_embd,
            output,
            globals,
            layers,
            act: None,
        })
    }
}

/// Norms and biases are stored in a float type by every converter (llama.cpp's keeps them F32):
/// a vector in a block format is a relabelled or corrupt file, whose values would be garbage.
fn float_vector(file: &str, t: &RawTensor<'_>) -> Result<()> {
    match t.dtype {
        DType::F32 | DType::F16 | DType::BF16 => Ok(()),
        DType::Ggml(_) | DType::Stored(..) => Err(Error::format(
            file,
            &t.name,
            format!(
                "a norm or bias vector stored as {}; only F32, F16 and BF16 vectors are accepted",
                stored_name(t.dtype)
            ),
        )),
    }
}

/// The format name of a file tensor's type, for messages.
fn stored_name(d: DType) -> String {
    match d {
        DType::Stored(f, _) => f.name(),
        other => other.name().to_string(),
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
    let (format, addons) = match t.dtype {
        DType::F32 => (Format::F32, AddOns::default()),
        DType::F16 => (Format::F16, AddOns::default()),
        DType::BF16 => (Format::BF16, AddOns::default()),
        DType::Ggml(g) => (Format::Ggml(g), AddOns::default()),
        DType::Stored(f, a) => (f, a),
    };
    let st =
        storage_with(format, addons, rows, cols).map_err(|e| Error::format(file, &t.name, e))?;
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
    let q = QTensor {
        format,
        addons,
        rows,
        cols,
        data: t.data.to_vec(),
    };
    if let DType::Stored(..) = t.dtype {
        crate::io::finite::check_finite_stored(file, &t.name, &q)?;
    }
    Ok(q)
}

/// A tensor source whose named 2-D tensors are transposed (`[in, out]` → `[out, in]`), the rest
/// passed through: GPT-2's Hugging Face `Conv1D` weights, read as ordinary linears. The
/// transposed copies are made once, at construction (each as large as its source tensor).
pub struct TransposedSource<'a> {
    inner: &'a dyn TensorSource,
    owned: std::collections::HashMap<String, (Vec<usize>, DType, Vec<u8>)>,
}

impl<'a> TransposedSource<'a> {
    pub fn new(inner: &'a dyn TensorSource, names: &[String]) -> Result<Self> {
        let mut owned = std::collections::HashMap::new();
        for name in names {
            let Some(t) = inner.get(name) else { continue };
            let size = match t.dtype {
                DType::F32 => 4,
                DType::F16 | DType::BF16 => 2,
                DType::Ggml(_) | DType::Stored(..) => {
                    return Err(Error::unsupported(
                        inner.label(),
                        name,
                        "a block-quantized tensor stored transposed",
                    ))
                }
            };
            let [r, c] = t.dims[..] else {
                return Err(Error::format(
                    inner.label(),
                    name,
                    format!("shape {:?} is not a matrix", t.dims),
                ));
            };
            if t.data.len() != r * c * size {
                return Err(Error::format(
                    inner.label(),
                    name,
                    format!("{} bytes for {r}×{c} elements", t.data.len()),
                ));
            }
            let mut out = vec![0u8; t.data.len()];
            for i in 0..r {
                for j in 0..c {
                    let (src, dst) = ((i * c + j) * size, (j * r + i) * size);
                    out[dst..dst + size].copy_from_slice(&t.data[src..src + size]);
                }
            }
            owned.insert(name.clone(), (vec![c, r], t.dtype, out));
        }
        Ok(TransposedSource { inner, owned })
    }
}

impl TensorSource for TransposedSource<'_> {
    fn label(&self) -> &str {
        self.inner.label()
    }
    fn get(&self, name: &str) -> Option<RawTensor<'_>> {
        match self.owned.get(name) {
            Some((dims, dtype, data)) => Some(RawTensor {
                name: name.to_string(),
                dims: dims.clone(),
                dtype: *dtype,
                data,
            }),
            None => self.inner.get(name),
        }
    }
    fn names(&self) -> Vec<String> {
        self.inner.names()
    }
}
