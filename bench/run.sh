#!/usr/bin/env bash
# Side-by-side benchmark: Synapse (reference, from PyPI) and Hotline on
# loopback, driven by the same hotline-loadgen workload. Prints a markdown
# table for BENCHMARKS.md and keeps raw results in bench/results/.
#
#   bench/run.sh                      both servers, 40 DM pairs, 20 s window
#   SIDES=synapse bench/run.sh        one side only (also: SIDES=hotline)
#   SIDES="synapse-pg hotline-pg hotline-pg2 hotline" bench/run.sh
#                                     both servers on PostgreSQL, side by side
#                                     with Hotline on SQLite (see "Sides")
#   bench/run.sh table DIR_A [DIR_B]  re-render a table: Synapse from DIR_A,
#                                     Hotline from DIR_B (default DIR_A); a
#                                     DIR alone with -pg sides: all its sides
#   PAIRS=10 DURATION=10 bench/run.sh
#   WORKLOAD=keys bench/run.sh        E2EE keys: /keys/query, /keys/claim and
#                                     to-device fan-out over 1,000 devices
#   WORKLOAD=roomlist bench/run.sh  a user in 500 rooms: time to the first room
#                                     list over Simplified Sliding Sync (MSC4186),
#                                     as matrix-rust-sdk's RoomListService asks it
#                                     (bench/loadgen/src/roomlist.rs)
#   WORKLOAD=scale SIDES="hotline hotline-pg" bench/run.sh
#                                     a store seeded with 10,000 users, 2,000
#                                     rooms and up to 10^6 messages: initial
#                                     and incremental /sync, deep /messages,
#                                     bytes on disk, at each checkpoint
#
# Environment (defaults in brackets):
#   PAIRS [40] WARMUP [5] DURATION [20] INFLIGHT [1]  workload (closed loop)
#   RATE []                      open loop at this total msg/s instead
#   WORKLOAD [dm]                dm, keys, roomlist or scale
#   ROOMLIST_ROOMS [500] ROOMLIST_SAMPLES [10]  roomlist workload
#   KEYS_USERS [100] KEYS_DEVICES [10]  keys workload: users x devices each
#   SCALE_USERS [10000] SCALE_ROOMS [2000] SCALE_MEMBERS [5]
#   SCALE_PROBE_ROOMS [200] SCALE_CHECKPOINTS [10000,100000,1000000]
#   SCALE_CONCURRENCY [32] SCALE_SETTLE [0]  scale workload
#                                (bench/loadgen/src/scale.rs)
#   LOADGEN_THREADS [1]          generator runtime threads
#   SIDES ["synapse hotline"]    which servers, in order (see "Sides")
#   SYNAPSE_PORT [18008] HOTLINE_PORT [18448]  (hotline-pg2's second
#                                process: HOTLINE_PORT + 1)
#   PG_PORT [18543]              the PostgreSQL cluster of the -pg sides
#   BENCH_DATA_ROOT [mktemp under /tmp]  server data; same filesystem for both,
#                                since both must fsync acknowledged writes
#   SKIP_BUILD [0]               use the binaries already built
#   WAIT_QUIET [1]               wait (up to QUIET_MAX [600] s) for other CPU
#                                use to drop below QUIET_PCT [25]% of a core
#   CARGO_TARGET_DIR [$HOME/.cache/hotline/target]
#   HOTLINE_BIN [$CARGO_TARGET_DIR/release/hotline]  server binary to run as "hotline"
#   LOADGEN_BIN [$CARGO_TARGET_DIR/release/hotline-loadgen]  generator binary
#   HOTLINE_TOML [""]            extra top-level hotline.toml lines, for
#                                experiments (durability = "normal")
#
# Sides (each on a fresh server and, for PostgreSQL, a fresh database):
#   synapse      Synapse on SQLite (synchronous=FULL)
#   synapse-pg   Synapse on PostgreSQL (psycopg2, pool of 5-10 connections)
#   hotline      Hotline on SQLite, durability = "full"
#   hotline-pg   Hotline on PostgreSQL, one `hotline serve` process
#   hotline-pg2  Hotline on PostgreSQL, two `hotline serve` processes on one
#                database and one data directory; each pair's sender talks to
#                one process and its receiver to the other, so every message
#                crosses processes (LISTEN/NOTIFY replay)
#   hotline-fed  two Hotlines on SQLite, each its own server (named by
#                loopback address and port), federating over TLS; each pair's
#                sender is on one and its receiver on the other, so every
#                message crosses servers (and the DM is made across them)
#   synapse-fed  the same with two Synapses
# The -pg sides share one PostgreSQL cluster the script starts
# (scripts/postgres.sh, in BENCH_DATA_ROOT/pg, on PG_PORT) and stops at the
# end, with PostgreSQL's durable defaults: fsync and synchronous_commit on.
# The default stays the two-sided SQLite comparison of earlier entries in
# BENCHMARKS.md; with any other side the table has one row per side, with
# ratios against synapse-pg and synapse where those ran.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$HOME/.cache/hotline/target}"
PAIRS="${PAIRS:-40}"
WARMUP="${WARMUP:-5}"
DURATION="${DURATION:-20}"
INFLIGHT="${INFLIGHT:-1}"
RATE="${RATE:-}"
WORKLOAD="${WORKLOAD:-dm}"
KEYS_USERS="${KEYS_USERS:-100}"
KEYS_DEVICES="${KEYS_DEVICES:-10}"
SCALE_USERS="${SCALE_USERS:-10000}"
SCALE_ROOMS="${SCALE_ROOMS:-2000}"
SCALE_MEMBERS="${SCALE_MEMBERS:-5}"
SCALE_PROBE_ROOMS="${SCALE_PROBE_ROOMS:-200}"
SCALE_CHECKPOINTS="${SCALE_CHECKPOINTS:-10000,100000,1000000}"
SCALE_CONCURRENCY="${SCALE_CONCURRENCY:-32}"
SCALE_SETTLE="${SCALE_SETTLE:-0}"
LOADGEN_THREADS="${LOADGEN_THREADS:-1}"
SIDES="${SIDES:-synapse hotline}"
SYNAPSE_PORT="${SYNAPSE_PORT:-18008}"
HOTLINE_PORT="${HOTLINE_PORT:-18448}"
PG_PORT="${PG_PORT:-18543}"
WAIT_QUIET="${WAIT_QUIET:-1}"
QUIET_MAX="${QUIET_MAX:-600}"
QUIET_PCT="${QUIET_PCT:-25}"
DATA_ROOT="${BENCH_DATA_ROOT:-$(mktemp -d /tmp/hotline-bench.XXXXXX)}"
STAMP="$(date +%Y%m%d-%H%M%S)"
RESULTS="$ROOT/bench/results/$STAMP"
LOADGEN="${LOADGEN_BIN:-$TARGET/release/hotline-loadgen}"
HOTLINE="${HOTLINE_BIN:-$TARGET/release/hotline}"
PY="$(command -v python3)"

