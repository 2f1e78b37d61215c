#!/usr/bin/env bash
# Install what the tests need on a fresh Debian machine, skipping whatever is already there:
# Debian's Chromium (the browser tests drive it; nothing downloads a browser of its own), Mesa's
# CPU Vulkan driver (lavapipe, for GPU code tested without a GPU), rustfmt and clippy, the
# browser tests' npm packages, and tests/.venv: a Python environment with gguf-py (the GGUF reader
# maintained with llama.cpp), the outside reference tests/gguf_export.rs checks GGUF exports
# against. The wasm target and the wasm-bindgen CLI are installed by scripts/build-web.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
if [ ! -x /usr/bin/chromium ] || ! dpkg -s mesa-vulkan-drivers >/dev/null 2>&1; then
  $sudo apt-get update
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    chromium mesa-vulkan-drivers
fi
rustup component add rustfmt clippy
(cd tests/browser && npm ci --no-audit --no-fund)
# Pinned so that the reference does not move under the test; skipped when the venv has exactly
# those versions. Debian's python3 needs python3-venv for `-m venv`.
venv=tests/.venv
pinned='import importlib.metadata as m; assert (m.version("gguf"), m.version("numpy")) == ("0.19.0", "2.4.6")'
if ! "$venv/bin/python" -c "$pinned" >/dev/null 2>&1; then
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    $sudo apt-get update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check gguf==0.19.0 numpy==2.4.6
fi
