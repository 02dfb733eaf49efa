#!/usr/bin/env bash
# Soak test: SOAK_MINUTES of mixed traffic against the release `hl7d serve`, sampling its
# resident memory and open file descriptors every SAMPLE_SECONDS (see BENCHMARKS.md, "Soak").
#
#   bench/soak.sh                    # 30 minutes
#   SOAK_MINUTES=2 bench/soak.sh     # the short version (~2.5 minutes after the build)
#   STALLS=1 SOAK_MINUTES=10 bench/soak.sh   # also: where the store's slow batches came from
#
# Traffic, all on 127.0.0.1 against one hl7d with a plaintext and a TLS listener (SQLite
# store, fsync before every positive ACK):
#   - `hl7d bench` steady load: 16 plaintext and 8 TLS connections, one message in flight each
#   - `hl7d bench --handshakes`: a new connection (and full TLS handshake) per message, so
#     connections open and close all the time
#   - bench/soak_clients.py: slowloris in frames and handshakes, random bytes, HTTP and
#     TLS 1.0 probes, clients that never read, half frames, connect-and-close
# Then everything stops, the listener's limits close what is left, and one more sample is
# taken: descriptors must be back at their idle count. The verdict line compares memory
# in the last third of the run with the first third (after a one-minute warm-up).
#
# With STALLS=1 the server logs the store's timing at debug level (slow batches, checkpoints,
# WAL restarts; no message content), bench/disk_probe.py samples the disk's sync time beside
# it, and bench/stalls.py says at the end which slow batches coincided with what.
#
# Needs: cargo, python3. Writes only under target/soak.*; KEEP=1 keeps that directory.
# Everything the script starts is stopped on exit (trap); the server also stops by itself
# after its `timeout`, and every client is bounded by `timeout`.
set -euo pipefail

SOAK_MINUTES=${SOAK_MINUTES:-30}
SAMPLE_SECONDS=${SAMPLE_SECONDS:-10}
PLAIN_CONNECTIONS=${PLAIN_CONNECTIONS:-16}
TLS_CONNECTIONS=${TLS_CONNECTIONS:-8}
BAD_WORKERS=${BAD_WORKERS:-6}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
HL7D=${HL7D:-$TARGET/release/hl7d}   # HL7D=… SKIP_BUILD=1: another build (an A/B)
SECONDS_TOTAL=$((SOAK_MINUTES * 60))
# On the repository's file system, not a tmpfs: the store's fsyncs must reach a real disk.
mkdir -p "$TARGET"
WORK=$(mktemp -d "$TARGET/soak.XXXXXX")
SAMPLES=$WORK/samples.csv
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -z ${KEEP:-} ]]; then
        rm -rf "$WORK"
    else
        echo "soak: kept $WORK" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "soak: $*" >&2; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---- build and server ----------------------------------------------------------------------
if [[ -z ${SKIP_BUILD:-} ]]; then
    log "building hl7d (release)"
    (cd "$ROOT" && cargo build --release --quiet --bin hl7d)
fi
"$HL7D" cert dev-pki --out "$WORK/pki" >/dev/null
PLAIN_PORT=$(free_port)
TLS_PORT=$(free_port)
cat >"$WORK/hl7d.toml" <<EOF
[store]
path = "$WORK/data"
retention = "10m"          # keeps the database (and the disk) bounded on a 30-minute run

[log]
level = "warn"

[[listener]]
name = "plain"
listen = "127.0.0.1:$PLAIN_PORT"
plaintext = true
idle_timeout = "5s"
frame_timeout = "2s"
write_timeout = "2s"
max_connections = 200
max_connections_per_ip = 200   # every client is on 127.0.0.1
max_pending = 200              # bench connections wait for each other before sending
duplicate_window = "5m"    # within the retention

[[listener]]
name = "tls"
listen = "127.0.0.1:$TLS_PORT"
idle_timeout = "5s"
frame_timeout = "2s"
write_timeout = "2s"
max_connections = 200
max_connections_per_ip = 200
max_pending = 200
duplicate_window = "5m"
[listener.tls]
cert = "$WORK/pki/server.pem"
key = "$WORK/pki/server.key"
handshake_timeout = "2s"
EOF
if [[ -n ${STALLS:-} ]]; then
    export RUST_LOG=warn,hl7d::store::sqlite=debug
fi
timeout $((SECONDS_TOTAL + 300)) "$HL7D" serve --config "$WORK/hl7d.toml" 2>"$WORK/hl7d.log" &
PIDS+=("$!")
for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$TLS_PORT") 2>/dev/null && break
    sleep 0.05
done
# `timeout` is the parent; the server is its child.
SERVER=$(pgrep -P "${PIDS[0]}" hl7d)
[[ -n $SERVER ]] || { log "hl7d did not start:"; cat "$WORK/hl7d.log" >&2; exit 1; }

sample() {
    local label=$1 rss fds threads
    rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$SERVER/status")
    threads=$(awk '$1 == "Threads:" { print $2 }' "/proc/$SERVER/status")
    fds=$(find "/proc/$SERVER/fd" -mindepth 1 -maxdepth 1 | wc -l)
    echo "$label,$rss,$fds,$threads" >>"$SAMPLES"
    log "$(printf '%-6s rss %7s KiB  fds %5s  threads %3s' "$label" "$rss" "$fds" "$threads")"
}

echo "t,rss_kib,fds,threads" >"$SAMPLES"
sleep 1
sample idle

