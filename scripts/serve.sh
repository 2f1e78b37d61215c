#!/usr/bin/env bash
# Run the playground: fetch the default model (once), build the browser bundle and serve the
# page on http://127.0.0.1:${PORT:-8080}/ until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-8080}
./scripts/fetch-model.sh
./scripts/build-web.sh
cargo build --release --bin quantlab
echo
echo "QuantLab playground: open http://127.0.0.1:$port/ (Ctrl-C stops the server)"
exec cargo run --quiet --release --bin quantlab -- serve --port "$port" --root .
