#!/usr/bin/env bash
# Long fuzzing run of every parser (fuzz/fuzz_targets/*.rs), for a bigger machine: each target in
# turn for N_SECONDS with libFuzzer's fork mode over FUZZ_JOBS processes (default: every core).
# Crashes, memory blow-ups and timeouts do not stop a run (-ignore_*); their inputs are kept in
# fuzz/artifacts/TARGET/ and listed at the end. The corpus grows in fuzz/corpus/TARGET (not
# committed). Prints executions per target; the aim is >= 10^7 per target.
#   scripts/fuzz-long.sh N_SECONDS [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:?usage: scripts/fuzz-long.sh N_SECONDS [TARGET...]}
shift
jobs=${FUZZ_JOBS:-$(nproc)}

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
# The qlab target's seeds are model files, made by a test rather than committed.
[ -n "$(ls fuzz/seeds/qlab 2>/dev/null)" ] || cargo test --release --test all fuzz_seeds::
cargo fuzz build -s none

targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
summary=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t" "fuzz/artifacts/$t"
  log="fuzz/target/long-$t.log"
  t0=$SECONDS
  echo "== $t: $secs s over $jobs processes (log: $log)"
  cargo fuzz run -s none "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -fork="$jobs" -max_total_time="$secs" -rss_limit_mb=2048 \
    -timeout=10 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 >"$log" 2>&1 || true
  # Fork mode's progress lines: "#EXECS: cov: .. corp: .. exec/s: .. oom/timeout/crash: a/b/c".
  last=$(grep -E '^#[0-9]+: cov:' "$log" | tail -1 || true)
  execs=$(sed -E 's/^#([0-9]+):.*/\1/' <<<"$last")
  faults=$(grep -oE 'oom/timeout/crash: [0-9/]+' <<<"$last" | cut -d' ' -f2)
  cov=$(grep -oE 'cov: [0-9]+' <<<"$last" | cut -d' ' -f2)
  line=$(printf '%-16s %12s executions %6d s  cov %-6s oom/timeout/crash %s' \
    "$t" "${execs:-?}" $((SECONDS - t0)) "${cov:-?}" "${faults:-?}")
  echo "$line"
  summary+=("$line")
done
echo
echo "== summary"
printf '%s\n' "${summary[@]}"
found=$(find fuzz/artifacts -type f 2>/dev/null | sort)
if [ -n "$found" ]; then
  echo "== inputs that failed (reproduce: cargo fuzz run -s none TARGET FILE):"
  echo "$found"
  exit 1
fi
