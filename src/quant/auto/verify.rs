//! A verified choice for automatic allocation (issue 18: "verified by a real evaluation").
//!
//! The knapsack (`solve`) adds per-layer predicted errors as if they were independent, which
//! misses how a layer's error propagates to the output: on SmolLM2-135M it lost to uniform
//! formats among its own candidates (docs/auto.md). So its choice competes with every uniform
//! candidate that fits the budget, and with the best of those (by the score below) upgraded
//! greedily with the bits it leaves unused. Each contender is built (every stored bit counted,
//! as `build` checks) and scored by its mean negative log-likelihood on the first calibration
//! sequences, which are held out from the evaluated windows like all calibration. The lowest
//! score wins; ties go to the earlier contender (the knapsack first), so the result is
//! deterministic.

use super::{build, weighed, AutoOptions, Candidate, Sensitivity};
use crate::model::cpu::Cpu;
use crate::model::eval::{ready, token_nll};
use crate::model::net::Model;
use crate::model::weights::ModelWeights;
use crate::quant::calib::Calibration;
use crate::{Error, Result};
use serde::Serialize;

/// Most calibration sequences a verification may score (each contender runs a forward pass
/// over each; 64 × 512 tokens is already minutes per contender on a 2-core CPU).
pub const MAX_VERIFY: usize = 64;

/// One allocation that was scored.
#[derive(Clone, Debug, Serialize)]
pub struct Contender {
    /// `knapsack`, `uniform <candidate>` or `<candidate> + greedy`.
    pub name: String,
    pub bits_per_weight: f64,
    /// Mean NLL (nats per token) on the scored calibration tokens; `None` when not finite (it
    /// then loses to every finite score).
    pub nll: Option<f64>,
}

/// What the verification scored and which contender won.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// Calibration sequences and tokens scored per contender.
    pub sequences: usize,
    pub tokens: usize,
    pub contenders: Vec<Contender>,
    /// Index into `contenders`.
    pub winner: usize,
    pub seconds: f64,
}

/// Stored bits of a choice.
pub(super) fn cost(table: &Sensitivity, pick: &[usize]) -> u64 {
    table
        .linears
        .iter()
        .zip(pick)
        .map(|(l, &c)| l.bits[c].unwrap_or(u64::MAX / 4))
        .sum()
}

/// Every linear in candidate `c`, if `c` fits every linear.
fn uniform(table: &Sensitivity, c: usize) -> Option<Vec<usize>> {
    table
        .linears
        .iter()
        .all(|l| l.bits[c].is_some())
        .then(|| vec![c; table.linears.len()])
}

/// Spend `capacity − cost(pick)` on upgrades: repeatedly the single change of one linear's
/// format that fits the bits left and lowers its predicted error the most per added bit (ties:
/// the first linear, then the first candidate), until none fits.
pub(super) fn upgrade(
    table: &Sensitivity,
    o: &AutoOptions,
    pick: &[usize],
    capacity: u64,
) -> Vec<usize> {
    let errs: Vec<Vec<Option<f64>>> = table.linears.iter().map(|l| weighed(l, o.error)).collect();
    let mut pick = pick.to_vec();
    let mut left = capacity.saturating_sub(cost(table, &pick));
    loop {
        let mut best: Option<(f64, usize, usize, u64)> = None;
        for (i, l) in table.linears.iter().enumerate() {
            let (b0, e0) = match (l.bits[pick[i]], errs[i][pick[i]]) {
                (Some(b), Some(e)) => (b, e),
                _ => continue,
            };
            for (c, (b, e)) in l.bits.iter().zip(&errs[i]).enumerate() {
                let (Some(b), Some(e)) = (*b, *e) else {
                    continue;
                };
                if b <= b0 || b - b0 > left || e >= e0 {
                    continue;
                }
                let gain = (e0 - e) / (b - b0) as f64;
                if best.is_none_or(|x| gain > x.0) {
                    best = Some((gain, i, c, b - b0));
                }
            }
        }
        match best {
            Some((_, i, c, extra)) => {
                pick[i] = c;
                left -= extra;
            }
            None => return pick,
        }
    }
}

