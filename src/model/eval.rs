//! Evaluation: perplexity under the two protocols of methods.md §8, with its standard error, and
//! KL divergence / top-1 agreement against a reference model on the same tokens.
//!
//! - `llamacpp` (llama.cpp's `llama-perplexity`): the token stream is cut into non-overlapping
//!   windows of `ctx` tokens (a partial last window is dropped); if the model adds BOS, the first
//!   token of each window is replaced by BOS; the logits at positions `ctx/2 ..= ctx-2` are scored
//!   against the next token, i.e. `ctx/2 - 1` tokens per window.
//! - `gptq` (the GPTQ paper's / transformers' loop): the same windows, no BOS replacement, every
//!   token after the first of each window is scored (`ctx - 1` per window).
//!
//! `±` is the standard error of the mean NLL carried through `exp`, as llama.cpp prints it:
//! `sqrt((E[nll²] - E[nll]²) / (n - 1)) · ppl`.

use crate::model::backend::Backend;
use crate::model::klstats::{KlAccumulator, KlStats};
use crate::model::net::Model;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Llamacpp,
    Gptq,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvalOptions {
    pub protocol: Protocol,
    pub ctx: usize,
    /// Evaluate only the first N windows.
    pub max_windows: Option<usize>,
    /// Also compare with the reference (as-loaded) model: KL and top-1 agreement.
    pub kl: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            protocol: Protocol::Llamacpp,
            ctx: 512,
            max_windows: None,
            kl: true,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvalProgress {
    /// Windows finished; `ppl`, `ppl_err`, `kl`, `top1` and `tokens_scored` are over them.
    pub window: usize,
    pub windows: usize,
    pub ppl: f64,
    pub ppl_err: f64,
    pub tokens_scored: usize,
    /// KL and top-1 over the finished windows, when comparing with a reference.
    pub kl: Option<f64>,
    pub top1: Option<f64>,
    /// Inside the batch of `in_flight` windows being computed: `step` of `steps` pieces done
    /// (a piece is about one block of one model; 0 of 0 when a window has just finished).
    pub step: usize,
    pub steps: usize,
    pub in_flight: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    pub ppl: f64,
    pub ppl_err: f64,
    /// Mean KL(reference ‖ model) in nats per scored token.
    pub kl: Option<f64>,
    /// Fraction of scored tokens where both models' argmax agree.
    pub top1: Option<f64>,
    /// The distribution of the per-token KL and the error of top-1, as llama.cpp's
    /// `--kl-divergence` prints them (`klstats`); with `kl` and `top1`.
    #[serde(default)]
    pub kl_stats: Option<KlStats>,
    pub tokens_scored: usize,
    pub tokens_evaluated: usize,
    pub windows: usize,
    pub seconds: f64,
    /// The protocol in words, to print next to every perplexity.
    pub protocol: String,
    pub ctx: usize,
}

/// One window: its tokens and which positions are scored (`from..from+targets.len()` predict
/// `targets`).
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub tokens: Vec<u32>,
    pub from: usize,
    pub targets: Vec<u32>,
}

/// The longest window evaluation accepts (memory of the attention scores grows with ctx²).
pub const MAX_CTX: usize = 8192;

/// Cut a token stream into the protocol's windows.
pub fn windows(tokens: &[u32], bos: Option<u32>, opts: &EvalOptions) -> Result<Vec<Window>> {
    let ctx = opts.ctx;
    if !(4..=MAX_CTX).contains(&ctx) {
        return Err(Error::config(
            "ctx",
            format!("{ctx} is outside 4..={MAX_CTX}"),
        ));
    }
    let n = tokens.len() / ctx;
    if n == 0 {
        return Err(Error::config(
            "text",
            format!(
                "the text has {} tokens; one window of ctx {ctx} needs at least {ctx}",
                tokens.len()
            ),
        ));
    }
    let n = opts.max_windows.map_or(n, |m| m.min(n));
    Ok((0..n)
        .map(|i| {
            let mut w = tokens[i * ctx..(i + 1) * ctx].to_vec();
            match opts.protocol {
                Protocol::Llamacpp => {
                    if let Some(b) = bos {
                        w[0] = b;
                    }
                    let first = ctx / 2;
                    Window {
                        targets: w[first + 1..].to_vec(),
                        from: first,
                        tokens: w,
                    }
                }
                Protocol::Gptq => Window {
                    targets: w[1..].to_vec(),
                    from: 0,
                    tokens: w,
                },
            }
        })
        .collect())
}

