#!/usr/bin/env python3
"""Outside reference for QuantLab's KL statistics (src/model/klstats.rs, docs/kl-statistics.md):
llama.cpp's `llama-perplexity --kl-divergence` on a QuantLab GGUF export against the model as
loaded, over the first CHUNKS windows of 512 tokens (the llama.cpp protocol QuantLab's
`eval --windows CHUNKS` uses). For each config it

  1. exports the model quantized by the config's `quantlab export` flags to GGUF (every block
     linear in the ggml type that holds its grid exactly, so llama.cpp runs the weights QuantLab
     evaluates);
  2. runs `llama-perplexity -m MODEL -f TEXT -c 512 --chunks CHUNKS --kl-divergence-base BASE`
     once (the base model's log-probs, stored by llama.cpp as 16-bit codes);
  3. runs `llama-perplexity -m EXPORT --kl-divergence-base BASE --kl-divergence -c 512`;

and writes the statistics llama.cpp prints (mean ± error, median, 90/95/99/99.9 %, max, same top
p ± error, PPL of both) with the commands, versions and input hashes as JSON.

Usage (llama-perplexity built from the llama-cpp-python 0.3.36 sdist, docs/kl-statistics.md):
    python3 scripts/reference/llamacpp_kl.py --llama-perplexity /tmp/lcp-build/bin/llama-perplexity \
        --quantlab target/release/quantlab --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
        --text tests/data/wikitext-2-raw-test.txt --chunks 4 --work /tmp/kl-work \
        --config 'rtn4-g32=--bits 4 --group 32' --out tests/fixtures/llamacpp_kl.json
"""
import argparse
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run(cmd, log):
    print("+", shlex.join(cmd), file=sys.stderr)
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({r.returncode}); see {log}")
    with open(log) as f:
        return f.read()


NUM = r"(-?[0-9.]+)"
PATTERNS = {
    "mean": rf"Mean    KLD:\s+{NUM}\s+±",
    "mean_err": rf"Mean    KLD:\s+-?[0-9.]+\s+±\s+{NUM}",
    "max": rf"Maximum KLD:\s+{NUM}",
    "p99_9": rf"99\.9%   KLD:\s+{NUM}",
    "p99": rf"99\.0%   KLD:\s+{NUM}",
    "p95": rf"95\.0%   KLD:\s+{NUM}",
    "p90": rf"90\.0%   KLD:\s+{NUM}",
    "median": rf"Median  KLD:\s+{NUM}",
    "top1_pct": rf"Same top p:\s+{NUM}\s+±",
    "top1_err_pct": rf"Same top p:\s+-?[0-9.]+\s+±\s+{NUM}",
    "ppl": rf"Mean PPL\(Q\)\s+:\s+{NUM}",
    "ppl_base": rf"Mean PPL\(base\)\s+:\s+{NUM}",
}


def parse(text, log):
    out = {}
    for k, p in PATTERNS.items():
        m = re.search(p, text)
        if not m:
            sys.exit(f"{log}: no '{k}' in llama-perplexity's output")
        out[k] = float(m.group(1))
    # Percent as printed, and as a fraction (QuantLab's unit).
    out["top1"] = out["top1_pct"] / 100
    out["top1_err"] = out["top1_err_pct"] / 100
    out["n"] = int(re.search(r"kl_divergence: computing over (\d+) chunks", text).group(1)) * 255
    return out


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--llama-perplexity", required=True)
    a.add_argument("--quantlab", required=True)
    a.add_argument("--model", required=True)
    a.add_argument("--text", required=True)
    a.add_argument("--chunks", type=int, default=4)
    a.add_argument("--threads", type=int, default=2)
    a.add_argument("--work", required=True)
    a.add_argument("--config", action="append", required=True, help="NAME=quantlab export flags")
    a.add_argument("--out", required=True)
    args = a.parse_args()
    os.makedirs(args.work, exist_ok=True)
    lp = args.llama_perplexity
    common = ["-c", "512", "-t", str(args.threads)]
    base = os.path.join(args.work, "base.kld")
    base_cmd = [lp, "-m", args.model, "-f", args.text, "--chunks", str(args.chunks),
                "--kl-divergence-base", base] + common
    base_out = run(base_cmd, os.path.join(args.work, "base.log"))
    system = next((l.split("system_info: ", 1)[1] for l in base_out.splitlines() if "system_info: " in l), "")
    configs = []
    for c in args.config:
        name, flags = c.split("=", 1)
        gguf = os.path.join(args.work, f"{name}.gguf")
        export_cmd = [args.quantlab, "export", "--model", args.model, *shlex.split(flags), "--to", "gguf",
                      "--out", gguf]
        run(export_cmd, os.path.join(args.work, f"{name}.export.log"))
        kl_cmd = [lp, "-m", gguf, "--kl-divergence-base", base, "--kl-divergence"] + common
        log = os.path.join(args.work, f"{name}.kl.log")
        stats = parse(run(kl_cmd, log), log)
        configs.append({"name": name, "quantlab_flags": flags, "export": shlex.join(export_cmd),
                        "llama_perplexity": shlex.join(kl_cmd), "llamacpp": stats})
    out = {
        "what": "llama.cpp's KL statistics (llama-perplexity --kl-divergence) of QuantLab GGUF exports "
                "against the model as loaded; made by scripts/reference/llamacpp_kl.py",
        "llama_cpp": "llama-cpp-python 0.3.36 sdist (PyPI), vendor/llama.cpp, CMake Release, llama-perplexity target",
        "llama_cpp_system_info": system.strip(),
        "model": os.path.basename(args.model),
        "model_sha256": sha256(args.model),
        "text": os.path.basename(args.text),
        "text_sha256": sha256(args.text),
        "ctx": 512,
        "chunks": args.chunks,
        "base_command": shlex.join(base_cmd),
        "configs": configs,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
