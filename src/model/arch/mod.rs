//! Architectures as data. Each architecture is one file in this folder holding its forward pass
//! (top to bottom, shapes in comments), its tensor names and its TOPOLOGY: the linear layers of a
//! block, the activation ("site") each reads, the op that produces that activation, and which
//! linears share an input. Everything that works on whole models (calibration, GPTQ, AWQ, CMPQ,
//! LoRC, per-layer overrides, the layer map, generation, sweeps, the CLI's counts) reads the
//! topology; nothing outside this folder names q/k/v/o/gate/up/down.
//!
//! Adding an architecture: one file here, and one line in the `architectures!` list below.

use crate::model::backend::Backend;
use crate::model::config::ModelConfig;
use crate::model::net::Model;
use crate::Result;
use serde::Serialize;

pub mod gpt2;
pub mod grad;
pub mod llama;
pub mod opt;

pub use crate::model::net::Observer;

/// What produces a site's activation, which decides whether a per-channel scale of the site can
/// be folded exactly into the model (AWQ, SmoothQuant: `X·diag(s)⁻¹ · (W·diag(s))ᵀ = X·Wᵀ`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Producer {
    /// The block's norm number `.0` (an index into `LayerWeights::norms`): its weight (and bias)
    /// multiply each channel, so dividing them by `s` divides the site by `s`.
    Norm(usize),
    /// Rows `offset .. offset + width` of linear `linear`'s output (and bias) become the site's
    /// channels through an op that commutes with a positive per-channel scale (`via`): attention
    /// mixes value rows per channel, `silu(g) ⊙ (s·u) = s·(silu(g) ⊙ u)`, `relu(s·x) = s·relu(x)`.
    Linear {
        linear: usize,
        offset: usize,
        via: &'static str,
    },
    /// An op no per-channel scale passes through exactly (GELU; a residual stream that also feeds
    /// the next block, as in post-LayerNorm OPT): a scale for this site cannot be folded.
    Opaque(&'static str),
}

/// One linear input of a block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SiteSpec {
    /// Short name (`attn_in`, `attn_out`, `ffn_in`, `down_in`).
    pub name: &'static str,
    /// Channels (columns of every linear that reads it).
    pub width: usize,
    pub producer: Producer,
    /// `(n_head, n_kv_head, head_dim)` when the site is attention's output: its channels are
    /// heads, and with grouped KV heads a scale folded into the value rows is shared by the
    /// query heads of one KV head.
    pub heads: Option<(usize, usize, usize)>,
}

impl SiteSpec {
    /// A site produced by norm `norm` of the block.
    pub fn norm(name: &'static str, width: usize, norm: usize) -> SiteSpec {
        SiteSpec {
            name,
            width,
            producer: Producer::Norm(norm),
            heads: None,
        }
    }

    /// A site made of rows `offset..` of linear `linear`'s output, through `via`.
    pub fn rows_of(
        name: &'static str,
        width: usize,
        linear: usize,
        offset: usize,
        via: &'static str,
    ) -> SiteSpec {
        SiteSpec {
            name,
            width,
            producer: Producer::Linear {
                linear,
                offset,
                via,
            },
            heads: None,
        }
    }

    /// A site no per-channel scale can be folded into, because of `why`.
    pub fn opaque(name: &'static str, width: usize, why: &'static str) -> SiteSpec {
        SiteSpec {
            name,
            width,
            producer: Producer::Opaque(why),
            heads: None,
        }
    }

    /// The same site, its channels being attention heads (`n_head`, `n_kv_head`, `head_dim`).
    pub fn heads(mut self, heads: (usize, usize, usize)) -> SiteSpec {
        self.heads = Some(heads);
        self
    }
}

/// A norm of a block (length `dim`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NormSpec {
    /// Canonical tensor base name (`attn_norm`): the file holds `blk.{i}.{name}.weight`.
    pub name: &'static str,
    /// LayerNorm carries a bias, RMSNorm none.
    pub bias: bool,
}

/// Whether a linear's bias exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum BiasRule {
    Required,
    Forbidden,
    /// Present or not as the file says (checkpoint flavours differ, e.g. Qwen2's q/k/v).
    Optional,
}

