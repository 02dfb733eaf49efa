#!/usr/bin/env bash
# WAL pages written per message by the durable store, counted by the kernel (see
# BENCHMARKS.md, "WAL pages per message").
#
#   bench/wal_pages.sh                              # 100 000 messages at 16 connections
#   MESSAGES=20000 CONNECTIONS="1 16 64" bench/wal_pages.sh
#   HL7D=/path/to/other/hl7d bench/wal_pages.sh     # another build (no cargo build then)
#   PAGE_SIZE=4096 bench/wal_pages.sh               # the store made with 4 KiB pages first
#
# One release `hl7d serve` (plaintext listener on 127.0.0.1, durable SQLite store on the
# repository's disk, `[admin]` for /metrics) is driven by `hl7d bench` at each connection
# count in turn. During each run, `perf stat` counts the server's syscalls on the database's
# files only, with in-kernel tracepoint filters on the file descriptor (no per-call stop of
# the process as with strace, so batches keep their size):
#   - `pwrite64` of more than 32 bytes to a `messages.db-wal` descriptor: one per WAL frame
#     (SQLite writes each frame as a 24-byte header and then the page; the WAL's own header
#     is 32 bytes). Counting the writes rather than reading the WAL's frame counter keeps
#     the count right across checkpoints and WAL restarts, which start the counter afresh.
#   - `pwrite64` to a `messages.db` descriptor: database pages written by checkpoints.
#   - `fsync`/`fdatasync` on either file.
# At the end, bench/wal_frames.py splits the frames of the last WAL generation by the table
# or index they belong to.
# The messages and commits of the same window come from the server's own counters
# (`hl7d_store_commit_messages` sum and count on /metrics), read before and after each run.
# Every descriptor the server has open on the two files after a warm-up is counted (the
# writer's, and the checkpoint thread's, which opens its connection at the first checkpoint;
# the warm-up writes enough for one).
#
# Needs: cargo (unless HL7D is given), perf with the syscalls tracepoints (root or
# kernel.perf_event_paranoid <= 1), python3, curl. Writes only under target/walpages.*
# (KEEP=1 keeps it). Everything it starts is stopped on exit.
set -euo pipefail

MESSAGES=${MESSAGES:-100000}
CONNECTIONS=${CONNECTIONS:-16}
WARMUP=${WARMUP:-10000}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ -z ${HL7D:-} ]]; then
    echo "wal_pages: building hl7d (release)" >&2
    (cd "$ROOT" && cargo build --release --quiet --bin hl7d)
    HL7D=$TARGET/release/hl7d
fi
mkdir -p "$TARGET"
# On the repository's file system, not a tmpfs: this is about the disk's write pattern.
WORK=$(mktemp -d "$TARGET/walpages.XXXXXX")
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
        echo "wal_pages: kept $WORK" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "wal_pages: $*" >&2; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

PORT=$(free_port)
ADMIN=$(free_port)
cat >"$WORK/hl7d.toml" <<EOF
[store]
path = "$WORK/data"

[admin]
listen = "127.0.0.1:$ADMIN"

[log]
level = "warn"

[[listener]]
name = "wal"
listen = "127.0.0.1:$PORT"
plaintext = true
max_connections = 200
max_connections_per_ip = 200   # every client is on 127.0.0.1
max_pending = 200              # bench connections wait for each other before sending
EOF
if [[ -n ${PAGE_SIZE:-} ]]; then
    # A store keeps the page size it was made with: make it first. Setting WAL writes the
    # header, which fixes the page size.
    mkdir -m 700 "$WORK/data"
    sqlite3 "$WORK/data/messages.db" "PRAGMA page_size = $PAGE_SIZE; PRAGMA journal_mode = WAL;" >/dev/null
    chmod 600 "$WORK/data/messages.db"
fi
timeout 3600 "$HL7D" serve --config "$WORK/hl7d.toml" 2>"$WORK/hl7d.log" &
PIDS+=("$!")
for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.05
done
# `timeout` is the parent; the server is its child.
SERVER=$(pgrep -P "${PIDS[0]}" -x "$(basename "$HL7D" | cut -c1-15)")
[[ -n $SERVER ]] || { log "hl7d did not start:"; cat "$WORK/hl7d.log" >&2; exit 1; }

# Messages and commits so far: the sum and count of the messages-per-commit histogram.
store_counters() {
    curl -sf "http://127.0.0.1:$ADMIN/metrics" |
        awk '$1 == "hl7d_store_commit_messages_sum" { s = $2 } $1 == "hl7d_store_commit_messages_count" { c = $2 }
             END { printf "%d %d\n", s, c }'
}

