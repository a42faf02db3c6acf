#!/usr/bin/env bash
# Runs every test of Hotline: Rust unit and integration tests (real server,
# matrix-sdk client), the matrix-js-sdk interop script, and the web app's
# browser tests when present.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hotline/target}"
scripts/deps.sh coturn   # the TURN test drives a real coturn
cargo build --release -p hotline
cargo test --release --workspace --exclude hotline-loadgen -- --test-threads 2
if [ -x tests/interop/run.sh ]; then
  tests/interop/run.sh
fi
if [ -f web/package.json ] && [ -x scripts/web.sh ]; then
  scripts/web.sh test
fi