mkdir -p "$RESULTS" "$DATA_ROOT"
log() { echo "bench: $*" >&2; }

HOTLINE_PIDS=()
PG_URL=""
stop_hotline() {
    local pid
    for pid in "${HOTLINE_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null || true
    done
    HOTLINE_PIDS=()
}
cleanup() {
    local side
    for side in synapse synapse-pg synapse-fed0 synapse-fed1; do
        "$ROOT/scripts/synapse.sh" stop "$DATA_ROOT/$side" 2>/dev/null || true
    done
    stop_hotline
    [[ -n "$PG_URL" ]] && "$ROOT/scripts/postgres.sh" stop "$DATA_ROOT/pg"
    return 0
}
trap cleanup EXIT

build() {
    [[ "${SKIP_BUILD:-0}" == 1 ]] && return 0
    log "building hotline-loadgen (release)"
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -p hotline-loadgen)
    if [[ " $SIDES " == *" hotline"* && -z "${HOTLINE_BIN:-}" ]]; then
        log "building hotline (release)"
        (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -p hotline)
    fi
}

# Busy CPU of the whole machine over one second, in % of one core.
machine_busy_pct() {
    "$PY" - <<'EOF'
import time
def busy():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return sum(v) - v[3] - v[4]
a = busy(); time.sleep(1); b = busy()
import os
print(int((b - a) * 100 / os.sysconf("SC_CLK_TCK")))
EOF
}

# Two cores are shared with builds and tests; a benchmark taken while a
# compiler runs measures the compiler. Wait for a quiet machine (three quiet
# seconds in a row: builds pause between crates), bounded.
wait_quiet() {
    [[ "$WAIT_QUIET" == 1 ]] || return 0
    local deadline=$((SECONDS + QUIET_MAX)) busy quiet=0
    while :; do
        busy="$(machine_busy_pct)"
        if ((busy < QUIET_PCT)); then
            quiet=$((quiet + 1))
            ((quiet >= 3)) && return 0
            continue
        fi
        quiet=0
        if ((SECONDS >= deadline)); then
            log "machine still busy (${busy}% of a core) after ${QUIET_MAX}s; measuring anyway"
            return 0
        fi
        log "machine busy (${busy}% of a core), waiting"
        sleep 10
    done
}

