#!/usr/bin/env bash
# Side-by-side benchmark: Synapse (reference, from PyPI) and Hotline on
# loopback, driven by the same hotline-loadgen workload. Prints a markdown
# table for BENCHMARKS.md and keeps raw results in bench/results/.
#
#   bench/run.sh                      both servers, 40 DM pairs, 20 s window
#   SIDES=synapse bench/run.sh        one side only (also: SIDES=hotline)
#   bench/run.sh table DIR_A [DIR_B]  re-render a table: Synapse from DIR_A,
#                                     Hotline from DIR_B (default DIR_A)
#   PAIRS=10 DURATION=10 bench/run.sh
#   WORKLOAD=keys bench/run.sh        E2EE keys: /keys/query, /keys/claim and
#                                     to-device fan-out over 1,000 devices
#
# Environment (defaults in brackets):
#   PAIRS [40] WARMUP [5] DURATION [20] INFLIGHT [1]  workload (closed loop)
#   RATE []                      open loop at this total msg/s instead
#   WORKLOAD [dm]                dm or keys
#   KEYS_USERS [100] KEYS_DEVICES [10]  keys workload: users x devices each
#   LOADGEN_THREADS [1]          generator runtime threads
#   SIDES ["synapse hotline"]    which servers, in order
#   SYNAPSE_PORT [18008] HOTLINE_PORT [18448]
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
LOADGEN_THREADS="${LOADGEN_THREADS:-1}"
SIDES="${SIDES:-synapse hotline}"
SYNAPSE_PORT="${SYNAPSE_PORT:-18008}"
HOTLINE_PORT="${HOTLINE_PORT:-18448}"
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

