#!/usr/bin/env bash
# Runs Hotline: builds the server (and the web app when present), creates a
# demo deployment on first start, starts a TURN relay for calls (coturn, through
# scripts/coturn.sh local, the same set-up the web tests use), and serves it on
# http://127.0.0.1:8008. Stopping the server (Ctrl-C) stops the relay too.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hotline/target}"
source scripts/node.sh   # node and npm (the web app's build, the demo set-up), installed when missing
cargo build --release -p hotline
BIN="$CARGO_TARGET_DIR/release/hotline"
WEB_ARGS=()
if [ -f web/package.json ] && [ -x scripts/web.sh ]; then
  scripts/web.sh build
  WEB_ARGS=(--web-dir web/dist)
fi
DATA="${HOTLINE_DATA_DIR:-$PWD/data}"
LISTEN="${HOTLINE_LISTEN:-127.0.0.1:8008}"
DEMO_PW="hotline-demo"
if [ ! -f "$DATA/hotline.db" ]; then
  echo "Creating the demo deployment in $DATA"
  for u in alice bob carol; do
    "$BIN" --data-dir "$DATA" admin create-user "$u" --password "$DEMO_PW" >/dev/null
  done
  "$BIN" --data-dir "$DATA" admin registration-token --uses 10 > "$DATA/demo-registration-token"
  # Fictional officials. Each gets a one-time enrolment code from the
  # protocol office; web/scripts/demo-officials.mjs redeems it, creates the
  # official's cross-signing keys on a first device (like the web app's
  # enrolment screen), has the office vouch for that master key, and opens
  # a line between two principals. The last one stays pending, to try the
  # enrolment screen with.
  enrol() { "$BIN" --data-dir "$DATA" admin enroll "$@" --hours 720 --base-url "http://$LISTEN" | sed -n 's/^code //p'; }
  codes=(
    "president.avalon=$(enrol president.avalon --name 'Maria Castell' --title President --country Avalon --office 'Avalon Protocol Office' --role principal)"
    "pm.borduria=$(enrol pm.borduria --name 'Jon Varga' --title 'Prime Minister' --country Borduria --office 'Borduria Chancellery' --role principal)"
    "aide.avalon=$(enrol aide.avalon --name 'Lea Moreau' --title 'Diplomatic Adviser' --country Avalon --office 'Avalon Protocol Office' --role aide --principal president.avalon)"
    "chancellor.syldavia=$(enrol chancellor.syldavia --name 'Anna Kovic' --title Chancellor --country Syldavia --office 'Syldavia Federal Chancellery' --role principal)"
  )
  "$BIN" --data-dir "$DATA" admin enroll envoy.syldavia --name 'Tomas Hald' --title 'Special Envoy' --country Syldavia \
    --office 'Syldavia Federal Chancellery' --role aide --principal chancellor.syldavia --hours 720 --base-url "http://$LISTEN" \
    | sed -n 's/^link //p' > "$DATA/demo-enrolment-link"
  if [ -f web/scripts/demo-officials.mjs ]; then
    # The set-up server listens on a port of its own: nothing that waits for
    # Hotline on $LISTEN mistakes it for the real one, which starts below.
    SETUP="127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    "$BIN" --data-dir "$DATA" serve --listen "$SETUP" > "$DATA/demo-setup.log" 2>&1 &
    setup_pid=$!
    for _ in $(seq 1 100); do curl -sf "http://$SETUP/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
    if ! (cd web && node scripts/demo-officials.mjs --homeserver "http://$SETUP" --bin "$BIN" --data-dir "$DATA" \
        --password "$DEMO_PW" --out "$DATA/demo-officials" --line president.avalon,pm.borduria "${codes[@]}"); then
      echo "The demo officials could not be set up (see above); they stay enrolled but unvouched." >&2
    fi
    kill "$setup_pid"; wait "$setup_pid" 2>/dev/null || true
  fi
fi
# The TURN relay: coturn on 127.0.0.1 (port 3478 when free), sharing a secret
# stored in the data dir, so relay-only calls work. Reused when it already
# runs for this data dir; without it the demo runs without TURN.
TURN_ADDR=""
if TURN_ADDR="$(HOTLINE_BIN="$BIN" scripts/coturn.sh local "$DATA")"; then
  TURN_LINE="Calls are relayed through coturn on $TURN_ADDR when \"Relay calls through the server\" is on."
else
  TURN_ADDR=""
  TURN_LINE="No TURN relay: coturn could not start (see above). Calls connect directly; relay-only calls are unavailable."
fi
cat <<MSG

  Hotline is starting on http://$LISTEN
  Demo accounts (password: $DEMO_PW): @alice:localhost  @bob:localhost  @carol:localhost
  Registration token for new accounts: $(cat "$DATA/demo-registration-token")

  Demo officials, vouched by their offices (user, password, recovery key: the
  web app asks for it after sign-in, to unlock the official's keys):
$(sed 's/^/    /' "$DATA/demo-officials" 2>/dev/null)
  President Castell and Prime Minister Varga have a direct line. Chancellor
  Kovic has none yet: sign in as her, open "Line invites", and share one.
  An envoy's enrolment is pending: $(cat "$DATA/demo-enrolment-link")
  (after it, the office compares the 12 groups of 5 digits the envoy's device shows with
   $BIN --data-dir $DATA admin show-key envoy.syldavia
   and vouches, typing them: $BIN --data-dir $DATA admin vouch envoy.syldavia --master-key 'DIGITS')

  Any Matrix client works: homeserver http://$LISTEN
  $TURN_LINE

MSG
if [ -z "$TURN_ADDR" ]; then
  exec "$BIN" --data-dir "$DATA" serve --listen "$LISTEN" "${WEB_ARGS[@]}" "$@"
fi
# The shell stays to stop coturn when the server exits. A background child of
# a script ignores SIGINT, so Ctrl-C (and TERM, HUP) reach the server through
# this trap, as SIGTERM (a graceful stop); its exit status is run.sh's.
"$BIN" --data-dir "$DATA" serve --listen "$LISTEN" "${WEB_ARGS[@]}" "$@" &
server_pid=$!
trap 'kill -TERM "$server_pid" 2>/dev/null || true' INT TERM HUP
status=0
while :; do
  wait "$server_pid" && status=0 || status=$?
  kill -0 "$server_pid" 2>/dev/null || break
done
trap - INT TERM HUP
scripts/coturn.sh stop "$DATA" || true
exit "$status"
