#!/usr/bin/env bash
# Runs Hotline: builds the server (and the web app when present), creates a
# demo deployment on first start, and serves it on http://127.0.0.1:8008.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hotline/target}"
cargo build --release -p hotline
BIN="$CARGO_TARGET_DIR/release/hotline"
WEB_ARGS=()
if [ -f web/package.json ] && [ -x scripts/web.sh ]; then
  scripts/web.sh build
  WEB_ARGS=(--web-dir web/dist)
fi
DATA="${HOTLINE_DATA_DIR:-$PWD/data}"
if [ ! -f "$DATA/hotline.db" ]; then
  echo "Creating the demo deployment in $DATA"
  for u in alice bob carol; do
    "$BIN" --data-dir "$DATA" admin create-user "$u" --password "hotline-demo" >/dev/null
  done
  "$BIN" --data-dir "$DATA" admin registration-token --uses 10 > "$DATA/demo-registration-token"
fi
cat <<MSG

  Hotline is starting on http://127.0.0.1:8008
  Demo accounts (password: hotline-demo): @alice:localhost  @bob:localhost  @carol:localhost
  Registration token for new accounts: $(cat "$DATA/demo-registration-token")
  Any Matrix client works: homeserver http://127.0.0.1:8008

MSG
exec "$BIN" --data-dir "$DATA" serve --listen "${HOTLINE_LISTEN:-127.0.0.1:8008}" "${WEB_ARGS[@]}" "$@"