HOTLINE_PID=""
cleanup() {
    "$ROOT/scripts/synapse.sh" stop "$DATA_ROOT/synapse" 2>/dev/null || true
    if [[ -n "$HOTLINE_PID" ]] && kill -0 "$HOTLINE_PID" 2>/dev/null; then
        kill -TERM "$HOTLINE_PID" 2>/dev/null || true
        wait "$HOTLINE_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT

build() {
    [[ "${SKIP_BUILD:-0}" == 1 ]] && return 0
    log "building hotline-loadgen (release)"
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -p hotline-loadgen)
    if [[ " $SIDES " == *" hotline "* && -z "${HOTLINE_BIN:-}" ]]; then
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

loadgen() {
    local side="$1" port="$2" pid="$3"
    local work
    if [[ "$WORKLOAD" == keys ]]; then
        work=(keys --users "$KEYS_USERS" --devices-per-user "$KEYS_DEVICES")
    else
        work=(dm --pairs "$PAIRS" --warmup "$WARMUP" --duration "$DURATION" --inflight "$INFLIGHT")
        [[ -n "$RATE" ]] && work+=(--rate "$RATE")
    fi
    local cmd=("$LOADGEN" --base-url "http://127.0.0.1:$port" --label "$side" --server-pid "$pid"
        --threads "$LOADGEN_THREADS" --max-runtime 1200 "${work[@]}")
    echo "${cmd[*]}" >"$RESULTS/$side.cmd"
    log "running: ${cmd[*]}"
    "${cmd[@]}" >"$RESULTS/$side.json" 2> >(tee "$RESULTS/$side.log" >&2) || return 1
    # VmHWM is the peak since the process started: setup and load included.
    grep VmHWM "/proc/$pid/status" | awk '{print $2}' >"$RESULTS/$side.peak_rss_kb"
}

run_synapse() {
    wait_quiet
    # Password hashing only costs setup time; the keys workload logs in 1,000
    # devices, so it uses Synapse's cheapest bcrypt cost to keep setup short.
    local rounds=12
    [[ "$WORKLOAD" == keys ]] && rounds=4
    SYNAPSE_BCRYPT_ROUNDS="${SYNAPSE_BCRYPT_ROUNDS:-$rounds}" \
        "$ROOT/scripts/synapse.sh" start "$SYNAPSE_PORT" "$DATA_ROOT/synapse" >&2 || return 1
    local pid rc=0; pid="$(cat "$DATA_ROOT/synapse/synapse.pid")"
    loadgen synapse "$SYNAPSE_PORT" "$pid" || rc=$?
    "$ROOT/scripts/synapse.sh" stop "$DATA_ROOT/synapse"
    return $rc
}

run_hotline() {
    [[ -x "$HOTLINE" ]] || { log "no $HOTLINE; skipping hotline"; return 0; }
    wait_quiet
    mkdir -p "$DATA_ROOT/hotline"
    # Same treatment as Synapse: rate limits out of the way, WARNING logs.
    # HOTLINE_TOML: extra top-level settings, for experiments (e.g.
    # durability = "normal"); the published runs leave it empty.
    printf '%s\n' "${HOTLINE_TOML:-}" >"$DATA_ROOT/hotline.toml"
    cat >>"$DATA_ROOT/hotline.toml" <<'EOF'
[rate_limits]
per_user_per_second = 1000000.0
per_user_burst = 1000000.0
per_ip_per_second = 1000000.0
per_ip_burst = 1000000.0
EOF
    cp "$DATA_ROOT/hotline.toml" "$RESULTS/hotline.toml"
    HOTLINE_LOG="${HOTLINE_LOG:-warn}" "$HOTLINE" serve --config "$DATA_ROOT/hotline.toml" \
        --allow-registration --listen "127.0.0.1:$HOTLINE_PORT" \
        --data-dir "$DATA_ROOT/hotline" >"$RESULTS/hotline.server.log" 2>&1 &
    HOTLINE_PID=$!
    if ! wait_versions "$HOTLINE_PORT" "$HOTLINE_PID"; then
        log "hotline did not answer /versions; see $RESULTS/hotline.server.log"
        tail -20 "$RESULTS/hotline.server.log" >&2 || true
        return 1
    fi
    local rc=0
    loadgen hotline "$HOTLINE_PORT" "$HOTLINE_PID" || rc=$?
    kill -TERM "$HOTLINE_PID"
    wait "$HOTLINE_PID" 2>/dev/null || true
    HOTLINE_PID=""
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

if [[ "${1:-}" == table ]]; then
    # bench/run.sh table RESULTS_DIR_FOR_SYNAPSE [RESULTS_DIR_FOR_HOTLINE]
    rmdir "$RESULTS" 2>/dev/null || true
    [[ -z "${BENCH_DATA_ROOT:-}" ]] && rmdir "$DATA_ROOT" 2>/dev/null
    table "$2" "${3:-$2}" "synapse $(basename "$2"), hotline $(basename "${3:-$2}")"
    exit 0
fi

build
for side in $SIDES; do
    case "$side" in
        # One side failing must not hide the other side's numbers.
        synapse) run_synapse || log "synapse run failed" ;;
        hotline) run_hotline || log "hotline run failed" ;;
        *) log "unknown side $side" ; exit 2 ;;
    esac
done
table "$RESULTS" "$RESULTS" "$STAMP" | tee "$RESULTS/table.md"
{
    echo
    if [[ "$WORKLOAD" == keys ]]; then
        echo "Command: $(printf '%q ' env WORKLOAD=keys KEYS_USERS="$KEYS_USERS" KEYS_DEVICES="$KEYS_DEVICES" SIDES="$SIDES" bench/run.sh)"
    else
        echo "Command: $(printf '%q ' env PAIRS="$PAIRS" WARMUP="$WARMUP" DURATION="$DURATION" INFLIGHT="$INFLIGHT" ${RATE:+RATE="$RATE"} SIDES="$SIDES" bench/run.sh)"
    fi
    echo "Synapse $("$ROOT/bench/.venv/bin/python" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null || echo '?'), $("$ROOT/bench/.venv/bin/python" --version 2>&1); data on $(df --output=source,fstype "$DATA_ROOT" | tail -1 | tr -s ' ')."
    echo "Raw results: bench/results/$STAMP/"
} | tee -a "$RESULTS/table.md"
ln -sfn "$STAMP" "$ROOT/bench/results/latest"
[[ -z "${BENCH_DATA_ROOT:-}" ]] && rm -rf "$DATA_ROOT"
exit 0