/// Mean NLL of `w` over `seqs` (every token after each sequence's first), on the CPU backend.
pub fn calib_nll(w: &ModelWeights, seqs: &[Vec<u32>]) -> Result<(f64, usize)> {
    let m = Model::load(&Cpu, w)?;
    let (mut sum, mut n) = (0f64, 0usize);
    for s in seqs {
        for x in ready(token_nll(&Cpu, &m, s))? {
            sum += x;
            n += 1;
        }
    }
    Ok((sum / n.max(1) as f64, n))
}

/// Score the knapsack's `pick` against the uniform contenders and return the winner's choice
/// and model with the verification. `o.verify` calibration sequences are scored (fewer when
/// the calibration has fewer).
#[allow(clippy::too_many_arguments)]
pub fn verify(
    table: &Sensitivity,
    o: &AutoOptions,
    list: &[Candidate],
    pick: Vec<usize>,
    src: &ModelWeights,
    calib: &Calibration,
    clock: fn() -> f64,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<(Vec<usize>, ModelWeights, Verification)> {
    let t0 = clock();
    let seqs = &calib.seqs[..o.verify.min(calib.seqs.len())];
    if seqs.is_empty() {
        return Err(Error::config(
            "auto.verify",
            "the calibration kept no sequences to score; set verify to 0",
        ));
    }
    let capacity = super::capacity(table, o.budget);
    let params = table.params();
    let bpw = |p: &[usize]| cost(table, p) as f64 / params.max(1) as f64;
    let mut picks: Vec<(String, Vec<usize>)> = vec![("knapsack".into(), pick)];
    for (c, name) in table.candidates.iter().enumerate() {
        if let Some(p) = uniform(table, c).filter(|p| cost(table, p) <= capacity) {
            picks.push((format!("uniform {name}"), p));
        }
    }
    let mut scored: Vec<(Contender, Vec<usize>)> = Vec::new();
    let mut best: Option<(usize, ModelWeights)> = None;
    let mut tokens = 0;
    // Score one contender unless an identical choice was scored already; the best so far
    // keeps its model.
    let mut score = |name: String,
                     p: Vec<usize>,
                     scored: &mut Vec<(Contender, Vec<usize>)>,
                     best: &mut Option<(usize, ModelWeights)>|
     -> Result<()> {
        if scored.iter().any(|(_, q)| *q == p) {
            return Ok(());
        }
        let w = build(src, list, &p, o.budget, progress)?;
        let (nll, n) = calib_nll(&w, seqs)?;
        tokens = n;
        let nll = nll.is_finite().then_some(nll);
        let key = |x: Option<f64>| x.unwrap_or(f64::INFINITY);
        if best
            .as_ref()
            .is_none_or(|(b, _)| key(nll) < key(scored[*b].0.nll))
        {
            *best = Some((scored.len(), w));
        }
        scored.push((
            Contender {
                name,
                bits_per_weight: bpw(&p),
                nll,
            },
            p,
        ));
        Ok(())
    };
    for (name, p) in picks {
        score(name, p, &mut scored, &mut best)?;
    }
    // The best uniform contender, upgraded with the bits it leaves.
    let key = |x: Option<f64>| x.unwrap_or(f64::INFINITY);
    let top = scored
        .iter()
        .skip(1)
        .min_by(|a, b| key(a.0.nll).total_cmp(&key(b.0.nll)))
        .map(|(c, p)| (c.name.trim_start_matches("uniform ").to_string(), p.clone()));
    if let Some((name, p)) = top {
        let up = upgrade(table, o, &p, capacity);
        score(format!("{name} + greedy"), up, &mut scored, &mut best)?;
    }
    let (winner, w) = best.ok_or(Error::Cancelled)?;
    let pick = scored[winner].1.clone();
    let v = Verification {
        sequences: seqs.len(),
        tokens,
        contenders: scored.into_iter().map(|(c, _)| c).collect(),
        winner,
        seconds: (clock() - t0).max(0.0),
    };
    Ok((pick, w, v))
}
