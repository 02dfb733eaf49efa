#!/usr/bin/env bash
# Delivery cost and lag (issue 15): `hl7d bench` against a listener with one MLLP route to a
# second hl7d, and against the same listener without the route, in one run (see
# BENCHMARKS.md, "Delivery: ingest with a route, and delivery lag").
#
#   bench/delivery.sh                              # REPS=5 DURATION=5s CONNECTIONS="1 16"
#   DURATION=2s REPS=1 CONNECTIONS=16 bench/delivery.sh   # quick look
#
# Three `hl7d serve` (release build), each with its own fresh store on the repository's file
# system (fsync before every positive ACK), all on 127.0.0.1, started once for the run:
#   plain    listener `lab`, no route
#   routed   listener `lab` and route `down` = mllp:// to `down` (defaults: per_patient,
#            in_flight 1; `hl7d bench`'s built-in message has one patient, so one lane)
#   down     the downstream: a plaintext listener, duplicate_window "0"
# For each connection count and repetition, `hl7d bench` runs for DURATION against `plain`
# then `routed` (interleaved, so the machine's noise falls on both alike); after each routed
# run the script waits until `routes status` shows nothing pending and records how long the
# backlog took. The report gives the median ingest rate of each, the ratio, and the delivery
# lag of every message of the routed runs: the downstream's received_at minus the
# upstream's for the same control id (`hl7d bench` makes each unique), p50/p99/max, from
# the two stores after the run. `uptime` is printed before and after.
#
# Needs: cargo, python3 (sqlite3 module). Loopback only; everything started is stopped on
# exit (trap); every bench run is bounded by `timeout`.
set -euo pipefail

DURATION=${DURATION:-5s}
REPS=${REPS:-5}
CONNECTIONS=${CONNECTIONS:-"1 16"}
TIME_LIMIT=${TIME_LIMIT:-1800}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
HL7D=${HL7D:-$TARGET/release/hl7d}
WORK=$(mktemp -d "$TARGET/delivery-bench.XXXXXX")
SHM=/dev/shm/hl7d-delivery-bench.$$
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$SHM"
    if [[ -z ${KEEP:-} ]]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}
trap cleanup EXIT

log() { echo "delivery: $*" >&2; }

[[ -n ${NO_BUILD:-} ]] || (cd "$ROOT" && cargo build --release --quiet --locked --bin hl7d)

# start NAME EXTRA_CONFIG: an `hl7d serve` with listener `lab` on port 0; prints its port.
# DOWN_TMPFS=1 puts the downstream's store on /dev/shm (analysis only: its fsyncs then cost
# nothing and no longer share the disk with the upstream's).
start() {
    local name=$1 extra=$2 dir=$WORK/$1 data=$WORK/$1/data
    mkdir -p "$dir"
    if [[ $name == down && -n ${DOWN_TMPFS:-} ]]; then
        data=$SHM
    fi
    printf '[store]\npath = "%s"\n\n[[listener]]\nname = "lab"\nlisten = "127.0.0.1:0"\nplaintext = true\n%s' \
        "$data" "$extra" >"$dir/hl7d.toml"
    timeout "$TIME_LIMIT" "$HL7D" serve --config "$dir/hl7d.toml" >"$dir/log" 2>&1 &
    PIDS+=($!)
    local port="" i
    for i in $(seq 200); do
        port=$(grep -m1 -oP 'listening.* addr="?127\.0\.0\.1:\K[0-9]+' "$dir/log" || true)
        [[ -n $port ]] && break
        sleep 0.05
    done
    [[ -n $port ]] || { cat "$dir/log" >&2; log "$name did not start"; exit 1; }
    echo "$port"
}

DOWN=$(start down 'duplicate_window = "0"
')
PLAIN=$(start plain '')
ROUTED=$(start routed "
[[route]]
name = \"down\"
to = \"mllp://127.0.0.1:$DOWN\"
")
log "ports: down $DOWN, plain $PLAIN, routed $ROUTED"

pending() {
    "$HL7D" routes status --json --config "$WORK/routed/hl7d.toml" |
        python3 -c 'import json,sys; r=json.load(sys.stdin)[0]; print(r["pending"] + r["in_flight"])'
}

RESULTS=$WORK/results.jsonl
echo "uptime before: $(uptime)"
for connections in $CONNECTIONS; do
    for rep in $(seq "$REPS"); do
        for server in plain routed; do
            port=$PLAIN
            [[ $server == routed ]] && port=$ROUTED
            out=$(timeout 120 "$HL7D" bench --to "127.0.0.1:$port" --connections "$connections" \
                --duration "$DURATION" --ack-timeout 10s --json --quiet)
            drain=0
            if [[ $server == routed ]]; then
                start_ns=$(date +%s%N)
                while [[ $(pending) != 0 ]]; do sleep 0.1; done
                drain=$(( ($(date +%s%N) - start_ns) / 1000000 ))
            fi
            python3 - "$server" "$connections" "$rep" "$drain" "$out" >>"$RESULTS" <<'PY'
import json, sys
server, connections, rep, drain, out = sys.argv[1:]
r = json.loads(out)
print(json.dumps({"server": server, "connections": int(connections), "rep": int(rep),
                  "rate": r["messages_per_s"], "ack_p50_us": r["latency_us"]["p50"],
                  "ack_p99_us": r["latency_us"]["p99"], "drain_ms": int(drain)}))
PY
            log "$(tail -n1 "$RESULTS")"
        done
    done
done
echo "uptime after:  $(uptime)"

python3 - "$RESULTS" "$WORK/routed/data/messages.db" "$([[ -n ${DOWN_TMPFS:-} ]] && echo "$SHM" || echo "$WORK/down/data")/messages.db" "$CONNECTIONS" <<'PY'
import json, sqlite3, statistics, sys
results, up, down, conns = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
rows = [json.loads(l) for l in open(results)]
print()
print("| connections | without route (msg/s) | with route (msg/s) | ratio | ACK p99 without / with (µs) | backlog drained after the run (ms) |")
print("|---|---|---|---|---|---|")
for c in map(int, conns):
    pick = lambda s, k: [r[k] for r in rows if r["server"] == s and r["connections"] == c]
    plain, routed = statistics.median(pick("plain", "rate")), statistics.median(pick("routed", "rate"))
    print(f"| {c} | {plain:.0f} | {routed:.0f} | {routed / plain:.2f} | "
          f"{statistics.median(pick('plain', 'ack_p99_us')):.0f} / {statistics.median(pick('routed', 'ack_p99_us')):.0f} | "
          f"{statistics.median(pick('routed', 'drain_ms')):.0f} |")
    print(f"<!-- rates c{c}: plain {pick('plain', 'rate')} routed {pick('routed', 'rate')} -->")
db = sqlite3.connect(up)
db.execute("ATTACH DATABASE ? AS down", (down,))
lags = sorted(r[0] for r in db.execute(
    "SELECT d.received_at - u.received_at FROM messages u JOIN down.messages d "
    "ON d.control_id = u.control_id"))
sent = db.execute("SELECT count(*) FROM messages").fetchone()[0]
q = lambda p: lags[min(len(lags) - 1, int(p * len(lags)))] / 1000
print()
print(f"delivery lag (downstream received_at − upstream received_at), {len(lags)} of {sent} messages "
      f"delivered: p50 {q(0.50):.1f} ms, p99 {q(0.99):.1f} ms, max {lags[-1] / 1000:.1f} ms")
PY
