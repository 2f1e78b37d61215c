//! A model loaded into a backend: the weights of `ModelWeights` in the backend's memory, in the
//! order of the architecture's topology, and the entry points of THE forward pass, which each
//! architecture writes in its own file (`model::arch`).

use crate::model::actplan::ActPlan;
use crate::model::arch::Arch;
use crate::model::backend::Backend;
use crate::model::config::ModelConfig;
use crate::model::weights::{Linear, ModelWeights, Norm};
use crate::{Error, Result};

/// Sees `(layer, site, input)` for every block linear input during a forward pass; `site`
/// indexes the topology's `sites`.
pub type Observer<'a, B> = dyn FnMut(usize, usize, &<B as Backend>::Act) -> Result<()> + 'a;

/// A norm in a backend's memory.
pub struct LoadedNorm<B: Backend> {
    pub w: B::Vector,
    pub b: Option<B::Vector>,
}

/// One block: norms and linears in topology order (`arch::Topology::{norms, linears}`).
pub struct Block<B: Backend> {
    pub norms: Vec<LoadedNorm<B>>,
    pub mats: Vec<B::Mat>,
}

/// Makes block `layer`'s linear `k` on a backend (`Model::load_using`).
pub type BlockMat<'a, M> = dyn FnMut(usize, usize, &Linear) -> Result<M> + 'a;

/// A model loaded into a backend, ready to run.
pub struct Model<B: Backend> {
    pub config: ModelConfig,
    pub arch: Arch,
    /// vocab × embed_dim.
    pub(crate) embd: B::Mat,
    /// vocab × embed_dim; None = tied to `embd`.
    pub(crate) head: Option<B::Mat>,
    pub(crate) out_norm: Option<LoadedNorm<B>>,
    /// The topology's `globals`, in its order.
    pub(crate) globals: Vec<B::Mat>,
    pub(crate) blocks: Vec<Block<B>>,
    /// Activation quantization of the block linears' inputs (`None`: f32 inputs).
    pub(crate) act: Option<ActPlan>,
}

impl<B: Backend> Model<B> {
    pub fn load(b: &B, w: &ModelWeights) -> Result<Self> {
        Self::load_using(b, w, &mut |_, _, l| b.load_matrix(&l.w, l.bias.as_deref()))
    }