# File descriptors of the server open on FILE, as a tracepoint filter ("fd == 7 || fd == 12").
fd_filter() {
    local file=$1 fd filter=
    for fd in /proc/"$SERVER"/fd/*; do
        if [[ $(readlink "$fd" 2>/dev/null) == "$file" ]]; then
            filter+="${filter:+ || }fd == ${fd##*/}"
        fi
    done
    echo "$filter"
}

log "server pid $SERVER; warm-up: $WARMUP messages"
timeout 600 "$HL7D" bench --to "127.0.0.1:$PORT" -c 16 --messages "$WARMUP" --quiet --json >/dev/null
WAL_FDS=$(fd_filter "$WORK/data/messages.db-wal")
DB_FDS=$(fd_filter "$WORK/data/messages.db")
[[ -n $WAL_FDS && -n $DB_FDS ]] || { log "no descriptors on the database files"; exit 1; }
PAGE_SIZE=$(sqlite3 -readonly "$WORK/data/messages.db" 'PRAGMA page_size' 2>/dev/null || echo "?")
log "WAL descriptors: $WAL_FDS; database: $DB_FDS; page size $PAGE_SIZE"

printf '%-6s %9s %8s %8s %10s %10s %11s %10s %9s %8s %10s\n' connections messages commits msg/commit \
    wal_frames frames/msg frames/commit wal_KiB/msg ckpt_pg/msg syncs msg/s
PER_COMMIT=
for connections in $CONNECTIONS; do
    read -r messages_before commits_before < <(store_counters)
    perf stat -x, -o "$WORK/perf.$connections" -p "$SERVER" \
        -e syscalls:sys_enter_pwrite64 --filter "($WAL_FDS) && count > 32" \
        -e syscalls:sys_enter_pwrite64 --filter "($WAL_FDS) && count <= 32" \
        -e syscalls:sys_enter_pwrite64 --filter "$DB_FDS" \
        -e syscalls:sys_enter_fsync --filter "$WAL_FDS || $DB_FDS" \
        -e syscalls:sys_enter_fdatasync --filter "$WAL_FDS || $DB_FDS" &
    perf_pid=$!
    PIDS+=("$perf_pid")
    sleep 0.5   # perf attaches
    timeout 1200 "$HL7D" bench --to "127.0.0.1:$PORT" -c "$connections" --messages "$MESSAGES" --quiet --json \
        >"$WORK/bench.$connections.json"
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    read -r messages_after commits_after < <(store_counters)
    PER_COMMIT=$(python3 -c "print($((messages_after - messages_before)) / max($((commits_after - commits_before)), 1))")
    python3 - "$WORK/perf.$connections" "$WORK/bench.$connections.json" "$connections" \
        $((messages_after - messages_before)) $((commits_after - commits_before)) "$PAGE_SIZE" <<'PY'
import json, sys
perf, bench, connections, messages, commits, page = sys.argv[1:7]
messages, commits = int(messages), int(commits)
counts = []
for line in open(perf):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[2].startswith("syscalls:"):
        counts.append(int(parts[0]) if parts[0].isdigit() else 0)
frames, headers, db_pages, fsyncs, fdatasyncs = counts
rate = json.load(open(bench)).get("messages_per_s", 0)
page_bytes = int(page) if page.isdigit() else 4096
print(f"{connections:<6} {messages:>9} {commits:>8} {messages / commits:>8.2f} {frames:>10} "
      f"{frames / messages:>10.3f} {frames / commits:>11.2f} {frames * (page_bytes + 24) / 1024 / messages:>10.2f} "
      f"{db_pages / messages:>9.3f} {fsyncs + fdatasyncs:>8} {rate:>10.0f}")
print(f"  (frame headers written {headers}; fsync {fsyncs}, fdatasync {fdatasyncs})", file=sys.stderr)
PY
done

# Which b-trees those frames went to: a copy of the store taken while the server is idle
# (after a pause for a checkpoint under way), read by bench/wal_frames.py. The copy's WAL
# holds what was written since the WAL last started afresh (at most ~16 MiB).
sleep 2
mkdir "$WORK/copy"
cp "$WORK/data/messages.db" "$WORK/data/messages.db-wal" "$WORK/data/messages.db-shm" "$WORK/copy/"
# Per message too, by the last run's messages per commit.
python3 "$ROOT/bench/wal_frames.py" "$WORK/copy/messages.db" $PER_COMMIT || log "no breakdown (WAL empty?)"
