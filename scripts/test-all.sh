#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, the loom model of the ring, and the
# whole-process integration tests (real binaries, logger, rsyslog). Needs the Debian
# packages .ci/run installs. Ends with one line "tests: N passed, N failed".
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

passed=$(grep -Eo '^test result: ok\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
echo "tests: ${passed} passed, ${failed} failed"
