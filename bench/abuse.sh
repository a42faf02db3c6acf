#!/usr/bin/env bash
# Soak under abuse: 10 DM pairs keep messaging while 500 idle slow
# connections (slowloris), a login brute force (one real account, and many)
# and an unauthenticated flood (/profile, /_matrix/key/v2/server, /versions)
# hit the same server, all at once; and the same DM load alone as the
# baseline. A benchmark, not a test: it prints a markdown table (legitimate
# send→delivery p50/p99, lost messages, what the abuse sent and how the
# server refused it) and keeps raw results in bench/results/abuse-<stamp>/.
#
#   bench/abuse.sh                        build, baseline run, abuse run
#   SKIP_BUILD=1 bench/abuse.sh           use the binaries already built
#   RUNS="abuse" bench/abuse.sh           one run only (or RUNS=baseline)
#   DURATION=60 FLOOD_RATE=3000 bench/abuse.sh
#
# Each run gets a fresh server with the default configuration (so its real
# rate limits and timeouts), open registration, on 127.0.0.1 only. Every
# part stops by itself: the generator's --max-runtime, bounded connections
# and rates, the server stopped at the end.
#
# Environment (defaults in brackets):
#   PAIRS [10] RATE [200] WARMUP [5] DURATION [30]  DM load: open loop, msg/s in all
#   SLOWLORIS [500] SLOWLORIS_INTERVAL [5]          idle slow connections, s between trickled lines
#   BRUTE_ONE_RATE [100] BRUTE_MANY_RATE [100]      wrong-password logins/s
#   FLOOD_RATE [1000]                               unauthenticated requests/s
#   ABUSE_CONNS [8]                                 connections per request stream
#   LOADGEN_THREADS [2] HOTLINE_PORT [18459] RUNS ["baseline abuse"]
#   WAIT_QUIET [1] QUIET_MAX [300] QUIET_PCT [25]   wait for a quiet machine first
#   HOTLINE_TOML [""]                               extra hotline.toml lines
#   CARGO_TARGET_DIR [$HOME/.cache/hotline/target] HOTLINE_BIN LOADGEN_BIN
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$HOME/.cache/hotline/target}"
PAIRS="${PAIRS:-10}"
RATE="${RATE:-200}"
WARMUP="${WARMUP:-5}"
DURATION="${DURATION:-30}"
SLOWLORIS="${SLOWLORIS:-500}"
SLOWLORIS_INTERVAL="${SLOWLORIS_INTERVAL:-5}"
BRUTE_ONE_RATE="${BRUTE_ONE_RATE:-100}"
BRUTE_MANY_RATE="${BRUTE_MANY_RATE:-100}"
FLOOD_RATE="${FLOOD_RATE:-1000}"
ABUSE_CONNS="${ABUSE_CONNS:-8}"
LOADGEN_THREADS="${LOADGEN_THREADS:-2}"
HOTLINE_PORT="${HOTLINE_PORT:-18459}"
RUNS="${RUNS:-baseline abuse}"
WAIT_QUIET="${WAIT_QUIET:-1}"
QUIET_MAX="${QUIET_MAX:-300}"
QUIET_PCT="${QUIET_PCT:-25}"
STAMP="$(date +%Y%m%d-%H%M%S)"
RESULTS="$ROOT/bench/results/abuse-$STAMP"
DATA_ROOT="$(mktemp -d /tmp/hotline-abuse.XXXXXX)"
LOADGEN="${LOADGEN_BIN:-$TARGET/release/hotline-loadgen}"
HOTLINE="${HOTLINE_BIN:-$TARGET/release/hotline}"
PY="$(command -v python3)"

mkdir -p "$RESULTS"
log() { echo "abuse: $*" >&2; }

HOTLINE_PID=""
cleanup() {
    if [[ -n "$HOTLINE_PID" ]] && kill -0 "$HOTLINE_PID" 2>/dev/null; then
        kill -TERM "$HOTLINE_PID" 2>/dev/null || true
        wait "$HOTLINE_PID" 2>/dev/null || true
    fi
    rm -rf "$DATA_ROOT"
}
trap cleanup EXIT

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building hotline and hotline-loadgen (release)"
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -p hotline -p hotline-loadgen)
fi

