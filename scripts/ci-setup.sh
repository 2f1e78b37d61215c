#!/usr/bin/env bash
# Install what the tests need on a fresh Debian machine, skipping whatever is already there:
# Debian's Chromium (the browser tests drive it; nothing downloads a browser of its own), Mesa's
# CPU Vulkan driver (lavapipe, for GPU code tested without a GPU), rustfmt and clippy, and the
# browser tests' npm packages. The wasm target and the wasm-bindgen CLI are installed by
# scripts/build-web.sh.
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
