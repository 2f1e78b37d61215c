//! The real default model on the GPU backend against the CPU reference backend: the same
//! forward pass (`model::arch`), the same text, both evaluation protocols (model::eval).
//! Natively on whatever adapter wgpu finds (Mesa lavapipe without a GPU), so windows are short.

use quantlab::gpu::Gpu;
use quantlab::io::gguf::Gguf;
use quantlab::model::backend::Backend;
use quantlab::model::cpu::Cpu;
use quantlab::model::eval::{self, EvalOptions, Protocol};
use quantlab::model::net::Model;
use quantlab::model::weights::ModelWeights;

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
);
const LABEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// GPU vs CPU perplexity, relative (issue 3: "agree within 0.1 %").
const PPL_REL_TOL: f64 = 1e-3;
/// Per-token NLL, nats: f32 kernels with other summation orders over 30 layers (measured
/// 2.2e-5 on lavapipe).
const NLL_ABS_TOL: f64 = 1e-3;
/// KL of a model against itself on another backend, nats per token.
const SELF_KL_TOL: f64 = 1e-3;

const TEXT: &str =
    "The history of the city began in the early years of the river trade . Merchants \
built houses of stone along the water , and the market grew every year . In the winter the river \
froze and the people of the city walked across the ice to the other side . Later a bridge was \
built , and the city became the capital of the region . Today it is known for its old churches , \
its university and the long walk by the river where families meet on summer evenings . The \
museum tells the story of the first settlers and of the great fire that destroyed much of the \
old town two hundred years ago .";

/// Token ids for `TEXT` from the model's own vocabulary: each word is looked up as the byte-level
/// BPE token `Ġword` (a space followed by the word). This is not the tokenizer, only a way to get
/// natural text without one; words that are not single tokens are skipped.
fn tokens(g: &Gguf, n: usize) -> Vec<u32> {
    let meta = g.tokenizer_meta().expect("tokenizer fields");
    let index: std::collections::HashMap<&str, u32> = meta
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let ids: Vec<u32> = TEXT
        .split_whitespace()
        .filter_map(|w| index.get(format!("Ġ{w}").as_str()).copied())
        .collect();
    assert!(
        ids.len() > 90,
        "only {} words found in the vocabulary",
        ids.len()
    );
    ids.iter().copied().cycle().take(n).collect()
}

fn load() -> (Vec<u8>, ModelWeights) {
    let bytes = std::fs::read(MODEL).unwrap_or_else(|e| {
        panic!("{MODEL}: {e}; run scripts/fetch-model.sh to fetch the default model")
    });
    let g = Gguf::parse(LABEL, &bytes).expect("parse");
    let w = ModelWeights::from_source(g.model_config().expect("config"), &g).expect("weights");
    (bytes, w)
}

#[test]
fn gpu_matches_cpu_on_the_default_model() {
    let (bytes, w) = load();
    let g = Gguf::parse(LABEL, &bytes).unwrap();
    let toks = tokens(&g, 256);
    let gpu = pollster::block_on(Gpu::create()).expect("a wgpu adapter");
    eprintln!("{}", gpu.name());
    let cm = Model::load(&Cpu, &w).expect("cpu load");
    let gm = Model::load(&gpu, &w).expect("gpu load");

    // GPTQ protocol, one window of 64 (every token after the first scored), per token: one
    // tile of rows per product (lavapipe, CI's GPU, takes about 20 s per forward pass of this
    // model up to 64 tokens, 40 s up to 128).
    let window = &toks[..64];
    let targets = &window[1..];
    let cx = cm.forward(&Cpu, window).unwrap();
    let (cs, _) = Cpu.score(&cx, cm.head(), 0, targets, None, false).unwrap();
    let t0 = std::time::Instant::now();
    let gx = gm.forward(&gpu, window).unwrap();
    let (p, _) = gpu.score(&gx, gm.head(), 0, targets, None, false).unwrap();
    let gs = pollster::block_on(gpu.read_scores(p)).unwrap();
    eprintln!(
        "gpu forward+score of 64 tokens: {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(gs.len(), cs.len());
    let worst = gs
        .iter()
        .zip(&cs)
        .map(|(a, b)| (a.nll - b.nll).abs())
        .fold(0f64, f64::max);
    let agree = gs
        .iter()
        .zip(&cs)
        .filter(|(a, b)| a.argmax == b.argmax)
        .count();
    eprintln!(
        "max |Δnll| {worst:e}, argmax agreement {agree}/{}",
        gs.len()
    );
    assert!(worst < NLL_ABS_TOL, "per-token NLL differs by {worst}");
    assert!(
        agree * 100 >= gs.len() * 98,
        "argmax agrees on {agree}/{}",
        gs.len()
    );
    let ppl = |s: &[quantlab::model::backend::TokenScore]| {
        (s.iter().map(|t| t.nll).sum::<f64>() / s.len() as f64).exp()
    };
    let (c_ppl, g_ppl) = (ppl(&cs), ppl(&gs));
    let rel = (g_ppl - c_ppl).abs() / c_ppl;
    eprintln!("gptq: cpu ppl {c_ppl:.4}, gpu ppl {g_ppl:.4}, rel {rel:e}");
    assert!(rel < PPL_REL_TOL, "gptq: gpu {g_ppl} vs cpu {c_ppl}");

    // llama.cpp protocol through the async evaluation loop (a later window of the text; 64
    // tokens, one tile of rows per product, as above).
    let opts = EvalOptions {
        protocol: Protocol::Llamacpp,
        ctx: 64,
        max_windows: Some(1),
        kl: false,
    };
    let later = &toks[128..];
    let clock = || 0.0;
    let c = eval::ready(eval::evaluate(
        &Cpu,
        &cm,
        None,
        later,
        None,
        &opts,
        &clock,
        &mut |_| true,
    ))
    .unwrap();
    let r = pollster::block_on(eval::evaluate(
        &gpu,
        &gm,
        None,
        later,
        None,
        &opts,
        &clock,
        &mut |_| true,
    ))
    .unwrap();
    let rel = (r.ppl - c.ppl).abs() / c.ppl;
    eprintln!(
        "llamacpp: cpu ppl {:.4}, gpu ppl {:.4}, rel {rel:e}",
        c.ppl, r.ppl
    );
    assert_eq!(r.tokens_scored, c.tokens_scored);
    assert!(
        rel < PPL_REL_TOL,
        "llamacpp: gpu {} vs cpu {}",
        r.ppl,
        c.ppl
    );

    // KL/top-1 with the reference log-probs kept on the GPU: the model against itself (a short
    // window: this runs the model twice).
    let opts = EvalOptions {
        protocol: Protocol::Llamacpp,
        ctx: 64,
        max_windows: Some(1),
        kl: true,
    };
    let r = pollster::block_on(eval::evaluate(
        &gpu,
        &gm,
        Some(&gm),
        &toks,
        None,
        &opts,
        &|| 0.0,
        &mut |_| true,
    ))
    .unwrap();
    let kl = r.kl.expect("kl");
    assert!(kl.abs() < SELF_KL_TOL, "self KL {kl}");
    assert_eq!(r.top1, Some(1.0));
}
