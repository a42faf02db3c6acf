#!/usr/bin/env bash
# Runs every test of Hotline: Rust unit and integration tests (real server,
# matrix-sdk client, a Synapse federating with Hotline) on each database
# engine, the matrix-js-sdk interop script, and the web app's browser tests
# when present.
#
# The integration tests run twice: on SQLite (the default), then with
# HOTLINE_TEST_ENGINE=postgres, each test server on a database of its own
# in a PostgreSQL cluster this script starts (scripts/postgres.sh) and
# stops. The PostgreSQL engine's own unit tests use that cluster too.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hotline/target}"
scripts/deps.sh coturn   # the TURN test drives a real coturn
scripts/postgres.sh install
# The federation interop test runs Synapse, the reference homeserver, from
# PyPI (into bench/.venv, once).
scripts/deps.sh python3 python3-venv
scripts/synapse.sh install
# Every cargo command here selects the same packages, so Cargo resolves
# features once and builds every crate once: `-p hotline` beside
# `--workspace`, or a `cargo build` beside `cargo test` (dev-dependencies
# add features), would build the server and matrix-sdk again. This one also
# builds the server binary (target/release/hotline) the interop and browser
# tests run.
CARGO_ARGS=(--release --workspace --exclude hotline-loadgen)
cargo test "${CARGO_ARGS[@]}" --no-run

pg_dir="${TMPDIR:-/tmp}/hotline-test-postgres-$$"
pg_port="${HOTLINE_TEST_POSTGRES_PORT:-55439}"
trap 'scripts/postgres.sh stop "$pg_dir"; rm -rf "$pg_dir" "$pg_dir.initdb.log"' EXIT
export HOTLINE_TEST_POSTGRES="$(scripts/postgres.sh start "$pg_dir" "$pg_port")"
export HOTLINE_TEST_POSTGRES_DIR="$pg_dir"

echo "== Rust tests, SQLite"
cargo test "${CARGO_ARGS[@]}" -- --test-threads 2
echo "== Rust integration tests, PostgreSQL"
# The body fuzzer takes a quarter of its cases here: every one commits.
HOTLINE_TEST_ENGINE=postgres HOTLINE_FUZZ_CASES=10000 \
  cargo test "${CARGO_ARGS[@]}" --test it -- --test-threads 2

if [ -x tests/interop/run.sh ]; then
  tests/interop/run.sh
fi
if [ -f web/package.json ] && [ -x scripts/web.sh ]; then
  scripts/web.sh test
fi
