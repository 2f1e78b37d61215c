#!/usr/bin/env bash
# Rewrite the committed seed corpora fuzz/seeds/TARGET/ from the crate's test fixtures (small
# valid inputs, each checked to load). Run from anywhere; uses the main crate's test build.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf fuzz/seeds
QUANTLAB_WRITE_SEEDS=1 cargo test --test all -- fuzz_seeds
du -sh fuzz/seeds
