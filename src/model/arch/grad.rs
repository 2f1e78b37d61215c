//! Training's pass through a whole model (issue 15, full BinaryMoS distillation, arXiv
//! 2406.12311): the forward pass, keeping what the backward pass needs, and that backward pass,
//! for every architecture. The model-level loop lives here; each architecture supplies its
//! embedding, its block, its last steps before the head and their backward passes:
//!   Llama family   `llama::grad` (RMSNorm, RoPE, GQA attention, SwiGLU)
//!   OPT, GPT-2     `grad::ln_block` (LayerNorm, MHA attention, ReLU / tanh-GELU MLP; OPT's
//!                  pre- and post-LN, GPT-2's fused q/k/v), laid out by `opt::grad::layout` and
//!                  `gpt2::grad::layout`.
//! The pieces they share (a linear and its backward, attention's backward, LayerNorm's) are in
//! `grad::pieces`. The norms, the embeddings, the head and dense linears stay frozen (the
//! student trains only its BinaryMoS linears), so the backward pass returns gradients for those
//! alone.
//!
//! Memory: `forward_taped` keeps every block's intermediate values (its tape) when they fit
//! `TAPE_BUDGET`; otherwise, as after `forward`, `backward` runs each block's forward again
//! before going back through it (activation checkpointing, one block at a time). The same
//! operations either way, so the gradients are bit for bit the same (checked in
//! `model_backward_matches_central_differences_for_every_trained_tensor`).
//!
//! One model implementation: `forward(..).out` equals `Model::forward` bit for bit for every
//! architecture (`training_forward_is_the_model_forward`), and every piece is checked against
//! central differences.

use super::{gpt2, llama, opt, Arch};
use crate::format::binarymos::MosGrads;
use crate::linalg::{CpuGemm, Gemm};
use crate::model::backend::Backend;
use crate::model::cpu::{Act, Cpu};
use crate::model::net::Model;
use crate::{Error, Result};

pub(crate) mod ln_block;
pub(crate) mod pieces;
#[cfg(test)]
pub(crate) mod testing;

/// The forward pass as training keeps it.
pub struct Forward {
    /// The input of every block, then the last block's output (`n_layer + 1` entries, T × d).
    pub inputs: Vec<Act>,
    /// What the head reads (after the output norm, and OPT's `project_out`), T × embed_dim.
    pub out: Act,
    /// Each block's tape, when `forward_taped` kept them (else the backward pass recomputes
    /// them; the numbers are the same either way).
    pub(crate) tapes: Vec<Option<Tape>>,
}

/// What one block's forward keeps for its backward, per architecture.
pub(crate) enum Tape {
    Llama(llama::grad::Tape),
    Ln(ln_block::Tape),
}

/// Most bytes of tapes `forward_taped` keeps; past this it keeps none and the backward pass
/// recomputes each block (about a sixth more work). 4 GiB holds 1 400 tokens of the default
/// model (30 blocks, ~94 kB a token and block).
pub const TAPE_BUDGET: u64 = 4 << 30;

/// The gradients of one block's BinaryMoS linears (topology order; `None` for a dense one).
pub type BlockGrads = Vec<Option<MosGrads>>;

/// Whether `m` can train here: no activation quantization (every architecture has a backward
/// pass).
pub fn check(m: &Model<Cpu>) -> Result<()> {
    if m.act.is_some() {
        return Err(Error::config(
            "binarize --mode full",
            "the model quantizes its activations; full distillation trains on f32 activations",
        ));
    }
    Ok(())
}

/// The forward pass of `tokens` (independent sequences of `seq`), keeping each block's input.
/// The same operations in the same order as the architecture's `forward`.
pub fn forward(m: &Model<Cpu>, tokens: &[u32], seq: usize) -> Result<Forward> {
    forward_on(m, tokens, seq, false, &CpuGemm)
}

/// `forward`, also keeping every block's tape for `backward` when they fit `TAPE_BUDGET`.
pub fn forward_taped(m: &Model<Cpu>, tokens: &[u32], seq: usize) -> Result<Forward> {
    forward_on(m, tokens, seq, true, &CpuGemm)
}

