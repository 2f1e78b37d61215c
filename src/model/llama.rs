//! THE forward pass of the Llama family (Llama, SmolLM, Mistral without sliding window, Qwen2 with
//! q/k/v biases), generic over a `Backend`. Pre-norm decoder blocks:
//!   x = embed(tokens)
//!   per block:  x += Wo · attn(rope(Wq·n(x)), rope(Wk·n(x)), Wv·n(x));  x += Wd · (silu(Wg·n(x)) ⊙ Wu·n(x))
//!   logits = head(norm(x))
//! Shapes below: T tokens in the window, d = dim, hd = head_dim, H/KV = query/KV heads, F = ffn.

use crate::model::backend::Backend;
use crate::model::config::ModelConfig;
use crate::model::weights::{Linear, ModelWeights};
use crate::{Error, Result};

/// Where a block linear layer reads its input; each site feeds the layers listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Site {
    /// `attn_norm` output, T × d: input of q, k, v.
    AttnIn,
    /// Attention output, T × H·hd: input of o.
    AttnOut,
    /// `ffn_norm` output, T × d: input of gate and up.
    FfnIn,
    /// `silu(gate) ⊙ up`, T × F: input of down.
    DownIn,
}

impl Site {
    pub const ALL: [Site; 4] = [Site::AttnIn, Site::AttnOut, Site::FfnIn, Site::DownIn];

    /// The site feeding the `k`-th linear of `LayerWeights::linears()` (q, k, v, o, gate, up, down).
    pub fn of_linear(k: usize) -> Site {
        match k {
            0..=2 => Site::AttnIn,
            3 => Site::AttnOut,
            4 | 5 => Site::FfnIn,
            _ => Site::DownIn,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Sees `(layer, site, input)` for every block linear input during a forward pass.
pub type Observer<'a, B> = dyn FnMut(usize, Site, &<B as Backend>::Act) -> Result<()> + 'a;

struct Block<B: Backend> {
    attn_norm: B::Vector, // d
    ffn_norm: B::Vector,  // d
    wq: B::Mat,           // H·hd × d
    wk: B::Mat,           // KV·hd × d
    wv: B::Mat,           // KV·hd × d
    wo: B::Mat,           // d × H·hd
    w_gate: B::Mat,       // F × d
    w_up: B::Mat,         // F × d
    w_down: B::Mat,       // d × F
}

/// A model loaded into a backend, ready to run.
pub struct Llama<B: Backend> {
    pub config: ModelConfig,
    embd: B::Mat,         // vocab × d
    head: Option<B::Mat>, // vocab × d; None = tied to `embd`
    out_norm: B::Vector,  // d
    blocks: Vec<Block<B>>,
}

impl<B: Backend> Llama<B> {
    pub fn load(b: &B, w: &ModelWeights) -> Result<Self> {
        let mat = |l: &Linear| b.load_matrix(&l.w, l.bias.as_deref());
        let blocks = w
            .layers
            .iter()
            .map(|l| {
                Ok(Block {
                    attn_norm: b.load_vector(&l.attn_norm)?,
                    ffn_norm: b.load_vector(&l.ffn_norm)?,
                    wq: mat(&l.wq)?,
                    wk: mat(&l.wk)?,
                    wv: mat(&l.wv)?,
                    wo: mat(&l.wo)?,
                    w_gate: mat(&l.w_gate)?,
                    w_up: mat(&l.w_up)?,
                    w_down: mat(&l.w_down)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Llama {
            config: w.config.clone(),
            embd: b.load_matrix(&w.token_embd, None)?,
            head: w
                .output
                .as_ref()
                .map(|o| b.load_matrix(o, None))
                .transpose()?,
            out_norm: b.load_vector(&w.output_norm)?,
            blocks,
        })
    }

    /// The LM head (the embedding when tied).
    pub fn head(&self) -> &B::Mat {
        self.head.as_ref().unwrap_or(&self.embd)
    }

    /// Every weight matrix the backend holds, each once (a tied head is the embedding), so a
    /// backend can report the memory it really uses.
    pub fn matrices(&self) -> impl Iterator<Item = &B::Mat> {
        let blocks = self
            .blocks
            .iter()
            .flat_map(|b| [&b.wq, &b.wk, &b.wv, &b.wo, &b.w_gate, &b.w_up, &b.w_down]);
        std::iter::once(&self.embd)
            .chain(self.head.as_ref())
            .chain(blocks)
    }

    /// Every norm vector the backend holds.
    pub fn vectors(&self) -> impl Iterator<Item = &B::Vector> {
        std::iter::once(&self.out_norm)
            .chain(self.blocks.iter().flat_map(|b| [&b.attn_norm, &b.ffn_norm]))
    }

    /// Final normalized hidden states (T × d) of a window whose first token sits at position 0.
    pub fn forward(&self, b: &B, tokens: &[u32]) -> Result<B::Act> {
        self.forward_observed(b, tokens, &mut |_, _, _| Ok(()))
    }

    /// Final normalized hidden states of several windows at once: `tokens` holds independent
    /// sequences of `seq` tokens each, each starting at position 0 (a batch of evaluation
    /// windows; rows `s·seq ..` of the result belong to sequence `s`).
    pub fn forward_batch(&self, b: &B, tokens: &[u32], seq: usize) -> Result<B::Act> {
        self.forward_segments(b, tokens, seq, &mut |_, _, _| Ok(()))
    }

    /// `forward`, showing `observer(layer, site, x)` the input of each block linear layer as it
    /// goes (calibration reads these; see `Site`). An observer error stops the pass.
    pub fn forward_observed(
        &self,
        b: &B,
        tokens: &[u32],
        observer: &mut Observer<'_, B>,
    ) -> Result<B::Act> {
        self.forward_segments(b, tokens, tokens.len(), observer)
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
        self.forward_segments(b, tokens, seq, observer)
    }

    fn forward_segments(
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
        let c = &self.config;
        let (h, kv, hd) = (c.n_head, c.n_kv_head, c.head_dim);
        let mut x = b.embed(&self.embd, tokens)?; // T × d
        for (i, blk) in self.blocks.iter().enumerate() {
            let n = b.rmsnorm(&x, &blk.attn_norm, c.rms_eps); // T × d
            observer(i, Site::AttnIn, &n)?;
            let mut q = b.linear(&n, &blk.wq); // T × H·hd
            let mut k = b.linear(&n, &blk.wk); // T × KV·hd
            let v = b.linear(&n, &blk.wv); // T × KV·hd
            b.rope(&mut q, h, hd, 0, c.rope_theta, c.rope_style, seq);
            b.rope(&mut k, kv, hd, 0, c.rope_theta, c.rope_style, seq);
            let a = b.attention(&q, &k, &v, h, kv, hd, seq); // T × H·hd
            observer(i, Site::AttnOut, &a)?;
            b.add(&mut x, &b.linear(&a, &blk.wo));

            let n = b.rmsnorm(&x, &blk.ffn_norm, c.rms_eps); // T × d
            observer(i, Site::FfnIn, &n)?;
            let mut g = b.linear(&n, &blk.w_gate); // T × F
            b.silu_mul(&mut g, &b.linear(&n, &blk.w_up));
            observer(i, Site::DownIn, &g)?;
            b.add(&mut x, &b.linear(&g, &blk.w_down)); // T × d
        }
        Ok(b.rmsnorm(&x, &self.out_norm, c.rms_eps))
    }
}