wait_versions() {
    local port="$1" pid="$2" deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || return 1
        curl -sf "http://127.0.0.1:$port/_matrix/client/versions" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

# loadgen SIDE URLS PIDS [DB_PID] [SIZE_CMD]: URLS and PIDS comma-separated
# (several for a server run as several processes); SIZE_CMD prints the
# store's bytes on disk (scale workload).
loadgen() {
    local side="$1" urls="$2" pids="$3" db_pid="${4:-}" size_cmd="${5:-}"
    local work max_runtime=1200
    if [[ "$WORKLOAD" == keys ]]; then
        work=(keys --users "$KEYS_USERS" --devices-per-user "$KEYS_DEVICES")
    elif [[ "$WORKLOAD" == roomlist ]]; then
        work=(roomlist --rooms "${ROOMLIST_ROOMS:-500}" --samples "${ROOMLIST_SAMPLES:-10}")
    elif [[ "$WORKLOAD" == scale ]]; then
        work=(scale --users "$SCALE_USERS" --rooms "$SCALE_ROOMS" --members "$SCALE_MEMBERS"
            --probe-rooms "$SCALE_PROBE_ROOMS" --checkpoints "$SCALE_CHECKPOINTS"
            --concurrency "$SCALE_CONCURRENCY" --settle "$SCALE_SETTLE" --size-cmd "$size_cmd")
        max_runtime=21600
    else
        work=(dm --pairs "$PAIRS" --warmup "$WARMUP" --duration "$DURATION" --inflight "$INFLIGHT")
        [[ -n "$RATE" ]] && work+=(--rate "$RATE")
    fi
    local cmd=("$LOADGEN" --base-url "$urls" --label "$side" --server-pid "$pids"
        ${db_pid:+--db-pid "$db_pid"} --threads "$LOADGEN_THREADS" --max-runtime "$max_runtime" "${work[@]}")
    echo "${cmd[*]}" >"$RESULTS/$side.cmd"
    log "running: ${cmd[*]}"
    "${cmd[@]}" >"$RESULTS/$side.json" 2> >(tee "$RESULTS/$side.log" >&2) || return 1
    # VmHWM is the peak since the process started: setup and load included;
    # several processes: the sum of their peaks.
    local pid kb=0
    for pid in ${pids//,/ }; do
        kb=$((kb + $(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")))
    done
    echo "$kb" >"$RESULTS/$side.peak_rss_kb"
}

# The PostgreSQL cluster of the -pg sides, started once; prints nothing.
start_pg() {
    [[ -n "$PG_URL" ]] && return 0
    # As root the cluster belongs to `postgres`, which must reach its
    # directory (mktemp makes DATA_ROOT private).
    chmod 755 "$DATA_ROOT"
    PG_URL="$("$ROOT/scripts/postgres.sh" start "$DATA_ROOT/pg" "$PG_PORT")"
    log "PostgreSQL $(psql -qtAX "$PG_URL" -c 'SHOW server_version') at $PG_URL:" \
        "fsync=$(psql -qtAX "$PG_URL" -c 'SHOW fsync')" \
        "synchronous_commit=$(psql -qtAX "$PG_URL" -c 'SHOW synchronous_commit')" \
        "wal_sync_method=$(psql -qtAX "$PG_URL" -c 'SHOW wal_sync_method')"
    psql -qtAX "$PG_URL" -c "SELECT name, setting FROM pg_settings WHERE name IN
        ('fsync','synchronous_commit','wal_sync_method','full_page_writes','shared_buffers','server_version')" \
        >"$RESULTS/postgres.settings"
}

# The command printing the bytes on disk of the store at SQLite FILE (with
# its -wal) or PostgreSQL database URL.
size_cmd() {
    if [[ "$1" == postgres://* ]]; then
        echo "psql -qtAX '$1' -c 'SELECT pg_database_size(current_database())'"
    else
        echo "du -cb --apparent-size '$1'* | tail -1 | cut -f1"
    fi
}

# A fresh database for SIDE on the cluster; prints its URL.
pg_database() {
    local db="bench_${1//-/_}"
    PGOPTIONS="-c client_min_messages=warning" psql -qtAX -v ON_ERROR_STOP=1 "$PG_URL" -c "DROP DATABASE IF EXISTS $db" >/dev/null
    # Synapse needs C collation (it checks); Hotline gets the same.
    psql -qtAX -v ON_ERROR_STOP=1 "$PG_URL" \
        -c "CREATE DATABASE $db ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' template=template0" >/dev/null
    echo "${PG_URL%/*}/$db"
}

pg_postmaster_pid() { head -1 "$DATA_ROOT/pg/postmaster.pid"; }

# run_synapse SIDE: synapse (SQLite) or synapse-pg (PostgreSQL).
run_synapse() {
    local side="$1" db_url="" db_pid=""
    if [[ "$side" == synapse-pg ]]; then
        start_pg
        db_url="$(pg_database "$side")"
        db_pid="$(pg_postmaster_pid)"
    fi
    wait_quiet
    # Password hashing only costs setup time; the keys workload logs in 1,000
    # devices, so it uses Synapse's cheapest bcrypt cost to keep setup short.
    local rounds=12
    [[ "$WORKLOAD" == keys || "$WORKLOAD" == scale || "$WORKLOAD" == roomlist ]] && rounds=4
    SYNAPSE_BCRYPT_ROUNDS="${SYNAPSE_BCRYPT_ROUNDS:-$rounds}" SYNAPSE_DATABASE="$db_url" \
        "$ROOT/scripts/synapse.sh" start "$SYNAPSE_PORT" "$DATA_ROOT/$side" >&2 || return 1
    cp "$DATA_ROOT/$side/homeserver.yaml" "$RESULTS/$side.homeserver.yaml"
    local pid rc=0; pid="$(cat "$DATA_ROOT/$side/synapse.pid")"
    loadgen "$side" "http://127.0.0.1:$SYNAPSE_PORT" "$pid" "$db_pid" \
        "$(size_cmd "${db_url:-$DATA_ROOT/$side/homeserver.db}")" || rc=$?
    "$ROOT/scripts/synapse.sh" stop "$DATA_ROOT/$side"
    return $rc
}

# run_hotline SIDE: hotline (SQLite), hotline-pg (PostgreSQL, one process)
# or hotline-pg2 (PostgreSQL, two processes on one database).
run_hotline() {
    local side="$1" procs=1 db_url="" db_pid=""
    [[ -x "$HOTLINE" ]] || { log "no $HOTLINE; skipping $side"; return 0; }
    [[ "$side" == hotline-pg2 ]] && procs=2
    if [[ "$side" == hotline-pg* ]]; then
        start_pg
        db_url="$(pg_database "$side")"
        db_pid="$(pg_postmaster_pid)"
    fi
    wait_quiet
    local dir="$DATA_ROOT/$side" toml="$DATA_ROOT/$side.toml"
    mkdir -p "$dir"
    # Same treatment as Synapse: rate limits out of the way, WARNING logs.
    # HOTLINE_TOML: extra top-level settings, for experiments (e.g.
    # durability = "normal"); the published runs leave it empty.
    printf '%s\n' "${HOTLINE_TOML:-}" >"$toml"
    [[ -n "$db_url" ]] && echo "database = \"$db_url\"" >>"$toml"
    cat >>"$toml" <<'EOF'
[rate_limits]
per_user_per_second = 1000000.0
per_user_burst = 1000000.0
per_ip_per_second = 1000000.0
per_ip_burst = 1000000.0
EOF
    cp "$toml" "$RESULTS/$side.toml"
    # The processes share the data directory (signing key, media) as a
    # deployment's would; each is started once the one before answers, so
    # the first creates the signing key and runs the migrations alone.
    local i port pid urls="" pids="" log
    for ((i = 0; i < procs; i++)); do
        port=$((HOTLINE_PORT + i))
        log="$RESULTS/$side.server$i.log"
        HOTLINE_LOG="${HOTLINE_LOG:-warn}" "$HOTLINE" serve --config "$toml" \
            --allow-registration --listen "127.0.0.1:$port" \
            --data-dir "$dir" >"$log" 2>&1 &
        pid=$!
        HOTLINE_PIDS+=("$pid")
        if ! wait_versions "$port" "$pid"; then
            log "$side did not answer /versions on $port; see $log"
            tail -20 "$log" >&2 || true
            stop_hotline
            return 1
        fi
        urls+="${urls:+,}http://127.0.0.1:$port"
        pids+="${pids:+,}$pid"
    done
    local rc=0
    loadgen "$side" "$urls" "$pids" "$db_pid" "$(size_cmd "${db_url:-$dir/hotline.db}")" || rc=$?
    stop_hotline
    return $rc
}

# A CA and one certificate for 127.0.0.1 (both servers of a -fed side are
# on loopback), made once with openssl; prints the directory.
fed_certs() {
    local tls="$DATA_ROOT/tls"
    if [[ ! -s "$tls/server.pem" ]]; then
        mkdir -p "$tls"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout "$tls/ca.key" -out "$tls/ca.pem" -days 2 -subj "/CN=bench CA" 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout "$tls/server.sec1.key" -out "$tls/server.csr" -subj "/CN=127.0.0.1" 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$tls/ext.cnf"
        openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
            -CAcreateserial -out "$tls/server.pem" -days 2 -extfile "$tls/ext.cnf" 2>/dev/null
        openssl pkcs8 -topk8 -nocrypt -in "$tls/server.sec1.key" -out "$tls/server.key"
    fi
    echo "$tls"
}

# run_hotline_fed SIDE: two Hotlines federating (see "Sides").
run_hotline_fed() {
    local side="$1" tls i port fport peer dir toml log pid urls="" pids=""
    [[ -x "$HOTLINE" ]] || { log "no $HOTLINE; skipping $side"; return 0; }
    tls="$(fed_certs)"
    wait_quiet
    for i in 0 1; do
        port=$((HOTLINE_PORT + i)) fport=$((HOTLINE_PORT + 10 + i)) peer=$((HOTLINE_PORT + 11 - i))
        dir="$DATA_ROOT/$side$i" toml="$DATA_ROOT/$side$i.toml" log="$RESULTS/$side.server$i.log"
        mkdir -p "$dir"
        {
            echo "server_name = \"127.0.0.1:$fport\""
            printf '%s\n' "${HOTLINE_TOML:-}"
            cat <<EOF
[rate_limits]
per_user_per_second = 1000000.0
per_user_burst = 1000000.0
per_ip_per_second = 1000000.0
per_ip_burst = 1000000.0
[federation]
enabled = true
listen = "127.0.0.1:$fport"
tls_certificate = "$tls/server.pem"
tls_private_key = "$tls/server.key"
ca_file = "$tls/ca.pem"
allow = ["127.0.0.1:$peer"]
EOF
        } >"$toml"
        cp "$toml" "$RESULTS/$side$i.toml"
        HOTLINE_LOG="${HOTLINE_LOG:-warn}" "$HOTLINE" serve --config "$toml" \
            --allow-registration --listen "127.0.0.1:$port" \
            --data-dir "$dir" >"$log" 2>&1 &
        pid=$!
        HOTLINE_PIDS+=("$pid")
        if ! wait_versions "$port" "$pid"; then
            log "$side did not answer /versions on $port; see $log"
            stop_hotline
            return 1
        fi
        urls+="${urls:+,}http://127.0.0.1:$port"
        pids+="${pids:+,}$pid"
    done
    local rc=0
    loadgen "$side" "$urls" "$pids" "" "$(size_cmd "$DATA_ROOT/${side}0/hotline.db")" || rc=$?
    stop_hotline
    return $rc
}

# run_synapse_fed SIDE: two Synapses federating (see "Sides").
run_synapse_fed() {
    local side="$1" tls i port fport peer urls="" pids="" rc=0
    tls="$(fed_certs)"
    wait_quiet
    for i in 0 1; do
        port=$((SYNAPSE_PORT + i)) fport=$((SYNAPSE_PORT + 10 + i)) peer=$((SYNAPSE_PORT + 11 - i))
        SYNAPSE_FEDERATION_PORT="$fport" SYNAPSE_PEERS="127.0.0.1:$peer" \
            SYNAPSE_TLS_CERT="$tls/server.pem" SYNAPSE_TLS_KEY="$tls/server.key" \
            SYNAPSE_CA_FILE="$tls/ca.pem" SYNAPSE_BCRYPT_ROUNDS="${SYNAPSE_BCRYPT_ROUNDS:-12}" \
            "$ROOT/scripts/synapse.sh" start "$port" "$DATA_ROOT/$side$i" >&2 || return 1
        cp "$DATA_ROOT/$side$i/homeserver.yaml" "$RESULTS/$side$i.homeserver.yaml"
        urls+="${urls:+,}http://127.0.0.1:$port"
        pids+="${pids:+,}$(cat "$DATA_ROOT/$side$i/synapse.pid")"
    done
    loadgen "$side" "$urls" "$pids" "" "$(size_cmd "$DATA_ROOT/${side}0/homeserver.db")" || rc=$?
    for i in 0 1; do "$ROOT/scripts/synapse.sh" stop "$DATA_ROOT/$side$i"; done
    return $rc
}

# table SYNAPSE_DIR HOTLINE_DIR LABEL: render results (the two sides may come
# from different runs, e.g. each taken when the machine was quiet).
table() {
    "$PY" - "$1" "$2" "$3" <<'EOF'
import json, os, sys
dirs, stamp = {"synapse": sys.argv[1], "hotline": sys.argv[2]}, sys.argv[3]
def load(side):
    res = dirs[side]
    p = os.path.join(res, side + ".json")
    if not os.path.exists(p) or os.path.getsize(p) == 0:
        return None
    v = json.load(open(p))
    rss = os.path.join(res, side + ".peak_rss_kb")
    if os.path.exists(rss) and open(rss).read().strip():
        v["peak_rss_kb"] = int(open(rss).read().strip())
    return v
s, h = load("synapse"), load("hotline")
any_ = s or h
if not any_:
    sys.exit("no results")
KEYS = any_["mode"] == "keys"
def get(v, *path):
    for k in path:
        if v is None: return None
        v = v.get(k) if isinstance(v, dict) else None
    return v
rows_keys = [
    ("`/keys/query` p50 (ms)", ("query", "latency_ms", "p50"), "{:,.2f}"),
    ("`/keys/query` p99 (ms)", ("query", "latency_ms", "p99"), "{:,.2f}"),
    ("`/keys/claim` p50 (ms)", ("claim", "latency_ms", "p50"), "{:,.2f}"),
    ("`/keys/claim` p99 (ms)", ("claim", "latency_ms", "p99"), "{:,.2f}"),
    ("to-device: send acked p50 (ms)", ("fanout", "send_ack_ms", "p50"), "{:,.2f}"),
    ("to-device: per-device delivery p50 (ms)", ("fanout", "per_device_delivery_ms", "p50"), "{:,.2f}"),
    ("to-device: per-device delivery p99 (ms)", ("fanout", "per_device_delivery_ms", "p99"), "{:,.2f}"),
    ("to-device: all devices reached p50 (ms)", ("fanout", "all_devices_delivered_ms", "p50"), "{:,.2f}"),
    ("peak RSS of server (MB)", ("peak_rss_kb",), "{:,.1f}"),
    ("generator CPU (% of one core)", ("generator", "cpu_core_pct"), "{:,.1f}"),
    ("other processes' CPU (% of one core)", ("other_cpu_core_pct",), "{:,.1f}"),
    ("devices returned by query / keys per claim / missing to-device", None, None),
]
rows = [
    ("delivered messages/s", ("delivered_per_s",), "{:,.1f}"),
    ("send → delivery p50 (ms)", ("latency_ms", "p50"), "{:,.2f}"),
    ("send → delivery p99 (ms)", ("latency_ms", "p99"), "{:,.2f}"),
    ("peak RSS of server (MB)", ("peak_rss_kb",), "{:,.1f}"),
    ("server CPU (% of one core)", ("server", "cpu_core_pct"), "{:,.1f}"),
    ("generator CPU (% of one core)", ("generator", "cpu_core_pct"), "{:,.1f}"),
    ("other processes' CPU (% of one core)", ("other_cpu_core_pct",), "{:,.1f}"),
    ("disk writes in window, not by the server (MB)", ("other_written_mb",), "{:,.1f}"),
    ("messages sent / acked / delivered in window", None, None),
    ("lost (acked, never delivered) / errors", None, None),
]
def cell(v, path, fmt):
    x = get(v, *path)
    if x is None: return "—"
    if path == ("peak_rss_kb",): x = x / 1024
    return fmt.format(x)
def ratio(path):
    a, b = get(s, *path), get(h, *path)
    if not a or b is None: return "—"
    r = b / a
    if r >= 10: return f"{r:,.0f}×"
    if r >= 0.1: return f"{r:,.2f}×"
    return f"{r:.2g}× ({1 / r:,.0f}× lower)" if r > 0 else "0×"
if KEYS:
    rows = rows_keys
    print(f"Run {stamp}: keys workload, {any_['devices']} devices ({any_['users']} users × {any_['devices_per_user']}) sharing a room with the querying user, loopback, {os.cpu_count()} cores.\n")
else:
  print(f"Run {stamp}: {any_['pairs']} DM pairs, {any_['load']}, {any_['warmup_s']} s warm-up, {any_['window_s']:.0f} s window, loopback, {os.cpu_count()} cores.\n")
print("| measure | Synapse | Hotline | Hotline / Synapse |")
print("| --- | ---: | ---: | ---: |")
for name, path, fmt in rows:
    if path is None:
        if name.startswith("devices"):
            f = lambda v: "—" if v is None else f"{get(v,'query','devices_returned')} / {get(v,'claim','keys_per_claim_min')} / {get(v,'fanout','missing_deliveries')}"
        elif name.startswith("messages"):
            f = lambda v: "—" if v is None else f"{v['sent']} / {v['acked']} / {v['delivered']}"
        else:
            f = lambda v: "—" if v is None else f"{v['lost']} / {sum(v['errors'].values())}"
        print(f"| {name} | {f(s)} | {f(h)} | |")
    elif path[0] in ("generator", "other_cpu_core_pct", "server", "other_written_mb"):
        print(f"| {name} | {cell(s, path, fmt)} | {cell(h, path, fmt)} | |")
    else:
        print(f"| {name} | {cell(s, path, fmt)} | {cell(h, path, fmt)} | {ratio(path)} |")
for side, v in (("Synapse", s), ("Hotline", h)):
    if v and v["generator"]["saturated"]:
        print(f"\n**Generator saturated during the {side} run: its numbers are a floor.**")
    if v and (v.get("other_cpu_core_pct") or 0) > 25:
        print(f"\n**Machine not quiet during the {side} run ({v['other_cpu_core_pct']}% of a core used by other processes).**")
EOF
}

# table_sides DIR LABEL SIDE...: one row per side, ratios against Synapse on
# PostgreSQL and on SQLite where those ran.
table_sides() {
    "$PY" - "$@" <<'EOF'
import json, os, sys
res, stamp, sides = sys.argv[1], sys.argv[2], sys.argv[3:]
def load(side):
    p = os.path.join(res, side + ".json")
    if not os.path.exists(p) or os.path.getsize(p) == 0:
        return None
    v = json.load(open(p))
    rss = os.path.join(res, side + ".peak_rss_kb")
    if os.path.exists(rss) and open(rss).read().strip():
        v["peak_rss_kb"] = int(open(rss).read().strip())
    return v
data = {s: load(s) for s in sides}
any_ = next((v for v in data.values() if v), None)
if not any_:
    sys.exit("no results")
names = {
    "synapse": "Synapse, SQLite",
    "synapse-pg": "Synapse, PostgreSQL",
    "hotline": "Hotline, SQLite",
    "hotline-pg": "Hotline, PostgreSQL, 1 process",
    "hotline-pg2": "Hotline, PostgreSQL, 2 processes",
    "hotline-fed": "Hotline ↔ Hotline, federated, SQLite",
    "synapse-fed": "Synapse ↔ Synapse, federated, SQLite",
}
def g(v, *path):
    for k in path:
        if not isinstance(v, dict): return None
        v = v.get(k)
    return v
def ratio(x, ref, lower_better):
    if x is None or not ref: return "—"
    r = (ref / x if x else 0) if lower_better else x / ref
    return f"{r:,.0f}×" if r >= 10 else f"{r:,.2f}×"
refs = [(s, names[s]) for s in ("synapse-fed", "synapse-pg", "synapse") if data.get(s)]
print(f"Run {stamp}: {any_['pairs']} DM pairs, {any_['load']}, {any_['warmup_s']} s warm-up, {any_['window_s']:.0f} s window, loopback, {os.cpu_count()} cores.\n")
head = ["side", "delivered msg/s", "p50 (ms)", "p99 (ms)"]
for _, n in refs:
    head += [f"msg/s vs {n}", f"p50 vs {n} (× lower)"]
head += ["server CPU (% core)", "PostgreSQL CPU (% core)", "other CPU (% core)", "peak RSS (MB)", "lost / errors"]
print("| " + " | ".join(head) + " |")
print("| --- |" + " ---: |" * (len(head) - 1))
for side in sides:
    v = data[side]
    if not v:
        print(f"| {names[side]} | failed |" + " |" * (len(head) - 2))
        continue
    tput, p50, p99 = v["delivered_per_s"], g(v, "latency_ms", "p50"), g(v, "latency_ms", "p99")
    f = lambda x, fmt: "—" if x is None else fmt.format(x)
    row = [names[side], f(tput, "{:,.1f}"), f(p50, "{:,.2f}"), f(p99, "{:,.2f}")]
    for ref, _ in refs:
        if ref == side:
            row += ["1×", "1×"]
        else:
            r = data[ref]
            row += [ratio(tput, r["delivered_per_s"], False), ratio(p50, g(r, "latency_ms", "p50"), True)]
    rss = v.get("peak_rss_kb")
    row += [f(g(v, "server", "cpu_core_pct"), "{:,.1f}"), f(g(v, "database", "cpu_core_pct"), "{:,.1f}"),
            f(v.get("other_cpu_core_pct"), "{:,.1f}"), "—" if rss is None else f"{rss / 1024:,.1f}",
            f"{v['lost']} / {sum(v['errors'].values())}"]
    print("| " + " | ".join(row) + " |")
for side in sides:
    v = data[side]
    if v and v["generator"]["saturated"]:
        print(f"\n**Generator saturated during the {side} run: its numbers are a floor.**")
    if v and (v.get("other_cpu_core_pct") or 0) > 25:
        print(f"\n**Machine not quiet during the {side} run ({v['other_cpu_core_pct']}% of a core used by other processes).**")
EOF
}

# table_scale DIR LABEL SIDE...: one row per side and checkpoint.
table_scale() {
    "$PY" - "$@" <<'EOF'
import json, os, sys
res, stamp, sides = sys.argv[1], sys.argv[2], sys.argv[3:]
names = {"synapse": "Synapse, SQLite", "synapse-pg": "Synapse, PostgreSQL",
         "hotline": "Hotline, SQLite", "hotline-pg": "Hotline, PostgreSQL",
         "hotline-pg2": "Hotline, PostgreSQL, 2 processes"}
data = {}
for side in sides:
    p = os.path.join(res, side + ".json")
    if os.path.exists(p) and os.path.getsize(p):
        data[side] = json.load(open(p))
if not data:
    sys.exit("no results")
v0 = next(iter(data.values()))
print(f"Run {stamp}: {v0['users']:,} users, {v0['rooms']:,} rooms of {v0['members_per_room']} members, "
      f"the probe user in {v0['probe_rooms']} of them, {v0['deep_pct']}% of messages to the deep room; loopback, {os.cpu_count()} cores.\n")
head = ["side", "messages", "seed msg/s", "initial /sync (ms, median of 3)", "first initial /sync (ms)",
        "incremental /sync p50 (ms)", "incremental, nothing new p50 (ms)", "/messages first pages p50 (ms)",
        "/messages deepest pages p50 (ms)", "events paged", "store (MB)", "bytes per message added"]
print("| " + " | ".join(head) + " |")
print("| --- |" + " ---: |" * (len(head) - 1))
f = lambda x, fmt: "—" if x is None else fmt.format(x)
for side in sides:
    v = data.get(side)
    if not v:
        print(f"| {names[side]} | failed |" + " |" * (len(head) - 2))
        continue
    for p in v["checkpoints"]:
        print("| " + " | ".join([names[side], f"{p['messages']:,}", f(p.get("seed_msgs_per_s"), "{:,.0f}"),
            f(p["initial_sync_median_ms"], "{:,.1f}"), f(p["initial_sync_first_ms"], "{:,.1f}"),
            f(p["incremental_sync_p50_ms"], "{:,.2f}"), f(p["empty_sync_p50_ms"], "{:,.2f}"),
            f(p["messages_first_pages_p50_ms"], "{:,.2f}"), f(p["messages_deepest_pages_p50_ms"], "{:,.2f}"),
            f"{p['messages_events']:,}", f(p.get("store_bytes") and p["store_bytes"] / 1e6, "{:,.1f}"),
            f(p.get("bytes_per_message_added"), "{:,.0f}")]) + " |")
EOF
}

table_roomlist() {
    "$PY" - "$@" <<'EOF'
import json, os, sys
res, stamp, sides = sys.argv[1], sys.argv[2], sys.argv[3:]
names = {"synapse": "Synapse, SQLite", "synapse-pg": "Synapse, PostgreSQL",
         "hotline": "Hotline, SQLite", "hotline-pg": "Hotline, PostgreSQL"}
def load(s):
    p = os.path.join(res, s + ".json")
    return json.load(open(p)) if os.path.exists(p) and os.path.getsize(p) else None
data = {s: load(s) for s in sides if load(s)}
if not data:
    sys.exit("no results")
v0 = next(iter(data.values()))
print(f"Run {stamp}: one user in {v0['rooms']} rooms (one text each), {v0['samples']} samples per measure, "
      f"each on a fresh connection; loopback, {os.cpu_count()} cores.\n")
rows = [("first room list: range 0-19 (ms)", "first_room_list"),
        (f"whole room list: range 0-{v0['rooms'] - 1} (ms)", "whole_room_list"),
        ("incremental: one new text (ms)", "incremental")]
shown = [s for s in sides if s in data]
head = ["measure"] + [f"{names[s]}, p50 (p95)" for s in shown]
ref = "synapse" if "synapse" in data else None
others = [s for s in shown if s != ref] if ref else []
head += [f"Synapse ÷ {names[s]}" for s in others]
print("| " + " | ".join(head) + " |")
print("| --- |" + " ---: |" * (len(head) - 1))
for label, key in rows:
    cells = [label] + [f"{data[s][key]['p50_ms']:,.1f} ({data[s][key]['p95_ms']:,.1f})" for s in shown]
    cells += [f"{data[ref][key]['p50_ms'] / data[s][key]['p50_ms']:,.1f}×" for s in others]
    print("| " + " | ".join(cells) + " |")
EOF
}

if [[ "${1:-}" == table ]]; then
    # bench/run.sh table RESULTS_DIR_FOR_SYNAPSE [RESULTS_DIR_FOR_HOTLINE]
    rmdir "$RESULTS" 2>/dev/null || true
    [[ -z "${BENCH_DATA_ROOT:-}" ]] && rmdir "$DATA_ROOT" 2>/dev/null
    found=""
    for side in synapse-pg synapse hotline-pg hotline-pg2 hotline; do
        [[ -s "$2/$side.json" ]] && found+=" $side"
    done
    if [[ -z "${3:-}" && "$found" == *-pg* ]]; then
        table_sides "$2" "$(basename "$2")" $found
    else
        table "$2" "${3:-$2}" "synapse $(basename "$2"), hotline $(basename "${3:-$2}")"
    fi
    exit 0
fi

build
for side in $SIDES; do
    case "$side" in
        synapse | synapse-pg | hotline | hotline-pg | hotline-pg2 | hotline-fed | synapse-fed) ;;
        *) log "unknown side $side" ; exit 2 ;;
    esac
done
for side in $SIDES; do
    case "$side" in
        # One side failing must not hide the other side's numbers.
        synapse-fed) run_synapse_fed "$side" || log "$side run failed" ;;
        hotline-fed) run_hotline_fed "$side" || log "$side run failed" ;;
        synapse*) run_synapse "$side" || log "$side run failed" ;;
        hotline*) run_hotline "$side" || log "$side run failed" ;;
    esac
done
if [[ -n "$PG_URL" ]]; then
    "$ROOT/scripts/postgres.sh" stop "$DATA_ROOT/pg"
    PG_URL=""
fi
if [[ "$WORKLOAD" == scale ]]; then
    table_scale "$RESULTS" "$STAMP" $SIDES | tee "$RESULTS/table.md"
elif [[ "$WORKLOAD" == roomlist ]]; then
    table_roomlist "$RESULTS" "$STAMP" $SIDES | tee "$RESULTS/table.md"
elif [[ "$SIDES" =~ ^(synapse|hotline|synapse\ hotline|hotline\ synapse)$ ]]; then
    table "$RESULTS" "$RESULTS" "$STAMP" | tee "$RESULTS/table.md"
else
    table_sides "$RESULTS" "$STAMP" $SIDES | tee "$RESULTS/table.md"
fi
{
    echo
    if [[ "$WORKLOAD" == scale ]]; then
        echo "Command: $(printf '%q ' env WORKLOAD=scale SCALE_USERS="$SCALE_USERS" SCALE_ROOMS="$SCALE_ROOMS" SCALE_MEMBERS="$SCALE_MEMBERS" SCALE_PROBE_ROOMS="$SCALE_PROBE_ROOMS" SCALE_CHECKPOINTS="$SCALE_CHECKPOINTS" SCALE_CONCURRENCY="$SCALE_CONCURRENCY" SCALE_SETTLE="$SCALE_SETTLE" SIDES="$SIDES" bench/run.sh)"
    elif [[ "$WORKLOAD" == roomlist ]]; then
        echo "Command: $(printf '%q ' env WORKLOAD=roomlist ROOMLIST_ROOMS="${ROOMLIST_ROOMS:-500}" ROOMLIST_SAMPLES="${ROOMLIST_SAMPLES:-10}" SIDES="$SIDES" bench/run.sh)"
    elif [[ "$WORKLOAD" == keys ]]; then
        echo "Command: $(printf '%q ' env WORKLOAD=keys KEYS_USERS="$KEYS_USERS" KEYS_DEVICES="$KEYS_DEVICES" SIDES="$SIDES" bench/run.sh)"
    else
        echo "Command: $(printf '%q ' env PAIRS="$PAIRS" WARMUP="$WARMUP" DURATION="$DURATION" INFLIGHT="$INFLIGHT" ${RATE:+RATE="$RATE"} SIDES="$SIDES" bench/run.sh)"
    fi
    echo "Synapse $("$ROOT/bench/.venv/bin/python" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null || echo '?'), $("$ROOT/bench/.venv/bin/python" --version 2>&1); data on $(df --output=source,fstype "$DATA_ROOT" | tail -1 | tr -s ' ')."
    if [[ -s "$RESULTS/postgres.settings" ]]; then
        echo "PostgreSQL: $(tr '|\n' '= ' <"$RESULTS/postgres.settings")"
    fi
    echo "Raw results: bench/results/$STAMP/"
} | tee -a "$RESULTS/table.md"
ln -sfn "$STAMP" "$ROOT/bench/results/latest"
[[ -z "${BENCH_DATA_ROOT:-}" ]] && rm -rf "$DATA_ROOT"
exit 0
