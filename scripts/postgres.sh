#!/usr/bin/env bash
# A PostgreSQL server of its own, on loopback, for tests and benchmarks:
# Debian's `postgresql` package (installed when missing), a cluster made by
# `initdb` in a directory of ours, started and stopped with `pg_ctl`.
#
#   scripts/postgres.sh start DIR PORT   install (once), initdb DIR (once), start, wait;
#                                        prints the URL: postgres://hotline@127.0.0.1:PORT/postgres
#   scripts/postgres.sh stop DIR         stop the cluster in DIR (fast shutdown)
#   scripts/postgres.sh url PORT         the URL of a cluster started on PORT
#
# Idempotent: `start` on a running cluster just prints its URL. The cluster
# trusts connections from loopback (it listens nowhere else) and keeps
# PostgreSQL's durable defaults (`fsync` and `synchronous_commit` on): a
# test or benchmark against it measures a deployment's real cost.
# PG_OPTS adds server settings (`-c name=value ...`).
#
# PostgreSQL refuses to run as root; as root, the cluster belongs to the
# `postgres` user the Debian package creates.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() { echo "postgres.sh: $*" >&2; exit 1; }

bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/pg_ctl" ] && { echo "$d"; return; }
  done
  return 1
}

install() {
  bindir >/dev/null 2>&1 || "$ROOT/scripts/deps.sh" postgresql
  bindir >/dev/null || die "no PostgreSQL server found after installing postgresql"
}

# Runs a server program as the cluster's owner.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

url() { echo "postgres://hotline@127.0.0.1:$1/postgres"; }

start() {
  local dir="$1" port="$2" bin
  install
  bin="$(bindir)"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  if [ ! -f "$dir/PG_VERSION" ]; then
    as_owner "$bin/initdb" -D "$dir" -U hotline -A trust -E UTF8 --locale=C.UTF-8 >"$dir/../$(basename "$dir").initdb.log" 2>&1 \
      || { cat "$dir/../$(basename "$dir").initdb.log" >&2; die "initdb failed"; }
  fi
  if as_owner "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    url "$port"
    return
  fi
  # The socket lives in the cluster's own directory: nothing else on the
  # machine is touched.
  as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 ${PG_OPTS:-}" start >/dev/null \
    || { tail -20 "$dir/server.log" >&2; die "the server did not start"; }
  url "$port"
}

stop() {
  local dir="$1" bin
  bin="$(bindir)" || return 0
  [ -f "$dir/PG_VERSION" ] || return 0
  as_owner "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
}

case "${1:-}" in
  install) install ;;
  start) [ $# -eq 3 ] || die "usage: start DIR PORT"; start "$2" "$3" ;;
  stop) [ $# -eq 2 ] || die "usage: stop DIR"; stop "$2" ;;
  url) [ $# -eq 2 ] || die "usage: url PORT"; url "$2" ;;
  *) die "usage: $0 install | start DIR PORT | stop DIR | url PORT" ;;
esac
