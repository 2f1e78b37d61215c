#!/usr/bin/env bash
# Issue 17's measurements on the GPU machine, all in one call (device time is 30 minutes a
# session and a start can fail, so nothing here needs a second call). Run from the repository
# root on that machine, after the parts made by scripts/bench/pack-for-gpu.sh are in BUNDLE:
#
#   bash scripts/bench/gpu-machine.sh BUNDLE OUT
#
# Steps (each logged to OUT/NN-name.log, one line each in OUT/summary.txt; a failing step does
# not stop the others):
#   the device; the GPU tests (gpu_kernels, gpu_coop, gpu_f16, gpu_cmpq) against the CPU;
#   gpu_bench's per-kernel times for a batch of 32 windows at f32 and f16 (FULL=1: also 8
#   windows and the older kernel generations, `QUANTLAB_MATMUL`); the whole text at f32 and f16
#   (f16 also with the f32 attention forced); the RTN and CMPQ slider steps at f32 and f16;
#   transformers beside QuantLab (scripts/bench/peer.py, when torch is there). STEPS=name,name
#   runs only those; a call runs at most 10 minutes, so the steps can be spread over calls.
set -uo pipefail
BUNDLE=${1:?bundle folder (the parts of pack-for-gpu.sh)}
OUT=${2:?folder for the logs}
ROOT=$(pwd)
X=${X:-/root/x}
mkdir -p "$OUT" "$X"

