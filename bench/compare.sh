#!/usr/bin/env bash
# Side-by-side comparison of hl7d with existing HL7 MLLP servers, all driven by `hl7d bench`
# on this machine, in one run (see BENCHMARKS.md, "End to end: hl7d bench").
#
#   bench/compare.sh                 # full run: ~6 minutes on 2 cores
#   DURATION=2s REPS=1 CONNECTIONS="1 16" bench/compare.sh    # quick look
#
# Servers (all on 127.0.0.1, each in its own process, started once and kept for the run):
#   hl7d-plain, hl7d-tls   `hl7d serve` (release build) with its SQLite store (fsync before
#                          every positive ACK), each with its own fresh data directory
#   hl7d-tmpfs             analysis only, NOT durable: hl7d-plain with its store on /dev/shm,
#                          where fsync costs nothing; the gap to hl7d-plain is the disk's
#   python-plain/-tls      the python `hl7` package's asyncio MLLP server, ACK per message,
#                          TLS through an `ssl` context; stores nothing
#   simple-hl7             the npm `simple-hl7` TCP server, ACK per message; stores nothing;
#                          no TLS in that package
# For each connection count, repetition and server in turn (interleaved, so that the
# machine's noise falls on every server alike), `hl7d bench` runs for DURATION; the tables
# give the median of the repetitions. Then full TLS handshakes (one connection per message),
# the peak RSS (VmHWM) of every server, and hl7d's RSS idle and holding IDLE_CONNECTIONS
# idle TLS connections.
#
# Needs: cargo, python3 with `hl7` (pip install hl7), node + npm (simple-hl7 is installed
# into a temporary directory, never into the repository). Loopback only. Everything the
# script starts is stopped on exit (trap), each server also stops by itself after
# TIME_LIMIT, and every bench run is bounded by `timeout`.
set -euo pipefail

DURATION=${DURATION:-5s}
REPS=${REPS:-3}
CONNECTIONS=${CONNECTIONS:-"1 16 64"}
HANDSHAKE_CONNECTIONS=${HANDSHAKE_CONNECTIONS:-16}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-1000}
SERVERS=${SERVERS:-"hl7d-plain hl7d-tls hl7d-tmpfs python-plain python-tls simple-hl7"}
TIME_LIMIT=${TIME_LIMIT:-1500}     # seconds: the servers' own bound on their lifetime
SIMPLE_HL7_VERSION=${SIMPLE_HL7_VERSION:-3.3.0}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
HL7D=$TARGET/release/hl7d
# On the repository's file system, not a tmpfs: hl7d's fsyncs must reach a real disk.
WORK=$(mktemp -d "$TARGET/compare.XXXXXX")
RESULTS=$WORK/results.jsonl
SHM=/dev/shm/hl7d-compare.$$
PIDS=()
declare -A PID_OF PORT_OF

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$SHM"
    if [[ -z ${KEEP:-} ]]; then
        rm -rf "$WORK"
    else
        echo "kept $WORK" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "compare: $*" >&2; }

