#!/usr/bin/env python3
"""Outside reference for QuantLab's A8 (per-token dynamic, int8) perplexity: transformers loads
the default GGUF (dequantized to f32 by the `gguf` package), every block linear's input is
fake-quantized with the same rule as `src/format/act.rs` (symmetric, absmax/127 per row, round half
to even, clamp ±127, zero scale → 0) through forward pre-hooks, and perplexity follows llama.cpp's
protocol on QuantLab's own token ids (so both sides score the same tokens): windows of CTX tokens,
no overlap, the second half of each window scored.

Usage (the GPU machine has torch and transformers; `gguf` travels as a wheel):
    python3 a8_transformers.py MODEL_DIR GGUF_NAME IDS.bin [WINDOWS] [CTX]
IDS.bin: little-endian u32 ids, `gpu_bench --tokenize TEXT --model GGUF --out IDS.bin`.
Prints one line per configuration: as loaded, A8 at every site, and A8 at one site at a time.
"""
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

model_dir, gguf_name, ids_path = sys.argv[1:4]
windows = int(sys.argv[4]) if len(sys.argv) > 4 else 40
ctx = int(sys.argv[5]) if len(sys.argv) > 5 else 512
dev = "cuda" if torch.cuda.is_available() else "cpu"

model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=gguf_name, dtype=torch.float32)
model.to(dev).eval()
ids = torch.from_numpy(np.fromfile(ids_path, dtype="<u4").astype(np.int64))

# QuantLab's sites of a Llama block: what each group of linears reads.
SITES = {
    "attn_in": ("q_proj", "k_proj", "v_proj"),
    "attn_out": ("o_proj",),
    "ffn_in": ("gate_proj", "up_proj"),
    "down_in": ("down_proj",),
}


def fake_quant_per_token(x, bits=8):
    qmax = 2 ** (bits - 1) - 1
    s = x.abs().amax(dim=-1, keepdim=True) / qmax
    q = torch.where(s > 0, torch.round(x / torch.where(s > 0, s, 1.0)), 0.0)
    return q.clamp(-qmax, qmax) * s


def hook(_module, args):
    return (fake_quant_per_token(args[0]),) + tuple(args[1:])


def set_sites(names):
    handles = []
    for layer in model.model.layers:
        for mod_name, mod in layer.named_modules():
            leaf = mod_name.rsplit(".", 1)[-1]
            if any(leaf in SITES[s] for s in names):
                handles.append(mod.register_forward_pre_hook(hook))
    return handles


@torch.no_grad()
def ppl():
    nll, n = 0.0, 0
    for w in range(windows):
        x = ids[w * ctx:(w + 1) * ctx].to(dev)[None]
        logits = model(x).logits[0].double()
        first = ctx // 2
        lp = torch.log_softmax(logits[first:ctx - 1], dim=-1)
        tgt = x[0, first + 1:ctx]
        nll -= lp.gather(1, tgt[:, None]).sum().item()
        n += tgt.numel()
    return float(np.exp(nll / n))


base = ppl()
print(f"as loaded: PPL {base:.4f} ({windows} windows of {ctx}, llama.cpp protocol)")
for label, names in [("A8 per token, every site", list(SITES))] + [
    (f"A8 per token, {s} only", [s]) for s in SITES
]:
    hs = set_sites(names)
    p = ppl()
    for h in hs:
        h.remove()
    print(f"{label}: PPL {p:.4f} ({100 * (p / base - 1):+.2f} %)")
