//! GPU benchmark at the default model's shapes (SmolLM2-135M: d 576, FFN 1536, 9/3 heads of 64,
//! vocab 49152, 30 layers; Q4_1 linears, Q8_0 tied embedding) for 512-token windows:
//! per-kernel GPU time (timestamp queries) and wall time, whole windows split into host
//! recording and device time, whole-text evaluation tokens/s, and RTN re-quantization time.
//!
//!     cargo run --release --example gpu_bench -- [--iters N] [--only NAME] [--tiles]
//!         [--model GGUF] [--tokens IDS.bin] [--windows N] [--skip-kernels] [--batch N]
//!         [--attention split|tiled32|tiled64|coop|coop1] [--only-attention] [--only-w4a8]
//!         [--only-tender] [--precision f32|f16] [--matmul v5,…,v12]
//!     cargo run --release --example gpu_bench -- --tokenize TEXT --model GGUF --out IDS.bin
//!
//! Without `--model` the model is synthetic: the exact shapes and storage formats of the default
//! model with pseudo-random contents (kernel speed does not depend on the values; the scales are
//! kept finite). `--tokens` is a file of little-endian u32 token ids (made with `--tokenize`, so
//! the device machine needs neither the text nor the tokenizer).
//!
//! `--matmul v5,v6` (default: the engine's default generation): the product kernels of each
//! listed `MatmulGen` in turn — the kernel section's unforced rows, the whole batch and the
//! whole text are timed once per generation in the same process, so one run compares them.
//!
//! `--only-w4a8` (also part of the kernel section): the integer W4A8 product (arXiv 2311.05161;
//! int8 activation codes × 4-bit weight codes summed in i32, src/gpu/intmm.rs) against the
//! float path on the same Int4 weight and the same fake-quantized activations.
//!
//! `--only-tender` (also part of the kernel section): Tender (arXiv 2406.12930, src/gpu/tender.rs)
//! at 8 bits, chunks of 256 rows in 512-token sequences, k = 4, 8, 16: the dynamic decomposition
//! and quantization, then the integer product with shift accumulation (int8 codes × int4/int8
//! per-row weight codes, 64-bit accumulators) against the float path on the same fake-quantized
//! activations, with `dot4I8Packed` and with its emulation.

use quantlab::format::act::{ActGranularity, ActQuantSpec, ActScale};
use quantlab::format::ggml::GgmlType;
use quantlab::format::tender::{self, TenderRound, TenderSpec};
use quantlab::format::{Format, Granularity, IntSpec, QTensor};
use quantlab::gpu::{AttentionVariant, Gpu, IntMatmul, MatmulGen, MatmulVariant};
use quantlab::io::gguf::Gguf;
use quantlab::io::tokenizer::Tokenizer;
use quantlab::model::backend::Backend;
use quantlab::model::config::{ModelConfig, RopeStyle};
use quantlab::model::eval::{self, EvalOptions, Protocol};
use quantlab::model::net::Model;
use quantlab::model::weights::ModelWeights;
use quantlab::quant::rtn::RtnOptions;
use std::collections::BTreeMap;
use std::time::Instant;

const T: usize = 512;

fn wait(g: &Gpu) {
    g.flush();
    g.ctx
        .device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("device poll");
}