pub fn describe(opts: &EvalOptions, windows: usize, bos: Option<u32>) -> String {
    let ctx = opts.ctx;
    match opts.protocol {
        Protocol::Llamacpp => format!(
            "llama.cpp protocol: {windows} non-overlapping windows of {ctx} tokens, second half scored ({} tokens/window), {}",
            ctx / 2 - 1,
            if bos.is_some() { "BOS replaces each window's first token" } else { "no BOS" }
        ),
        Protocol::Gptq => format!(
            "GPTQ protocol: {windows} non-overlapping windows of {ctx} tokens, every token after the first scored ({} tokens/window), no BOS",
            ctx - 1
        ),
    }
}

/// Running sums for perplexity and its error.
#[derive(Clone, Copy, Debug, Default)]
pub struct NllStats {
    pub sum: f64,
    pub sum_sq: f64,
    pub n: usize,
}

impl NllStats {
    pub fn push(&mut self, nll: f64) {
        self.sum += nll;
        self.sum_sq += nll * nll;
        self.n += 1;
    }
    pub fn ppl(&self) -> f64 {
        (self.sum / self.n.max(1) as f64).exp()
    }
    pub fn ppl_err(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let mean = self.sum / self.n as f64;
        let var = (self.sum_sq / self.n as f64 - mean * mean).max(0.0);
        (var / (self.n - 1) as f64).sqrt() * mean.exp()
    }
}

