#!/usr/bin/env bash
# Run every test, from a fresh Debian machine: install what is missing, fetch the default model,
# check formatting and lints (host and wasm32), run the Rust tests, build the page and the CLI,
# run every fuzz target briefly, and run the browser tests in headless Chromium. Stops at the
# first failure. Each step prints the seconds since the start (the CI budget is 45 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
start=$SECONDS
step() { printf '\n==> [%4ds] %s\n' $((SECONDS - start)) "$*"; }

step "setup (apt, rustup components, npm)"
./scripts/ci-setup.sh
step "default model"
./scripts/fetch-model.sh

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy (host)"
cargo clippy --all-targets -- -D warnings
step "web bundle (installs the wasm target and wasm-bindgen CLI when missing)"
./scripts/build-web.sh
step "cargo clippy (wasm32)"
cargo clippy --lib --target wasm32-unknown-unknown -- -D warnings

# Release: the model tests run the real 135M-parameter model.
step "cargo test --release"
cargo test --release
step "CLI (release)"
cargo build --release --bin quantlab
step "fuzz smoke: every parser, a bounded run each (cargo-fuzz on stable, scripts/fuzz-smoke.sh)"
./scripts/fuzz-smoke.sh

# Two test files at a time: a page runs its model in one worker (one core), so on CI's two cores
# two files run side by side; each file has its own server, port and browser profile.
step "browser tests (headless Chromium)"
(cd tests/browser && QUANTLAB_BIN="$(cd ../.. && realpath "$target_dir/release/quantlab")" \
  node --test --test-concurrency=2)
step "all tests passed"
