//! The engine probe (issue 17, item 4): before the page picks WebGPU on a hardware adapter, it
//! times the same few matrix products on the GPU and on the CPU backend and keeps the faster one
//! (www/choose-engine.js). A software adapter (SwiftShader, llvmpipe) is refused before any probe.
//!
//! The products are shaped like one FFN projection of the default model (SmolLM2-135M: hidden
//! 576, FFN 1536) over a short sequence: big enough that the GPU's per-dispatch cost does not
//! decide alone, small enough to take tens of milliseconds on one CPU core. The values are a
//! fixed pseudo-random pattern: speed does not depend on them.

use crate::format::QTensor;
use crate::model::backend::Backend;
use crate::Result;
use serde::Serialize;

/// Tokens in the probe's activations.
pub const PROBE_TOKENS: usize = 64;
/// Inner dimension of each product (SmolLM2-135M's hidden size).
pub const PROBE_IN: usize = 576;
/// Outer dimension of each product (SmolLM2-135M's FFN size).
pub const PROBE_OUT: usize = 1536;
/// Products timed per engine (after one untimed warm-up that compiles pipelines).
pub const PROBE_REPS: usize = 4;

/// What the probe measured, in milliseconds per engine.
#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    /// The work, in words, for the page's note.
    pub what: String,
    pub cpu_ms: f64,
    pub gpu_ms: f64,
}

/// The probe's inputs: an embedding table the activations are gathered from (so both backends
/// build them the same way), the weight, and the token ids.
pub struct ProbeInputs {
    pub table: QTensor,
    pub weight: QTensor,
    pub tokens: Vec<u32>,
}

/// Values in [-1, 1) from a linear congruential sequence (deterministic, no dependency).
fn pattern(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

pub fn inputs() -> ProbeInputs {
    ProbeInputs {
        table: QTensor::from_f32(PROBE_TOKENS, PROBE_IN, &pattern(PROBE_TOKENS * PROBE_IN, 1)),
        weight: QTensor::from_f32(PROBE_OUT, PROBE_IN, &pattern(PROBE_OUT * PROBE_IN, 2)),
        tokens: (0..PROBE_TOKENS as u32).collect(),
    }
}

/// The work in words.
pub fn describe() -> String {
    format!("{PROBE_REPS} products of {PROBE_TOKENS} × {PROBE_IN} by {PROBE_IN} × {PROBE_OUT}")
}

/// The weights loaded on backend `b`.
pub struct Loaded<B: Backend> {
    table: B::Mat,
    weight: B::Mat,
    tokens: Vec<u32>,
}

pub fn load<B: Backend>(b: &B, i: &ProbeInputs) -> Result<Loaded<B>> {
    Ok(Loaded {
        table: b.load_matrix(&i.table, None)?,
        weight: b.load_matrix(&i.weight, None)?,
        tokens: i.tokens.clone(),
    })
}

/// `reps` products `x Wᵀ` on `b`; returns the last (the caller reads it back, which on the GPU
/// waits for all of them).
pub fn products<B: Backend>(b: &B, l: &Loaded<B>, reps: usize) -> Result<B::Act> {
    let x = b.embed(&l.table, &l.tokens)?;
    let mut y = b.linear(&x, &l.weight);
    for _ in 1..reps {
        y = b.linear(&x, &l.weight);
    }
    Ok(y)
}

/// Milliseconds the CPU backend takes for the probe (after a warm-up), by `clock_ms`.
pub fn time_cpu(clock_ms: &dyn Fn() -> f64) -> Result<f64> {
    let cpu = crate::model::cpu::Cpu;
    let l = load(&cpu, &inputs())?;
    products(&cpu, &l, 1)?;
    let t0 = clock_ms();
    products(&cpu, &l, PROBE_REPS)?;
    Ok(clock_ms() - t0)
}

/// Milliseconds the GPU takes for the probe, read back included (after a warm-up that compiles
/// the pipelines), by `clock_ms`.
pub async fn time_gpu(gpu: &crate::gpu::Gpu, clock_ms: &dyn Fn() -> f64) -> Result<f64> {
    let l = load(gpu, &inputs())?;
    gpu.read_act(&products(gpu, &l, 1)?).await?;
    let t0 = clock_ms();
    gpu.read_act(&products(gpu, &l, PROBE_REPS)?).await?;
    Ok(clock_ms() - t0)
}

/// Both engines, GPU first (so the CPU's time is not taken while the GPU compiles).
pub async fn probe(gpu: &crate::gpu::Gpu, clock_ms: &dyn Fn() -> f64) -> Result<Probe> {
    let gpu_ms = time_gpu(gpu, clock_ms).await?;
    let cpu_ms = time_cpu(clock_ms)?;
    Ok(Probe {
        what: describe(),
        cpu_ms,
        gpu_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cpu::Cpu;

    /// f32 products of length 576 summed in another order than the naive loop: a few ulps of
    /// the sum's magnitude (values in [-1, 1), sums up to ~25).
    const PRODUCT_TOL: f32 = 1e-4;

    #[test]
    fn probe_products_equal_the_naive_product() {
        let i = inputs();
        let l = load(&Cpu, &i).unwrap();
        let y = products(&Cpu, &l, 2).unwrap();
        let x = i.table.dequantize().unwrap();
        let w = i.weight.dequantize().unwrap();
        let mut worst = 0f32;
        for t in 0..PROBE_TOKENS {
            for o in 0..PROBE_OUT {
                let want: f32 = (0..PROBE_IN)
                    .map(|k| x[t * PROBE_IN + k] * w[o * PROBE_IN + k])
                    .sum();
                worst = worst.max((y.data[t * PROBE_OUT + o] - want).abs());
            }
        }
        assert!(worst <= PRODUCT_TOL, "worst difference {worst}");
    }

    #[test]
    fn cpu_probe_times_its_work() {
        let start = std::time::Instant::now();
        let clock = move || start.elapsed().as_secs_f64() * 1e3;
        let ms = time_cpu(&clock).unwrap();
        assert!(ms.is_finite() && ms > 0.0, "{ms} ms");
        // The probe must stay small: it runs before the page's first result.
        assert!(ms < 5_000.0, "the probe took {ms} ms");
        assert!(describe().contains("64 × 576"));
    }
}
