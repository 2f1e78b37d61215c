//! Non-finite numbers are errors, never results: NaN or infinite weights are refused when a file
//! loads (naming the tensor), and an evaluation whose output goes non-finite fails naming the
//! window instead of reporting `PPL = NaN` with success.

use crate::synthetic;

use quantlab::format::QTensor;
use quantlab::model::eval::{EvalOptions, Protocol};
use quantlab::model::weights::ModelWeights;
use quantlab::playground::engine::{Device, Engine};
use synthetic::{synthetic, values, Norms};

fn norms(gain: f32) -> Norms {
    Norms {
        attn: vec![1.0; 64],
        ffn: vec![1.0; 64],
        output: vec![gain; 64],
    }
}

fn evaluate(w: &ModelWeights) -> quantlab::Result<f64> {
    let engine = Engine::load(&Device::Cpu, w)?;
    let tokens: Vec<u32> = (0..64u32).map(|i| (i * 7) % 32).collect();
    let opts = EvalOptions {
        protocol: Protocol::Gptq,
        ctx: 16,
        max_windows: Some(4),
        kl: false,
    };
    let clock = || 0.0;
    let r = pollster::block_on(engine.evaluate(&tokens, None, &opts, &clock, &mut |_| true))?;
    Ok(r.ppl)
}

#[test]
fn finite_model_evaluates() {
    let ppl = evaluate(&synthetic(&norms(1.0))).expect("evaluates");
    assert!(ppl.is_finite() && ppl > 1.0, "{ppl}");
}

#[test]
fn nan_in_a_weight_fails_naming_the_window() {
    let mut w = synthetic(&norms(1.0));
    let mut v = values(99, 64 * 64);
    v[5] = f32::NAN;
    // The first linear of the block (q).
    w.layers[1].linears[0].w = QTensor::from_f32(64, 64, &v);
    let e = evaluate(&w).expect_err("NaN is not a result").to_string();
    assert!(
        e.contains("window 1 of 4") && e.contains("NaN") && e.contains("non-finite"),
        "{e}"
    );
}

#[test]
fn infinite_output_fails() {
    // Finite weights whose product overflows f32: an infinite norm gain times a logit.
    let mut w = synthetic(&norms(1.0));
    w.output_norm.as_mut().expect("output_norm").weight = vec![f32::MAX; 64];
    let e = evaluate(&w)
        .expect_err("overflow is not a result")
        .to_string();
    assert!(e.contains("window") || e.contains("overflows"), "{e}");
}
