#!/usr/bin/env bash
# One hl7d node on the PostgreSQL store against one on the SQLite store, same build, same
# run (issue 16): `hl7d bench` over TLS at 16 connections against each in turn, the order
# alternating each repetition, with msg/s, ACK latency and the ratio PostgreSQL/SQLite per
# repetition, and the load average before and after.
#
#   cargo build --release && bench/pg_vs_sqlite.sh            # REPS=5 DURATION=15s
#
# PostgreSQL: a throw-away cluster of bench/pg.sh (fsync on, loopback TCP, trust auth),
# stopped at the end. SQLite: the data directory under $STORE_DIR (default target/).
set -euo pipefail

REPS=${REPS:-5}
DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-16}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
HL7D=${HL7D:-$TARGET/release/hl7d}
STORE_DIR=${STORE_DIR:-$TARGET}
mkdir -p "$STORE_DIR"
WORK=$(mktemp -d "$STORE_DIR/pgvs.XXXXXX")
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    [[ -n ${HL7D_PG_DIR:-} ]] && "$ROOT/bench/pg.sh" stop || true
    rm -rf "$WORK"
}
trap cleanup EXIT
log() { echo "pg_vs_sqlite: $*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

eval "$("$ROOT/bench/pg.sh" start)"
"$HL7D" cert dev-pki --out "$WORK/pki" >/dev/null
declare -A PORT_OF
for name in sqlite postgresql; do
    port=$(free_port)
    mkdir -p "$WORK/$name"
    {
        echo '[store]'
        echo "path = \"$WORK/$name/data\""
        if [[ $name == postgresql ]]; then
            echo "url = \"$HL7D_TEST_PG_URL\""
            echo 'sslmode = "disable"   # loopback; TLS to the database is not what is measured'
        fi
        echo '[log]'
        echo 'level = "warn"'
        echo '[[listener]]'
        echo 'name = "bench"'
        echo "listen = \"127.0.0.1:$port\""
        echo 'max_connections = 300'
        echo 'max_connections_per_ip = 300'
        echo 'max_pending = 300'
        echo '[listener.tls]'
        echo "cert = \"$WORK/pki/server.pem\""
        echo "key = \"$WORK/pki/server.key\""
    } >"$WORK/$name/hl7d.toml"
    "$HL7D" serve --config "$WORK/$name/hl7d.toml" >"$WORK/$name/log" 2>&1 &
    PIDS+=("$!")
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.05
    done
    PORT_OF[$name]=$port
done

bench() {   # bench NAME MESSAGES|DURATION-ARGS...
    local name=$1
    shift
    timeout 600 "$HL7D" bench --to "127.0.0.1:${PORT_OF[$name]}" --tls --ca "$WORK/pki/ca.pem" \
        --server-name localhost -c "$CONNECTIONS" --json --quiet "$@"
}

log "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for name in sqlite postgresql; do bench "$name" --messages 2000 >/dev/null || true; done
for rep in $(seq 1 "$REPS"); do
    if ((rep % 2)); then order=(sqlite postgresql); else order=(postgresql sqlite); fi
    declare -A RATE=()
    for name in "${order[@]}"; do
        out=$(bench "$name" --duration "$DURATION")
        read -r rate p50 p99 errors < <(python3 -c '
import json, sys
r = json.loads(sys.argv[1]); l = r["latency_us"]
print(round(r["messages_per_s"]), round(l["p50"]), round(l["p99"]), r["errors"])' "$out")
        RATE[$name]=$rate
        log "rep $rep $name: $rate msg/s, p50 $p50 us, p99 $p99 us, errors $errors"
    done
    log "rep $rep ratio postgresql/sqlite: $(python3 -c "print(f'{${RATE[postgresql]} / max(${RATE[sqlite]}, 1):.2f}')")"
done
log "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
