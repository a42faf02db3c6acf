#!/usr/bin/env bash
# Run the reference homeserver (Synapse, from PyPI) on loopback for benchmarks
# and interoperability checks.
#
#   scripts/synapse.sh start PORT DIR   install (once), configure DIR, start, wait
#   scripts/synapse.sh stop DIR         stop the server started in DIR
#   scripts/synapse.sh run PORT DIR     configure and run in the foreground
#
# Synapse is installed into bench/.venv (override with SYNAPSE_VENV). The
# version can be pinned with SYNAPSE_VERSION (default: latest on PyPI);
# SYNAPSE_BCRYPT_ROUNDS (default 12) and SYNAPSE_LOG_LEVEL (default WARNING)
# tune the generated config.
# The config uses SQLite, server_name "localhost", a client-API-only HTTP
# listener on 127.0.0.1:PORT, open registration and rate limits raised far
# beyond any benchmark so the numbers measure the server, not its throttles.
#
# SYNAPSE_FEDERATION_PORT=N federates instead of "localhost": the server is
# named 127.0.0.1:N and serves federation over TLS on that port with
# SYNAPSE_TLS_CERT and SYNAPSE_TLS_KEY (PEM), trusts SYNAPSE_CA_FILE for its
# peers, and talks only to SYNAPSE_PEERS (comma-separated server names);
# loopback addresses are let through its IP range block list.
#
# SYNAPSE_DATABASE=postgres://USER@HOST:PORT/DB puts Synapse on PostgreSQL
# instead (psycopg2, installed into the venv from PyPI as psycopg2-binary
# when missing): DB is created if it does not exist, with the encoding and
# collation Synapse requires (UTF8, C, from template0), through `psql` to
# the server's `postgres` database. SYNAPSE_DB_CP_MIN / SYNAPSE_DB_CP_MAX
# (default 5 / 10, Synapse's documented example) size its connection pool.
# The server's own durability settings apply (synchronous_commit on by
# default).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SYNAPSE_VENV:-$ROOT/bench/.venv}"
PYTHON_BIN="${PYTHON:-}"

die() { echo "synapse.sh: $*" >&2; exit 1; }

pick_python() {
    if [[ -n "$PYTHON_BIN" ]]; then echo "$PYTHON_BIN"; return; fi
    # The distribution's interpreter first: it is built with PGO/LTO, so the
    # reference server runs as fast as a packaged deployment would.
    for p in /usr/bin/python3 python3.11 python3.12 python3.13 python3; do
        if command -v "$p" >/dev/null 2>&1; then echo "$p"; return; fi
    done
    die "no python3 found"
}