/// A linear layer of a block, `y = x Wᵀ (+ b)`, `W` of `rows × cols`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LinearSpec {
    /// Canonical tensor base name (`attn_q`): the file holds `blk.{i}.{name}.weight`.
    pub name: &'static str,
    pub rows: usize,
    pub cols: usize,
    /// The site it reads (an index into `Topology::sites`).
    pub site: usize,
    pub bias: BiasRule,
}

impl LinearSpec {
    pub fn new(name: &'static str, rows: usize, cols: usize, site: usize, bias: BiasRule) -> Self {
        LinearSpec {
            name,
            rows,
            cols,
            site,
            bias,
        }
    }
}

/// A whole-model tensor besides the token embedding, the head and the final norm (learned
/// positions, OPT's projections), kept in its loaded precision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GlobalSpec {
    /// Canonical tensor base name (`position_embd`).
    pub name: &'static str,
    pub rows: usize,
    pub cols: usize,
}

/// The shape of an architecture at one configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Topology {
    pub arch: Arch,
    /// The norms of a block, in `LayerWeights::norms` order.
    pub norms: Vec<NormSpec>,
    /// The linears of a block, in `LayerWeights::linears` order.
    pub linears: Vec<LinearSpec>,
    pub sites: Vec<SiteSpec>,
    /// The norm before the head (`output_norm`), if the architecture has one.
    pub output_norm: Option<NormSpec>,
    pub globals: Vec<GlobalSpec>,
    /// Columns of the token embedding (and rows fed to the head): `dim`, or OPT's
    /// `word_embed_proj_dim`.
    pub embed_dim: usize,
    /// Hugging Face checkpoints store the block linears as `[in, out]` (GPT-2's `Conv1D`); the
    /// loader transposes them to `[out, in]`, as llama.cpp's converter does for GGUF.
    pub hf_transposed: bool,
}

impl Topology {
    /// The site linear `k` reads.
    pub fn site_of(&self, k: usize) -> usize {
        self.linears[k].site
    }

    /// The linears (indices) that read site `s`, in block order.
    pub fn consumers(&self, s: usize) -> Vec<usize> {
        (0..self.linears.len())
            .filter(|&k| self.linears[k].site == s)
            .collect()
    }

    /// The position of a linear with this canonical base name in a block.
    pub fn linear_index(&self, name: &str) -> Option<usize> {
        self.linears.iter().position(|l| l.name == name)
    }

    /// Parameters of the block linears of one layer.
    pub fn linear_params_per_layer(&self) -> usize {
        self.linears.iter().map(|l| l.rows * l.cols).sum()
    }

    /// The widest activation a forward pass holds (columns): what bounds a batch's buffers.
    pub fn widest(&self) -> usize {
        self.linears
            .iter()
            .flat_map(|l| [l.rows, l.cols])
            .chain(self.sites.iter().map(|s| s.width))
            .chain([self.embed_dim])
            .max()
            .unwrap_or(self.embed_dim)
    }

    /// A human-readable description of the producer of site `s`.
    pub fn producer_text(&self, s: usize) -> String {
        match self.sites[s].producer {
            Producer::Norm(n) => {
                let spec = &self.norms[n];
                let kind = if spec.bias { "LayerNorm" } else { "RMSNorm" };
                format!("{} ({kind}, foldable)", spec.name)
            }
            Producer::Linear {
                linear,
                offset,
                via,
            } => {
                let l = &self.linears[linear];
                let w = self.sites[s].width;
                if offset == 0 && w == l.rows {
                    format!("{} through {via} (foldable)", l.name)
                } else {
                    format!(
                        "{} rows {offset}..{} through {via} (foldable)",
                        l.name,
                        offset + w
                    )
                }
            }
            Producer::Opaque(why) => format!("{why} (not foldable)"),
        }
    }
}