/// Evaluate `model` on `tokens`; with `reference`, also KL and top-1 against it. `progress` is
/// called after every window and may return false to cancel. `clock` returns seconds (the
/// caller's: `Instant` natively, `performance.now()` in the browser).
#[allow(clippy::too_many_arguments)]
pub async fn evaluate<B: Backend>(
    b: &B,
    model: &Model<B>,
    reference: Option<&Model<B>>,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &EvalOptions,
    clock: &dyn Fn() -> f64,
    progress: &mut dyn FnMut(&EvalProgress) -> bool,
) -> Result<EvalResult> {
    if opts.ctx > model.config.max_ctx {
        return Err(Error::config(
            "ctx",
            format!(
                "{} exceeds the model's context length {}",
                opts.ctx, model.config.max_ctx
            ),
        ));
    }
    let t0 = clock();
    let wins = windows(tokens, bos, opts)?;
    let mut stats = NllStats::default();
    let mut kl = reference
        .is_some()
        .then(|| KlAccumulator::with_capacity(wins.iter().map(|w| w.targets.len()).sum()));
    // Running sums for the progress reports (the accumulator keeps every token for the end).
    let (mut kl_sum, mut agree) = (0.0f64, 0usize);
    // Windows run in batches of independent sequences (as many as the backend wants; see
    // `Backend::eval_batch`), and one batch stays in flight: batch i+1 is recorded (and
    // submitted) before the scores of batch i are read, so a GPU backend computes while the
    // host records. The CPU backend's scores are ready at once either way. A backend that holds
    // work back (`Backend::hold_work`: the browser's GPU) runs each batch a block at a time
    // after recording it, so progress and cancellation reach inside a window there too.
    let c = &model.config;
    let width = c.topology()?.widest();
    let per = b.eval_batch(opts.ctx, width).max(1);
    let batches: Vec<&[Window]> = wins.chunks(per).collect();
    let mut in_flight: Option<Vec<B::Pending>> = None;
    let mut done_windows = 0usize;
    let with_ref = reference.is_some();
    // Progress so far, with `step` of `steps` pieces of the batch in flight done.
    let report = |done: usize,
                  stats: &NllStats,
                  kl: f64,
                  agree: usize,
                  step: usize,
                  steps: usize,
                  batch: usize| {
        let mean = |v: f64| with_ref.then(|| v / stats.n.max(1) as f64);
        EvalProgress {
            window: done,
            windows: wins.len(),
            ppl: stats.ppl(),
            ppl_err: stats.ppl_err(),
            tokens_scored: stats.n,
            kl: mean(kl),
            top1: mean(agree as f64),
            step,
            steps,
            in_flight: batch,
        }
    };
    // Pieces of one batch: a block of the model (and of the reference) each.
    let steps = c.n_layer * (1 + with_ref as usize);
    let holds = b.hold_work(true);
    let eager = b.computes_as_recorded();
    let run = async {
        for i in 0..=batches.len() {
            let next = match batches.get(i) {
                Some(batch) => {
                    // A backend that computes as it records (the CPU) reports and can be
                    // cancelled between blocks here; one that holds work back is told where the
                    // blocks end and runs them in `run_held` below.
                    let mut step = 0;
                    let mut on_block = || {
                        if holds {
                            b.block_boundary();
                            return Ok(());
                        }
                        let p = report(
                            done_windows,
                            &stats,
                            kl_sum,
                            agree,
                            step,
                            steps,
                            batch.len(),
                        );
                        step += 1;
                        if progress(&p) {
                            Ok(())
                        } else {
                            Err(Error::Cancelled)
                        }
                    };
                    Some(record_batch(b, model, reference, batch, &mut on_block)?)
                }
                None => None,
            };
            // A backend that computes as it records (the CPU) has nothing to overlap: its batch
            // is read at once, so each window is reported as soon as it is scored.
            let ready = if eager {
                next
            } else {
                std::mem::replace(&mut in_flight, next)
            };
            if let Some(pendings) = ready {
                for pending in pendings {
                    let scores = b.read_scores(pending).await?;
                    for s in &scores {
                        check_score(s, done_windows, wins.len(), with_ref)?;
                        stats.push(s.nll);
                        kl_sum += s.kl;
                        agree += s.top1_agree as usize;
                        if let Some(k) = &mut kl {
                            k.push(s.kl, s.top1_agree);
                        }
                    }
                    done_windows += 1;
                    if !progress(&report(done_windows, &stats, kl_sum, agree, 0, 0, 0)) {
                        return Err(Error::Cancelled);
                    }
                }
            }
            // Held work (the browser's GPU) runs now, a block at a time, after the previous
            // batch's windows were reported: a cancelled run keeps those.
            if let (true, Some(batch)) = (holds, batches.get(i)) {
                let mut on_step = |step: usize, steps: usize| {
                    progress(&report(
                        done_windows,
                        &stats,
                        kl_sum,
                        agree,
                        step,
                        steps,
                        batch.len(),
                    ))
                };
                b.run_held(&mut on_step).await?;
            }
        }
        Ok::<(), Error>(())
    };
    let ran = run.await;
    // Whatever a failed or cancelled run left held is dropped, never submitted.
    b.hold_work(false);
    ran?;
    if !stats.ppl().is_finite() {
        return Err(Error::format(
            "evaluation",
            "ppl",
            format!(
                "mean negative log-likelihood {} overflows exp(): the model's output is broken",
                stats.sum / stats.n.max(1) as f64
            ),
        ));
    }
    let kl_stats = kl.and_then(KlAccumulator::finish);
    Ok(EvalResult {
        ppl: stats.ppl(),
        ppl_err: stats.ppl_err(),
        kl: kl_stats.as_ref().map(|k| k.mean),
        top1: kl_stats.as_ref().map(|k| k.top1),
        kl_stats,
        tokens_scored: stats.n,
        tokens_evaluated: wins.len() * opts.ctx,
        windows: wins.len(),
        seconds: clock() - t0,
        protocol: describe(opts, wins.len(), bos),
        ctx: opts.ctx,
    })
}

/// A score that is not a finite number is an error naming the window (0-based `window` of
/// `windows`): a NaN perplexity is not a result.
fn check_score(
    s: &crate::model::backend::TokenScore,
    window: usize,
    windows: usize,
    kl: bool,
) -> Result<()> {
    let (what, v) = if !s.nll.is_finite() {
        ("negative log-likelihood", s.nll)
    } else if kl && !s.kl.is_finite() {
        ("KL divergence", s.kl)
    } else {
        return Ok(());
    };
    Err(Error::format(
        "evaluation",
        format!("window {} of {windows}", window + 1),
        format!(
            "{what} is {v}: the model's output went non-finite (NaN or infinite weights or \
             activations; a tensor stored in the wrong type?)"
        ),
    ))
}

