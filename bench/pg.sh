#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for hl7d's tests and benchmarks (issue 16), the same one
# `.ci/run` starts.
#
#   bench/pg.sh start   initdb in a fresh directory, start on a free loopback port, and print
#                       `export HL7D_TEST_PG_URL=...` (and HL7D_PG_DIR) for `eval`
#   bench/pg.sh stop    stop the cluster in $HL7D_PG_DIR and delete its directory
#   bench/pg.sh url     print the URL of the cluster in $HL7D_PG_DIR
#   bench/pg.sh restart restart the cluster in $HL7D_PG_DIR (pg_ctl restart -m fast), same port
#
#   eval "$(bench/pg.sh start)"; cargo test --test it pg_; bench/pg.sh stop
#
# Trust authentication on 127.0.0.1 only (a throw-away cluster, nothing else listens):
# superuser `postgres`, database `postgres`. Tests create a database of their own each
# (tests/it/support/pg.rs). `initdb` refuses to run as root: as root, the cluster runs as the
# `postgres` user (created when missing). Binaries: $HL7D_PG_BIN, else the newest
# /usr/lib/postgresql/*/bin. fsync stays on (benchmarks measure a durable database); set
# HL7D_PG_FSYNC=off for a faster, undurable test cluster. HL7D_PG_TLS_DIR=DIR (holding
# server.pem and server.key, e.g. from `hl7d cert dev-pki`) turns TLS on (ssl=on; clients may
# still connect without it).
set -euo pipefail

pg_bin() {
  if [ -n "${HL7D_PG_BIN:-}" ]; then echo "$HL7D_PG_BIN"; return; fi
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$found" ]; then
    echo "bench/pg.sh: no PostgreSQL binaries (install postgresql-15 or set HL7D_PG_BIN)" >&2
    exit 1
  fi
  echo "$found"
}

# Runs a command as the cluster's owner: `postgres` when we are root, else ourselves.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local bin dir port
  bin=$(pg_bin)
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /usr/sbin/nologin postgres
  fi
  dir=$(mktemp -d "${TMPDIR:-/tmp}/hl7d-pg.XXXXXX")
  chmod 0700 "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  port=${HL7D_PG_PORT:-$(free_port)}
  local tls=""
  if [ -n "${HL7D_PG_TLS_DIR:-}" ]; then
    # The server refuses a key file others can read, or owned by someone else.
    cp "$HL7D_PG_TLS_DIR/server.pem" "$dir/server.pem"
    cp "$HL7D_PG_TLS_DIR/server.key" "$dir/server.key"
    chmod 0600 "$dir/server.pem" "$dir/server.key"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir/server.pem" "$dir/server.key"
    tls="-c ssl=on -c ssl_cert_file=$dir/server.pem -c ssl_key_file=$dir/server.key"
  fi
  echo "$tls" >"$dir/tls-options"
  as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=${HL7D_PG_FSYNC:-on} $tls" \
    start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
  echo "$port" >"$dir/port"
  echo "export HL7D_PG_DIR=$dir"
  echo "export HL7D_TEST_PG_URL=postgresql://postgres@127.0.0.1:$port/postgres"
}

stop() {
  local dir=${HL7D_PG_DIR:?set HL7D_PG_DIR (printed by start)}
  [ -d "$dir/data" ] || { echo "bench/pg.sh: no cluster in $dir" >&2; exit 1; }
  as_owner "$(pg_bin)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
  rm -rf "$dir"
}

restart() {
  local dir=${HL7D_PG_DIR:?set HL7D_PG_DIR (printed by start)}
  local port
  port=$(cat "$dir/port")
  as_owner "$(pg_bin)/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=${HL7D_PG_FSYNC:-on} $(cat "$dir/tls-options")" \
    restart >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
}

url() {
  local dir=${HL7D_PG_DIR:?set HL7D_PG_DIR (printed by start)}
  echo "postgresql://postgres@127.0.0.1:$(cat "$dir/port")/postgres"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) url ;;
  restart) restart ;;
  *) echo "usage: bench/pg.sh start|stop|restart|url" >&2; exit 2 ;;
esac
