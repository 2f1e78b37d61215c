#!/usr/bin/env bash
# Short fuzzing smoke run of every parser (fuzz/fuzz_targets/*.rs) on stable Rust: cargo-fuzz
# with libFuzzer and no sanitizer (-s none; only the sanitizers need nightly). Builds the fuzz
# crate, then runs each target from its committed seeds (fuzz/seeds/TARGET) for at most
# FUZZ_SMOKE_RUNS executions or FUZZ_SMOKE_SECONDS seconds, whichever comes first, and prints
# each target's executions and seconds. Fails if any target crashes, leaks memory past the
# limits, or hangs; the input is kept in fuzz/artifacts/TARGET/.
#   scripts/fuzz-smoke.sh [TARGET...]      (default: every target)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${FUZZ_SMOKE_RUNS:-20000}
secs=${FUZZ_SMOKE_SECONDS:-15}
# The smoke's build at opt-level 1 (the fuzz crate's release profile; fuzz-long.sh keeps 3): in
# CI the build is nearly all of this step (330 s at 3, 240 s at 1 on a 2-core machine), and 20000
# executions of each target still take seconds. Exported so that `cargo fuzz run` finds the
# same build instead of making another.
export CARGO_PROFILE_RELEASE_OPT_LEVEL=${FUZZ_SMOKE_OPT_LEVEL:-1}
start=$SECONDS

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz --version 0.13.2
# The qlab target's seeds are model files, made by a test rather than committed.
[ -n "$(ls fuzz/seeds/qlab 2>/dev/null)" ] || cargo test --release --test all fuzz_seeds::
cargo fuzz build -s none
echo "build: $((SECONDS - start)) s"

targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
failed=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
  log="fuzz/target/smoke-$t.log"
  t0=$SECONDS
  # Bounds: -rss_limit_mb, -timeout, and each allocation at most 256 MiB (fuzz_targets/common.rs;
  # -malloc_limit_mb needs a sanitizer, which stable Rust lacks).
  if cargo fuzz run -s none "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -runs="$runs" -max_total_time="$secs" -rss_limit_mb=2048 \
    -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed+=("$t")
  fi
  execs=$(grep -o '^stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  printf '%-16s %-6s %10s executions %5d s\n' "$t" "$status" "$execs" $((SECONDS - t0))
  if [ "$status" = FAILED ]; then
    grep -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -8 || true
  fi
done
echo "total: $((SECONDS - start)) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz smoke failed: ${failed[*]} (logs: fuzz/target/smoke-TARGET.log)" >&2
  exit 1
fi