/// `forward` (`taped`: `forward_taped`) with the linears' products on `gemm` (the trainer's
/// seam, `linalg::Gemm`).
pub fn forward_on(
    m: &Model<Cpu>,
    tokens: &[u32],
    seq: usize,
    taped: bool,
    gemm: &dyn Gemm,
) -> Result<Forward> {
    let (c, blocks, rows) = (&m.config, m.blocks.len(), tokens.len());
    let bytes = match m.arch {
        Arch::Llama => llama::grad::tape_bytes(c, blocks, rows),
        Arch::Opt | Arch::Gpt2 => ln_block::tape_bytes(c, blocks, rows),
    };
    forward_keeping(m, tokens, seq, taped && bytes <= TAPE_BUDGET, gemm)
}

fn forward_keeping(
    m: &Model<Cpu>,
    tokens: &[u32],
    seq: usize,
    keep: bool,
    gemm: &dyn Gemm,
) -> Result<Forward> {
    check(m)?;
    if tokens.is_empty() || seq == 0 || !tokens.len().is_multiple_of(seq) {
        return Err(Error::config(
            "tokens",
            format!("{} tokens in sequences of {seq}", tokens.len()),
        ));
    }
    let c = &m.config;
    let layout = ln_layout(m);
    let mut x = match &layout {
        None => Cpu.embed(&m.embd, tokens)?,
        Some(l) => ln_block::embed(m, l, tokens, seq)?,
    };
    let mut inputs = Vec::with_capacity(m.blocks.len() + 1);
    let mut tapes = Vec::with_capacity(m.blocks.len());
    for blk in &m.blocks {
        let (y, tape) = match &layout {
            None => {
                let (y, t) = llama::grad::block(c, blk, &x, seq, keep, gemm);
                (y, t.map(Tape::Llama))
            }
            Some(l) => {
                let (y, t) = ln_block::block(c, l, blk, &x, seq, keep, gemm);
                (y, t.map(Tape::Ln))
            }
        };
        inputs.push(std::mem::replace(&mut x, y));
        tapes.push(tape);
    }
    let out = match &layout {
        None => llama::grad::finish(m, &x)?,
        Some(l) => ln_block::finish(m, l, &x)?,
    };
    inputs.push(x);
    Ok(Forward { inputs, out, tapes })
}

/// OPT's and GPT-2's block layout; `None` for the Llama family.
fn ln_layout(m: &Model<Cpu>) -> Option<ln_block::Layout> {
    match m.arch {
        Arch::Llama => None,
        Arch::Opt => Some(opt::grad::layout(&m.config)),
        Arch::Gpt2 => Some(gpt2::grad::layout()),
    }
}

/// Back through the whole model. `d_hidden[l]` is the loss's gradient with respect to block
/// `l`'s output (`n_layer` entries), `d_out` with respect to `Forward::out`. Calls
/// `sink(l, grads)` for every block from the last to the first. Uses up `f`'s tapes.
pub fn backward(
    m: &Model<Cpu>,
    f: &mut Forward,
    seq: usize,
    d_hidden: &[Act],
    d_out: &Act,
    gemm: &dyn Gemm,
    sink: &mut dyn FnMut(usize, BlockGrads) -> Result<()>,
) -> Result<()> {
    let c = &m.config;
    let n = m.blocks.len();
    if d_hidden.len() != n || f.inputs.len() != n + 1 {
        return Err(Error::config(
            "backward",
            format!("{} hidden gradients for {n} blocks", d_hidden.len()),
        ));
    }
    let layout = ln_layout(m);
    let mut dx = match &layout {
        None => llama::grad::finish_backward(m, &f.inputs[n], d_out)?,
        Some(l) => ln_block::finish_backward(m, l, &f.inputs[n], d_out)?,
    };
    for l in (0..n).rev() {
        pieces::add(&mut dx, &d_hidden[l]);
        let tape = f.tapes.get_mut(l).and_then(Option::take);
        let (blk, x) = (&m.blocks[l], &f.inputs[l]);
        let (d_in, grads) = match (&layout, tape) {
            (None, t) => {
                let t = t.and_then(|t| match t {
                    Tape::Llama(t) => Some(t),
                    Tape::Ln(_) => None,
                });
                llama::grad::block_backward(c, blk, x, seq, &dx, t, gemm)
            }
            (Some(lay), t) => {
                let t = t.and_then(|t| match t {
                    Tape::Ln(t) => Some(t),
                    Tape::Llama(_) => None,
                });
                ln_block::block_backward(c, lay, blk, x, seq, &dx, t, gemm)
            }
        };
        sink(l, grads)?;
        dx = d_in;
    }
    Ok(())
}
