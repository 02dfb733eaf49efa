#!/usr/bin/env bash
# Delivery across nodes (issue 16): how fast a backlog drains to an MLLP receiver from
#   sqlite   one `hl7d serve` on the embedded SQLite store
#   pg1      one `hl7d serve` on PostgreSQL
#   pg2      two `hl7d serve` on one PostgreSQL database (lanes under leases)
# on the same machine, in the same run, interleaved per repetition (see BENCHMARKS.md,
# "Delivery across nodes").
#
#   eval "$(bench/pg.sh start)"; bench/delivery_nodes.sh; bench/pg.sh stop
#   N=2000 PATIENTS=20 REPS=3 IN_FLIGHT=4 bench/delivery_nodes.sh      # the defaults
#
# Each run: a fresh store (a SQLite directory, or a new PostgreSQL database on the cluster
# of $HL7D_TEST_PG_URL), route `down` (per_patient, in_flight IN_FLIGHT, retry 100–200 ms)
# to a downstream `hl7d serve` (plaintext, duplicate_window "0", its own fresh SQLite store)
# that is NOT running yet; N messages of PATIENTS patients (lanes) are sent to node 1 with
# `hl7d send DIR` and stored (their deliveries retry meanwhile); then the downstream starts
# and the clock runs from its "listening" line until `hl7d routes status --json` (polled
# every 0.2 s) counts N delivered. Rate = N / that
# time (≤ 0.2 s of it is the last backoff). The downstream is the same in every setup, so
# the differences are the upstream's. `uptime` before and after.
#
# Needs: a release build (built unless NO_BUILD=1), python3, PostgreSQL's psql (the newest
# /usr/lib/postgresql/*/bin, or $HL7D_PG_BIN). Loopback only; everything started is
# stopped on exit.
set -euo pipefail

N=${N:-2000}
PATIENTS=${PATIENTS:-20}
REPS=${REPS:-3}
IN_FLIGHT=${IN_FLIGHT:-4}
: "${HL7D_TEST_PG_URL:?start a cluster first: eval \"\$(bench/pg.sh start)\"}"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
HL7D=${HL7D:-$TARGET/release/hl7d}
PG_BIN=${HL7D_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
WORK=$(mktemp -d "${BENCH_DIR:-$TARGET}/delivery-nodes.XXXXXX")
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ -z ${KEEP:-} ]]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}
trap cleanup EXIT
log() { echo "delivery_nodes: $*" >&2; }

[[ -n ${NO_BUILD:-} ]] || (cd "$ROOT" && cargo build --release --quiet --locked --bin hl7d)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The messages: N files named in send order, patient = index mod PATIENTS.
MESSAGES=$WORK/messages
mkdir -p "$MESSAGES"
python3 - "$MESSAGES" "$N" "$PATIENTS" <<'PY'
import sys
out, n, patients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    with open(f"{out}/{i:06d}.hl7", "wb") as f:
        f.write(f"MSH|^~\\&|LAB|FAC|HL7D|FAC|20261201||ADT^A01^ADT_A01|B{i:06d}|P|2.5\rPID|1||P{i % patients}^^^HOSP\r".encode())
PY

# serve DIR NAME STORE_KEYS DOWN_PORT: an upstream node; sets PORT to its MLLP port. Not
# called in a subshell, so that its pid stays in PIDS (and is stopped).
serve() {
    local dir=$1 name=$2 store=$3 down=$4
    mkdir -p "$dir"
    cat >"$dir/$name.toml" <<EOF
[store]
path = "$dir/$name-data"
$store

[node]
name = "$name"

[[listener]]
name = "lab"
listen = "127.0.0.1:0"
plaintext = true

[[route]]
name = "down"
to = "mllp://127.0.0.1:$down"
in_flight = $IN_FLIGHT
retry_initial = "100ms"
retry_max = "200ms"
EOF
    "$HL7D" serve --config "$dir/$name.toml" >"$dir/$name.log" 2>&1 &
    PIDS+=($!)
    local port="" i
    for i in $(seq 200); do
        port=$(grep -m1 -oP 'listening.* addr="?127\.0\.0\.1:\K[0-9]+' "$dir/$name.log" || true)
        [[ -n $port ]] && break
        sleep 0.05
    done
    [[ -n $port ]] || { cat "$dir/$name.log" >&2; log "$name did not start"; exit 1; }
    PORT=$port
}

delivered() {
    "$HL7D" routes status --json --config "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["delivered"])'
}

stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}

# run SETUP REP: one measurement; prints one JSON line.
run() {
    local setup=$1 rep=$2 dir=$WORK/$1-$2 store="" nodes=1
    mkdir -p "$dir"
    if [[ $setup != sqlite ]]; then
        local db="bench_${setup}_${rep}_$$"
        "$PG_BIN/psql" -q "$HL7D_TEST_PG_URL" -c "CREATE DATABASE $db" >/dev/null
        store="url = \"${HL7D_TEST_PG_URL%/*}/$db\"
sslmode = \"disable\""
        [[ $setup == pg2 ]] && nodes=2
    fi
    local down_port port
    down_port=$(free_port)
    serve "$dir" node-1 "$store" "$down_port"
    port=$PORT
    [[ $nodes == 2 ]] && serve "$dir" node-2 "$store" "$down_port"
    "$HL7D" send --to "127.0.0.1:$port" "$MESSAGES" >/dev/null
    printf '[store]\npath = "%s"\n\n[[listener]]\nname = "down"\nlisten = "127.0.0.1:%s"\nplaintext = true\nduplicate_window = "0"\n' \
        "$dir/down-data" "$down_port" >"$dir/down.toml"
    "$HL7D" serve --config "$dir/down.toml" >"$dir/down.log" 2>&1 &
    PIDS+=($!)
    local i
    for i in $(seq 400); do
        grep -q 'listening' "$dir/down.log" && break
        sleep 0.01
    done
    # From the moment the downstream listens.
    local start_ns=$(date +%s%N)
    while [[ $(delivered "$dir/node-1.toml") -lt $N ]]; do sleep 0.2; done
    local ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
    stop_all
    echo "{\"setup\": \"$setup\", \"rep\": $rep, \"drain_ms\": $ms, \"rate\": $(( N * 1000 / ms ))}"
}

RESULTS=$WORK/results.jsonl
echo "uptime before: $(uptime)"
for rep in $(seq "$REPS"); do
    for setup in sqlite pg1 pg2; do
        run "$setup" "$rep" >>"$RESULTS"
        tail -n1 "$RESULTS" >&2
    done
done
echo "uptime after:  $(uptime)"
python3 - "$RESULTS" "$N" "$PATIENTS" "$IN_FLIGHT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
n, patients, in_flight = sys.argv[2:]
print(f"\n{n} messages, {patients} lanes, in_flight {in_flight} per node\n")
print("| setup | drain rate (msg/s), median | runs (msg/s) |")
print("|---|---|---|")
for setup, label in [("sqlite", "one node, SQLite"), ("pg1", "one node, PostgreSQL"), ("pg2", "two nodes, PostgreSQL")]:
    rates = [r["rate"] for r in rows if r["setup"] == setup]
    print(f"| {label} | {statistics.median(rates):.0f} | {', '.join(map(str, rates))} |")
PY
