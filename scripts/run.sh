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
  # Fictional officials: two principals and an aide, each with a one-time
  # enrolment link (redeem it to set the password).
  enrol() { "$BIN" --data-dir "$DATA" admin enroll "$@" --hours 720 | sed -n 's/^link //p'; }
  {
    echo "@president.avalon:localhost  $(enrol president.avalon --name 'Maria Castell' --title President --country Avalon --office 'Avalon Protocol Office' --role principal)"
    echo "@pm.borduria:localhost       $(enrol pm.borduria --name 'Jon Varga' --title 'Prime Minister' --country Borduria --office 'Borduria Chancellery' --role principal)"
    echo "@aide.avalon:localhost       $(enrol aide.avalon --name 'Lea Moreau' --title 'Diplomatic Adviser' --country Avalon --office 'Avalon Protocol Office' --role aide --principal president.avalon)"
  } > "$DATA/demo-enrolment-links"
fi
cat <<MSG

  Hotline is starting on http://127.0.0.1:8008
  Demo accounts (password: hotline-demo): @alice:localhost  @bob:localhost  @carol:localhost
  Registration token for new accounts: $(cat "$DATA/demo-registration-token")
  Demo officials (open the link to set a password; the office then vouches with
  'hotline --data-dir $DATA admin vouch USER --master-key FINGERPRINT'):
$(sed 's/^/    /' "$DATA/demo-enrolment-links")
  Any Matrix client works: homeserver http://127.0.0.1:8008

MSG
exec "$BIN" --data-dir "$DATA" serve --listen "${HOTLINE_LISTEN:-127.0.0.1:8008}" "${WEB_ARGS[@]}" "$@"
