//! The operations THE forward pass (`llama.rs`) needs, as a trait, so the same model code runs on
//! the CPU reference backend and (later) on the GPU. A backend owns its activations (`Act`) and
//! weights (`Mat`, `Vector`); the forward pass only orders the operations. Shapes are given in
//! rows (tokens) × columns (features), row-major.

use crate::format::act::ActQuantSpec;
use crate::format::tender::{TenderChunk, TenderSpec};
use crate::format::QTensor;
use crate::model::config::RopeStyle;
use crate::Result;

/// Per-token result of scoring one position against its target.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TokenScore {
    /// Negative log-likelihood of the target token (natural log).
    pub nll: f64,
    /// KL(reference ‖ this model) of the next-token distributions, when a reference was given.
    pub kl: f64,
    /// Whether this model's argmax equals the reference's argmax (when a reference was given).
    pub top1_agree: bool,
    /// This model's most likely token.
    pub argmax: u32,
}

pub trait Backend {
    /// Activations: a `rows × cols` matrix.
    type Act;
    /// A weight matrix `out × in` (with optional bias) in this backend's memory.
    type Mat;
    /// A vector (norm weights).
    type Vector;
    /// Log-probabilities of some rows, kept for a later comparison (reference model for KL).
    type LogProbs;
    /// Scores still on the device; `read_scores` brings them back. Reading back is the only
    /// step that waits, and it is async so the browser never blocks (a GPU backend maps a
    /// buffer; the CPU backend's future is ready at once).
    type Pending;

    fn name(&self) -> String;

    fn load_matrix(&self, w: &QTensor, bias: Option<&[f32]>) -> Result<Self::Mat>;
    fn load_vector(&self, v: &[f32]) -> Result<Self::Vector>;

