#!/usr/bin/env bash
# The second, independent client: matrix-js-sdk conversations against a real
# Hotline server, with every response validated against the Matrix spec's
# schemas (vendored in spec/). Starts the server on a free port with a temp
# data dir, runs the node tests, stops the server on exit.
#
#   tests/interop/run.sh                 # all tests
#   tests/interop/run.sh conversation    # only files whose name contains it
#   HOTLINE_BIN=path/to/hotline tests/interop/run.sh
#
# The server binary is built by scripts/test.sh (with the tests, one build).
set -euo pipefail
cd "$(dirname "$0")"
source ../../scripts/node.sh   # node and npm, installed when missing
TARGET="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hotline/target}"
BIN="${HOTLINE_BIN:-$TARGET/release/hotline}"
if [ ! -x "$BIN" ]; then
  echo "interop: no server binary at $BIN (run: cargo build --release -p hotline)" >&2
  exit 1
fi

# npm deps, installed only when node_modules is missing or the lock changed.
STAMP=node_modules/.package-lock.sha256
LOCK_SUM="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -d node_modules ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$LOCK_SUM" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$LOCK_SUM" > "$STAMP"
fi

DATA="$(mktemp -d "${TMPDIR:-/tmp}/hotline-interop.XXXXXX")"
SERVER_PID=""
cleanup() {
  status=$?
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ "$status" -ne 0 ] && [ -f "$DATA/server.log" ]; then
    echo "---- last lines of the server log ($DATA/server.log) ----" >&2
    tail -n 40 "$DATA/server.log" >&2
  else
    rm -rf "$DATA"
  fi
  exit "$status"
}
trap cleanup EXIT INT TERM

# A free port: ask the kernel for one, then hand it to the server. If another
# process takes it in between, the server fails to bind and we try again.
free_port() { node -e 's=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
for attempt in 1 2 3 4 5; do
  PORT="$(free_port)"
  HOTLINE_LOG="${HOTLINE_LOG:-info}" "$BIN" --data-dir "$DATA" serve --listen "127.0.0.1:$PORT" --allow-registration \
    >>"$DATA/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then break 2; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
    sleep 0.1
  done
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
done
if [ -z "$SERVER_PID" ]; then
  echo "interop: the server did not start" >&2
  exit 1
fi
export HOTLINE_URL="http://127.0.0.1:$PORT"
export HOTLINE_DATA_DIR="$DATA"  # the e2ee test scans it for plaintext
echo "interop: hotline at $HOTLINE_URL (data $DATA)"

FILES=()
for f in *.test.mjs; do
  if [ $# -eq 0 ] || [[ "$f" == *"$1"* ]]; then FILES+=("$f"); fi
done
# One file at a time: each is a conversation whose steps run in order.
node --test --test-concurrency=1 --test-reporter=spec "${FILES[@]}"
