#!/usr/bin/env bash
# The Hotline web app (web/): install, build, and end-to-end test.
#
#   scripts/web.sh install      apt deps (chromium, coturn) and npm ci, when missing or changed
#   scripts/web.sh build        install + npm run build -> web/dist (skipped when up to date)
#   scripts/web.sh test [ARGS]  install + build + real server + coturn + unit and Playwright tests
#                               (ARGS go to `node --test`, e.g. --test-name-pattern='official')
#   scripts/web.sh unit         the unit tests alone (no server: the committed fixtures)
#   scripts/web.sh screenshots  like test, and writes the main screens to docs/*.png
#
# Tests start `hotline serve` on a free loopback port with a temporary data
# dir, create users with `hotline admin create-user`, start coturn through
# scripts/coturn.sh local (the TURN set-up of scripts/run.sh's demo), run
# web/test/attestation.test.mjs (attestation verification against a fixture
# the running server signs), web/test/fingerprint.test.mjs (the fingerprint
# digits' test vector), web/test/watermark.test.mjs (the screenshot
# watermark's test vector), web/test/released-clients.mjs (matrix-js-sdk's
# InteractiveAuth), web/test/third-party-client.mjs (a released client,
# Element Call from npm, signing up through its own form) and
# web/test/e2e.mjs (node's test runner, playwright-core driving Debian's
# chromium), web/test/watermark.mjs (leaked screenshots traced with
# `hotline trace`); then two governments' federating servers (scripts/governments.sh,
# the demo's set-up, on free ports) and web/test/governments.mjs, the line
# between them in two browser contexts; and stop everything on exit.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WEB="$ROOT/web"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hotline/target}"
BIN="${HOTLINE_BIN:-$CARGO_TARGET_DIR/release/hotline}"
source "$ROOT/scripts/node.sh"   # node and npm, installed when missing