    /// Rows of `table` (`vocab × dim`) for each token: `tokens.len() × dim`.
    fn embed(&self, table: &Self::Mat, tokens: &[u32]) -> Result<Self::Act>;
    /// `x / rms(x) * w` per row.
    fn rmsnorm(&self, x: &Self::Act, w: &Self::Vector, eps: f32) -> Self::Act;
    /// LayerNorm per row (Ba et al. 2016): `(x − mean) / sqrt(var + eps) · w (+ b)`, `var` the
    /// population variance of the row (as torch.nn.LayerNorm).
    fn layernorm(
        &self,
        x: &Self::Act,
        w: &Self::Vector,
        b: Option<&Self::Vector>,
        eps: f32,
    ) -> Self::Act;
    /// `x Wᵀ + b`: `rows × in` → `rows × out`.
    fn linear(&self, x: &Self::Act, w: &Self::Mat) -> Self::Act;
    /// Rotate each head of `x` (`rows × n_head*head_dim`). The rows are independent sequences
    /// of `seq` rows each (`seq` divides `rows`; one sequence when `seq == rows`): row `t` is
    /// position `pos0 + t % seq`.
    #[allow(clippy::too_many_arguments)]
    fn rope(
        &self,
        x: &mut Self::Act,
        n_head: usize,
        head_dim: usize,
        pos0: usize,
        theta: f32,
        style: RopeStyle,
        seq: usize,
    );
    /// Causal softmax attention with grouped KV heads: `q` is `rows × n_head*hd`, `k`/`v` are
    /// `rows × n_kv*hd`; returns `rows × n_head*hd`. The rows are independent sequences of `seq`
    /// rows each (`seq` divides `rows`): a query sees only the keys of its own sequence, up to
    /// itself.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &Self::Act,
        k: &Self::Act,
        v: &Self::Act,
        n_head: usize,
        n_kv: usize,
        hd: usize,
        seq: usize,
    ) -> Self::Act;

    /// How many evaluation windows of `ctx` tokens to run as one batch of independent
    /// sequences, when the widest activation has `width` columns. A GPU needs several windows
    /// per dispatch to fill its cores (one 512-token window leaves most of an H100 idle); the
    /// CPU gains nothing and keeps one.
    fn eval_batch(&self, ctx: usize, width: usize) -> usize {
        let _ = (ctx, width);
        1
    }
    /// `gate ← silu(gate) ⊙ up`.
    fn silu_mul(&self, gate: &mut Self::Act, up: &Self::Act);
    /// `x ← x + y`.
    fn add(&self, x: &mut Self::Act, y: &Self::Act);
    /// `x ← x + y`, then `rmsnorm(x, w, eps)`: a pre-norm block's residual add and the norm
    /// after it, which a GPU does in one pass (same values as the two operations).
    fn add_rmsnorm(
        &self,
        x: &mut Self::Act,
        y: &Self::Act,
        w: &Self::Vector,
        eps: f32,
    ) -> Self::Act {
        self.add(x, y);
        self.rmsnorm(x, w, eps)
    }
    /// `x ← gelu(x)` with the tanh approximation (GPT-2's `gelu_new`):
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    fn gelu(&self, x: &mut Self::Act);
    /// `x ← max(x, 0)` (OPT's ReLU).
    fn relu(&self, x: &mut Self::Act);
    /// Columns `from .. from + width` of every row of `x`: `rows × width` (splits GPT-2's fused q/k/v).
    fn slice_cols(&self, x: &Self::Act, from: usize, width: usize) -> Self::Act;
    /// Fake-quantize activations in place: to `spec.bits`-bit signed integers and back, with a
    /// static or dynamic, per-tensor or per-token scale (`format::act` is the reference).
    /// The hook through which W4A8 / Tender-style methods quantize a layer's input.
    fn fake_quant_act(&self, x: &mut Self::Act, spec: &ActQuantSpec) -> Result<()>;
    /// Tender's decomposed fake-quantization in place (`format::tender` is the reference): the
    /// rows are independent sequences of `seq` rows, cut into chunks of `spec.chunk` rows; each
    /// chunk is decomposed from its own rows (`fixed` None: dynamic) or with the calibrated
    /// `fixed[p]` of its position `p` (the last one past the end).
    fn tender_act(
        &self,
        x: &mut Self::Act,
        spec: &TenderSpec,
        fixed: Option<&[TenderChunk]>,
        seq: usize,
    ) -> Result<()>;

    /// LM head + log-softmax on rows `from..from+targets.len()` of `x`, scored against `targets`
    /// (and against `reference` log-probs of the same rows for KL/top-1). When `keep` is true the
    /// log-probs are returned for use as a later reference. The vocabulary-sized logits never
    /// need to leave the backend.
    fn score(
        &self,
        x: &Self::Act,
        head: &Self::Mat,
        from: usize,
        targets: &[u32],
        reference: Option<&Self::LogProbs>,
        keep: bool,
    ) -> Result<(Self::Pending, Option<Self::LogProbs>)>;

    /// `score` without a reference for several windows of the same `x` (rows `from..` of each,
    /// against its targets): one `Pending` per window, in order. A GPU runs the LM head once
    /// over the rows of several windows (a product of a few hundred rows leaves its tiles
    /// short of work); the same scores as `score` window by window.
    fn score_windows(
        &self,
        x: &Self::Act,
        head: &Self::Mat,
        windows: &[(usize, &[u32])],
    ) -> Result<Vec<Self::Pending>> {
        windows
            .iter()
            .map(|&(from, targets)| Ok(self.score(x, head, from, targets, None, false)?.0))
            .collect()
    }

    /// Wait for scores recorded by `score`.
    fn read_scores(
        &self,
        pending: Self::Pending,
    ) -> impl std::future::Future<Output = Result<Vec<TokenScore>>>;

    /// Logits of one row (for generation and inspection).
    fn logits_row(&self, x: &Self::Act, head: &Self::Mat, row: usize) -> Result<Vec<f32>>;

    /// Start (`on`) or stop holding recorded work back until `run_held`; returns whether the
    /// backend now holds work back. A GPU set to pace its evaluations (the browser's, so that
    /// evaluation can report progress and be cancelled inside a window) holds; a backend that
    /// computes as it records (the CPU) never does. Stopping drops whatever is still held.
    fn hold_work(&self, on: bool) -> bool {
        let _ = on;
        false
    }

    /// Whether the work is done by the time it is recorded (the CPU), so that keeping a batch in
    /// flight while the next is recorded overlaps nothing and only delays its scores: evaluation
    /// then reads each batch before recording the next, and the first window's perplexity is
    /// reported after one window's work instead of two (the page's first result, issue 17).
    fn computes_as_recorded(&self) -> bool {
        false
    }

    /// The forward pass being recorded reached the end of a block: a backend that holds work
    /// back cuts it here, so that `run_held` can stop between two blocks.
    fn block_boundary(&self) {}

    /// Run the work held back, one piece (about a block) after another, calling
    /// `step(done, total)` after each; `false` from it stops and drops the rest, and the call
    /// fails with `Error::Cancelled`. Nothing to do for a backend that holds nothing back.
    fn run_held(
        &self,
        step: &mut dyn FnMut(usize, usize) -> bool,
    ) -> impl std::future::Future<Output = Result<()>> {
        let _ = step;
        async { Ok(()) }
    }
}