/// The registry: one line per architecture, `Variant => module`. Each module provides
/// `NAMES` (the architecture names files use for it), `topology(&ModelConfig)`,
/// `forward(..)`, `HF` (its `HfNames`: Hugging Face ↔ canonical GGUF tensor names),
/// `from_hf(config.json)`, `to_hf(&ModelConfig, biased)` (config.json back, for the export) and
/// `validate(&ModelConfig, file)`.
macro_rules! architectures {
    ($($variant:ident => $module:ident),* $(,)?) => {
        /// The architectures QuantLab implements.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
        pub enum Arch {
            $($variant),*
        }

        impl Arch {
            pub const ALL: &'static [Arch] = &[$(Arch::$variant),*];

            /// The architecture a file's name for it means (`llama`, `qwen2`, `opt`, `gpt2`, ...).
            pub fn of(name: &str) -> Option<Arch> {
                $(if $module::NAMES.contains(&name) {
                    return Some(Arch::$variant);
                })*
                None
            }

            /// The names files use for this architecture.
            pub fn names_of(self) -> &'static [&'static str] {
                match self {
                    $(Arch::$variant => $module::NAMES),*
                }
            }

            /// This architecture's Hugging Face `config.json` (already parsed as a JSON object).
            pub fn from_hf(
                self,
                o: &serde_json::Map<String, serde_json::Value>,
            ) -> Result<crate::model::hf::HfConfig> {
                match self {
                    $(Arch::$variant => $module::from_hf(o)),*
                }
            }

            /// Every architecture name files may use, for messages.
            pub fn names() -> Vec<&'static str> {
                let mut v = Vec::new();
                $(v.extend_from_slice($module::NAMES);)*
                v
            }

            pub fn topology(self, c: &ModelConfig) -> Topology {
                match self {
                    $(Arch::$variant => $module::topology(c)),*
                }
            }

            /// Architecture-specific consistency checks of a configuration.
            pub fn validate(self, c: &ModelConfig, file: &str) -> Result<()> {
                match self {
                    $(Arch::$variant => $module::validate(c, file)),*
                }
            }

            /// The canonical (GGUF-style) name of a Hugging Face tensor name, `None` when the
            /// tensor is not part of this architecture.
            pub fn canonical_name(self, hf: &str) -> Option<String> {
                match self {
                    $(Arch::$variant => $module::HF.canonical(hf)),*
                }
            }

            /// Whether a Hugging Face tensor carries nothing QuantLab needs (skipped on load).
            pub fn ignored(self, hf: &str) -> bool {
                match self {
                    $(Arch::$variant => $module::HF.is_ignored(hf)),*
                }
            }

            /// The Hugging Face name of a canonical tensor name (for messages).
            pub fn hf_name(self, canonical: &str) -> String {
                match self {
                    $(Arch::$variant => $module::HF.hf(canonical)),*
                }
            }

            /// The name the Hugging Face export writes for a canonical tensor name (the one
            /// transformers' `save_pretrained` writes).
            pub fn hf_saved_name(self, canonical: &str) -> String {
                match self {
                    $(Arch::$variant => $module::HF.saved(canonical)),*
                }
            }

            /// transformers' `config.json` for `c`, built from the configuration alone (for
            /// a model that came without one, e.g. from GGUF): class, `model_type` and every
            /// field the forward pass depends on. `biased`: the block linears carry biases.
            pub fn to_hf(self, c: &ModelConfig, biased: bool) -> serde_json::Map<String, serde_json::Value> {
                match self {
                    $(Arch::$variant => $module::to_hf(c, biased)),*
                }
            }

            /// THE forward pass of this architecture: final hidden states (before the head) of
            /// independent sequences of `seq` tokens, showing every block linear's input to
            /// `observer(layer, site, x)`.
            pub(crate) fn forward<B: Backend>(
                self,
                m: &Model<B>,
                b: &B,
                tokens: &[u32],
                seq: usize,
                observer: &mut Observer<'_, B>,
            ) -> Result<B::Act> {
                match self {
                    $(Arch::$variant => $module::forward(m, b, tokens, seq, observer)),*
                }
            }
        }
    };
}

architectures! {
    Llama => llama,
    Opt => opt,
    Gpt2 => gpt2,
}

/// `"{i}.{rest}"` → `(i, rest)`: a decimal layer index without leading zeros (so `layers.01`
/// cannot alias `layers.1`) below `ModelConfig::MAX_LAYERS`, refused before any allocation
/// depends on it.
pub(crate) fn split_layer(s: &str) -> Option<(usize, &str)> {
    let (index, rest) = s.split_once('.')?;
    if index.is_empty() || index.len() > 4 || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if index.len() > 1 && index.starts_with('0') {
        return None;
    }
    let i: usize = index.parse().ok()?;
    (i < ModelConfig::MAX_LAYERS).then_some((i, rest))
}

