#!/usr/bin/env python3
"""Whole-text evaluation speed of QuantLab beside PyTorch/transformers, in one run (issue 17).

QuantLab: `quantlab bench --backend gpu` at `--precision f32` and `f16` (tensor cores; where the
device has none, packed f16 (shaders/matmul_f16.wgsl) if it has shader f16, else the refusal is
printed instead). It evaluates every 512-token window of the text
under both protocols and prints tokens/s and the perplexity.

transformers: a LlamaForCausalLM with the model's own shapes (read from `quantlab info --json`)
and random weights, in f32 and bf16, forward passes over the same number of 512-token windows in
batches of 1, 8 and 32 (speed does not depend on the values; QuantLab's llama.cpp protocol
scores the second half of each window, so its LM head does half of transformers' work there).

Run on the GPU machine (torch with CUDA, transformers):
  python3 scripts/bench/peer.py --quantlab target/release/quantlab \
      --model models/SmolLM2-135M-Instruct.Q4_1.gguf --text tests/data/wikitext-2-raw-test.txt
Prints one table and the ratios; `--json FILE` also writes the numbers.
"""
import argparse
import json
import re
import subprocess
import sys
import time

EVAL_LINE = re.compile(
    r"eval (\w+): (\d+) windows × (\d+) = (\d+) tokens in ([\d.]+) s = ([\d.]+) tokens/s \(PPL ([\d.]+)\)"
)


def quantlab_bench(binary, model, text, precision):
    cmd = [binary, "--precision", precision, "bench", "--model", model, "--text", text,
           "--backend", "gpu"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    out = {"command": " ".join(cmd), "precision": precision}
    if p.returncode != 0:
        out["error"] = (p.stderr or p.stdout).strip().splitlines()[-1:]
        return out
    for line in p.stdout.splitlines():
        m = EVAL_LINE.search(line)
        if m:
            proto, windows, ctx, tokens, secs, tps, ppl = m.groups()
            out[proto] = {"windows": int(windows), "ctx": int(ctx), "tokens": int(tokens),
                          "seconds": float(secs), "tokens_per_s": float(tps), "ppl": float(ppl)}
        elif line.startswith("backend "):
            out["backend"] = line
    return out


def model_shapes(binary, model):
    p = subprocess.run([binary, "info", "--model", model, "--json"], capture_output=True,
                       text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def transformers_runs(info, windows, ctx, batches, dtypes):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=info["vocab"], hidden_size=info["dim"], intermediate_size=info["ffn_dim"],
        num_hidden_layers=info["n_layer"], num_attention_heads=info["n_head"],
        num_key_value_heads=info["n_kv_head"], max_position_embeddings=max(ctx, info["max_ctx"]),
        tie_word_embeddings=info["tied_embeddings"],
    )
    rows = []
    for dtype_name in dtypes:
        dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg).to("cuda", dtype=dtype).eval()
        for b in batches:
            ids = torch.randint(0, info["vocab"], (b, ctx), device="cuda")
            with torch.inference_mode():
                for _ in range(2):  # warm-up: kernels chosen, memory pooled
                    model(ids)
                torch.cuda.synchronize()
                t = time.perf_counter()
                done = 0
                while done < windows:
                    n = min(b, windows - done)
                    model(ids[:n])
                    done += n
                torch.cuda.synchronize()
                secs = time.perf_counter() - t
            rows.append({"engine": f"transformers {dtype_name} batch {b}", "seconds": secs,
                         "tokens_per_s": windows * ctx / secs})
        del model
        torch.cuda.empty_cache()
    return rows, {"torch": torch.__version__, "device": torch.cuda.get_device_name(0)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quantlab", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--json")
    a = ap.parse_args()

    ql = [quantlab_bench(a.quantlab, a.model, a.text, p) for p in ("f32", "f16")]
    ref = next((r["Llamacpp"] for r in ql if "Llamacpp" in r), None)
    if ref is None:
        sys.exit(f"QuantLab's benchmark failed: {ql}")
    windows, ctx = ref["windows"], ref["ctx"]
    info = model_shapes(a.quantlab, a.model)
    batches = [int(b) for b in a.batches.split(",")]
    peers, versions = transformers_runs(info, windows, ctx, batches, a.dtypes.split(","))

    rows = []
    for r in ql:
        for proto in ("Llamacpp", "Gptq"):
            if proto in r:
                x = r[proto]
                rows.append({"engine": f"QuantLab {r['precision']} ({proto})",
                             "seconds": x["seconds"], "tokens_per_s": x["tokens_per_s"],
                             "ppl": x["ppl"]})
        if "error" in r:
            print(f"QuantLab --precision {r['precision']}: {' '.join(r['error'])}")
    rows += peers
    print(f"\n{windows} windows × {ctx} tokens · {versions['device']} · torch {versions['torch']}")
    print(f"{'engine':40} {'seconds':>9} {'tokens/s':>11} {'PPL':>9}")
    for r in rows:
        ppl = f"{r['ppl']:.4f}" if "ppl" in r else ""
        print(f"{r['engine']:40} {r['seconds']:9.3f} {r['tokens_per_s']:11.0f} {ppl:>9}")
    print("\nratios (QuantLab tokens/s ÷ peer tokens/s, llama.cpp protocol):")
    for r in ql:
        if "Llamacpp" not in r:
            continue
        mine = r["Llamacpp"]["tokens_per_s"]
        for p in peers:
            print(f"  QuantLab {r['precision']} / {p['engine']}: {mine / p['tokens_per_s']:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"quantlab": ql, "rows": rows, "versions": versions}, f, indent=1)


if __name__ == "__main__":
    main()