# The machine may lack Vulkan's loader (its README); the NVIDIA driver's ICD is then not found
# by default either.
if ! ldconfig -p | grep -q libvulkan && ls .gl/*.deb >/dev/null 2>&1; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f $icd ]; then export VK_DRIVER_FILES=$icd; fi
if [ ! -x "$X/bin/quantlab" ]; then
  tar -C "$X" -xJf "$BUNDLE/bins.tar.xz" || { echo "no binaries in $BUNDLE" | tee -a "$OUT/summary.txt"; exit 1; }
fi
B=$X/bin
# The model arrives in parts over several calls; the steps that read it wait for all of them.
MODEL=$X/model.gguf
if [ ! -f "$MODEL" ] && ls "$BUNDLE"/model.* >/dev/null 2>&1; then
  cat "$BUNDLE"/model.* >"$MODEL.part"
  if [ "$(stat -c %s "$MODEL.part")" = "$(cat "$B/model-bytes")" ]; then mv "$MODEL.part" "$MODEL"; fi
fi
TEXT=$ROOT/tests/data/wikitext-2-raw-test.txt
# The tests start `quantlab` from the path it was built at.
exe=$(cat "$B/exe-path")
mkdir -p "$(dirname "$exe")" && cp "$B/quantlab" "$exe"

n=0
step() { # name command...
  local name=$1
  shift
  n=$((n + 1))
  if [ -n "${STEPS:-}" ] && [[ ",$STEPS," != *",$name,"* ]]; then return; fi
  # Each step once per machine (a later call runs what an earlier one could not).
  if [ -f "$X/done-$name" ]; then return; fi
  if [[ " $* " == *" $MODEL "* ]] && [ ! -f "$MODEL" ]; then return; fi
  local log
  log=$(printf '%s/%02d-%s.log' "$OUT" "$n" "$name")
  local t0=$SECONDS
  ( cd "$ROOT" && echo "\$ $*" && "$@" ) >"$log" 2>&1
  local rc=$?
  touch "$X/done-$name"
  mkdir -p "$X/logs" && cp "$log" "$X/logs/"
  printf '%-14s rc %-3s %4ss  %s\n' "$name" "$rc" "$((SECONDS - t0))" "$(grep -v -e '^\$' -e '^\s*$' "$log" | tail -n 1 | cut -c1-150)" |
    tee -a "$OUT/summary.txt"
}

step device bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; $B/gpu_kernels context_reports_adapter --nocapture 2>&1 | grep -e adapter -e 'test result'"
# GEN and ROWS: the kernel generation and tokens per evaluation batch of the whole-text steps
# and the peers (QUANTLAB_MATMUL, QUANTLAB_EVAL_ROWS), chosen from the per-kernel times of an
# earlier call; by default GEN as below and ROWS the engine's own on tensor cores
# (src/gpu/backend.rs EVAL_ROWS_TENSOR_CORES: 66 windows of 512).
GEN=${GEN:-auto}
ROWS=${ROWS:-33792}
# Most telling first (a call may end at its time limit; what ran is in OUT): the GPU tests
# (every kernel against the CPU), per-kernel times of a batch of 32 windows; then the whole
# text, the slider steps, peers.
step gpu_coop "$B/gpu_coop" --test-threads=1
step gpu_kernels "$B/gpu_kernels" --test-threads=1
kernels() { # checks precision generations batch
  step "kernels-$2-$1-$3-b$4" env QUANTLAB_SHADER_CHECKS=$1 "$B/gpu_bench" --precision $2 --skip-kernels --batch $4 --iters 5 --matmul $3
}
text() { # precision generation checks rows
  step "text-$1-$2-$3-r$4" env QUANTLAB_MATMUL=$2 QUANTLAB_SHADER_CHECKS=$3 QUANTLAB_EVAL_ROWS=$4 "$B/quantlab" --precision $1 bench --backend gpu --model "$MODEL" --text "$TEXT"
}
# One generation per process: a kernel the driver fails on loses the device for the rest.
# By default only the engine's generation (v12) at each precision; FULL=1 adds the older ones
# (v6: 128×64 tiles; v9: 128×128, double-buffered; v10: both; v11: v9 unrolled; at f16 v9: flat
# tiles) and runs without wgpu's index clamps, as measured in sessions 15–19.
kernels bounds f32 v12 32
kernels bounds f16 v12 32
if [ -n "${FULL:-}" ]; then
  for b in 32 8; do
    for g in v12 v6 v9 v10 v11; do kernels bounds f32 $g $b; done
  done
  for g in v10 v11; do kernels none f32 $g 32; done
  kernels bounds f16 v9 32
  for g in v12 v9; do kernels none f16 $g 32; done
  kernels bounds f16 v12 8
fi
# Attention at f16: the f32 tiled kernel forced instead of f16's default one-pass tensor-core
# kernel (coop1), for the difference.
step kernels-f16-bounds-v12-b32-tiled64 env QUANTLAB_SHADER_CHECKS=bounds "$B/gpu_bench" --precision f16 --skip-kernels --batch 32 --iters 5 --matmul v12 --attention tiled64
step attention "$B/gpu_bench" --only-attention --tiles --iters 10
for t in gpu_f16 gpu_cmpq; do
  step "$t" "$B/$t" --test-threads=1
done
# GEN=auto: at each precision the generation whose batch of 32 windows was fastest in this
# machine's earlier steps (their logs are kept in $X/logs), else v12 (the engine's default) at both.
batch_ms() { grep -o 'whole batch of [0-9]* window(s) .*: [0-9.]* ms wall' "$1" 2>/dev/null | grep -o '[0-9.]* ms wall' | cut -d' ' -f1; }
fastest() { # precision
  for f in "$X"/logs/*-kernels-$1-bounds-v*-b32.log; do
    [ -f "$f" ] || continue
    ms=$(batch_ms "$f")
    g=$(basename "$f" | grep -o 'v[0-9]*-b32' | cut -d- -f1)
    [ -n "$ms" ] && echo "$ms $g"
  done | sort -n | head -n 1 | cut -d' ' -f2
}
if [ "$GEN" = auto ]; then
  GEN=$(fastest f16)
  GEN=${GEN:-v12}
  F32GEN=$(fastest f32)
  F32GEN=${F32GEN:-v12}
  echo "GEN=auto: f16 $GEN, f32 $F32GEN" | tee -a "$OUT/summary.txt"
else
  F32GEN=$GEN
fi
text f16 "$GEN" bounds "$ROWS"
# The same with the f32 tiled attention forced instead of f16's default one-pass tensor-core
# kernel (coop1): what that kernel gives the whole text.
step "text-f16-$GEN-tiled64" env QUANTLAB_ATTENTION=tiled64 QUANTLAB_MATMUL=$GEN QUANTLAB_EVAL_ROWS=$ROWS "$B/quantlab" --precision f16 bench --backend gpu --model "$MODEL" --text "$TEXT"
text f32 "$F32GEN" bounds "$ROWS"
[ -n "${FULL:-}" ] && text f32 v6 bounds "$ROWS"
for p in f32 f16; do
  g=$GEN; [ $p = f32 ] && g=$F32GEN
  step "rtn-step-$p" env QUANTLAB_MATMUL=$g "$B/quantlab" --precision $p bench --rtn-step --backend gpu --model "$MODEL" --text "$TEXT" --windows 8
  step "cmpq-step-$p" env QUANTLAB_MATMUL=$g "$B/quantlab" --precision $p bench --cmpq-step --backend gpu --model "$MODEL" --text "$TEXT" --windows 8
done
if [ ! -f "$MODEL" ]; then
  echo "model          not all here yet: its steps wait for the next call" | tee -a "$OUT/summary.txt"
elif python3 -c 'import torch, transformers' 2>/dev/null; then
  # One generation for both precisions: v12 where it won at f16 (its f32 products are v10's),
  # else the f32 one where its f16 kernels are V8's.
  pg=$GEN
  if [ "$GEN" != v12 ]; then case $F32GEN in v9 | v10 | v11) pg=$F32GEN ;; esac; fi
  step peer env QUANTLAB_MATMUL=$pg QUANTLAB_EVAL_ROWS=$ROWS python3 scripts/bench/peer.py --quantlab "$B/quantlab" --model "$MODEL" --text "$TEXT" --batches 1,8,32 --json "$OUT/peer.json"
else
  echo "peer           skipped: no torch/transformers here" | tee -a "$OUT/summary.txt"
fi