/// How an architecture's Hugging Face checkpoints name its tensors, as a table: canonical
/// (GGUF-style) base names ↔ Hugging Face module paths, for the blocks and for the whole-model
/// tensors. `lm_head.weight` is always the head (`output.weight`).
pub struct HfNames {
    /// What may stand before every name but the head, tried in order (checkpoints saved from
    /// the `*ForCausalLM` class and from the bare model class differ).
    pub prefixes: &'static [&'static str],
    /// The prefix `hf` writes in messages.
    pub hf_prefix: &'static str,
    /// The prefix transformers' `save_pretrained` of the `*ForCausalLM` class writes before
    /// every name but the head: what the Hugging Face export writes (`model::hf_export`), so the
    /// checkpoint looks like one transformers saved itself.
    pub saved_prefix: &'static str,
    /// The blocks' path after the prefix (`layers` → `layers.{i}.{module}.weight`).
    pub blocks: &'static str,
    /// (canonical, Hugging Face) module of a block.
    pub modules: &'static [(&'static str, &'static str)],
    /// (canonical, Hugging Face) whole-model tensors.
    pub globals: &'static [(&'static str, &'static str)],
    /// Canonical names that may carry a `.bias` (every other name is weight-only).
    pub with_bias: fn(&str) -> bool,
    /// Stored tensors that hold nothing QuantLab needs (buffers), by suffix.
    pub ignored: &'static [&'static str],
}

impl HfNames {
    /// The canonical name of a Hugging Face tensor name, `None` when it is not one of ours.
    pub fn canonical(&self, hf: &str) -> Option<String> {
        if hf == "lm_head.weight" {
            return Some("output.weight".into());
        }
        let rest = self
            .prefixes
            .iter()
            .find_map(|p| hf.strip_prefix(p))
            .unwrap_or(hf);
        let (path, suffix) = rest.rsplit_once('.')?;
        let (base, canonical) = match path
            .strip_prefix(self.blocks)
            .and_then(|r| r.strip_prefix('.'))
        {
            Some(layer) => {
                let (i, module) = split_layer(layer)?;
                let m = self.modules.iter().find(|(_, h)| *h == module)?.0;
                (m, format!("blk.{i}.{m}"))
            }
            None => {
                let g = self.globals.iter().find(|(_, h)| *h == path)?.0;
                (g, g.to_string())
            }
        };
        let ok = suffix == "weight" || (suffix == "bias" && (self.with_bias)(base));
        ok.then(|| format!("{canonical}.{suffix}"))
    }

    /// The Hugging Face name of a canonical name (for messages); unknown names as they are.
    pub fn hf(&self, canonical: &str) -> String {
        self.with_prefix(canonical, self.hf_prefix)
    }

    /// The name transformers' `save_pretrained` gives a canonical name (`saved_prefix`); unknown
    /// names as they are.
    pub fn saved(&self, canonical: &str) -> String {
        self.with_prefix(canonical, self.saved_prefix)
    }

    fn with_prefix(&self, canonical: &str, prefix: &str) -> String {
        if canonical == "output.weight" {
            return "lm_head.weight".into();
        }
        let (base, suffix) = canonical.rsplit_once('.').unwrap_or((canonical, ""));
        if let Some((_, h)) = self.globals.iter().find(|(c, _)| *c == base) {
            return format!("{prefix}{h}.{suffix}");
        }
        let block = base
            .strip_prefix("blk.")
            .and_then(|r| r.split_once('.'))
            .and_then(|(i, m)| Some((i, self.modules.iter().find(|(c, _)| *c == m)?.1)));
        match block {
            Some((i, h)) => format!("{prefix}{}.{i}.{h}.{suffix}", self.blocks),
            None => canonical.to_string(),
        }
    }

    pub fn is_ignored(&self, hf: &str) -> bool {
        self.ignored.iter().any(|s| hf.ends_with(s))
    }
}
impl ModelConfig {
    /// This configuration's architecture (its `arch` name resolved through the registry).
    pub fn architecture(&self) -> Result<Arch> {
        Arch::of(&self.arch).ok_or_else(|| {
            crate::Error::unsupported(
                "model",
                "architecture",
                format!("{:?} (supported: {})", self.arch, Arch::names().join(", ")),
            )
        })
    }

    /// The topology of this configuration; panics never: an unknown architecture is refused
    /// by `validate` before a config exists, so this falls back to an error.
    pub fn topology(&self) -> Result<Topology> {
        Ok(self.architecture()?.topology(self))
    }
}