machine_busy_pct() {
    "$PY" - <<'EOF'
import os, time
def busy():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return sum(v) - v[3] - v[4]
a = busy(); time.sleep(1); b = busy()
print(int((b - a) * 100 / os.sysconf("SC_CLK_TCK")))
EOF
}

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

run_one() {
    local name="$1" data="$DATA_ROOT/$1"
    mkdir -p "$data"
    printf '%s\n' "${HOTLINE_TOML:-}" >"$data.toml"
    cp "$data.toml" "$RESULTS/$name.hotline.toml"
    wait_quiet
    HOTLINE_LOG="${HOTLINE_LOG:-warn}" "$HOTLINE" serve --config "$data.toml" \
        --allow-registration --listen "127.0.0.1:$HOTLINE_PORT" \
        --data-dir "$data" >"$RESULTS/$name.server.log" 2>&1 &
    HOTLINE_PID=$!
    local deadline=$((SECONDS + 60))
    until curl -sf "http://127.0.0.1:$HOTLINE_PORT/_matrix/client/versions" >/dev/null 2>&1; do
        if ! kill -0 "$HOTLINE_PID" 2>/dev/null || ((SECONDS >= deadline)); then
            log "hotline did not start; see $RESULTS/$name.server.log"
            tail -20 "$RESULTS/$name.server.log" >&2 || true
            return 1
        fi
        sleep 0.2
    done
    local cmd=("$LOADGEN" --base-url "http://127.0.0.1:$HOTLINE_PORT" --label "$name"
        --server-pid "$HOTLINE_PID" --threads "$LOADGEN_THREADS" --max-runtime 600
        dm --pairs "$PAIRS" --rate "$RATE" --warmup "$WARMUP" --duration "$DURATION")
    if [[ "$name" == abuse ]]; then
        cmd+=(--abuse --slowloris "$SLOWLORIS" --slowloris-interval "$SLOWLORIS_INTERVAL"
            --brute-one-rate "$BRUTE_ONE_RATE" --brute-many-rate "$BRUTE_MANY_RATE"
            --flood-rate "$FLOOD_RATE" --abuse-conns "$ABUSE_CONNS")
    fi
    echo "${cmd[*]}" >"$RESULTS/$name.cmd"
    log "running: ${cmd[*]}"
    local rc=0
    "${cmd[@]}" >"$RESULTS/$name.json" 2> >(tee "$RESULTS/$name.log" >&2) || rc=$?
    grep VmHWM "/proc/$HOTLINE_PID/status" | awk '{print $2}' >"$RESULTS/$name.peak_rss_kb" || true
    # Still alive after the abuse?
    if ! kill -0 "$HOTLINE_PID" 2>/dev/null; then
        log "the server died during the $name run"
        rc=1
    fi
    kill -TERM "$HOTLINE_PID" 2>/dev/null || true
    wait "$HOTLINE_PID" 2>/dev/null || true
    HOTLINE_PID=""
    return $rc
}

for run in $RUNS; do
    run_one "$run" || log "$run run failed"
done

"$PY" - "$RESULTS" "$STAMP" <<'EOF' | tee "$RESULTS/table.md"
import json, os, sys
res, stamp = sys.argv[1], sys.argv[2]
def load(name):
    p = os.path.join(res, name + ".json")
    if not os.path.exists(p) or os.path.getsize(p) == 0:
        return None
    v = json.load(open(p))
    rss = os.path.join(res, name + ".peak_rss_kb")
    if os.path.exists(rss) and open(rss).read().strip():
        v["peak_rss_kb"] = int(open(rss).read().strip())
    return v
b, a = load("baseline"), load("abuse")
any_ = a or b
if not any_:
    sys.exit("no results")
def g(v, *path):
    for k in path:
        if not isinstance(v, dict): return None
        v = v.get(k)
    return v
def f(x, fmt="{:,.2f}"):
    return "—" if x is None else fmt.format(x)
