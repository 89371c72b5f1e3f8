#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, whole-process integration tests
# (real binaries, logger, rsyslog) . Needs the Debian packages .ci/run installs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
cargo test --workspace -- --test-threads 2
