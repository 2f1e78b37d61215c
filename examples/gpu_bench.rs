//! Per-kernel throughput of the GPU backend at the default model's shapes (SmolLM2-135M: d 576,
//! FFN 1536, 9/3 heads of 64, vocab 49152) for a 512-token window, and, when the model file is
//! given, whole-window evaluation speed.
//!
//!     cargo run --example gpu_bench -- [--model models/SmolLM2-135M-Instruct.Q4_1.gguf]
//!         [--iters N] [--only SUBSTRING-OF-SHAPE-NAME]
//!
//! Times are wall-clock from submit to the device going idle (`Device::poll` wait), averaged
//! over `iters` repetitions recorded into the same batches, after one warm-up run.

use quantlab::gpu::Gpu;
use quantlab::io::gguf::Gguf;
use quantlab::model::backend::Backend;
use quantlab::model::config::RopeStyle;
use quantlab::model::llama::Llama;
use quantlab::model::weights::ModelWeights;
use quantlab::quant::format::{Format, Granularity, IntSpec, QTensor};
use quantlab::quant::ggml::GgmlType;
use std::time::Instant;

fn wait(g: &Gpu) {
    g.flush();
    g.ctx
        .device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("device poll");
}

/// Seconds per call of `f`, after a warm-up call.
fn time(g: &Gpu, iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    wait(g);
    let t0 = Instant::now();
    for _ in 0..iters {
        f();
    }
    wait(g);
    t0.elapsed().as_secs_f64() / iters as f64
}

fn pseudo(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| ((i.wrapping_mul(2654435761) ^ seed) >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
        .collect()
}

fn weight(format: Format, rows: usize, cols: usize) -> QTensor {
    let n = rows * cols;
    let bytes = format.storage(rows, cols).expect("shape").total();
    let mut data: Vec<u8> = (0..bytes as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    // Keep every f16 field finite: rewrite scales with a small constant where the layout has
    // them (decoding speed does not depend on the values).
    match format {
        Format::F32 => data = bytemuck::cast_slice(&pseudo(n, 1)).to_vec(),
        Format::Ggml(GgmlType::Q4_1) => {
            for b in data.chunks_mut(20) {
                b[..4].copy_from_slice(&[0x00, 0x20, 0x00, 0x20]);
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

fn main() -> quantlab::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let model_path = flag("--model");
    let iters: usize = flag("--iters").and_then(|s| s.parse().ok()).unwrap_or(10);
    let only = flag("--only").unwrap_or_default();
    let g = pollster::block_on(Gpu::create())?;
    println!("adapter: {}", g.ctx.describe());
    let t = 512;
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
    let shapes = [
        ("attn_q/o 576→576", 576, 576),
        ("attn_k/v 576→192", 192, 576),
        ("ffn_gate/up 576→1536", 1536, 576),
        ("ffn_down 1536→576", 576, 1536),
        ("lm_head 576→49152", 49152, 576),
    ];
    println!(
        "\nmatmul, {t} tokens (GFLOP/s = 2·T·out·in / time; GB/s = packed weight bytes / time)"
    );
    for (name, out, inp) in shapes.into_iter().filter(|s| s.0.contains(only.as_str())) {
        let x = g.upload_act(t, inp, &pseudo(t * inp, 7))?;
        for f in formats {
            let q = weight(f, out, inp);
            let m = g.load_matrix(&q, None)?;
            let s = time(&g, iters, || drop(g.linear(&x, &m)));
            let flops = 2.0 * (t * out * inp) as f64;
            println!(
                "  {name:22} {:>14}  {:8.3} ms  {:8.1} GFLOP/s  {:7.1} GB/s",
                f.name(),
                s * 1e3,
                flops / s / 1e9,
                q.data.len() as f64 / s / 1e9
            );
        }
    }

    println!("\nother kernels, {t} tokens");
    let xd = g.upload_act(t, 576, &pseudo(t * 576, 3))?;
    let w = g.load_vector(&pseudo(576, 4))?;
    let s = time(&g, iters, || drop(g.rmsnorm(&xd, &w, 1e-5)));
    println!(
        "  rmsnorm 512×576          {:8.3} ms  {:7.1} GB/s",
        s * 1e3,
        2.0 * (t * 576 * 4) as f64 / s / 1e9
    );
    let mut q = g.upload_act(t, 576, &pseudo(t * 576, 5))?;
    let s = time(&g, iters, || {
        g.rope(&mut q, 9, 64, 0, 100000.0, RopeStyle::Interleaved)
    });
    println!("  rope 512×9×64            {:8.3} ms", s * 1e3);
    let k = g.upload_act(t, 192, &pseudo(t * 192, 6))?;
    let v = g.upload_act(t, 192, &pseudo(t * 192, 8))?;
    let s = time(&g, iters, || drop(g.attention(&q, &k, &v, 9, 3, 64)));
    // Causal: about half of the T² score products and weighted sums, per head.
    let flops = 2.0 * 2.0 * 9.0 * 64.0 * (t * (t + 1) / 2) as f64;
    println!(
        "  attention 512, 9/3×64    {:8.3} ms  {:8.1} GFLOP/s",
        s * 1e3,
        flops / s / 1e9
    );
    let mut a = g.upload_act(t, 1536, &pseudo(t * 1536, 9))?;
    let b = g.upload_act(t, 1536, &pseudo(t * 1536, 10))?;
    let s = time(&g, iters, || g.silu_mul(&mut a, &b));
    println!(
        "  silu_mul 512×1536        {:8.3} ms  {:7.1} GB/s",
        s * 1e3,
        3.0 * (t * 1536 * 4) as f64 / s / 1e9
    );

    if let Some(path) = &model_path {
        let bytes = std::fs::read(path).map_err(|e| quantlab::Error::io(path, e))?;
        let gg = Gguf::parse(path, &bytes)?;
        let w = ModelWeights::from_source(gg.model_config()?, &gg)?;
        let model = Llama::load(&g, &w)?;
        let toks: Vec<u32> = (0..t as u32)
            .map(|i| (i * 7919) % w.config.vocab as u32)
            .collect();
        let targets = &toks[1..];
        let run = || {
            let x = model.forward(&g, &toks).expect("forward");
            let (p, _) = g
                .score(&x, model.head(), 0, targets, None, false)
                .expect("score");
            pollster::block_on(g.read_scores(p)).expect("scores")
        };
        run();
        let n = iters.clamp(1, 5);
        let t0 = Instant::now();
        for _ in 0..n {
            run();
        }
        let s = t0.elapsed().as_secs_f64() / n as f64;
        println!(
            "\nwhole window (forward + score, {t} tokens, {}): {:.1} ms, {:.0} tokens/s",
            w.token_embd.format.name(),
            s * 1e3,
            t as f64 / s
        );
    }
    Ok(())
}
