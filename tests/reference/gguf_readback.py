#!/usr/bin/env python3
"""Read GGUF files with gguf-py, the GGUF reader maintained with llama.cpp (an implementation
independent of QuantLab's), and decode every tensor with its dequantizers: for each file, print
every tensor's ggml type, shape (GGUF order, innermost first) and the SHA-256 of its dequantized
values as little-endian float32 in row-major order, plus a few metadata values, as one JSON
object on stdout. tests/gguf_export.rs runs it on QuantLab's GGUF exports and compares each hash
with QuantLab's own dequantized weights.

Pinned environment: gguf==0.19.0, numpy==2.4.6 in tests/.venv (scripts/ci-setup.sh makes it).

Usage: gguf_readback.py FILE...
"""

import hashlib
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

# Metadata keys reported back (the test checks them against what it wrote).
KEYS = [
    "general.architecture",
    "general.alignment",
    "general.file_type",
    "tokenizer.ggml.model",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.add_bos_token",
]


def field_value(field):
    """A scalar or string field's value (arrays: their length)."""
    if len(field.types) > 1 or len(field.data) != 1:
        return len(field.data)
    v = field.contents()
    return v.item() if hasattr(v, "item") else v


def read(path):
    r = GGUFReader(path)
    tensors = []
    for t in r.tensors:
        v = np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype="<f4")
        shape = [int(d) for d in t.shape]
        if v.size != int(np.prod(shape)):
            raise SystemExit(f"{path}: {t.name}: {v.size} values for shape {shape}")
        tensors.append(
            {
                "name": t.name,
                "type": t.tensor_type.name,
                "shape": shape,
                "sha256": hashlib.sha256(v.tobytes()).hexdigest(),
            }
        )
    meta = {k: field_value(r.fields[k]) for k in KEYS if k in r.fields}
    meta["tokenizer.ggml.tokens"] = (
        len(r.fields["tokenizer.ggml.tokens"].data) if "tokenizer.ggml.tokens" in r.fields else None
    )
    return {"tensors": tensors, "metadata": meta}


def main(paths):
    if not paths:
        raise SystemExit(__doc__)
    json.dump({p: read(p) for p in paths}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