wait_for_file() {
    local file=$1 pid=$2
    for _ in $(seq 1 200); do
        [[ -s $file ]] && return 0
        kill -0 "$pid" 2>/dev/null || { log "server $pid died; its log:"; cat "$file.log" >&2 || true; exit 1; }
        sleep 0.05
    done
    log "timed out waiting for $file"
    exit 1
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

rss_kib() { awk -v key="$2:" '$1 == key { print $2 }' "/proc/$1/status"; }

# ---- build and prerequisites -------------------------------------------------------------
log "building hl7d (release)"
(cd "$ROOT" && cargo build --release --quiet --bin hl7d)
python3 -c 'import hl7' || { log "python package hl7 missing: pip install hl7"; exit 1; }
log "installing simple-hl7@$SIMPLE_HL7_VERSION into $WORK/npm"
(cd "$WORK" && mkdir npm && cd npm && npm install --silent --no-audit --no-fund --no-save \
    "simple-hl7@$SIMPLE_HL7_VERSION" >/dev/null)
"$HL7D" cert dev-pki --out "$WORK/pki" >/dev/null

# ---- servers -----------------------------------------------------------------------------
start_hl7d() {   # start_hl7d NAME TLS(yes|no) DATA_DIR
    local name=$1 tls=$2 data=$3 port
    port=$(free_port)
    mkdir -p "$WORK/$name"
    {
        echo '[store]'
        echo "path = \"$data\""
        echo '[log]'
        echo 'level = "warn"'
        echo '[[listener]]'
        echo "name = \"$name\""
        echo "listen = \"127.0.0.1:$port\""
        echo "max_connections = $((IDLE_CONNECTIONS + 100))"
        # Every client is on 127.0.0.1, and bench connections wait for each other before
        # their first message: lift the per-address and pending caps to the same number.
        echo "max_connections_per_ip = $((IDLE_CONNECTIONS + 100))"
        echo "max_pending = $((IDLE_CONNECTIONS + 100))"
        if [[ $tls == yes ]]; then
            echo '[listener.tls]'
            echo "cert = \"$WORK/pki/server.pem\""
            echo "key = \"$WORK/pki/server.key\""
        else
            echo 'plaintext = true'
        fi
    } >"$WORK/$name/hl7d.toml"
    timeout "$TIME_LIMIT" "$HL7D" serve --config "$WORK/$name/hl7d.toml" >"$WORK/$name/log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || { log "$name died:"; cat "$WORK/$name/log" >&2; exit 1; }
        sleep 0.05
    done
    # `timeout` is the parent; the server is its child.
    PID_OF[$name]=$(pgrep -P "$pid" hl7d)
    PORT_OF[$name]=$port
}

start_python() {
    local name=$1 tls=$2 args=()
    [[ $tls == yes ]] && args=(--tls "$WORK/pki/server.pem" "$WORK/pki/server.key")
    timeout "$TIME_LIMIT" python3 "$ROOT/bench/peers/python_hl7_server.py" "$WORK/$name.port" \
        --seconds "$TIME_LIMIT" "${args[@]}" >"$WORK/$name.port.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_for_file "$WORK/$name.port" "$pid"
    PID_OF[$name]=$(pgrep -P "$pid" python3)
    PORT_OF[$name]=$(cat "$WORK/$name.port")
}

start_simple_hl7() {
    local name=$1
    NODE_PATH=$WORK/npm/node_modules timeout "$TIME_LIMIT" node "$ROOT/bench/peers/simple_hl7_server.js" \
        "$WORK/$name.port" "$TIME_LIMIT" >"$WORK/$name.port.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_for_file "$WORK/$name.port" "$pid"
    PID_OF[$name]=$(pgrep -P "$pid" node)
    PORT_OF[$name]=$(cat "$WORK/$name.port")
}

for server in $SERVERS; do
    case $server in
        hl7d-plain) start_hl7d "$server" no "$WORK/$server/data" ;;
        hl7d-tls) start_hl7d "$server" yes "$WORK/$server/data" ;;
        hl7d-tmpfs) start_hl7d "$server" no "$SHM/data" ;;
        python-plain) start_python "$server" no ;;
        python-tls) start_python "$server" yes ;;
        simple-hl7) start_simple_hl7 "$server" ;;
        *) log "unknown server $server"; exit 64 ;;
    esac
    log "$server: pid ${PID_OF[$server]}, port ${PORT_OF[$server]}"
done
IDLE_RSS_KIB=
[[ -n ${PID_OF[hl7d-tls]:-} ]] && IDLE_RSS_KIB=$(rss_kib "${PID_OF[hl7d-tls]}" VmRSS)

