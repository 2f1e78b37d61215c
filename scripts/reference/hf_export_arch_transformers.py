#!/usr/bin/env python3
"""Outside reference for QuantLab's Hugging Face export of OPT and GPT-2 (`quantlab export --to
hf`, `src/model/hf_export.rs`): transformers loads each exported directory as an ordinary
checkpoint (AutoModelForCausalLM, AutoTokenizer) and computes logits for a fixed text.

The exports are the ones tests/hf_export_arch.rs writes under target/test-hf-export-arch/ (one
directory per model and quantization: opt-pre, opt-post, gpt2 from their tiny Hugging Face
checkpoints in tests/fixtures/tiny/, gpt2-gguf from llama.cpp's GGUF of the same GPT-2; each as
loaded and RTN 4-bit g32). For each, this records:
- the SHA-256 of model.safetensors, so the test knows it checks the very files measured;
- the class transformers built and its loading report (missing / unexpected / mismatched keys:
  all must be empty, a tied head aside), and whether every parameter transformers holds equals
  the file's tensor (so nothing was silently re-initialized);
- the token ids transformers' tokenizer gives for the text (`add_special_tokens` as the
  tokenizer says, so OPT's BOS `</s>` is prepended), and whether decoding gives the text back;
- a digest of the logits of one forward pass over those ids, in float64 on the CPU (the f16
  weights upcast exactly, eager attention): the first 16 logits of rows `DIGEST_ROWS`, every
  row's sum, and every next-token NLL (natural log) with their perplexity.

Usage (torch and transformers are on the GPU machine; CPU is enough):
    python3 scripts/reference/hf_export_arch_transformers.py EXPORTS_DIR OUT_JSON [TEXT_JSON]
EXPORTS_DIR holds one directory per export; the text is TEXT_JSON's "text" (default
tests/fixtures/tiny/gpt2/reference.json, the text of every tiny reference).
"""
import hashlib
import json
import os
import platform
import sys

import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
TEXT_JSON = os.path.join(HERE, "..", "..", "tests", "fixtures", "tiny", "gpt2", "reference.json")
FIRST = 16  # logits kept per digest row


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def weights_equal_file(model, path):
    """Every tensor of the file is a parameter transformers holds, with the same values (in
    float64, which holds f16 exactly); a tied head is the embedding."""
    sd = model.state_dict()
    for name, t in load_file(path).items():
        if name not in sd:
            return f"{name} not in the model"
        if not torch.equal(sd[name].cpu(), t.to(torch.float64)):
            return f"{name} differs"
    return True


def measure(d, text):
    tok = AutoTokenizer.from_pretrained(d)
    model, info = AutoModelForCausalLM.from_pretrained(
        d, dtype=torch.float64, attn_implementation="eager", output_loading_info=True
    )
    model.eval()
    loading = {k: sorted(str(x) for x in (v or [])) for k, v in info.items()}
    ids = tok(text)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]  # T × vocab, float64
    lp = torch.log_softmax(logits, dim=-1)
    nll = [-lp[t, ids[t + 1]].item() for t in range(len(ids) - 1)]
    rows = sorted({0, 1, len(ids) // 2, len(ids) - 1})
    return {
        "model_safetensors_sha256": sha256(os.path.join(d, "model.safetensors")),
        "model_class": type(model).__name__,
        "tokenizer_class": type(tok).__name__,
        "loading": loading,
        "tied": bool(getattr(model.config, "tie_word_embeddings", False)),
        "weights_equal_file": weights_equal_file(model, os.path.join(d, "model.safetensors")),
        "token_ids": ids,
        "decodes_to_text": tok.decode(ids, skip_special_tokens=True) == text,
        "decoded": tok.decode(ids, skip_special_tokens=True),
        "logits_rows": {str(r): logits[r, :FIRST].tolist() for r in rows},
        "row_sums": logits.sum(dim=-1).tolist(),
        "nll": nll,
        "ppl": float(torch.tensor(nll).mean().exp()),
    }


def main():
    exports, out = sys.argv[1:3]
    text_json = sys.argv[3] if len(sys.argv) > 3 else TEXT_JSON
    with open(text_json, encoding="utf-8") as f:
        text = json.load(f)["text"]
    torch.manual_seed(0)
    result = {
        "what": "transformers loading QuantLab's Hugging Face exports of the tiny OPT and GPT-2 "
        "checkpoints (tests/hf_export_arch.rs writes them): logits digest in float64",
        "script": "scripts/reference/hf_export_arch_transformers.py EXPORTS_DIR OUT_JSON",
        "text_from": "tests/fixtures/tiny/gpt2/reference.json",
        "text": text,
        "first_logits_per_row": FIRST,
        "dtype": "float64",
        "device": "cpu",
        "attn_implementation": "eager",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "exports": {},
    }
    for name in sorted(os.listdir(exports)):
        d = os.path.join(exports, name)
        if not os.path.isfile(os.path.join(d, "config.json")):
            continue
        try:
            r = measure(d, text)
        except Exception as e:  # one failing export must not hide the others' results
            result["exports"][name] = {"error": f"{type(e).__name__}: {e}"}
            print(name, "FAILED", result["exports"][name]["error"], flush=True)
            continue
        if r["decodes_to_text"]:
            del r["decoded"]
        result["exports"][name] = r
        print(name, r["model_class"], r["tokenizer_class"], r["loading"],
              r["weights_equal_file"], len(r["token_ids"]), f"ppl {r['ppl']:.6g}", flush=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
