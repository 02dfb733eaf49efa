#!/usr/bin/env bash
# A/B of hl7d builds or settings under the same load, interleaved (see BENCHMARKS.md,
# "Write path"): each variant is its own `hl7d serve` (plaintext listener on 127.0.0.1,
# durable SQLite store on the repository's disk, own fresh data directory), started once and
# kept for the run; each repetition runs `hl7d bench` against every variant in turn, in an
# order that rotates by one each repetition, so that a change in the machine's load falls
# on all of them alike.
#
#   bench/ab.sh A=target/release/hl7d B=/tmp/hl7d-other
#   REPS=7 DURATION=20s bench/ab.sh A=/tmp/x B=/tmp/x:HL7D_SETTING=1:OTHER=2
#
# A variant is NAME=BINARY, optionally followed by :VAR=VALUE pairs put in that server's
# environment; `:PAGE_SIZE=N` is ab.sh's own: the variant's database file is created with
# SQLite pages of N bytes before hl7d opens it (a store keeps the page size it was made
# with), so one binary can be measured with another page size than it gives new stores. The first variant is the reference: the report gives, per variant, the
# median and range of msg/s, ACK p50/p99/max, messages per commit and the mean time of a
# commit (the writer's transaction, fsync included), server CPU time per
# message (all threads, and the store's writer thread alone; from /proc), and its ratio to
# the reference in each repetition (ratios within one repetition are what stands on a shared
# machine; the spread of the reference's own repetitions says how much noise there is).
#
# Environment: REPS (5), DURATION (15s), CONNECTIONS (16), STORE_DIR (a directory on the
# disk to measure, default target/), TLS=1 for TLS listeners (then the bench client does
# TLS 1.3 too). Needs python3 and curl. Writes only under STORE_DIR/ab.* (KEEP=1 keeps it).
set -euo pipefail

REPS=${REPS:-5}
DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-16}
TLS=${TLS:-0}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
STORE_DIR=${STORE_DIR:-$TARGET}
mkdir -p "$STORE_DIR"
WORK=$(mktemp -d "$STORE_DIR/ab.XXXXXX")
RESULTS=$WORK/results.jsonl
PIDS=()
NAMES=()
declare -A BIN_OF PORT_OF ADMIN_OF PID_OF

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
        echo "ab: kept $WORK" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "ab: $*" >&2; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

