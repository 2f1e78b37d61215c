#!/usr/bin/env bash
# Build the browser bundle: the crate compiled to wasm32 and bound with wasm-bindgen into
# www/pkg/ (git-ignored), which www/worker.js imports.
# Installs what it needs (the rustup target, the wasm-bindgen CLI of the exact crate version)
# only when missing, so a second run only rebuilds.
set -euo pipefail
cd "$(dirname "$0")/.."

# Must equal the `wasm-bindgen = "=X"` pin in Cargo.toml: the CLI refuses other versions.
WASM_BINDGEN_VERSION=0.2.130

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
if [ "$(wasm-bindgen --version 2>/dev/null || true)" != "wasm-bindgen $WASM_BINDGEN_VERSION" ]; then
  # No --locked: with it, this install once failed on a yanked transitive dependency.
  cargo install wasm-bindgen-cli --version "=$WASM_BINDGEN_VERSION"
fi

target_dir=${CARGO_TARGET_DIR:-target}
# SIMD128 (every current browser has it) lets LLVM vectorise the CPU loops. Only the wasm target
# gets the flag, so host builds keep their cache. It does not change results: wasm has no fused
# multiply-add in SIMD128 and LLVM does not reorder float sums without fast-math.
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="${CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS--C target-feature=+simd128}"
cargo build --lib --release --target wasm32-unknown-unknown
wasm-bindgen --target web --no-typescript --out-dir www/pkg \
  "$target_dir/wasm32-unknown-unknown/release/quantlab.wasm"
# The charting library (uPlot, pinned in tests/browser/package.json) is copied next to the wasm
# so the page needs no network at run time.
uplot=tests/browser/node_modules/uplot/dist
if [ ! -f "$uplot/uPlot.esm.js" ] || [ ! -f tests/browser/node_modules/hyparquet/src/index.js ]; then
  (cd tests/browser && npm ci)
fi
cp "$uplot/uPlot.esm.js" "$uplot/uPlot.min.css" www/pkg/
cp tests/browser/node_modules/uplot/LICENSE www/pkg/uPlot.LICENSE
# The parquet reader (hyparquet, pinned likewise) for WikiText-2 as the Hub serves it.
rm -rf www/pkg/hyparquet && cp -r tests/browser/node_modules/hyparquet/src www/pkg/hyparquet && cp tests/browser/node_modules/hyparquet/LICENSE www/pkg/hyparquet/LICENSE
# The app shell the service worker (www/sw.js) keeps for offline use: every file the page can
# ask for besides the models, and a build id hashed from their bytes, so a new build gets a new
# cache (and the browser, seeing shell.js change, installs the new worker). Paths are relative to
# the page's directory; "./" is index.html.
shell=(index.html www/style.css)
while IFS= read -r f; do shell+=("$f"); done < <(
  find www -maxdepth 1 -name '*.js' ! -name sw.js
  find www/texts www/methods -name '*.txt'
  find www/lessons -name '*.json'
  find www/pkg -name '*.js' -o -name '*.wasm' -o -name '*.css' | grep -v '^www/pkg/shell\.js$'
)
mapfile -t shell < <(printf '%s\n' "${shell[@]}" | LC_ALL=C sort -u)
build=$(cat "${shell[@]}" | sha256sum | cut -c1-16)
{
  echo "// Written by scripts/build-web.sh: the app shell www/sw.js precaches, and its build id."
  echo "self.QUANTLAB_BUILD = '$build';"
  echo "self.QUANTLAB_SHELL = ["
  echo "  './',"
  for f in "${shell[@]}"; do [ "$f" = index.html ] || echo "  '$f',"; done
  echo "];"
} > www/pkg/shell.js
echo "web bundle: www/pkg/ ($(du -h www/pkg/quantlab_bg.wasm | cut -f1) of wasm), build $build, ${#shell[@]} shell files"