/// Wall seconds per call of `f` (after a warm-up call) and the median GPU seconds of one call
/// from timestamp queries (None without `timestamp-query`).
fn time(g: &Gpu, iters: usize, mut f: impl FnMut()) -> (f64, Option<f64>) {
    f();
    wait(g);
    let t0 = Instant::now();
    for _ in 0..iters {
        f();
    }
    wait(g);
    let wall = t0.elapsed().as_secs_f64() / iters as f64;
    let gpu = g.profile_start().ok().and_then(|_| {
        let mut per_call = Vec::new();
        for _ in 0..iters {
            f();
            let d = pollster::block_on(g.profile_take()).ok()?;
            per_call.push(d.iter().map(|(_, s)| s).sum::<f64>());
            g.profile_start().ok()?;
        }
        pollster::block_on(g.profile_take()).ok()?;
        Some(median(&mut per_call))
    });
    (wall, gpu)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn pseudo(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| ((i.wrapping_mul(2654435761) ^ seed) >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
        .collect()
}

/// A tensor of `format` with pseudo-random codes and small finite scales.
fn weight(format: Format, rows: usize, cols: usize, seed: u32) -> QTensor {
    let n = rows * cols;
    let bytes = format.storage(rows, cols).expect("shape").total();
    let mut data: Vec<u8> = (0..bytes as u32)
        .map(|i| ((i ^ seed).wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    match format {
        Format::F32 => data = bytemuck::cast_slice(&pseudo(n, seed)).to_vec(),
        Format::Ggml(GgmlType::Q4_1) => {
            for b in data.chunks_mut(20) {
                b[..4].copy_from_slice(&[0x00, 0x20, 0x00, 0xa0]);
            }
        }
        Format::Ggml(GgmlType::Q8_0) => {
            for b in data.chunks_mut(34) {
                b[..2].copy_from_slice(&[0x00, 0x20]);
            }
        }
        Format::Int(_) => {
            let st = format.storage(rows, cols).expect("shape");
            for s in data[st.codes..st.codes + st.scales].chunks_mut(2) {
                s.copy_from_slice(&[0x00, 0x20]);
            }
        }
        _ => {}
    }
    QTensor::new(format, rows, cols, data).expect("blob")
}

fn smollm_config() -> ModelConfig {
    ModelConfig {
        arch: "llama".into(),
        n_layer: 30,
        dim: 576,
        ffn_dim: 1536,
        n_head: 9,
        n_kv_head: 3,
        head_dim: 64,
        vocab: 49152,
        rope_theta: 100000.0,
        rope_style: RopeStyle::Interleaved,
        norm_eps: 1e-5,
        max_ctx: 8192,
        tied_embeddings: true,
        proj_dim: None,
        post_norm: false,
    }
}

/// The default model's tensors with synthetic contents, in its formats.
fn synthetic_model() -> ModelWeights {
    let c = smollm_config();
    let q41 = Format::Ggml(GgmlType::Q4_1);
    let d = c.dim;
    let mut m = ModelWeights::from_fn(c, &mut |_, rows, cols| vec![0.0; rows * cols])
        .expect("the SmolLM2 config is valid");
    // Weights in the default model's formats, norms near 1, from per-tensor seeds.
    let mut seed = 99u32;
    m.token_embd = weight(Format::Ggml(GgmlType::Q8_0), m.config.vocab, d, 99);
    for (i, l) in m.layers.iter_mut().enumerate() {
        let s = 100 * i as u32;
        let norm: Vec<f32> = pseudo(d, s).iter().map(|v| 1.0 + 0.1 * v).collect();
        for n in &mut l.norms {
            n.weight = norm.clone();
        }
        for (k, lin) in l.linears.iter_mut().enumerate() {
            seed = s + 1 + k as u32;
            lin.w = weight(q41, lin.w.rows, lin.w.cols, seed);
        }
    }
    if let Some(n) = m.output_norm.as_mut() {
        n.weight = vec![1.0; d];
    }
    let _ = seed;
    m
}

fn main() -> quantlab::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let has = |name: &str| args.iter().any(|a| a == name);
    let read = |p: &str| {
        quantlab::io::file::read_file(
            std::path::Path::new(p),
            "input",
            quantlab::io::file::MAX_WEIGHTS,
        )
    };
    let model_path = flag("--model");

    if let (Some(text), Some(mp), Some(out)) = (flag("--tokenize"), &model_path, flag("--out")) {
        let bytes = read(mp)?;
        let gg = Gguf::parse(mp, &bytes)?;
        let tok = Tokenizer::from_gguf(&gg.tokenizer_meta()?)?;
        let text = String::from_utf8(read(&text)?)
            .map_err(|_| quantlab::Error::format(&text, "text", "not UTF-8"))?;
        let ids = tok.encode(&text)?;
        std::fs::write(&out, bytemuck::cast_slice(&ids))
            .map_err(|e| quantlab::Error::io(&out, e))?;
        println!(
            "{} tokens → {out} (bos {:?})",
            ids.len(),
            tok.bos().filter(|_| tok.add_bos())
        );
        return Ok(());
    }

    let iters: usize = flag("--iters").and_then(|s| s.parse().ok()).unwrap_or(10);
    let only = flag("--only").unwrap_or_default();
    let gens = match flag("--matmul") {
        None => vec![MatmulGen::default()],
        Some(list) => list
            .split(',')
            .map(|n| {
                MatmulGen::parse(n).ok_or_else(|| {
                    quantlab::Error::unsupported("gpu_bench", "--matmul", format!("no {n:?}"))
                })
            })
            .collect::<quantlab::Result<Vec<_>>>()?,
    };
    // QUANTLAB_SHADER_DIR=dir: replacement kernels (`shaders::overrides_from_env`), before the
    // device compiles any.
    quantlab::gpu::shaders::overrides_from_env()?;
    let g = pollster::block_on(Gpu::create())?;
    // QUANTLAB_SHADER_CHECKS=full|bounds|none: what wgpu adds to the kernels (ShaderChecks).
    g.set_shader_checks(quantlab::gpu::ShaderChecks::from_env()?);
    // `--precision f16`: the weight products on tensor cores (issue 17), where the device has them.
    if flag("--precision").as_deref() == Some("f16") {
        g.set_precision(quantlab::gpu::Precision::F16)?;
    }
    println!(
        "adapter: {} · timestamp-query: {} · shader checks: {}",
        g.ctx.describe(),
        g.ctx.timestamps,
        quantlab::gpu::ShaderChecks::from_env()?.name()
    );
    let gms = |s: Option<f64>| s.map_or("     n/a".to_string(), |s| format!("{:8.3}", s * 1e3));

    if has("--only-attention") {
        return attention(&g, iters, has("--tiles"), &gms);
    }
    if has("--only-w4a8") {
        return w4a8(&g, iters, &only, &gms);
    }
    if has("--only-tender") {
        return tender(&g, iters, &only, &gms);
    }
    if !has("--skip-kernels") {
        kernels(&g, iters, &only, has("--tiles"), &gens, &gms)?;
    }
    // `--attention NAME`: the attention kernel of the whole-window runs below.
    if let Some(name) = flag("--attention") {
        let v = AttentionVariant::parse(&name).ok_or_else(|| {
            quantlab::Error::unsupported(
                "gpu_bench",
                "--attention",
                format!("no variant {name} (one of {})", AttentionVariant::names()),
            )
        })?;
        g.force_attention_variant(Some(v));
        println!(
            "attention kernel: {} (forced)",
            g.attention_variant(64).name()
        );
    }

    let w = match &model_path {
        Some(p) => {
            let bytes = read(p)?;
            let gg = Gguf::parse(p, &bytes)?;
            ModelWeights::from_source(gg.model_config()?, &gg)?
        }
        None => synthetic_model(),
    };
    let model = Model::load(&g, &w)?;
    let toks: Vec<u32> = (0..T as u32)
        .map(|i| (i * 7919) % w.config.vocab as u32)
        .collect();
    let (from, targets) = (T / 2, &toks[T / 2 + 1..]);
    // `--batch N`: N windows as one batch of independent sequences, as evaluation runs them.
    let nb: usize = flag("--batch")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let toks_b: Vec<u32> = toks.iter().copied().cycle().take(nb * T).collect();
    // Scored as evaluation scores a batch: the head once over several windows' rows.
    let spans: Vec<(usize, &[u32])> = (0..nb).map(|s| (s * T + from, targets)).collect();
    let record = || {
        let x = model.forward_batch(&g, &toks_b, T).expect("forward");
        g.score_windows(&x, model.head(), &spans).expect("score")
    };
    let read_all = |ps: Vec<_>| -> quantlab::Result<()> {
        for p in ps {
            pollster::block_on(g.read_scores(p))?;
        }
        Ok(())
    };
    for &gen in &gens {
        g.set_matmul_gen(gen);
        println!("\nmatmul kernels: {}", gen.name());
        read_all(record())?;
        let n = iters.clamp(3, 20);
        let (mut rec, mut tot) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let t0 = Instant::now();
            let p = record();
            rec.push(t0.elapsed().as_secs_f64());
            read_all(p)?;
            tot.push(t0.elapsed().as_secs_f64());
        }
        let (rec, tot) = (median(&mut rec), median(&mut tot));
        println!(
        "\nwhole batch of {nb} window(s) ({} layers, {T} tokens each, llama.cpp protocol scoring {} rows each): \
         {:.2} ms wall ({:.0} tokens/s), of which host recording {:.2} ms",
        w.config.n_layer,
        targets.len(),
        tot * 1e3,
        (nb * T) as f64 / tot,
        rec * 1e3
    );
        if g.profile_start().is_ok() {
            read_all(record())?;
            let prof = pollster::block_on(g.profile_take())?;
            let total: f64 = prof.iter().map(|(_, s)| s).sum();
            let mut by: BTreeMap<String, (usize, f64)> = BTreeMap::new();
            for (l, s) in &prof {
                let e = by.entry(l.clone()).or_default();
                e.0 += 1;
                e.1 += s;
            }
            println!(
                "  GPU time, sum of {} dispatches: {:.2} ms; by kernel and shape:",
                prof.len(),
                total * 1e3
            );
            let mut rows: Vec<_> = by.into_iter().collect();
            rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
            for (l, (c, s)) in rows {
                println!(
                    "    {l:44} ×{c:<4} {:8.3} ms  ({:6.1} µs each, {:4.1} %)",
                    s * 1e3,
                    s / c as f64 * 1e6,
                    100.0 * s / total
                );
            }
        }

        if let Some(p) = flag("--tokens") {
            let bytes = read(&p)?;
            let ids: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
            let opts = EvalOptions {
                protocol: Protocol::Llamacpp,
                ctx: T,
                max_windows: flag("--windows").and_then(|s| s.parse().ok()),
                kl: false,
            };
            let t0 = Instant::now();
            let clock = || t0.elapsed().as_secs_f64();
            let r = pollster::block_on(eval::evaluate(
                &g,
                &model,
                None,
                &ids,
                None, // SmolLM2 adds no BOS (tokenizer.ggml.add_bos_token false)
                &opts,
                &clock,
                &mut |_| true,
            ))?;
            println!(
            "\nwhole text ({} tokens, {} windows of {T}, {}): {:.2} s, {:.0} tokens/s evaluated \
             (ppl {:.3}{})",
            ids.len(),
            r.windows,
            r.protocol,
            r.seconds,
            r.tokens_evaluated as f64 / r.seconds,
            r.ppl,
            if model_path.is_none() {
                ", synthetic weights"
            } else {
                ""
            }
        );
        }
    }

    requant(&g, &w)?;
    Ok(())
}

/// Causal attention at the model's heads (9 query / 3 KV heads of 64) over 1, 8 and 16
/// sequences of 512 rows: the default kernel, or with `tiles` every variant (and every key
/// split of `Split`), each checked against the split kernel's output on the same inputs.
fn attention(
    g: &Gpu,
    iters: usize,
    tiles: bool,
    gms: &dyn Fn(Option<f64>) -> String,
) -> quantlab::Result<()> {
    // Causal: about half of the T² score products and weighted sums, per head.
    let flops = 2.0 * 2.0 * 9.0 * 64.0 * (T * (T + 1) / 2) as f64;
    let mut runs: Vec<(Option<AttentionVariant>, Option<usize>)> = vec![(None, None)];
    if tiles {
        for ns in [4, 8, 16] {
            runs.push((Some(AttentionVariant::Split), Some(ns)));
        }
        for v in AttentionVariant::ALL {
            if v != AttentionVariant::Split {
                runs.push((Some(v), None));
            }
        }
    }
    println!(
        "\nattention, 9/3 heads × 64 (gpu ms, wall ms, GFLOP/s = causal 4·9·64·T(T+1)/2 per \
         sequence; max |diff| vs split ns4 relative to the largest output)"
    );
    for b in [1usize, 8, 16] {
        let q = g.upload_act(b * T, 576, &pseudo(b * T * 576, 5))?;
        let k = g.upload_act(b * T, 192, &pseudo(b * T * 192, 6))?;
        let v = g.upload_act(b * T, 192, &pseudo(b * T * 192, 8))?;
        g.force_attention_variant(Some(AttentionVariant::Split));
        g.force_attention_splits(Some(4));
        let reference = pollster::block_on(g.read_act(&g.attention(&q, &k, &v, 9, 3, 64, T)))?;
        let scale = reference.iter().fold(1e-30f32, |m, x| m.max(x.abs()));
        for &(var, ns) in &runs {
            g.force_attention_variant(var);
            g.force_attention_splits(ns);
            let used = g.attention_variant(64);
            let name = match (var, ns) {
                (None, _) => format!("auto={}", used.name()),
                (Some(v), Some(n)) => format!("{} ns{n}", v.name()),
                (Some(v), None) => v.name().to_string(),
            };
            if var.is_some_and(|v| v != used) {
                println!("  attention {b:>2}×{T} {name:14} n/a on this device");
                continue;
            }
            let got = pollster::block_on(g.read_act(&g.attention(&q, &k, &v, 9, 3, 64, T)))?;
            let diff = got
                .iter()
                .zip(&reference)
                .fold(0f32, |m, (a, r)| m.max((a - r).abs()))
                / scale;
            let (wall, gpu) = time(g, iters, || drop(g.attention(&q, &k, &v, 9, 3, 64, T)));
            println!(
                "  attention {b:>2}×{T} {name:14} {} {:8.3}  {:8.1} GFLOP/s  diff {diff:.1e}",
                gms(gpu),
                wall * 1e3,
                b as f64 * flops / gpu.unwrap_or(wall) / 1e9
            );
        }
    }
    g.force_attention_variant(None);
    g.force_attention_splits(None);
    Ok(())
}

/// Matmul at every shape of the model, and the other kernels.
fn kernels(
    g: &Gpu,
    iters: usize,
    only: &str,
    tiles: bool,
    gens: &[MatmulGen],
    gms: &dyn Fn(Option<f64>) -> String,
) -> quantlab::Result<()> {
    let int4 = Format::Int(IntSpec {
        bits: 4,
        gran: Granularity::Group(32),
        sym: true,
    });
    let formats = [
        Format::F32,
        Format::Ggml(GgmlType::Q4_1),
        Format::Ggml(GgmlType::Q8_0),
        int4,
    ];
    // (name, weight rows, cols, activation rows): the LM head scores 64-row chunks.
    let shapes = [
        ("attn_q/o 576→576", 576, 576, T),
        ("attn_k/v 576→192", 192, 576, T),
        ("ffn_gate/up 576→1536", 1536, 576, T),
        ("ffn_down 1536→576", 576, 1536, T),
        ("lm_head 576→49152 (64 rows)", 49152, 576, 64),
        ("lm_head 576→49152", 49152, 576, T),
        // A batch of 8 windows, as evaluation runs them (the wide kernels' shapes).
        ("attn_q/o 576→576 (8×512)", 576, 576, 8 * T),
        ("attn_k/v 576→192 (8×512)", 192, 576, 8 * T),
        ("ffn_gate/up 576→1536 (8×512)", 1536, 576, 8 * T),
        ("ffn_down 1536→576 (8×512)", 576, 1536, 8 * T),
    ];
    // Unforced under each generation, then (`--tiles`) every variant forced.
    let mut variants: Vec<(Option<MatmulVariant>, MatmulGen)> =
        gens.iter().map(|&gen| (None, gen)).collect();
    if tiles {
        variants.extend(MatmulVariant::ALL.map(|v| (Some(v), MatmulGen::default())));
    }
    println!(
        "\nmatmul (GPU ms from timestamps, wall ms per call; GFLOP/s = 2·M·out·in / GPU time; \
         GB/s = (packed weight + activations in and out) / GPU time)"
    );
    for (name, out, inp, m) in shapes.into_iter().filter(|s| s.0.contains(only)) {
        let x = g.upload_act(m, inp, &pseudo(m * inp, 7))?;
        for f in formats {
            let q = weight(f, out, inp, 1);
            let mat = g.load_matrix(&q, None)?;
            for (v, gen) in &variants {
                g.force_matmul(*v);
                g.set_matmul_gen(*gen);
                let (wall, gpu) = time(g, iters, || drop(g.linear(&x, &mat)));
                let s = gpu.unwrap_or(wall);
                let flops = 2.0 * (m * out * inp) as f64;
                let bytes = (q.data.len() + 4 * m * (inp + out)) as f64;
                println!(
                    "  {name:28} {:>14} {:>6}  gpu {} ms  wall {:8.3} ms  {:8.1} GFLOP/s  {:7.1} GB/s",
                    f.name(),
                    v.map_or(format!("auto {}", gen.name()), |t| t.name().to_string()),
                    gms(gpu),
                    wall * 1e3,
                    flops / s / 1e9,
                    bytes / s / 1e9
                );
            }
            g.force_matmul(None);
            g.set_matmul_gen(MatmulGen::default());
        }
    }

    w4a8(g, iters, only, gms)?;
    tender(g, iters, only, gms)?;

    println!("\nother kernels, {T} tokens (gpu ms, wall ms)");
    let xd = g.upload_act(T, 576, &pseudo(T * 576, 3))?;
    let nw = g.load_vector(&pseudo(576, 4))?;
    let (wall, gpu) = time(g, iters, || drop(g.rmsnorm(&xd, &nw, 1e-5)));
    println!(
        "  rmsnorm 512×576            {} {:8.3}",
        gms(gpu),
        wall * 1e3
    );
    let mut q = g.upload_act(T, 576, &pseudo(T * 576, 5))?;
    let (wall, gpu) = time(g, iters, || {
        g.rope(&mut q, 9, 64, 0, 100000.0, RopeStyle::Interleaved, T)
    });
    println!(
        "  rope 512×9×64              {} {:8.3}",
        gms(gpu),
        wall * 1e3
    );
    attention(g, iters, tiles, gms)?;
    let mut a = g.upload_act(T, 1536, &pseudo(T * 1536, 9))?;
    let b = g.upload_act(T, 1536, &pseudo(T * 1536, 10))?;
    let (wall, gpu) = time(g, iters, || g.silu_mul(&mut a, &b));
    println!(
        "  silu_mul 512×1536          {} {:8.3}",
        gms(gpu),
        wall * 1e3
    );
    Ok(())
}

/// The integer W4A8 product against the float product on the same Int4 weight (group 32 and
/// per row) and the same activations, fake-quantized to int8 per token: the float path reads
/// the f32 values (`IntMatmul::Off`), the integer path their codes, with `dot4I8Packed` and
/// with its emulation. Shapes of the default model's linears at one window (512 rows) and a
/// batch of 16 windows. The activation quantization itself is the same for both (the forward
/// pass runs it either way) and is timed on its own.
fn w4a8(
    g: &Gpu,
    iters: usize,
    only: &str,
    gms: &dyn Fn(Option<f64>) -> String,
) -> quantlab::Result<()> {
    let spec = ActQuantSpec {
        bits: 8,
        gran: ActGranularity::PerToken,
        scale: ActScale::Dynamic,
    };
    let formats = [Granularity::Group(32), Granularity::PerRow].map(|gran| {
        Format::Int(IntSpec {
            bits: 4,
            gran,
            sym: true,
        })
    });
    let shapes = [
        ("576→576", 576, 576),
        ("576→1536", 1536, 576),
        ("1536→576", 576, 1536),
    ];
    println!(
        "\nW4A8 (int8 activations per token × int4 weights; gpu ms from timestamps, wall ms; \
         ratio = f32-path time / integer time, > 1: integers faster; dot4I8Packed offered: {})",
        g.ctx.dot4
    );
    for m in [T, 16 * T] {
        for (name, out, inp) in shapes.into_iter().filter(|s| s.0.contains(only)) {
            let mut x = g.upload_act(m, inp, &pseudo(m * inp, 11))?;
            g.fake_quant_act(&mut x, &spec)?;
            let mut fresh = g.upload_act(m, inp, &pseudo(m * inp, 11))?;
            let (qwall, qgpu) = time(g, iters, || {
                let _ = g.fake_quant_act(&mut fresh, &spec);
            });
            println!(
                "  {m:5}×{name:9} act quant int8  gpu {} ms  wall {:8.3} ms",
                gms(qgpu),
                qwall * 1e3
            );
            for f in formats {
                let q = weight(f, out, inp, 1);
                let mat = g.load_matrix(&q, None)?;
                let mut base = None;
                for v in IntMatmul::ALL {
                    g.force_int_matmul(Some(v));
                    let (wall, gpu) = time(g, iters, || drop(g.linear(&x, &mat)));
                    let s = gpu.unwrap_or(wall);
                    let ratio = match base {
                        None => {
                            base = Some(s);
                            String::new()
                        }
                        Some(b) => format!("  ratio {:5.2}", b / s),
                    };
                    println!(
                        "  {m:5}×{name:9} {:>16} {:>12}  gpu {} ms  wall {:8.3} ms{ratio}",
                        f.name(),
                        v.name(),
                        gms(gpu),
                        wall * 1e3
                    );
                }
                g.force_int_matmul(None);
            }
        }
    }
    Ok(())
}

fn tender(
    g: &Gpu,
    iters: usize,
    only: &str,
    gms: &dyn Fn(Option<f64>) -> String,
) -> quantlab::Result<()> {
    let formats = [4u8, 8].map(|bits| {
        Format::Int(IntSpec {
            bits,
            gran: Granularity::PerRow,
            sym: true,
        })
    });
    let shapes = [
        ("576→576", 576, 576),
        ("576→1536", 1536, 576),
        ("1536→576", 576, 1536),
    ];
    println!(
        "\nTender A8 (chunks of {} rows in sequences of {T}; gpu ms from timestamps, wall ms; \
         ratio = f32-path time / integer time, > 1: integers faster; dot4I8Packed offered: {})",
        tender::DEFAULT_CHUNK,
        g.ctx.dot4
    );
    for m in [T, 16 * T] {
        for (name, out, inp) in shapes.into_iter().filter(|s| s.0.contains(only)) {
            // A few outlier channels, as activations have, so the groups spread.
            let mut data = pseudo(m * inp, 13);
            for (i, v) in data.iter_mut().enumerate() {
                match i % inp {
                    3 => *v += 40.0,
                    7 | 100 => *v *= 30.0,
                    _ => {}
                }
            }
            for k in [4u8, 8, 16] {
                let spec = TenderSpec {
                    bits: 8,
                    groups: k,
                    chunk: tender::DEFAULT_CHUNK,
                    round: TenderRound::Up,
                };
                let mut x = g.upload_act(m, inp, &data)?;
                g.tender_act(&mut x, &spec, None, T)?;
                let mut fresh = g.upload_act(m, inp, &data)?;
                let (qwall, qgpu) = time(g, iters, || {
                    let _ = g.tender_act(&mut fresh, &spec, None, T);
                });
                println!(
                    "  {m:5}×{name:9} k {k:2} act quant  gpu {} ms  wall {:8.3} ms",
                    gms(qgpu),
                    qwall * 1e3
                );
                for f in formats {
                    let mat = g.load_matrix(&weight(f, out, inp, 1), None)?;
                    let mut base = None;
                    for v in IntMatmul::ALL {
                        g.force_int_matmul(Some(v));
                        let (wall, gpu) = time(g, iters, || drop(g.linear(&x, &mat)));
                        let s = gpu.unwrap_or(wall);
                        let ratio = match base {
                            None => {
                                base = Some(s);
                                String::new()
                            }
                            Some(b) => format!("  ratio {:5.2}", b / s),
                        };
                        println!(
                            "  {m:5}×{name:9} k {k:2} {:>16} {:>12}  gpu {} ms  wall {:8.3} ms{ratio}",
                            f.name(),
                            v.name(),
                            gms(gpu),
                            wall * 1e3
                        );
                    }
                    g.force_int_matmul(None);
                }
            }
        }
    }
    Ok(())
}

/// RTN re-quantization of every linear layer of the model, from the packed weights already on
/// the GPU, recorded as one batch and timed to the end of the readback of its status.
fn requant(g: &Gpu, w: &ModelWeights) -> quantlab::Result<()> {
    let mats = w
        .linears()
        .map(|l| g.load_matrix(&l.w, None))
        .collect::<quantlab::Result<Vec<_>>>()?;
    let refs: Vec<_> = mats.iter().collect();
    // On this device, the GPU bytes against the CPU quantizer on one f32 matrix.
    let vals = pseudo(1536 * 576, 5);
    let f32m = g.load_matrix(&QTensor::from_f32(1536, 576, &vals), None)?;
    for (bits, gran, sym) in [
        (4, Granularity::Group(32), true),
        (3, Granularity::PerRow, false),
    ] {
        let spec = IntSpec { bits, gran, sym };
        let cpu =
            quantlab::quant::rtn::quantize(&vals, 1536, 576, spec, &RtnOptions::default(), "t")?;
        let out = pollster::block_on(g.rtn_quantize_all(&[&f32m], spec, &RtnOptions::default()))?;
        let gpu = pollster::block_on(g.read_mat(&out[0], &Format::Int(spec)))?;
        let diff = gpu.iter().zip(&cpu.data).filter(|(a, b)| a != b).count();
        println!(
            "RTN byte check {}: {} bytes, {diff} differ from the CPU quantizer",
            Format::Int(spec).name(),
            gpu.len()
        );
    }
    let params: usize = w.linears().map(|l| l.w.numel()).sum();
    println!(
        "\nRTN re-quantization of {} linears ({params} weights)",
        mats.len()
    );
    for (bits, gran, sym) in [
        (4, Granularity::Group(32), true),
        (4, Granularity::Group(64), false),
        (3, Granularity::PerRow, false),
        (8, Granularity::Group(64), true),
    ] {
        let spec = IntSpec { bits, gran, sym };
        let opts = RtnOptions::default();
        drop(pollster::block_on(g.rtn_quantize_all(&refs, spec, &opts))?);
        let mut ts = Vec::new();
        let mut gpu = None;
        for i in 0..5 {
            if i == 4 {
                gpu = g.profile_start().ok();
            }
            let t0 = Instant::now();
            let out = pollster::block_on(g.rtn_quantize_all(&refs, spec, &opts))?;
            ts.push(t0.elapsed().as_secs_f64());
            drop(out);
            if gpu.is_some() {
                let p = pollster::block_on(g.profile_take())?;
                gpu = Some(());
                println!(
                    "  {:>16}: GPU time {:.2} ms over {} dispatches",
                    Format::Int(spec).name(),
                    p.iter().map(|(_, s)| s).sum::<f64>() * 1e3,
                    p.len()
                );
            }
        }
        println!(
            "  {:>16}: {:.2} ms wall (median of 4, record → status read back)",
            Format::Int(spec).name(),
            median(&mut ts[..4]) * 1e3
        );
    }
    Ok(())
}