install() {
  "$ROOT/scripts/deps.sh" chromium coturn
  local stamp="$WEB/node_modules/.hotline-lock.md5" sum
  sum="$(md5sum <"$WEB/package-lock.json")"
  if [[ ! -d "$WEB/node_modules" || ! -f "$stamp" || "$(cat "$stamp")" != "$sum" ]]; then
    (cd "$WEB" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$sum" >"$stamp"
  fi
}

build() {
  install
  local newest
  # (a dist from before the build wrote gzip twins is rebuilt)
  if [[ -f "$WEB/dist/index.html" && -f "$WEB/test-dist/index.html" ]] && compgen -G "$WEB/dist/assets/*.wasm.gz" >/dev/null; then
    newest="$(find "$WEB/src" "$WEB/interop" "$WEB/public" "$WEB/index.html" "$WEB/package-lock.json" \
      "$WEB/vite.config.ts" "$WEB/vite.interop.config.ts" "$WEB/tsconfig.json" \
      -newer "$WEB/dist/index.html" -print -quit)"
    if [[ -z "$newest" ]]; then echo "web: dist is up to date"; return 0; fi
  fi
  (cd "$WEB" && npm run --silent build)
  # Gzip twins the server sends to browsers that accept gzip (the crypto
  # WebAssembly: 5.4 MB -> 1.8 MB).
  find "$WEB/dist" -type f \( -name '*.js' -o -name '*.wasm' -o -name '*.css' -o -name '*.html' -o -name '*.svg' -o -name '*.json' \) \
    -size +1k -exec gzip -9kf {} \;
  touch "$WEB/dist/index.html"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# A free port below the kernel's ephemeral range (32768-60999), for a port a
# server's name holds: an outgoing connection's source port cannot take it
# between here and the server's start.
free_named_port() {
  python3 -c '
import random, socket
for p in random.sample(range(20000, 32000), 200):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()'
}

test_e2e() {
  build
  if [[ ! -x "$BIN" ]]; then
    (cd "$ROOT" && cargo build --release -p hotline)
  fi
  server_pid=""
  governments_pid=""
  tmp="$(mktemp -d /tmp/hotline-web-test.XXXXXX)"
  port="$(free_port)"
  turn_port="$(free_port)"
  cleanup() {
    [[ -n "${server_pid:-}" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
    # (governments.sh serve stops both servers and their relays on TERM)
    [[ -n "${governments_pid:-}" ]] && kill -TERM "$governments_pid" 2>/dev/null && wait "$governments_pid" 2>/dev/null || true
    "$ROOT/scripts/coturn.sh" stop "$tmp" >/dev/null 2>&1 || true
    if [[ "${KEEP_TEST_DIR:-}" == 1 ]]; then echo "web: kept $tmp"; else rm -rf "$tmp"; fi
  }
  trap cleanup EXIT INT TERM
  for u in alice bob carol; do
    "$BIN" --data-dir "$tmp" admin create-user "$u" --password "hotline-test-pw" >/dev/null
  done
  local turn=0
  # The same TURN set-up as scripts/run.sh's demo (coturn.sh local), on a
  # free port so it runs beside a demo.
  if "$ROOT/scripts/coturn.sh" local "$tmp" "$turn_port" >/dev/null; then
    turn=1
  else
    echo "web: coturn not started: the relay-only call test will be skipped" >&2
  fi
  "$BIN" --data-dir "$tmp" serve --listen "127.0.0.1:$port" --allow-registration --web-dir "$WEB/dist" \
    >"$tmp/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/server.log" >&2; echo "web: server exited" >&2; exit 1; }
    sleep 0.1
  done
  HOTLINE_URL="http://127.0.0.1:$port" HOTLINE_BIN="$BIN" HOTLINE_DATA="$tmp" HOTLINE_TURN="$turn" \
    HOTLINE_PASSWORD="hotline-test-pw" HOTLINE_SCREENSHOTS="${HOTLINE_SCREENSHOTS:-}" \
    node --test --test-concurrency=1 "$@" "$WEB/test/attestation.test.mjs" "$WEB/test/fingerprint.test.mjs" "$WEB/test/watermark.test.mjs" "$WEB/test/released-clients.mjs" "$WEB/test/third-party-client.mjs" "$WEB/test/e2e.mjs" "$WEB/test/watermark.mjs"
  test_governments "$@"
}

# Two governments' servers (scripts/governments.sh, the demo's set-up) on
# free ports, each named by its federation port, and the browser test of the
# line between them.
test_governments() {
  local gov_dir="$tmp/governments" a_fed b_fed
  a_fed="$(free_named_port)"; b_fed="$a_fed"
  while [[ "$b_fed" == "$a_fed" ]]; do b_fed="$(free_named_port)"; done
  GOV_A_NAME="localhost:$a_fed" GOV_A_FED="127.0.0.1:$a_fed" GOV_A_LISTEN="127.0.0.1:$(free_port)" \
  GOV_B_NAME="localhost:$b_fed" GOV_B_FED="127.0.0.1:$b_fed" GOV_B_LISTEN="127.0.0.1:$(free_port)" \
    HOTLINE_DEMO_ARCHIVER=1 HOTLINE_BIN="$BIN" "$ROOT/scripts/governments.sh" init "$gov_dir"
  HOTLINE_BIN="$BIN" "$ROOT/scripts/governments.sh" demo "$gov_dir" "hotline-test-pw" 2>"$gov_dir/demo.log" \
    || { cat "$gov_dir/demo.log" >&2; exit 1; }
  HOTLINE_BIN="$BIN" "$ROOT/scripts/governments.sh" serve "$gov_dir" --web-dir "$WEB/dist" >"$gov_dir/serve.log" 2>&1 &
  governments_pid=$!
  local gov listen
  for gov in avalon borduria; do
    listen="$(sed -n 's/^listen = "\(.*\)"$/\1/p' "$gov_dir/$gov/hotline.toml" | head -n1)"
    for _ in $(seq 1 150); do
      curl -sf "http://$listen/healthz" >/dev/null 2>&1 && break
      kill -0 "$governments_pid" 2>/dev/null || { cat "$gov_dir/serve.log" >&2; echo "web: the governments' servers exited" >&2; exit 1; }
      sleep 0.1
    done
  done
  HOTLINE_GOV_DIR="$gov_dir" HOTLINE_BIN="$BIN" HOTLINE_PASSWORD="hotline-test-pw" \
    node --test --test-concurrency=1 "$@" "$WEB/test/governments.mjs"
}

unit() {
  install
  (cd "$WEB" && node --test test/attestation.test.mjs test/fingerprint.test.mjs test/watermark.test.mjs)
}

case "${1:-}" in
  install) install ;;
  build) build ;;
  test) shift; test_e2e "$@" ;;
  unit) unit ;;
  screenshots) shift; HOTLINE_SCREENSHOTS="$ROOT/docs" test_e2e "$@" ;;
  *) echo "usage: scripts/web.sh install|build|test [node --test args]|unit|screenshots" >&2; exit 2 ;;
esac