(($# >= 2)) || { log "usage: bench/ab.sh NAME=BINARY[:VAR=VALUE...] NAME=BINARY[...] ..."; exit 64; }
FIRST_BIN=
for spec in "$@"; do
    name=${spec%%=*}
    rest=${spec#*=}
    IFS=: read -r -a parts <<<"$rest"
    binary=${parts[0]}
    environment=()
    page_size=
    for part in "${parts[@]:1}"; do
        if [[ $part == PAGE_SIZE=* ]]; then page_size=${part#PAGE_SIZE=}; else environment+=("$part"); fi
    done
    [[ -x $binary ]] || { log "$name: $binary is not an executable"; exit 64; }
    [[ -n $FIRST_BIN ]] || FIRST_BIN=$binary
    port=$(free_port)
    admin=$(free_port)
    mkdir -p "$WORK/$name"
    if [[ -n $page_size ]]; then
        mkdir -m 700 "$WORK/$name/data"
        # Setting WAL writes the header, which fixes the page size.
        sqlite3 "$WORK/$name/data/messages.db" "PRAGMA page_size = $page_size; PRAGMA journal_mode = WAL;" >/dev/null
        chmod 600 "$WORK/$name/data/messages.db"
    fi
    {
        echo '[store]'
        echo "path = \"$WORK/$name/data\""
        echo '[admin]'
        echo "listen = \"127.0.0.1:$admin\""
        echo '[log]'
        echo 'level = "warn"'
        echo '[[listener]]'
        echo "name = \"ab\""
        echo "listen = \"127.0.0.1:$port\""
        echo 'max_connections = 300'
        echo 'max_connections_per_ip = 300   # every client is on 127.0.0.1'
        echo 'max_pending = 300              # bench connections wait for each other'
        if [[ $TLS == 1 ]]; then
            [[ -d $WORK/pki ]] || "$binary" cert dev-pki --out "$WORK/pki" >/dev/null
            echo '[listener.tls]'
            echo "cert = \"$WORK/pki/server.pem\""
            echo "key = \"$WORK/pki/server.key\""
        else
            echo 'plaintext = true'
        fi
    } >"$WORK/$name/hl7d.toml"
    env "${environment[@]}" timeout 7200 "$binary" serve --config "$WORK/$name/hl7d.toml" \
        >"$WORK/$name/log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || { log "$name died:"; cat "$WORK/$name/log" >&2; exit 1; }
        sleep 0.05
    done
    NAMES+=("$name")
    BIN_OF[$name]=$binary
    PORT_OF[$name]=$port
    ADMIN_OF[$name]=$admin
    PID_OF[$name]=$(pgrep -P "$pid" | head -1)
    log "$name: ${environment[*]:-} $binary (pid ${PID_OF[$name]}, port $port, page size $(sqlite3 -readonly "$WORK/$name/data/messages.db" 'PRAGMA page_size'))"
done

# Messages and commits so far (the sum and count of the messages-per-commit histogram), and
# the time spent in commits, fsync included, in microseconds.
store_counters() {
    curl -sf "http://127.0.0.1:${ADMIN_OF[$1]}/metrics" |
        awk '$1 == "hl7d_store_commit_messages_sum" { s = $2 } $1 == "hl7d_store_commit_messages_count" { c = $2 }
             $1 == "hl7d_store_commit_seconds_sum" { t = $2 }
             END { printf "%d %d %d\n", s, c, t * 1e6 }'
}

# CPU time in clock ticks (utime + stime) of the whole server and of its store writer thread.
cpu_ticks() {
    local pid=${PID_OF[$1]} task writer=0
    for task in /proc/"$pid"/task/*; do
        [[ $(cat "$task/comm" 2>/dev/null) == hl7d-store-writ ]] &&
            writer=$(awk '{ print $14 + $15 }' "$task/stat")
    done
    echo "$(awk '{ print $14 + $15 }' "/proc/$pid/stat") $writer"
}

bench() {   # bench NAME REP
    local name=$1 rep=$2 tls_args=() out before after cpu_before cpu_after
    [[ $TLS == 1 ]] && tls_args=(--tls --ca "$WORK/pki/ca.pem" --server-name localhost)
    read -r -a before < <(store_counters "$name")
    read -r -a cpu_before < <(cpu_ticks "$name")
    out=$(timeout 600 "$FIRST_BIN" bench --to "127.0.0.1:${PORT_OF[$name]}" "${tls_args[@]}" \
        -c "$CONNECTIONS" --duration "$DURATION" --json --quiet) || log "$name: bench exited non-zero"
    read -r -a cpu_after < <(cpu_ticks "$name")
    read -r -a after < <(store_counters "$name")
    python3 - "$RESULTS" "$name" "$rep" "$out" $((after[0] - before[0])) $((after[1] - before[1])) \
        $((cpu_after[0] - cpu_before[0])) $((cpu_after[1] - cpu_before[1])) "$(getconf CLK_TCK)" \
        $((after[2] - before[2])) <<'PY'
import json, sys
results, name, rep, out, messages, commits, cpu, writer_cpu, tck, commit_us = sys.argv[1:11]
r = json.loads(out)
r.update(variant=name, rep=int(rep), store_messages=int(messages), store_commits=int(commits),
         commit_us=int(commit_us))
acked = max(r["acked"], 1)
r.update(cpu_us_per_msg=int(cpu) / int(tck) * 1e6 / acked, writer_cpu_us_per_msg=int(writer_cpu) / int(tck) * 1e6 / acked)
open(results, "a").write(json.dumps(r) + "\n")
lat = r["latency_us"]
print(f"ab: rep {rep} {name:<12} {r['messages_per_s']:>8.0f} msg/s  p50 {lat['p50']:>7.0f} us  "
      f"p99 {lat['p99']:>7.0f} us  max {lat['max']:>8.0f} us  {int(messages) / max(int(commits), 1):>5.1f} msg/commit  "
      f"commit {int(commit_us) / max(int(commits), 1):.0f} us  "
      f"CPU {r['cpu_us_per_msg']:.0f} us/msg (writer {r['writer_cpu_us_per_msg']:.0f})  errors {r['errors']}", file=sys.stderr)
PY
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
# Warm-up (not recorded).
for name in "${NAMES[@]}"; do
    timeout 120 "$FIRST_BIN" bench --to "127.0.0.1:${PORT_OF[$name]}" -c "$CONNECTIONS" --messages 2000 --quiet --json \
        $([[ $TLS == 1 ]] && echo "--tls --ca $WORK/pki/ca.pem --server-name localhost") >/dev/null || true
done
count=${#NAMES[@]}
for rep in $(seq 1 "$REPS"); do
    for i in $(seq 0 $((count - 1))); do
        bench "${NAMES[$(((i + rep - 1) % count))]}" "$rep"
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$RESULTS" "$LOAD_BEFORE" "$LOAD_AFTER" "$DURATION" "$CONNECTIONS" "$TLS" "${NAMES[@]}" <<'PY'
import json, statistics, sys
results, load_before, load_after, duration, connections, tls, *names = sys.argv[1:]
rows = [json.loads(line) for line in open(results)]
by = {n: {r["rep"]: r for r in rows if r["variant"] == n} for n in names}
ref = names[0]
print(f"{len(by[ref])} repetitions of {duration} at {connections} connections{' (TLS)' if tls == '1' else ''}, "
      f"interleaved; load average {load_before} before, {load_after} after")
print(f"| variant | msg/s median (range) | ratio to {ref}: median (range of the repetitions) | ACK p50 µs | p99 µs | max µs | msg/commit | commit µs (mean) | server CPU µs/msg (writer thread) | errors |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for n in names:
    reps = by[n]
    rates = [r["messages_per_s"] for r in reps.values()]
    ratios = [reps[k]["messages_per_s"] / by[ref][k]["messages_per_s"] for k in reps if k in by[ref]]
    med = lambda key: statistics.median(r["latency_us"][key] for r in reps.values())
    commits = max(1, sum(r["store_commits"] for r in reps.values()))
    per_commit = sum(r["store_messages"] for r in reps.values()) / commits
    commit_us = sum(r["commit_us"] for r in reps.values()) / commits
    errors = sum(r["errors"] for r in reps.values())
    print(f"| {n} | {statistics.median(rates):,.0f} ({min(rates):,.0f}–{max(rates):,.0f}) | "
          f"{statistics.median(ratios):.3f} ({min(ratios):.3f}–{max(ratios):.3f}) | {med('p50'):,.0f} | "
          f"{med('p99'):,.0f} | {max(r['latency_us']['max'] for r in reps.values()):,.0f} | {per_commit:.1f} | {commit_us:,.0f} | "
          f"{statistics.median(r['cpu_us_per_msg'] for r in reps.values()):.0f} "
          f"({statistics.median(r['writer_cpu_us_per_msg'] for r in reps.values()):.0f}) | {errors} |")
PY
