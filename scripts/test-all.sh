#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, the loom model of the ring, the
# whole-process integration tests (real binaries, logger, rsyslog), and every fuzz target for
# FUZZ_SECONDS (default 20) from its committed corpus. Needs the Debian packages and
# cargo-fuzz that .ci/run installs (and the nightly toolchain). Ends with one line
# "tests: N passed, N failed"; each fuzz target counts as one test, failed when it crashed.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
cargo test --workspace --all-targets -- --test-threads 2 2>&1 | tee "$log"
# The ring's index protocol under loom (own target dir: different cfg, full rebuild).
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test --release -p sekoia-shared --lib loom 2>&1 | tee -a "$log"

# Fuzzing: each target runs on a scratch copy of its seeds (libFuzzer adds what it finds to
# its first corpus folder; the committed one stays as it is). A crash leaves its input in
# fuzz/artifacts/<target>/ (docs/fuzzing.md says how to replay it).
fuzz_seconds=${FUZZ_SECONDS:-20}
fuzz_scratch=$(mktemp -d)
trap 'rm -f "$log"; rm -rf "$fuzz_scratch"' EXIT
(cd fuzz && cargo +nightly fuzz build -O) 2>&1 | tail -n 3
for target in $(cd fuzz && cargo +nightly fuzz list); do
  mkdir -p "$fuzz_scratch/$target"
  if (cd fuzz && cargo +nightly fuzz run -O "$target" "$fuzz_scratch/$target" "corpus/$target" \
        -- -max_total_time="$fuzz_seconds" -print_final_stats=1) >"$fuzz_scratch/$target.log" 2>&1; then
    echo "fuzz $target: ok ($(grep -Eo 'number_of_executed_units: [0-9]+' "$fuzz_scratch/$target.log" | awk '{print $2}') runs in ${fuzz_seconds} s)" | tee -a "$log"
  else
    tail -n 40 "$fuzz_scratch/$target.log"
    echo "fuzz $target: FAILED (input saved under fuzz/artifacts/$target/)" | tee -a "$log"
  fi
done

passed=$(grep -Eo '^test result: ok\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
fuzz_passed=$(grep -c '^fuzz .*: ok' "$log" || true)
fuzz_failed=$(grep -c '^fuzz .*: FAILED' "$log" || true)
echo "tests: $((passed + fuzz_passed)) passed, $((failed + fuzz_failed)) failed"
# A crashed fuzz target fails the run (a failed cargo test already stopped it above).
[ "$((failed + fuzz_failed))" -eq 0 ]
