//! Resuming a stopped BinaryMoS lite training on the CPU (docs/binarymos.md "In the page";
//! `playground::lite`): a session keeps the tensors a run finished, and the same configuration
//! resumes with the rest, ending with exactly the packed tensors of a run that was never
//! stopped. Another configuration reuses nothing, and a new calibration drops what was kept.
//!
//! The tiny Llama of tests/fixtures/tiny (2 blocks of 7 linears), 4 scale experts, 10 steps.

use crate::tiny_llama;
use tiny_llama::{mos_config, packed};

use quantlab::playground::engine::Device;
use quantlab::playground::session::Session;
use quantlab::quant::calib::CalibOptions;
use quantlab::quant::config::QuantConfig;
use quantlab::Error;

const TEXT: &str = "The quick brown fox jumps over the lazy dog. A tiny model, a tiny text: \
    enough tokens for two calibration sequences of sixteen, and a few more to spare here.";
/// Block linears of the tiny Llama, all BinaryMoS.
const TENSORS: usize = 14;
/// Where the first run stops: after this many tensors are trained.
const STOP_AFTER: usize = 5;

fn session() -> (Session, Vec<u32>) {
    let mut s = tiny_llama::load(&Device::Cpu);
    let ids = s.tokenize(TEXT).unwrap();
    calibrate(&mut s, &ids, 16);
    (s, ids)
}

fn calibrate(s: &mut Session, ids: &[u32], seq_len: usize) {
    let opts = CalibOptions {
        n_seq: 2,
        seq_len,
        ..CalibOptions::default()
    };
    s.calibrate(ids, &opts, &mut |_, _| true).unwrap();
}

fn mos(steps: usize, lr: f32) -> QuantConfig {
    mos_config(4, steps, lr)
}

/// Quantize with `cfg`, cancelling through the progress callback once `stop_after` tensors
/// are done; returns the result and every (tensor, step) `on_step` saw.
fn run(
    s: &mut Session,
    cfg: &QuantConfig,
    stop_after: usize,
) -> (quantlab::Result<()>, Vec<(String, usize)>) {
    let mut steps = Vec::new();
    let r = s.set_quant_traced(
        cfg,
        &mut |done, _| done < stop_after,
        &mut |name, step, _| {
            steps.push((name.to_string(), step));
            true
        },
    );
    (r.map(|_| ()), steps)
}

#[test]
fn a_stopped_cpu_training_resumes_with_the_rest_and_ends_as_an_uninterrupted_run() {
    let cfg = mos(10, 0.01);
    let (mut straight, ids) = session();
    let (r, _) = run(&mut straight, &cfg, usize::MAX);
    r.unwrap();
    let want = packed(&straight);
    assert_eq!(want.len(), TENSORS);
    assert_eq!(straight.lite_total(&cfg), TENSORS);

    let (mut s, _) = session();
    let (stopped, _) = run(&mut s, &cfg, STOP_AFTER);
    assert!(matches!(stopped, Err(Error::Cancelled)), "{stopped:?}");
    assert_eq!(s.lite_done(&cfg), STOP_AFTER);
    let kept = s.lite_kept(&cfg);
    assert_eq!(
        kept,
        want[..STOP_AFTER]
            .iter()
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>(),
        "the first tensors, in order"
    );
    let other_steps = mos(11, 0.01);
    let other_lr = mos(10, 0.02);
    assert_eq!(s.lite_done(&other_steps), 0, "other steps reuse nothing");
    assert_eq!(s.lite_done(&other_lr), 0, "another lr reuses nothing");

    // Resumed: the kept tensors' losses are replayed (src/playground/lite.rs's tests check they
    // are not trained again), so the trace is whole, and the packed tensors are the
    // uninterrupted run's, byte for byte.
    let (resumed, trace) = run(&mut s, &cfg, usize::MAX);
    resumed.unwrap();
    assert_eq!(packed(&s), want);
    assert_eq!(s.lite_done(&cfg), TENSORS);
    assert_eq!(trace.len(), TENSORS * 11, "steps 0..=10 of every tensor");

    // Another configuration starts over: the kept tensors are dropped, and its result differs.
    let (r, _) = run(&mut s, &other_lr, usize::MAX);
    r.unwrap();
    assert_eq!(s.lite_done(&cfg), 0);
    assert_eq!(s.lite_done(&other_lr), TENSORS);
    assert_ne!(packed(&s), want);

    // A new calibration (other sequences) drops them too.
    calibrate(&mut s, &ids, 12);
    assert_eq!(s.lite_done(&other_lr), 0);
}
