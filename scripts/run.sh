#!/usr/bin/env bash
# Runs Hotline: builds the server and the web app, creates a demo deployment
# on first start, and serves it. The demo is two governments' servers
# federating on loopback (scripts/governments.sh): Avalon's on
# http://127.0.0.1:8008, with the President's office, and Borduria's on
# http://127.0.0.1:8009, with the Prime Minister's; their direct line crosses
# from one server to the other. Each server has a TURN relay for calls
# (coturn, through scripts/coturn.sh local, the set-up the web tests use),
# and Avalon's records office runs its archiver (`hotline archiver`).
# Stopping (Ctrl-C) stops both servers and their relays. Flags go to both
# servers' `hotline serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hotline/target}"
source scripts/node.sh   # node and npm (the web app's build, the demo set-up), installed when missing
cargo build --release -p hotline
BIN="$CARGO_TARGET_DIR/release/hotline"
scripts/web.sh build
DATA="${HOTLINE_DATA_DIR:-$PWD/data}"
DEMO_PW="hotline-demo"
export GOV_A_LISTEN="${HOTLINE_LISTEN:-${GOV_A_LISTEN:-127.0.0.1:8008}}"
HOTLINE_DEMO_ARCHIVER=1 HOTLINE_BIN="$BIN" scripts/governments.sh init "$DATA"
if [ ! -f "$DATA/demo-officials" ]; then
  echo "Creating the demo deployment in $DATA"
  HOTLINE_BIN="$BIN" scripts/governments.sh demo "$DATA" "$DEMO_PW"
fi
setting() { sed -n "s/^$2 = \"\(.*\)\"\$/\1/p" "$DATA/$1/hotline.toml" | head -n1; }
A_URL="http://$(setting avalon listen)"; B_URL="http://$(setting borduria listen)"
A_NAME="$(setting avalon server_name)"; B_NAME="$(setting borduria server_name)"
A_CFG="$DATA/avalon/hotline.toml"
cat <<MSG

  Hotline is starting: two governments' servers, federating with each other.
    Avalon    $A_URL   (server name $A_NAME: the President's office)
    Borduria  $B_URL   (server name $B_NAME: the Prime Minister's office)
  Open each in its own browser window (or a private one) to sign in as both sides.

  Demo accounts on Avalon (password: $DEMO_PW): @alice:$A_NAME  @bob:$A_NAME  @carol:$A_NAME
  Registration token for new accounts on Avalon: $(cat "$DATA/demo-registration-token")

  Demo officials, each vouched for by their own government's office (server,
  user, password, recovery key: the web app asks for it after sign-in, to
  unlock the official's keys):
$(sed 's/^/    /' "$DATA/demo-officials" 2>/dev/null)
  President Castell (Avalon) and Prime Minister Varga (Borduria) have a
  direct line across the two servers, with the President's aide Lea Moreau
  on it, brought on by Avalon's protocol office (which can take her off and
  bring her back while the servers run:
   $BIN --config $A_CFG admin line-aide remove aide.avalon --with @pm.borduria:$B_NAME
   $BIN --config $A_CFG admin line-aide add aide.avalon --with @pm.borduria:$B_NAME).
  Chancellor Kovic has no line yet: sign in
  as her, open "Line invites", and share one.
  An envoy's enrolment is pending: $(cat "$DATA/demo-enrolment-link")
  (after it, the office compares the 12 groups of 5 digits the envoy's device shows with
   $BIN --config $A_CFG admin show-key envoy.syldavia
   and vouches, typing them: $BIN --config $A_CFG admin vouch envoy.syldavia --master-key 'DIGITS')

  Avalon's official lines are recorded by its records office's archiver
  (a Matrix client of its own, shown on the line) into $DATA/avalon/archive,
  encrypted to the office's key. The office exports and verifies a line:
   $BIN records export --archive $DATA/avalon/archive --line ROOM_ID \\
     --key $DATA/avalon/records-office/records-office.key --out /tmp/line-record
   $BIN records verify /tmp/line-record

  Any Matrix client works: homeserver $A_URL or $B_URL

MSG
exec env HOTLINE_BIN="$BIN" scripts/governments.sh serve "$DATA" --web-dir web/dist "$@"
