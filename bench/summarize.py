"""Turns the JSON lines of bench/compare.sh into the Markdown tables of BENCHMARKS.md.

    python3 bench/summarize.py results.jsonl
    python3 bench/summarize.py --record results.jsonl SERVER LABEL REPORT_JSON   (used by compare.sh)

Medians over the repetitions; ratios are of medians measured in the same run.
"""
import json
import statistics
import sys
from collections import defaultdict

if sys.argv[1] == "--record":
    # --record RESULTS SERVER LABEL REPORT: append one bench report, say it on stderr.
    results, server, label, report = sys.argv[2:6]
    r = json.loads(report)
    r["server"], r["run"] = server, label
    with open(results, "a") as f:
        f.write(json.dumps(r) + "\n")
    rate = r.get("handshakes_per_s", r["messages_per_s"])
    print(f"compare: {server:<13} {label:<11} {rate:>9.0f}/s  p50 {r['latency_us']['p50']:>8.0f} us  "
          f"p99 {r['latency_us']['p99']:>8.0f} us  errors {r['errors']}", file=sys.stderr)
    sys.exit(0)

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
meta = next((r for r in rows if r.get("run") == "meta"), {})
runs = defaultdict(list)
for r in rows:
    if "messages_per_s" in r:
        runs[(r["server"], r["run"])].append(r)
servers = list(dict.fromkeys(r["server"] for r in rows if "server" in r))
conns = sorted({int(run[1:]) for (_, run) in runs if run.startswith("c")})


def median(server, run, pick):
    samples = [pick(r) for r in runs.get((server, run), [])]
    return statistics.median(samples) if samples else None


def fmt(x, digits=0):
    return "–" if x is None else f"{x:,.{digits}f}"


print(f"Run of {meta.get('date', '?')}: {meta.get('reps', '?')} repetition(s) of {meta.get('duration', '?')} "
      f"per cell, median shown; load average at the end {meta.get('loadavg', '?')}.\n")
print("| server | " + " | ".join(f"{c} conn: msg/s" for c in conns) + " | "
      + " | ".join(f"{c} conn: p50 / p99 µs" for c in conns) + " | errors |")
print("| --- |" + " ---: |" * (2 * len(conns)) + " ---: |")
for s in servers:
    if not any((s, f"c{c}") in runs for c in conns):
        continue
    rates = [fmt(median(s, f"c{c}", lambda r: r["messages_per_s"])) for c in conns]
    lat = [f"{fmt(median(s, f'c{c}', lambda r: r['latency_us']['p50']))} / "
           f"{fmt(median(s, f'c{c}', lambda r: r['latency_us']['p99']))}" for c in conns]
    errors = sum(r["errors"] for (srv, _), rs in runs.items() if srv == s for r in rs)
    print(f"| {s} | " + " | ".join(rates) + " | " + " | ".join(lat) + f" | {errors} |")

pairs = [("hl7d-tls", "python-tls"), ("hl7d-plain", "python-plain"), ("hl7d-tls", "simple-hl7"),
         ("hl7d-plain", "simple-hl7"), ("hl7d-tmpfs", "simple-hl7"), ("hl7d-plain", "hl7d-tmpfs")]
print("\n| ratio (messages/s, same run) | " + " | ".join(f"{c} conn" for c in conns) + " |")
print("| --- |" + " ---: |" * len(conns))
for a, b in pairs:
    cells = []
    for c in conns:
        x, y = (median(a, f"c{c}", lambda r: r["messages_per_s"]), median(b, f"c{c}", lambda r: r["messages_per_s"]))
        cells.append("–" if not x or not y else f"{x / y:.2f}×")
    if any(c != "–" for c in cells):
        print(f"| {a} / {b} | " + " | ".join(cells) + " |")

hs = [s for s in servers if (s, "handshakes") in runs]
if hs:
    print("\n| full TLS handshakes (new connection per message) | handshakes/s | connect p50 / p99 µs | errors |")
    print("| --- | ---: | ---: | ---: |")
    for s in hs:
        rate = median(s, "handshakes", lambda r: r["handshakes_per_s"])
        p50 = median(s, "handshakes", lambda r: r["connect_latency_us"]["p50"])
        p99 = median(s, "handshakes", lambda r: r["connect_latency_us"]["p99"])
        errors = sum(r["errors"] for r in runs[(s, "handshakes")])
        print(f"| {s} | {fmt(rate)} | {fmt(p50)} / {fmt(p99)} | {errors} |")

mem = {r["server"]: r for r in rows if r.get("run") == "peak_rss"}
if mem:
    print("\n| server | peak RSS (VmHWM) over the whole run |")
    print("| --- | ---: |")
    for s in servers:
        if s in mem:
            print(f"| {s} | {mem[s]['vmhwm_kib'] / 1024:.1f} MiB |")
idle = next((r for r in rows if r.get("run") == "idle"), None)
if idle:
    per = (idle["rss_with_idle_kib"] - idle["rss_before_kib"]) / max(idle["idle_connections"], 1)
    print(f"\nhl7d-tls RSS: {idle['rss_at_start_kib'] / 1024:.1f} MiB idle at start; "
          f"{idle['rss_before_kib'] / 1024:.1f} MiB after the load; "
          f"{idle['rss_with_idle_kib'] / 1024:.1f} MiB holding {idle['idle_connections']} idle TLS connections "
          f"({per:.1f} KiB per connection).")
print("\n" + ", ".join(f"{k}: {v}" for k, v in meta.items() if k not in ("run",)))