bench() {   # bench SERVER LABEL ARGS...
    local server=$1 label=$2 tls_args=()
    shift 2
    [[ $server == *-tls ]] && tls_args=(--tls --ca "$WORK/pki/ca.pem" --server-name localhost)
    local out
    # Bounded: DURATION plus the ACK timeout plus slack.
    if ! out=$(timeout 120 "$HL7D" bench --to "127.0.0.1:${PORT_OF[$server]}" "${tls_args[@]}" \
        --duration "$DURATION" --ack-timeout 10s --json --quiet "$@"); then
        log "$server $label: bench exited non-zero"
    fi
    [[ -n $out ]] || { log "$server $label: no report"; return; }
    python3 "$ROOT/bench/summarize.py" --record "$RESULTS" "$server" "$label" "$out"
}

# ---- persistent connections --------------------------------------------------------------
# Warm-up (not recorded): first connections, page cache, python imports of the ssl module.
for server in $SERVERS; do
    timeout 60 "$HL7D" bench --to "127.0.0.1:${PORT_OF[$server]}" --messages 200 --quiet --json \
        $([[ $server == *-tls ]] && echo "--tls --ca $WORK/pki/ca.pem --server-name localhost") >/dev/null || true
done
for connections in $CONNECTIONS; do
    for rep in $(seq 1 "$REPS"); do
        for server in $SERVERS; do
            bench "$server" "c$connections" --connections "$connections"
        done
    done
done

# ---- full TLS handshakes (a new connection per message) ----------------------------------
for rep in $(seq 1 "$REPS"); do
    for server in $SERVERS; do
        [[ $server == *-tls ]] || continue
        bench "$server" "handshakes" --handshakes --connections "$HANDSHAKE_CONNECTIONS"
    done
done

# ---- memory ------------------------------------------------------------------------------
for server in $SERVERS; do
    echo "{\"server\": \"$server\", \"run\": \"peak_rss\", \"vmhwm_kib\": $(rss_kib "${PID_OF[$server]}" VmHWM)}" >>"$RESULTS"
done
if [[ -n ${PID_OF[hl7d-tls]:-} ]]; then
    ulimit -n $((IDLE_CONNECTIONS * 2 + 100)) 2>/dev/null || true
    before=$(rss_kib "${PID_OF[hl7d-tls]}" VmRSS)
    timeout 120 python3 "$ROOT/bench/peers/idle_tls_clients.py" "${PORT_OF[hl7d-tls]}" "$WORK/pki/ca.pem" \
        "$IDLE_CONNECTIONS" "$WORK/idle.ready" "$WORK/idle.done" &
    idle_pid=$!
    PIDS+=("$idle_pid")
    wait_for_file "$WORK/idle.ready" "$idle_pid"
    sleep 1
    held=$(rss_kib "${PID_OF[hl7d-tls]}" VmRSS)
    opened=$(cat "$WORK/idle.ready")
    touch "$WORK/idle.done"
    wait "$idle_pid" || true
    echo "{\"server\": \"hl7d-tls\", \"run\": \"idle\", \"rss_at_start_kib\": $IDLE_RSS_KIB, \"rss_before_kib\": $before, \"rss_with_idle_kib\": $held, \"idle_connections\": $opened}" >>"$RESULTS"
fi

# ---- report ------------------------------------------------------------------------------
{
    echo "{\"run\": \"meta\", \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"duration\": \"$DURATION\", \"reps\": $REPS," \
        "\"hl7d\": \"$("$HL7D" --version)\", \"rustc\": \"$(rustc --version)\"," \
        "\"python\": \"$(python3 --version 2>&1)\", \"python_hl7\": \"$(python3 -c 'import hl7; print(hl7.__version__)')\"," \
        "\"openssl\": \"$(python3 -c 'import ssl; print(ssl.OPENSSL_VERSION)')\"," \
        "\"node\": \"$(node --version)\", \"simple_hl7\": \"$SIMPLE_HL7_VERSION\"," \
        "\"cpu\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')\", \"cores\": $(nproc)," \
        "\"kernel\": \"$(uname -r)\", \"loadavg\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
} >>"$RESULTS"
python3 "$ROOT/bench/summarize.py" "$RESULTS"
if [[ -n ${RESULTS_OUT:-} ]]; then
    cp "$RESULTS" "$RESULTS_OUT"
    log "raw results copied to $RESULTS_OUT"
fi