/// Run one batch of equal-length windows through the model (and the reference) and record
/// the scoring of each window; the scores stay on the backend until read. Each window's
/// reference log-probs are dropped as soon as its scoring is recorded, so only one window's
/// vocabulary-sized log-probs exist at a time.
fn record_batch<B: Backend>(
    b: &B,
    model: &Model<B>,
    reference: Option<&Model<B>>,
    batch: &[Window],
    on_block: &mut dyn FnMut() -> Result<()>,
) -> Result<Vec<B::Pending>> {
    let seq = batch.first().map_or(0, |w| w.tokens.len());
    let tokens: Vec<u32> = batch
        .iter()
        .flat_map(|w| w.tokens.iter().copied())
        .collect();
    // `on_block` at the first site of every block (between blocks): progress and cancellation
    // inside a window.
    let mut observer = |_layer: usize, site: usize, _x: &B::Act| match site {
        0 => on_block(),
        _ => Ok(()),
    };
    let xr = reference
        .map(|r| r.forward_batch_observed(b, &tokens, seq, &mut observer))
        .transpose()?;
    let x = model.forward_batch_observed(b, &tokens, seq, &mut observer)?;
    if reference.is_none() {
        let windows: Vec<(usize, &[u32])> = batch
            .iter()
            .enumerate()
            .map(|(s, w)| (s * seq + w.from, &w.targets[..]))
            .collect();
        return b.score_windows(&x, model.head(), &windows);
    }
    let mut pendings = Vec::with_capacity(batch.len());
    for (s, w) in batch.iter().enumerate() {
        let from = s * seq + w.from;
        let refs = match (reference, &xr) {
            (Some(r), Some(xr)) => b.score(xr, r.head(), from, &w.targets, None, true)?.1,
            _ => None,
        };
        let (pending, _) = b.score(&x, model.head(), from, &w.targets, refs.as_ref(), false)?;
        pendings.push(pending);
    }
    Ok(pendings)
}

/// Drive a future that never waits (the CPU backend's) to completion without an executor.
/// Returns an error instead of spinning if it does wait.
/// Negative log-likelihood (nats) of each token of `ids` after the first, given the tokens before
/// it, in one forward pass over the whole sequence: what a reference implementation reports
/// per token, to compare against it directly (no windows, no BOS added).
pub async fn token_nll<B: Backend>(b: &B, model: &Model<B>, ids: &[u32]) -> Result<Vec<f64>> {
    if ids.len() < 2 || ids.len() > model.config.max_ctx.min(MAX_CTX) {
        return Err(Error::config(
            "tokens",
            format!(
                "{} tokens; scoring needs 2..={}",
                ids.len(),
                model.config.max_ctx.min(MAX_CTX)
            ),
        ));
    }
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= model.config.vocab) {
        return Err(Error::config(
            "tokens",
            format!(
                "id {bad} is outside the vocabulary of {}",
                model.config.vocab
            ),
        ));
    }
    let x = model.forward(b, ids)?;
    let (pending, _) = b.score(&x, model.head(), 0, &ids[1..], None, false)?;
    let scores = b.read_scores(pending).await?;
    Ok(scores.iter().map(|s| s.nll).collect())
}

pub fn ready<T>(fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => Err(Error::config(
            "backend",
            "this backend needs an async executor",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llamacpp_windows_score_second_half() {
        let toks: Vec<u32> = (0..20).collect();
        let o = EvalOptions {
            protocol: Protocol::Llamacpp,
            ctx: 8,
            max_windows: None,
            kl: false,
        };
        let w = windows(&toks, Some(99), &o).unwrap();
        assert_eq!(w.len(), 2); // 20 / 8, partial window dropped
        assert_eq!(w[1].tokens[0], 99);
        assert_eq!(w[1].from, 4);
        assert_eq!(w[1].targets, vec![13, 14, 15]); // positions 4..=6 predict 13..=15
    }

    #[test]
    fn gptq_windows_score_all_but_first() {
        let toks: Vec<u32> = (0..16).collect();
        let o = EvalOptions {
            protocol: Protocol::Gptq,
            ctx: 8,
            max_windows: Some(1),
            kl: false,
        };
        let w = windows(&toks, Some(99), &o).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].tokens[0], 0);
        assert_eq!(w[0].targets, (1..8).collect::<Vec<u32>>());
    }

    #[test]
    fn short_text_is_a_clear_error() {
        let e = windows(&[1, 2, 3], None, &EvalOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 tokens") && e.contains("512"), "{e}");
    }

    #[test]
    fn stats_match_hand_computation() {
        let mut s = NllStats::default();
        for v in [1.0, 2.0, 3.0] {
            s.push(v);
        }
        const TOL: f64 = 1e-12;
        assert!((s.ppl() - 2f64.exp()).abs() < TOL);
        // var = 2/3, /(n-1) = 1/3
        assert!((s.ppl_err() - (1.0f64 / 3.0).sqrt() * 2f64.exp()).abs() < TOL);
    }
}
