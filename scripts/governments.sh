#!/usr/bin/env bash
# Two governments' Hotline servers on this machine, federating with each
# other over TLS on loopback: Avalon's (the President's office) and
# Borduria's (the Prime Minister's). scripts/run.sh's demo and the web app's
# two-server browser test (scripts/web.sh test) are both this set-up.
#
#   scripts/governments.sh init DIR      a CA of DIR's own and a certificate for each server
#                                        (openssl), and each server's configuration,
#                                        DIR/{avalon,borduria}/hotline.toml (once)
#   scripts/governments.sh demo DIR PW   the demo's accounts and officials (once): each
#                                        official enrolled on their own government's server
#                                        and vouched for by its office, and a direct line
#                                        across the two servers between the President and
#                                        the Prime Minister; writes DIR/demo-officials
#   scripts/governments.sh serve DIR [SERVE FLAGS...]
#                                        both servers (and a coturn relay each, when it
#                                        starts) in the foreground; when either stops, or on
#                                        INT/TERM/HUP, both stop. Flags go to both servers.
#
# Where each server listens is fixed by `init` from these variables:
#   GOV_A_NAME (localhost)        GOV_A_LISTEN (127.0.0.1:8008)  GOV_A_FED (127.0.0.1:8448)
#   GOV_B_NAME (localhost:8449)   GOV_B_LISTEN (127.0.0.1:8009)  GOV_B_FED (127.0.0.1:8449)
# A server name without a port is reached on 8448 (after the spec's
# .well-known and SRV look-ups, which find nothing for localhost).
# HOTLINE_BIN names the binary (default: the release build).
# HOTLINE_DEMO_ARCHIVER=1 at init gives Avalon a records office whose
# archiver (`hotline archiver`) `serve` runs beside the servers
# (scripts/run.sh's demo does).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hotline/target}"
BIN="${HOTLINE_BIN:-$TARGET/release/hotline}"
# Each server's own configuration file decides its name, ports and data
# dir: the environment's overrides of those would give both the same.
unset HOTLINE_CONFIG HOTLINE_DATA_DIR HOTLINE_LISTEN HOTLINE_SERVER_NAME HOTLINE_DATABASE
for v in $(compgen -v HOTLINE_FEDERATION__ || true); do unset "$v"; done

GOVS=(avalon borduria)
die() { echo "governments.sh: $*" >&2; exit 1; }
hl() { local gov="$1"; shift; "$BIN" --config "$DIR/$gov/hotline.toml" "$@"; }
# A setting of a government's configuration (a quoted top-level string).
setting() { sed -n "s/^$2 = \"\(.*\)\"\$/\1/p" "$DIR/$1/hotline.toml" | head -n1; }

init() {
  "$ROOT/scripts/deps.sh" openssl
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"
  local a_name="${GOV_A_NAME:-localhost}" a_listen="${GOV_A_LISTEN:-127.0.0.1:8008}" a_fed="${GOV_A_FED:-127.0.0.1:8448}"
  local b_name="${GOV_B_NAME:-localhost:8449}" b_listen="${GOV_B_LISTEN:-127.0.0.1:8009}" b_fed="${GOV_B_FED:-127.0.0.1:8449}"
  if [[ ! -f "$DIR/ca.pem" ]]; then
    # The CA's key is only needed here: it is deleted once both
    # certificates are signed, so nothing else can be issued under it.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj "/CN=Hotline demo CA ($(hostname))" -keyout "$DIR/ca.key" -out "$DIR/ca.pem" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    for gov in "${GOVS[@]}"; do
      mkdir -p "$DIR/$gov"
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
        -keyout "$DIR/$gov/tls.key" -out "$DIR/$gov/tls.csr" 2>/dev/null
      openssl x509 -req -in "$DIR/$gov/tls.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days 825 -out "$DIR/$gov/tls.crt" \
        -extfile <(printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
          "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth") 2>/dev/null
      rm -f "$DIR/$gov/tls.csr"
      chmod 600 "$DIR/$gov/tls.key"
    done
    rm -f "$DIR/ca.key"
  fi
  write_config avalon "$a_name" "$a_listen" "$a_fed" "$b_name"
  write_config borduria "$b_name" "$b_listen" "$b_fed" "$a_name"
}

