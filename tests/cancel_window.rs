//! Progress and cancellation inside an evaluation window (issue 20): evaluation reports the
//! blocks of the window in flight, stops between two blocks when asked, and what it reported
//! over the finished windows is exactly the result of evaluating only those windows (what the
//! page keeps of a cancelled run). On the CPU the blocks run as the forward pass records them;
//! on a GPU set to pace its evaluations (the browser's) the recorded blocks are held back and
//! submitted one by one (`gpu::pace`); the CPU reports each window before it computes the next.
//! The tiny Llama of tests/fixtures/tiny (2 blocks), RTN
//! 4-bit against the model as loaded, so each window has 2 × 2 blocks to report.

use crate::gpu_check;
use gpu_check::gpu;
use quantlab::format::Granularity;
use quantlab::io::tokenizer::TokenizerFiles;
use quantlab::model::eval::{EvalOptions, EvalProgress, Protocol};
use quantlab::playground::engine::Device;
use quantlab::playground::session::Session;
use quantlab::quant::config::{LayerQuant, QuantConfig};
use std::rc::Rc;

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny/llama");
const TEXT: &str = include_str!("../www/texts/prose.txt");
const CTX: usize = 32;
const WINDOWS: usize = 3;
/// The tiny Llama's blocks.
const BLOCKS: usize = 2;
/// Paced against unpaced GPU runs, relative: the same kernels on one window at a time instead
/// of a batch of windows (row tiles differ, so f32 sums may round differently).
const PACED_REL_TOL: f64 = 1e-5;

fn session(device: &Device) -> Session {
    let read =
        |f: &str| std::fs::read(format!("{TINY}/{f}")).unwrap_or_else(|e| panic!("{f}: {e}"));
    let tok = read("tokenizer.json");
    let mut s = Session::load_hf_on(
        "tiny-llama",
        &read("config.json"),
        TokenizerFiles::Json(&tok),
        &[("model.safetensors", &read("model.safetensors"))],
        device,
    )
    .expect("tiny llama loads");
    s.set_quant(&QuantConfig::rtn(LayerQuant {
        bits: 4,
        gran: Granularity::Group(32),
        sym: true,
        clip_search: false,
        grid: Default::default(),
    }))
    .expect("rtn 4-bit");
    s
}

fn opts(windows: usize) -> EvalOptions {
    EvalOptions {
        protocol: Protocol::Llamacpp,
        ctx: CTX,
        max_windows: Some(windows),
        kl: true,
    }
}

/// Evaluate, recording every progress report; `stop(p)` true cancels.
fn run(
    s: &Session,
    windows: usize,
    stop: &dyn Fn(&EvalProgress) -> bool,
) -> (
    quantlab::Result<quantlab::model::eval::EvalResult>,
    Vec<EvalProgress>,
) {
    let tokens = s.tokenize(TEXT).unwrap();
    let mut seen = Vec::new();
    let r = pollster::block_on(s.evaluate_tokens_async(&tokens, &opts(windows), &mut |p| {
        seen.push(p.clone());
        !stop(p)
    }));
    (r, seen)
}

/// A cancelled run's last report over `k` finished windows equals the run of `k` windows.
fn assert_kept(s: &Session, seen: &[EvalProgress], k: usize) {
    let last = seen.last().expect("reports");
    assert_eq!(last.window, k, "finished windows when cancelled");
    let (full, _) = run(s, k, &|_| false);
    let full = full.expect("the shorter run");
    assert_eq!(last.ppl, full.ppl, "perplexity over the kept windows");
    assert_eq!(last.ppl_err, full.ppl_err);
    assert_eq!(last.kl, full.kl, "KL over the kept windows");
    assert_eq!(last.top1, full.top1);
    assert_eq!(last.tokens_scored, full.tokens_scored);
}

#[test]
fn cpu_reports_blocks_inside_a_window_and_stops_between_two() {
    let s = session(&Device::Cpu);
    let (r, seen) = run(&s, WINDOWS, &|_| false);
    let r = r.expect("full run");
    // Each window: its blocks (model and reference) while in flight, then the finished window.
    let inside: Vec<_> = seen.iter().filter(|p| p.in_flight > 0).collect();
    assert_eq!(inside.len(), WINDOWS * 2 * BLOCKS, "{seen:?}");
    assert!(inside
        .iter()
        .all(|p| p.steps == 2 * BLOCKS && p.step < p.steps));
    assert_eq!(seen.last().unwrap().window, WINDOWS);
    assert_eq!(seen.last().unwrap().ppl, r.ppl);
    // Each window is reported as soon as it is scored, before the next one is computed (the CPU
    // has nothing to overlap; the page's first perplexity waits for one window, not two): the
    // in-flight reports of window w + 1 carry w finished windows.
    for w in 0..WINDOWS {
        let n = inside.iter().filter(|p| p.window == w).count();
        assert_eq!(n, 2 * BLOCKS, "window {}: {seen:?}", w + 1);
    }

    // Cancelled in the second window, after its first block: one window kept, exactly.
    let (r, seen) = run(&s, WINDOWS, &|p| p.window == 1 && p.step == 1);
    assert!(matches!(r, Err(quantlab::Error::Cancelled)), "{r:?}");
    let last = seen.last().unwrap();
    assert_eq!(
        (last.step, last.in_flight),
        (1, 1),
        "stopped inside the window"
    );
    assert_kept(&s, &seen, 1);
}

#[test]
fn paced_gpu_runs_block_by_block_matches_unpaced_and_stops_inside_a_window() {
    let g = Rc::new(gpu());
    let s = session(&Device::Gpu(g.clone()));
    let (unpaced, seen) = run(&s, WINDOWS, &|_| false);
    let unpaced = unpaced.expect("unpaced run");
    assert!(seen.iter().all(|p| p.in_flight == 0 || p.step < p.steps));

    g.set_pace(true);
    let (paced, seen) = run(&s, WINDOWS, &|_| false);
    let paced = paced.expect("paced run");
    let rel = (paced.ppl - unpaced.ppl).abs() / unpaced.ppl;
    eprintln!(
        "paced ppl {} unpaced {} rel {rel:e}",
        paced.ppl, unpaced.ppl
    );
    assert!(
        rel <= PACED_REL_TOL,
        "paced {} vs unpaced {}",
        paced.ppl,
        unpaced.ppl
    );
    // Held pieces finish one by one: at least a block of each model per window, reported
    // while the window is in flight and after it is recorded.
    for w in 0..WINDOWS {
        let pieces: Vec<_> = seen
            .iter()
            .filter(|p| p.window == w && p.in_flight == 1)
            .collect();
        assert!(pieces.len() >= 2 * BLOCKS, "window {w}: {pieces:?}");
        assert!(pieces.windows(2).all(|x| x[1].step == x[0].step + 1));
        assert_eq!(pieces.last().unwrap().step, pieces.last().unwrap().steps);
    }

    // Cancelled inside the second window: an error, one window kept exactly, and the device
    // keeps working (the pieces never submitted were dropped).
    let (r, seen) = run(&s, WINDOWS, &|p| p.window == 1 && p.step == 2);
    assert!(matches!(r, Err(quantlab::Error::Cancelled)), "{r:?}");
    assert_kept(&s, &seen, 1);
    let (again, _) = run(&s, WINDOWS, &|_| false);
    assert_eq!(again.expect("after a cancel").ppl, paced.ppl);
}