print(f"Run {stamp}: {any_['pairs']} DM pairs, {any_['load']}, {any_['warmup_s']} s warm-up, {any_['window_s']:.0f} s window, loopback, {os.cpu_count()} cores.\n")
print("| legitimate DM traffic | baseline | under abuse |")
print("| --- | ---: | ---: |")
rows = [
    ("send → delivery p50 (ms)", ("latency_ms", "p50"), "{:,.2f}"),
    ("send → delivery p99 (ms)", ("latency_ms", "p99"), "{:,.2f}"),
    ("send → delivery max (ms)", ("latency_ms", "max"), "{:,.2f}"),
    ("send acknowledged p99 (ms)", ("ack_latency_ms", "p99"), "{:,.2f}"),
    ("delivered messages/s", ("delivered_per_s",), "{:,.1f}"),
    ("lost (acked, never delivered)", ("lost",), "{:,}"),
    ("sends failed (errors)", ("send_failed",), "{:,}"),
    ("server CPU (% of one core)", ("server", "cpu_core_pct"), "{:,.1f}"),
    ("peak RSS of server (MB)", ("peak_rss_kb",), "{:,.1f}"),
    ("generator CPU (% of one core)", ("generator", "cpu_core_pct"), "{:,.1f}"),
    ("other processes' CPU (% of one core)", ("other_cpu_core_pct",), "{:,.1f}"),
]
for name, path, fmt in rows:
    cells = []
    for v in (b, a):
        x = g(v, *path)
        if path == ("peak_rss_kb",) and x is not None: x = x / 1024
        cells.append(f(x, fmt))
    print(f"| {name} | {cells[0]} | {cells[1]} |")
cnt = lambda v: "—" if not v else "{} / {} / {}".format(v["sent"], v["acked"], v["delivered"])
print(f"| messages sent / acked / delivered in window | {cnt(b)} | {cnt(a)} |")
ab = g(a, "abuse")
if ab:
    s = ab["slowloris"]
    print(f"\nAbuse during the run ({ab['seconds']} s, warm-up and window):\n")
    print("| abuse | sent | refused with 429 | other answers | connections closed by the server | timeouts | skipped ticks |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
    for name, key in (("login brute force, one account", "login_one_account"),
                      ("login brute force, many accounts", "login_many_accounts"),
                      ("unauthenticated flood (/profile, /key/v2/server, /versions)", "unauthenticated_flood")):
        x = ab[key]
        other = ", ".join(f"{k}: {n:,}" for k, n in x["statuses"].items() if k != "429") or "—"
        print(f"| {name} | {x['sent']:,} ({x['per_s']:,}/s) | {x['refused_429']:,} | {other} | {x['closed_by_server']:,} | {x['timeouts']:,} | {x['skipped_ticks']:,} |")
    print(f"| slowloris: {s['target_open']} idle connections, a header line every few s | {s['connects']:,} connects (peak {s['peak_open']} open, {s['open_at_end']} at the end) | — | {s['answered_then_closed']} answered before closing | {s['closed_by_server']:,} (lifetime p50 {s['closed_lifetime_s']['p50']} s) | — | {s['connect_failures']:,} connect failures |")
ok = []
for label, v in (("baseline", b), ("under abuse", a)):
    if v is None: continue
    p99 = g(v, "latency_ms", "p99")
    good = p99 is not None and p99 < 50 and v["lost"] == 0 and v["send_failed"] == 0
    ok.append(f"{label}: {'MET' if good else 'NOT MET'} (p99 {f(p99)} ms, lost {v['lost']}, failed sends {v['send_failed']})")
print("\nTarget (legitimate p99 < 50 ms, no message lost, no send failed): " + "; ".join(ok))
for label, v in (("baseline", b), ("abuse", a)):
    if v and v["generator"]["saturated"]:
        print(f"\n**Generator saturated during the {label} run: its numbers are a floor.**")
    if v and (v.get("other_cpu_core_pct") or 0) > 25:
        print(f"\n**Machine not quiet during the {label} run ({v['other_cpu_core_pct']}% of a core used by other processes).**")
EOF
{
    echo
    echo "Command: $(printf '%q ' env PAIRS="$PAIRS" RATE="$RATE" WARMUP="$WARMUP" DURATION="$DURATION" SLOWLORIS="$SLOWLORIS" BRUTE_ONE_RATE="$BRUTE_ONE_RATE" BRUTE_MANY_RATE="$BRUTE_MANY_RATE" FLOOD_RATE="$FLOOD_RATE" bench/abuse.sh)"
    echo "Server $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'); raw results: bench/results/abuse-$STAMP/"
} | tee -a "$RESULTS/table.md"
ln -sfn "abuse-$STAMP" "$ROOT/bench/results/abuse-latest"