# SYNAPSE_DATABASE parsed into PG_USER PG_HOST PG_PORT PG_DB (empty: SQLite).
parse_database() {
    PG_USER="" PG_HOST="" PG_PORT="" PG_DB=""
    local url="${SYNAPSE_DATABASE:-}"
    [[ -z "$url" ]] && return 0
    [[ "$url" =~ ^postgres(ql)?://([^@/]+)@([^:/]+):([0-9]+)/([A-Za-z0-9_]+)$ ]] \
        || die "SYNAPSE_DATABASE must be postgres://USER@HOST:PORT/DB, not $url"
    PG_USER="${BASH_REMATCH[2]}" PG_HOST="${BASH_REMATCH[3]}"
    PG_PORT="${BASH_REMATCH[4]}" PG_DB="${BASH_REMATCH[5]}"
}

# Synapse refuses a database whose collation is not C (its sort orders
# depend on it), so it is made from template0 with C collation.
create_pg_database() {
    local server="postgres://$PG_USER@$PG_HOST:$PG_PORT/postgres"
    command -v psql >/dev/null || die "psql not found (install postgresql-client)"
    if [[ "$(psql -qtAX "$server" -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]]; then
        psql -qtAX -v ON_ERROR_STOP=1 "$server" -c \
            "CREATE DATABASE \"$PG_DB\" ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' template=template0" >/dev/null
    fi
}

install() {
    parse_database
    install_synapse
    if [[ -n "$PG_DB" ]] && ! "$VENV/bin/python" -c 'import psycopg2' 2>/dev/null; then
        # python -m pip, not bin/pip: a copied venv's scripts still name the old path.
        "$VENV/bin/python" -m pip install -q psycopg2-binary
    fi
}

install_synapse() {
    if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import synapse' 2>/dev/null; then
        return 0
    fi
    local py; py="$(pick_python)"
    if ! "$py" -m venv "$VENV" 2>/dev/null; then
        # Debian splits venv support out of the interpreter package.
        echo "synapse.sh: python venv missing, installing python3-venv" >&2
        apt-get install -y python3-venv >/dev/null
        "$py" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q --upgrade pip
    local spec="matrix-synapse"
    [[ -n "${SYNAPSE_VERSION:-}" ]] && spec="matrix-synapse==$SYNAPSE_VERSION"
    "$VENV/bin/python" -m pip install -q "$spec"
}

# Rate limit entries: every knob Synapse has, set so high it never triggers.
rl() { printf '  per_second: 1000000\n  burst_count: 1000000\n'; }

database_config() {
    if [[ -z "$PG_DB" ]]; then
        printf 'database:\n  name: sqlite3\n  args:\n    database: "%s"\n' "$1/homeserver.db"
        return
    fi
    cat <<EOF
database:
  name: psycopg2
  args:
    user: "$PG_USER"
    host: "$PG_HOST"
    port: $PG_PORT
    database: "$PG_DB"
    cp_min: ${SYNAPSE_DB_CP_MIN:-5}
    cp_max: ${SYNAPSE_DB_CP_MAX:-10}
EOF
}

# The federation part of the config: none, or TLS, a CA and peers.
federation_config() {
    if [[ -z "${SYNAPSE_FEDERATION_PORT:-}" ]]; then
        echo "federation_domain_whitelist: []"
        return
    fi
    local peers="" p
    for p in ${SYNAPSE_PEERS//,/ }; do peers+="${peers:+, }\"$p\""; done
    cat <<EOF
federation_domain_whitelist: [$peers]
tls_certificate_path: "$SYNAPSE_TLS_CERT"
tls_private_key_path: "$SYNAPSE_TLS_KEY"
federation_custom_ca_list: ["$SYNAPSE_CA_FILE"]
federation_verify_certificates: true
ip_range_blacklist: []
federation_ip_range_blacklist: []
ip_range_whitelist: ["127.0.0.0/8"]
EOF
}

# The federation listener, when federating.
federation_listener() {
    [[ -z "${SYNAPSE_FEDERATION_PORT:-}" ]] && return 0
    cat <<EOF
  - port: $SYNAPSE_FEDERATION_PORT
    bind_addresses: ['127.0.0.1']
    type: http
    tls: true
    resources:
      - names: [federation]
        compress: false
EOF
}

write_config() {
    local port="$1" dir="$2"
    [[ -n "$PG_DB" ]] && create_pg_database
    mkdir -p "$dir/media_store"
    local secret; secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    cat >"$dir/log.config" <<EOF
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: $dir/homeserver.log
    encoding: utf8
loggers:
  synapse.storage.SQL:
    level: WARNING
root:
  # WARNING, not INFO: per-request access logging would make the reference
  # slower than a tuned deployment and flatter the comparison.
  level: ${SYNAPSE_LOG_LEVEL:-WARNING}
  handlers: [file]
disable_existing_loggers: false
EOF
    {
        local name="localhost"
        [[ -n "${SYNAPSE_FEDERATION_PORT:-}" ]] && name="127.0.0.1:$SYNAPSE_FEDERATION_PORT"
        cat <<EOF
server_name: "$name"
public_baseurl: "http://127.0.0.1:$port/"
pid_file: "$dir/homeserver.pid"
listeners:
  - port: $port
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
$(federation_listener)
$(database_config "$dir")
log_config: "$dir/log.config"
media_store_path: "$dir/media_store"
signing_key_path: "$dir/localhost.signing.key"
registration_shared_secret: "$secret"
macaroon_secret_key: "$secret"
form_secret: "$secret"
report_stats: false
enable_metrics: false
suppress_key_server_warning: true
trusted_key_servers: []
$(federation_config)
enable_registration: true
enable_registration_without_verification: true
presence:
  enabled: false
# Password hashing cost only shapes setup time (registering and logging in
# many devices), never a measured operation; lower it with
# SYNAPSE_BCRYPT_ROUNDS for benchmarks that create 1,000 devices.
bcrypt_rounds: ${SYNAPSE_BCRYPT_ROUNDS:-12}
EOF
        for k in rc_message rc_registration rc_registration_token_validity \
                 rc_admin_redaction rc_joins_per_room rc_3pid_validation \
                 rc_key_requests rc_room_creation rc_third_party_invite \
                 rc_media_create rc_reports rc_delayed_event_mgmt; do
            echo "$k:"; rl
        done
        echo "rc_login:"
        for s in address account failed_attempts; do echo "  $s:"; rl | sed 's/^/  /'; done
        echo "rc_joins:"
        for s in local remote; do echo "  $s:"; rl | sed 's/^/  /'; done
        echo "rc_invites:"
        for s in per_room per_user per_issuer; do echo "  $s:"; rl | sed 's/^/  /'; done
        echo "rc_presence:"
        echo "  per_user:"; rl | sed 's/^/  /'
        cat <<EOF
rc_federation:
  window_size: 1000
  sleep_limit: 1000000
  sleep_delay: 0
  reject_limit: 1000000
  concurrent: 1000000
EOF
    } >"$dir/homeserver.yaml"
    "$VENV/bin/python" -m synapse.app.homeserver -c "$dir/homeserver.yaml" --generate-keys >/dev/null
}

wait_ready() {
    local port="$1" pid="$2" deadline=$((SECONDS + ${SYNAPSE_START_TIMEOUT:-90}))
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || die "synapse exited during start-up; see its log"
        if "$VENV/bin/python" - "$port" <<'EOF' 2>/dev/null; then return 0; fi
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/_matrix/client/versions", timeout=1).read()
EOF
        sleep 0.3
    done
    die "synapse did not answer /versions on port $port in time"
}

start() {
    [[ $# -eq 2 ]] || die "usage: synapse.sh start PORT DIR"
    local port="$1" dir; mkdir -p "$2"; dir="$(cd "$2" && pwd)"
    if [[ -f "$dir/synapse.pid" ]] && kill -0 "$(cat "$dir/synapse.pid")" 2>/dev/null; then
        die "already running in $dir (pid $(cat "$dir/synapse.pid"))"
    fi
    install
    write_config "$port" "$dir"
    # Started directly (no daemonize, no wrapper) so the pid is the Python
    # process itself: benchmarks read its VmHWM from /proc.
    nohup "$VENV/bin/python" -m synapse.app.homeserver -c "$dir/homeserver.yaml" \
        >"$dir/stdout.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$dir/synapse.pid"
    wait_ready "$port" "$pid" || { tail -20 "$dir/stdout.log" "$dir/homeserver.log" >&2 || true; exit 1; }
    echo "synapse running: pid $pid, http://127.0.0.1:$port, dir $dir"
}

run_fg() {
    [[ $# -eq 2 ]] || die "usage: synapse.sh run PORT DIR"
    local port="$1" dir; mkdir -p "$2"; dir="$(cd "$2" && pwd)"
    install
    write_config "$port" "$dir"
    exec "$VENV/bin/python" -m synapse.app.homeserver -c "$dir/homeserver.yaml"
}

stop() {
    [[ $# -eq 1 ]] || die "usage: synapse.sh stop DIR"
    local f="$1/synapse.pid"
    [[ -f "$f" ]] || { echo "synapse.sh: no $f, nothing to stop" >&2; return 0; }
    local pid; pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$f"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    run) shift; run_fg "$@" ;;
    install) install ;;
    *) die "usage: synapse.sh start PORT DIR | stop DIR | run PORT DIR | install" ;;
esac