# ---- traffic -------------------------------------------------------------------------------
log "running ${SOAK_MINUTES} min of mixed traffic (plain :$PLAIN_PORT, TLS :$TLS_PORT)"
run_bench() {
    local name=$1
    shift
    timeout $((SECONDS_TOTAL + 60)) "$HL7D" bench --duration "${SECONDS_TOTAL}s" --quiet --json "$@" \
        >"$WORK/$name.json" 2>"$WORK/$name.err" &
    PIDS+=("$!")
    CLIENTS+=("$!")
}
CLIENTS=()
run_bench plain --to "127.0.0.1:$PLAIN_PORT" -c "$PLAIN_CONNECTIONS"
run_bench tls --to "localhost:$TLS_PORT" --tls --ca "$WORK/pki/ca.pem" -c "$TLS_CONNECTIONS"
run_bench reconnect --to "127.0.0.1:$PLAIN_PORT" --handshakes -c 4
run_bench tls_handshakes --to "localhost:$TLS_PORT" --tls --ca "$WORK/pki/ca.pem" --handshakes -c 2
timeout $((SECONDS_TOTAL + 120)) python3 "$ROOT/bench/soak_clients.py" --plain "$PLAIN_PORT" --tls "$TLS_PORT" \
    --seconds "$SECONDS_TOTAL" --workers "$BAD_WORKERS" >"$WORK/bad_clients.json" 2>"$WORK/bad_clients.err" &
PIDS+=("$!")
CLIENTS+=("$!")

if [[ -n ${STALLS:-} ]]; then
    # Beside the store, on the same disk.
    timeout $((SECONDS_TOTAL + 60)) python3 "$ROOT/bench/disk_probe.py" "$WORK" "$WORK/disk_probe.log" \
        "$SECONDS_TOTAL" &
    PIDS+=("$!")
fi
log "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
started=$SECONDS
while ((SECONDS - started < SECONDS_TOTAL)); do
    sleep "$SAMPLE_SECONDS"
    kill -0 "$SERVER" 2>/dev/null || { log "hl7d died:"; tail -20 "$WORK/hl7d.log" >&2; exit 1; }
    sample "$((SECONDS - started))s"
done
status=0
for pid in "${CLIENTS[@]}"; do
    wait "$pid" || status=1
done
((status == 0)) || log "a client exited non-zero (see $WORK/*.err)"

# Idle again: every leftover connection ends by the 5 s idle timeout (2 s for handshakes).
sleep 8
sample drained

# ---- results -------------------------------------------------------------------------------
for name in plain tls reconnect tls_handshakes; do
    python3 - "$WORK/$name.json" "$name" <<'PY'
import json, sys
path, name = sys.argv[1], sys.argv[2]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"soak: {name}: no result ({e})", file=sys.stderr)
    sys.exit(0)
lat = r.get("latency_us", {})
print(f"soak: {name}: {r.get('acked')} acked, {r.get('rejected')} rejected, {r.get('errors')} errors "
      f"{r.get('error_kinds') or ''}, {r.get('messages_per_s')}/s, ACK p50 {lat.get('p50')} us, "
      f"p99 {lat.get('p99')} us, max {lat.get('max')} us", file=sys.stderr)
PY
done
log "bad clients: $(cat "$WORK/bad_clients.json" 2>/dev/null || echo 'no result')"
log "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -n ${STALLS:-} ]]; then
    python3 "$ROOT/bench/stalls.py" "$WORK/hl7d.log" "$WORK/disk_probe.log" >&2 || log "no stall analysis"
fi
stuck=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["stuck"])' "$WORK/bad_clients.json" 2>/dev/null || echo "?")

# The server still answers after all of it.
printf 'MSH|^~\\&|SOAK|FAC|HL7D|FAC|20261128||ADT^A01|SOAK-END|P|2.5\rPID|1\r' >"$WORK/end.hl7"
if timeout 30 "$HL7D" send --to "127.0.0.1:$PLAIN_PORT" "$WORK/end.hl7" >"$WORK/end.out" 2>&1; then
    alive=yes
else
    alive=no
    cat "$WORK/end.out" >&2
fi

python3 - "$SAMPLES" "$SAMPLE_SECONDS" "$stuck" "$alive" <<'PY'
import csv, statistics, sys
path, every, stuck, alive = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = list(csv.DictReader(open(path)))
idle = rows[0]
drained = rows[-1]
load = [r for r in rows[1:-1]]
warm = [r for r in load if int(r["t"].rstrip("s")) >= 60] or load
third = max(1, len(warm) // 3)
first = statistics.median(int(r["rss_kib"]) for r in warm[:third])
last = statistics.median(int(r["rss_kib"]) for r in warm[-third:])
peak = max(int(r["rss_kib"]) for r in load)
fds_load = [int(r["fds"]) for r in load]
growth = last - first
flat_rss = growth <= max(0.10 * first, 8 * 1024)
flat_fds = int(drained["fds"]) <= int(idle["fds"]) + 2
print(f"soak: rss idle {idle['rss_kib']} KiB, under load first third {first:.0f} KiB, last third {last:.0f} KiB "
      f"(growth {growth:+.0f} KiB), peak {peak} KiB, after drain {drained['rss_kib']} KiB")
print(f"soak: fds idle {idle['fds']}, under load {min(fds_load)}..{max(fds_load)}, after drain {drained['fds']}")
print(f"soak: bad-client connections left open past their limit: {stuck}; server answers at the end: {alive}")
ok = flat_rss and flat_fds and stuck == "0" and alive == "yes"
print(f"soak: verdict: memory {'flat' if flat_rss else 'GROWING'}, descriptors "
      f"{'back to idle' if flat_fds else 'LEAKED'} -> {'PASS' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY
