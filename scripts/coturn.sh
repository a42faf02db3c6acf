#!/usr/bin/env bash
# TURN relay for Hotline calls: coturn (Debian package `coturn`) configured
# by the server itself with a shared secret (TURN REST API), so `hotline
# serve` hands out time-limited credentials at /voip/turnServer.
#
#   scripts/coturn.sh start DATA_DIR [LISTEN [TURN-CONFIG FLAGS...]]
#                                               write the config and start coturn (idempotent);
#                                               extra flags go to `hotline turn-config`
#                                               (`local` passes --allow-loopback-peers)
#   scripts/coturn.sh local DATA_DIR [PORT]     the one-machine set-up that scripts/run.sh's demo and
#                                               scripts/web.sh test both use: `start` on 127.0.0.1:PORT
#                                               (default: the port it already runs on for DATA_DIR,
#                                               else 3478 when free, else a free port), relaying
#                                               between loopback peers; prints the TURN address
#   scripts/coturn.sh stop DATA_DIR             stop the coturn started for DATA_DIR
#   scripts/coturn.sh status DATA_DIR
#
# LISTEN defaults to 127.0.0.1:3478 (HOTLINE_TURN_LISTEN). The config, pid
# file and log live in DATA_DIR/turn/. Runs `hotline --data-dir DATA_DIR
# turn-config --out FILE --listen LISTEN`, which writes coturn's config
# (use-auth-secret, static-auth-secret, realm, ports, relay range) and stores
# the secret and TURN URIs in the server's database.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hotline/target}"
BIN="${HOTLINE_BIN:-$TARGET/release/hotline}"

die() { echo "coturn.sh: $*" >&2; exit 1; }

running() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  [[ $# -ge 1 ]] || die "usage: coturn.sh start DATA_DIR [LISTEN]"
  mkdir -p "$1"
  local data; data="$(cd "$1" && pwd)"
  local listen="${2:-${HOTLINE_TURN_LISTEN:-127.0.0.1:3478}}"
  local extra=("${@:3}")
  local dir="$data/turn" conf="$data/turn/turnserver.conf" pid="$data/turn/turnserver.pid"
  mkdir -p "$dir"
  command -v turnserver >/dev/null || "$ROOT/scripts/deps.sh" coturn
  [[ -x "$BIN" ]] || die "no hotline binary at $BIN (build it with cargo build --release -p hotline, or set HOTLINE_BIN)"
  "$BIN" turn-config --help >/dev/null 2>&1 || die "this hotline build has no 'turn-config' command yet"
  local before=""; [[ -f "$conf" ]] && before="$(md5sum <"$conf")"
  "$BIN" --data-dir "$data" turn-config --out "$conf.new" --listen "$listen" "${extra[@]}" >/dev/null
  mv "$conf.new" "$conf"
  if running "$pid"; then
    if [[ "$before" == "$(md5sum <"$conf")" ]]; then
      echo "coturn already running (pid $(cat "$pid")) on $listen"
      return 0
    fi
    stop "$data"
  fi
  # coturn daemonises itself with -o and writes its own pid file.
  turnserver -c "$conf" -o --pidfile "$pid" --log-file "$dir/turnserver.log" --simple-log --no-stdout-log \
    >"$dir/stdout.log" 2>&1 </dev/null || die "turnserver failed to start; see $dir/stdout.log"
  for _ in $(seq 1 50); do running "$pid" && break; sleep 0.1; done
  running "$pid" || die "turnserver did not start; see $dir/turnserver.log"
  echo "coturn running (pid $(cat "$pid")) on $listen, config $conf"
}

# Both TCP and UDP PORT free on 127.0.0.1 (coturn listens on both).
port_free() {
  python3 - "$1" <<'PY' 2>/dev/null
import socket, sys
for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.close()
PY
}

free_port() {
  local p
  for _ in $(seq 1 20); do
    p="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    port_free "$p" && { echo "$p"; return 0; }
  done
  return 1
}

# The demo and the tests run both browsers on this machine, so relayed
# candidates are loopback addresses and coturn must relay between loopback
# peers; that is safe here because coturn only listens on 127.0.0.1, so only
# local programs can use it.
local_() {
  [[ $# -ge 1 && $# -le 2 ]] || die "usage: coturn.sh local DATA_DIR [PORT]"
  mkdir -p "$1"
  local data; data="$(cd "$1" && pwd)"
  local port="${2:-}" conf="$data/turn/turnserver.conf"
  if [[ -z "$port" ]] && running "$data/turn/turnserver.pid" && [[ -f "$conf" ]]; then
    port="$(sed -n 's/^listening-port=//p' "$conf")"
  fi
  if [[ -z "$port" ]]; then
    if ! command -v python3 >/dev/null || port_free 3478; then port=3478; else port="$(free_port)" || die "no free port for coturn"; fi
  fi
  start "$data" "127.0.0.1:$port" --allow-loopback-peers >&2
  echo "127.0.0.1:$port"
}

stop() {
  [[ $# -eq 1 ]] || die "usage: coturn.sh stop DATA_DIR"
  local pid="$1/turn/turnserver.pid"
  if running "$pid"; then
    local p; p="$(cat "$pid")"
    kill -TERM "$p"
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p"
  fi
  rm -f "$pid"
}

status() {
  [[ $# -eq 1 ]] || die "usage: coturn.sh status DATA_DIR"
  if running "$1/turn/turnserver.pid"; then echo "running (pid $(cat "$1/turn/turnserver.pid"))"; else echo "stopped"; return 1; fi
}

case "${1:-}" in
  start) shift; start "$@" ;;
  local) shift; local_ "$@" ;;
  stop) shift; stop "$@" ;;
  status) shift; status "$@" ;;
  *) die "usage: coturn.sh start DATA_DIR [LISTEN] | local DATA_DIR [PORT] | stop DATA_DIR | status DATA_DIR" ;;
esac