    /// As `load`, the block linears made by `block_mat(layer, k, linear)`: a caller that
    /// already holds some of them on the backend (RTN re-quantized on the GPU) hands those over
    /// instead of uploading their bytes again.
    pub fn load_using(
        b: &B,
        w: &ModelWeights,
        block_mat: &mut BlockMat<'_, B::Mat>,
    ) -> Result<Self> {
        let arch = w.config.architecture()?;
        let mat = |l: &Linear| b.load_matrix(&l.w, l.bias.as_deref());
        let norm = |n: &Norm| -> Result<LoadedNorm<B>> {
            Ok(LoadedNorm {
                w: b.load_vector(&n.weight)?,
                b: n.bias.as_deref().map(|v| b.load_vector(v)).transpose()?,
            })
        };
        let topo = arch.topology(&w.config);
        if let Some(p) = &w.act {
            p.check(w.layers.len(), topo.sites.len())?;
        }
        if w.globals.len() != topo.globals.len() {
            return Err(Error::config(
                "model",
                format!(
                    "{} whole-model tensors where {} expects {}",
                    w.globals.len(),
                    w.config.arch,
                    topo.globals.len()
                ),
            ));
        }
        // A BinaryMoS weight has no single matrix to gather rows from or to multiply the hidden
        // state by without its router: only block linears may hold one (the quantizers put it
        // nowhere else; a hand-made file might).
        let globals = std::iter::once(("token_embd", &w.token_embd))
            .chain(w.output.as_ref().map(|o| ("output", o)))
            .chain(
                topo.globals
                    .iter()
                    .map(|g| g.name)
                    .zip(w.globals.iter().map(|l| &l.w)),
            );
        for (name, t) in globals {
            if matches!(t.format, crate::format::Format::BinaryMos { .. }) {
                return Err(Error::config(
                    "model",
                    format!("{name} is stored as BinaryMoS, which only block linears may be"),
                ));
            }
        }
        let blocks = w
            .layers
            .iter()
            .enumerate()
            .map(|(li, l)| {
                if l.linears.len() != topo.linears.len() || l.norms.len() != topo.norms.len() {
                    return Err(Error::config(
                        "model",
                        format!(
                            "a block of {} linears and {} norms where {} has {} and {}",
                            l.linears.len(),
                            l.norms.len(),
                            w.config.arch,
                            topo.linears.len(),
                            topo.norms.len()
                        ),
                    ));
                }
                Ok(Block {
                    norms: l.norms.iter().map(norm).collect::<Result<_>>()?,
                    mats: l
                        .linears
                        .iter()
                        .enumerate()
                        .map(|(k, lin)| block_mat(li, k, lin))
                        .collect::<Result<_>>()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Model {
            config: w.config.clone(),
            arch,
            embd: b.load_matrix(&w.token_embd, None)?,
            head: w
                .output
                .as_ref()
                .map(|o| b.load_matrix(o, None))
                .transpose()?,
            out_norm: w.output_norm.as_ref().map(norm).transpose()?,
            globals: w.globals.iter().map(mat).collect::<Result<_>>()?,
            blocks,
            act: w.act.clone(),
        })
    }

    /// The activation quantization this model runs with.
    pub fn act_plan(&self) -> Option<&ActPlan> {
        self.act.as_ref()
    }

    /// The input `x` of the linears at `site` of block `layer` (rows: sequences of `seq`), as
    /// they read it: quantized in place when the model has an activation plan, then shown to
    /// `observer`. Every
    /// architecture's forward pass calls this once per site, before the linears that share it.
    pub(crate) fn site(
        &self,
        b: &B,
        layer: usize,
        site: usize,
        mut x: B::Act,
        seq: usize,
        observer: &mut Observer<'_, B>,
    ) -> Result<B::Act> {
        match &self.act {
            Some(ActPlan {
                tender: Some(t), ..
            }) => b.tender_act(&mut x, &t.spec, t.fixed(layer, site)?, seq)?,
            Some(p) => b.fake_quant_act(&mut x, &p.spec(layer, site)?)?,
            None => {}
        }
        observer(layer, site, &x)?;
        Ok(x)
    }

    /// The LM head (the embedding when tied).
    pub fn head(&self) -> &B::Mat {
        self.head.as_ref().unwrap_or(&self.embd)
    }

    /// Every weight matrix the backend holds, each once (a tied head is the embedding), so a
    /// backend can report the memory it really uses.
    pub fn matrices(&self) -> impl Iterator<Item = &B::Mat> {
        std::iter::once(&self.embd)
            .chain(self.head.as_ref())
            .chain(self.globals.iter())
            .chain(self.blocks.iter().flat_map(|b| b.mats.iter()))
    }

    /// Every norm vector the backend holds.
    pub fn vectors(&self) -> impl Iterator<Item = &B::Vector> {
        fn norm<B: Backend>(n: &LoadedNorm<B>) -> impl Iterator<Item = &B::Vector> {
            std::iter::once(&n.w).chain(n.b.as_ref())
        }
        self.out_norm.iter().flat_map(norm::<B>).chain(
            self.blocks
                .iter()
                .flat_map(|b| b.norms.iter().flat_map(norm::<B>)),
        )
    }

    /// Final hidden states (T × d, what the head reads) of a window whose first token sits at
    /// position 0.
    pub fn forward(&self, b: &B, tokens: &[u32]) -> Result<B::Act> {
        self.forward_observed(b, tokens, &mut |_, _, _| Ok(()))
    }

    /// Final hidden states of several windows at once: `tokens` holds independent sequences of
    /// `seq` tokens each, each starting at position 0 (a batch of evaluation windows; rows
    /// `s·seq ..` of the result belong to sequence `s`).
    pub fn forward_batch(&self, b: &B, tokens: &[u32], seq: usize) -> Result<B::Act> {
        self.forward_batch_observed(b, tokens, seq, &mut |_, _, _| Ok(()))
    }

    /// `forward`, showing `observer(layer, site, x)` the input of each block linear layer as it
    /// goes (calibration reads these; see `arch::Topology::sites`). An observer error stops
    /// the pass.
    pub fn forward_observed(
        &self,
        b: &B,
        tokens: &[u32],
        observer: &mut Observer<'_, B>,
    ) -> Result<B::Act> {
        self.forward_batch_observed(b, tokens, tokens.len(), observer)
    }

    /// `forward_batch` (independent sequences of `seq` tokens), showing each block linear's
    /// input to `observer` as `forward_observed` does (rows of all sequences together).
    pub fn forward_batch_observed(
        &self,
        b: &B,
        tokens: &[u32],
        seq: usize,
        observer: &mut Observer<'_, B>,
    ) -> Result<B::Act> {
        if tokens.is_empty() || seq == 0 || !tokens.len().is_multiple_of(seq) {
            return Err(Error::config(
                "tokens",
                format!(
                    "{} tokens do not split into sequences of {seq}",
                    tokens.len()
                ),
            ));
        }
        self.arch.forward(self, b, tokens, seq, observer)
    }
}

/// Positions of the rows of a batch of independent sequences of `seq` tokens, each starting at
/// `offset` (learned-position tables: OPT reads row `t + 2`, GPT-2 row `t`).
pub fn positions(rows: usize, seq: usize, offset: usize) -> Vec<u32> {
    (0..rows).map(|t| (offset + t % seq) as u32).collect()
}
