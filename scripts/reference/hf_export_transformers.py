#!/usr/bin/env python3
"""Outside reference for QuantLab's Hugging Face export (`quantlab export --to hf`): transformers
loads the exported directory as an ordinary checkpoint (AutoModelForCausalLM, AutoTokenizer, in
float32) and measures perplexity under the GPTQ protocol — the text read in Python's text mode,
tokenized whole by the exported tokenizer, non-overlapping windows of CTX tokens, every token
after a window's first scored. `quantlab eval --model DIR --protocol gptq --python-newlines` on
the same directory must agree (issue 16: within 0.1 %).

Usage (the GPU machine has torch and transformers):
    python3 hf_export_transformers.py HF_DIR TEXT [WINDOWS] [CTX]
Prints one JSON line: tokens, windows, ppl, and the first token ids (to compare tokenizers).
"""
import json
import math
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

hf_dir, text_path = sys.argv[1:3]
windows = int(sys.argv[3]) if len(sys.argv) > 3 else 40
ctx = int(sys.argv[4]) if len(sys.argv) > 4 else 512
dev = "cuda" if torch.cuda.is_available() else "cpu"

tok = AutoTokenizer.from_pretrained(hf_dir)
model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).to(dev).eval()
with open(text_path, encoding="utf-8") as f:  # text mode: CRLF -> LF
    text = f.read()
ids = tok(text, add_special_tokens=False)["input_ids"]
n = min(windows, len(ids) // ctx)
nll, scored = 0.0, 0
with torch.no_grad():
    for w in range(n):
        x = torch.tensor(ids[w * ctx:(w + 1) * ctx], device=dev).unsqueeze(0)
        logits = model(x).logits.float()
        lp = torch.log_softmax(logits[0, :-1], dim=-1)
        tgt = x[0, 1:]
        nll -= lp.gather(1, tgt.unsqueeze(1)).sum().item()
        scored += tgt.numel()
print(json.dumps({
    "dir": hf_dir, "tokens": len(ids), "windows": n, "scored": scored,
    "ppl": math.exp(nll / scored), "first_ids": ids[:16],
    "transformers": __import__("transformers").__version__, "torch": torch.__version__,
    "device": dev,
}))
