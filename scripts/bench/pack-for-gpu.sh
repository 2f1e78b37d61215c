#!/usr/bin/env bash
# Packs what scripts/bench/gpu-machine.sh needs on the GPU machine (issue 17's measurements),
# built here: the release `quantlab`, `examples/gpu_bench`, the GPU test binaries (gpu_kernels,
# gpu_coop, gpu_f16, gpu_cmpq), the default model and the Vulkan loader packages. The device
# tool carries at most 64 MiB per call (the tracked tree included), so:
#   .gpu1  the binaries (bins.tar.xz), small, carried by the first call with .gl;
#   .gpu2, .gpu3, …  the model (98 MB) in parts, each as large as its call leaves room for:
#          .gpu2 fills the first call's room beside .gpu1, .gl and the tree, each later part a
#          whole call's room beside the tree (today: two calls in all).
#
#   scripts/bench/pack-for-gpu.sh
#   call 1 (carry [".gpu1", ".gl", ".gpu2"]): mkdir -p /root/p && cp .gpu1/* .gpu2/* /root/p/ && bash scripts/bench/gpu-machine.sh /root/p "$OUT"
#   call k (carry [".gpuk"]):                 cp .gpuk/* /root/p/
#   last call (carry [".gpuN"]):              cp .gpuN/* /root/p/ && bash scripts/bench/gpu-machine.sh /root/p "$OUT"
#
# The first call runs the steps that need no model (tests, per-kernel times on synthetic
# weights); gpu-machine.sh runs the steps whose inputs are there and have not yet run. The
# machine keeps /root/p only while it stays warm (30 s idle), so the calls follow each other at
# once. Environment: CARGO_TARGET_DIR (default target), MARGIN_MB (room left unused in each
# call, default 1).
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${CARGO_TARGET_DIR:-target}
MARGIN_MB=${MARGIN_MB:-1}
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$MODEL" ] || ./scripts/fetch-model.sh

for d in /.gpu[0-9]/ /.gl/; do
  grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >>.git/info/exclude
done

cargo build --release --bin quantlab --example gpu_bench
# The test binaries' paths: cargo prints them as JSON (the name carries a hash).
tests=$(cargo test --release --no-run --message-format=json \
  --test gpu_kernels --test gpu_coop --test gpu_f16 --test gpu_cmpq 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])')

# A test that does not compile is left out of cargo's list: stop here rather than ship without it.
if [ "$(grep -c . <<<"$tests")" != 4 ]; then
  echo "test binaries missing (does every GPU test compile?):" $tests >&2
  exit 1
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin"
cp "$T/release/quantlab" "$T/release/examples/gpu_bench" "$stage/bin/"
while read -r name exe; do cp "$exe" "$stage/bin/$name"; done <<<"$tests"
strip "$stage"/bin/*
# Tests run `quantlab` from the path cargo compiled into them (CARGO_BIN_EXE_quantlab).
realpath "$T/release/quantlab" >"$stage/bin/exe-path"
stat -c %s "$MODEL" >"$stage/bin/model-bytes"

# Vulkan's loader and friends for the machine (its README: they may be missing there).
if ! ls .gl/*.deb >/dev/null 2>&1; then
  mkdir -p .gl /tmp/amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  apt-get $o update >/dev/null
  (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 >/dev/null)
fi

rm -rf .gpu[0-9]
mkdir -p .gpu1
tar -C "$stage" -cJf .gpu1/bins.tar.xz .
# Room per call in bytes: 64 MiB less the tracked tree and the margin; the first call also
# carries .gpu1 and .gl.
mib=$((1024 * 1024))
tree=$(git ls-files -z | du -cb --files0-from=- | tail -n 1 | cut -f1)
room=$((64 * mib - tree - MARGIN_MB * mib))
first=$((room - $(du -cb .gpu1 .gl | tail -n 1 | cut -f1)))
size=$(stat -c %s "$MODEL")
[ "$first" -gt 0 ] || { echo "no room beside .gpu1 and the tree" >&2; exit 1; }
i=2
at=0
while [ "$at" -lt "$size" ]; do
  n=$room
  [ "$i" = 2 ] && n=$first
  mkdir -p ".gpu$i"
  dd if="$MODEL" of=".gpu$i/model.$((i - 2))" bs=1M iflag=skip_bytes,count_bytes skip="$at" count="$n" status=none
  at=$((at + n))
  i=$((i + 1))
done
ls -l .gpu*/ .gl/
echo "folders: .gpu1 (binaries, with .gl) and $((i - 2)) of the model"