write_config() {
  local gov="$1" name="$2" listen="$3" fed="$4" peer="$5" file="$DIR/$1/hotline.toml"
  [[ -f "$file" ]] && return 0
  mkdir -p "$DIR/$gov"
  cat >"$file" <<EOF
# $gov's government server of the two-government demo (scripts/governments.sh).
server_name = "$name"
listen = "$listen"
data_dir = "$DIR/$gov"

[federation]
enabled = true
listen = "$fed"
tls_certificate = "$DIR/$gov/tls.crt"
tls_private_key = "$DIR/$gov/tls.key"
ca_file = "$DIR/ca.pem"
allow = ["$peer"]
EOF
  if [[ "$gov" == avalon && "${HOTLINE_DEMO_ARCHIVER:-0}" == 1 ]]; then
    # Avalon's records office runs an archiver (`hotline archiver`, started
    # by `serve`), brought onto every official line of Avalon's principals.
    cat >>"$file" <<EOF

[records]
archiver = "@records.avalon:$name"
office = "Records office of Avalon"
EOF
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits for a server's client listener; fails if its process has exited.
wait_up() {
  local url="$1" pid="$2" log="$3"
  for _ in $(seq 1 150); do
    curl -sf "$url/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "a server exited while starting"; }
    sleep 0.1
  done
  die "a server did not answer at $url"
}

demo() {
  local pw="$1"
  [[ -f "$DIR/avalon/hotline.toml" && -f "$DIR/borduria/hotline.toml" ]] || die "run init first"
  [[ -f "$DIR/demo-officials" ]] && return 0
  local a_url="http://$(setting avalon listen)" b_url="http://$(setting borduria listen)" archiver_code=""
  for u in alice bob carol; do hl avalon admin create-user "$u" --password "$pw" >/dev/null; done
  if grep -q '^\[records\]' "$DIR/avalon/hotline.toml"; then
    # The archiver's account, enrolled by the protocol office as a recorder
    # (before the line opens, so it is brought onto it; its code is redeemed
    # with the archiver's password below), and the records office's keys:
    # the archiver keeps only the public half and its checkpoint key; the
    # secret key that opens the archive stays with the office
    # (records-office/). Once the archiver has made its identity key,
    # `serve` has the office vouch for it.
    local secret="$DIR/avalon/archiver.secret"
    (umask 077; openssl rand -hex 24 >"$secret")
    archiver_code="$(hl avalon admin enroll records.avalon --name 'Records office of Avalon' --title 'Records archiver' \
      --country Avalon --office 'Avalon Protocol Office' --role recorder --hours 720 --base-url "$a_url" | sed -n 's/^code //p')"
    "$BIN" records keygen --out "$DIR/avalon/records-keys" >/dev/null
    mkdir -p -m 700 "$DIR/avalon/records-office"
    mv "$DIR/avalon/records-keys/records-office.key" "$DIR/avalon/records-office/"
  fi
  hl avalon admin registration-token --uses 10 >"$DIR/demo-registration-token"
  # Fictional officials, each enrolled on their own government's server:
  # a one-time enrolment code from the protocol office, which
  # web/scripts/demo-officials.mjs redeems, creating the official's
  # cross-signing keys on a first device (as the web app's enrolment screen
  # does) and having the office vouch for that master key. The envoy's
  # stays pending, to try the enrolment screen with.
  enrol() {
    local gov="$1" url="$2"; shift 2
    hl "$gov" admin enroll "$@" --hours 720 --base-url "$url" | sed -n 's/^code //p'
  }
  local codes=(
    "avalon:president.avalon=$(enrol avalon "$a_url" president.avalon --name 'Maria Castell' --title President --country Avalon --office 'Avalon Protocol Office' --role principal)"
    "avalon:aide.avalon=$(enrol avalon "$a_url" aide.avalon --name 'Lea Moreau' --title 'Diplomatic Adviser' --country Avalon --office 'Avalon Protocol Office' --role aide --principal president.avalon)"
    "avalon:chancellor.syldavia=$(enrol avalon "$a_url" chancellor.syldavia --name 'Anna Kovic' --title Chancellor --country Syldavia --office 'Syldavia Federal Chancellery' --role principal)"
    "borduria:pm.borduria=$(enrol borduria "$b_url" pm.borduria --name 'Jon Varga' --title 'Prime Minister' --country Borduria --office 'Borduria Chancellery' --role principal)"
  )
  hl avalon admin enroll envoy.syldavia --name 'Tomas Hald' --title 'Special Envoy' --country Syldavia \
    --office 'Syldavia Federal Chancellery' --role aide --principal chancellor.syldavia --hours 720 --base-url "$a_url" \
    | sed -n 's/^link //p' >"$DIR/demo-enrolment-link"
  # Set-up servers: client listeners on ports of their own (nothing that
  # waits for the real ones mistakes these for them), federation on the
  # real ports, since the line crosses from one to the other.
  local pids=() args=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done' EXIT
  for gov in "${GOVS[@]}"; do
    local setup="127.0.0.1:$(free_port)"
    "$BIN" --config "$DIR/$gov/hotline.toml" serve --listen "$setup" >"$DIR/$gov/demo-setup.log" 2>&1 &
    pids+=($!)
    wait_up "http://$setup" "$!" "$DIR/$gov/demo-setup.log"
    args+=(--server "$gov,http://$setup,$DIR/$gov/hotline.toml")
    if [[ "$gov" == avalon && -n "$archiver_code" ]]; then
      # The archiver's enrolment, redeemed with its password; the session
      # it opens is closed again (the archiver signs in on its own device).
      local session
      session="$(curl -sf -X POST -H 'Content-Type: application/json' \
        -d "{\"password\": \"$(head -n1 "$DIR/avalon/archiver.secret")\"}" "http://$setup/_hotline/v1/enrol/$archiver_code")" \
        || die "redeeming the archiver's enrolment failed"
      curl -sf -X POST -H 'Content-Type: application/json' -d '{}' \
        -H "Authorization: Bearer $(python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])' <<<"$session")" \
        "http://$setup/_matrix/client/v3/logout" >/dev/null
    fi
  done
  local status=0
  (cd "$ROOT/web" && node scripts/demo-officials.mjs --bin "$BIN" "${args[@]}" --password "$pw" \
    --out "$DIR/demo-officials.new" --line president.avalon,pm.borduria \
    --line-aide president.avalon,pm.borduria:aide.avalon "${codes[@]}") || status=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  trap - EXIT
  [[ $status -eq 0 ]] || die "the demo officials could not be set up (see above; the servers' logs: $DIR/*/demo-setup.log)"
  mv "$DIR/demo-officials.new" "$DIR/demo-officials"
}

serve() {
  local pids=() turn=() gov
  for gov in "${GOVS[@]}"; do
    # A TURN relay per government (coturn on loopback: 3478 for the first
    # when free), sharing a secret stored in that server's data dir.
    if addr="$(HOTLINE_BIN="$BIN" HOTLINE_CONFIG="$DIR/$gov/hotline.toml" "$ROOT/scripts/coturn.sh" local "$DIR/$gov" 2>"$DIR/$gov/coturn.err")"; then
      turn+=("$gov")
      echo "governments: $gov's calls are relayed through coturn on $addr" >&2
    else
      echo "governments: no TURN relay for $gov (coturn did not start: $DIR/$gov/coturn.err)" >&2
    fi
  done
  stop_all() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  }
  # A background child of a script ignores SIGINT, so Ctrl-C (and TERM,
  # HUP) reach the servers through this trap, as SIGTERM (a graceful stop).
  trap stop_all INT TERM HUP
  for gov in "${GOVS[@]}"; do
    "$BIN" --config "$DIR/$gov/hotline.toml" serve "$@" &
    pids+=($!)
  done
  if [[ -f "$DIR/avalon/archiver.secret" ]]; then
    local a_url="http://$(setting avalon listen)"
    wait_up "$a_url" "${pids[0]}" /dev/null
    "$BIN" archiver --homeserver "$a_url" --user "@records.avalon:$(setting avalon server_name)" \
      --password-file "$DIR/avalon/archiver.secret" --state "$DIR/avalon/archiver" \
      --archive "$DIR/avalon/archive" --keys "$DIR/avalon/records-keys" 2>>"$DIR/avalon/archiver.log" &
    pids+=($!)
    echo "governments: Avalon's records office archives its official lines into $DIR/avalon/archive (log: $DIR/avalon/archiver.log)" >&2
    # The office vouches for the archiver's identity key once it has made
    # one (a real office compares its fingerprint, `hotline admin show-key`,
    # with the one the archiver's machine shows), so everyone's device shows
    # whose archiver it is. Once per key.
    (
      for _ in $(seq 1 240); do
        key="$(hl avalon admin show-key records.avalon 2>/dev/null | sed -n 's/^master_key //p' || true)"
        [[ -n "$key" ]] && break
        sleep 0.5
      done
      if [[ -n "$key" && "$key" != "$(cat "$DIR/avalon/archiver.vouched" 2>/dev/null)" ]]; then
        hl avalon admin vouch records.avalon --master-key "$key" >/dev/null && echo "$key" >"$DIR/avalon/archiver.vouched" \
          && echo "governments: Avalon's protocol office vouched for its archiver's identity key" >&2
      fi
    ) &
  fi
  local status=0
  wait -n "${pids[@]}" || status=$?
  stop_all
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  trap - INT TERM HUP
  for gov in "${turn[@]}"; do "$ROOT/scripts/coturn.sh" stop "$DIR/$gov" || true; done
  return "$status"
}

cmd="${1:-}"
[[ $# -ge 2 ]] || die "usage: governments.sh init DIR | demo DIR PASSWORD | serve DIR [FLAGS...]"
DIR="$2"
shift 2
case "$cmd" in
  init) init ;;
  demo) [[ $# -eq 1 ]] || die "usage: governments.sh demo DIR PASSWORD"; DIR="$(cd "$DIR" && pwd)"; demo "$1" ;;
  serve) DIR="$(cd "$DIR" && pwd)"; serve "$@" ;;
  *) die "usage: governments.sh init DIR | demo DIR PASSWORD | serve DIR [FLAGS...]" ;;
esac
