#!/usr/bin/env python3
"""Server time of the console's patient search on a large store (issue 17, BENCHMARKS.md).

Starts a release `hl7d serve` on a store made by `bench/gen_store.rs` with an admin endpoint
and a viewer token, then asks for the messages of random patients, alternately as the page
(`GET /messages?patient=…`) and as the API (`GET /api/v1/messages?patient=…`), and reports
p50/p95/max of the server's own `Server-Timing: app;dur=…` (handler start to the rendered
body: index lookup, rows, HTML or JSON) and of the whole HTTP exchange seen by the client.

    cargo build --release --example gen_store --bin hl7d
    target/release/examples/gen_store --dir /work/bench-data/s-ui/store1m --messages 1000000
    python3 bench/console_bench.py --store /work/bench-data/s-ui/store1m --requests 400

Patients are drawn uniformly from the store's messages (a Zipf-skewed population, so busy
patients come up more often, as they would at a help desk); each search returns the newest
50. The first pass after start reads from a cold page cache; `--warmup` requests are run and
not counted.
"""

import argparse
import json
import os
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--hl7d", default="target/release/hl7d")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()

    db = sqlite3.connect(f"file:{os.path.join(args.store, 'messages.db')}?mode=ro", uri=True)
    (max_id,) = db.execute("SELECT max(id) FROM messages").fetchone()
    (count,) = db.execute("SELECT count(*) FROM messages").fetchone()
    rng = random.Random(args.seed)
    patients = []
    while len(patients) < args.requests + args.warmup:
        row = db.execute("SELECT patient_id FROM messages WHERE id >= ? AND patient_id IS NOT NULL LIMIT 1",
                         (rng.randint(1, max_id),)).fetchone()
        if row:
            patients.append(row[0])
    db.close()

    work = tempfile.mkdtemp(prefix="console-bench-")
    config = os.path.join(work, "hl7d.toml")
    users = os.path.join(work, "users.toml")
    with open(config, "w") as f:
        f.write(f'[store]\npath = "{os.path.abspath(args.store)}"\n\n'
                f'[admin]\nlisten = "127.0.0.1:0"\nusers = "{users}"\n\n'
                '[[listener]]\nname = "bench"\nlisten = "127.0.0.1:0"\nplaintext = true\n')
    created = subprocess.run([args.hl7d, "tokens", "create", "--role", "viewer", "--name", "bench",
                              "--config", config], check=True, capture_output=True, text=True)
    token = created.stdout.strip().splitlines()[-1].strip()
    server = subprocess.Popen([args.hl7d, "serve", "--config", config], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    admin = None
    for line in server.stderr:
        m = re.search(r"admin endpoint.* addr=([0-9.:]+)", line)
        if m:
            admin = m.group(1)
        if "hl7d started" in line:
            break
    if not admin:
        server.kill()
        sys.exit("hl7d serve did not say where its admin endpoint listens")

    def ask(path):
        request = urllib.request.Request(f"http://{admin}{path}", headers={"Authorization": f"Bearer {token}"})
        start = time.perf_counter()
        with urllib.request.urlopen(request) as response:
            body = response.read()
            timing = response.headers.get("Server-Timing", "")
        total = (time.perf_counter() - start) * 1000
        server_ms = float(re.search(r"dur=([0-9.]+)", timing).group(1))
        return server_ms, total, body

    results = {"page": ([], []), "api": ([], [])}
    found = []
    try:
        for i, patient in enumerate(patients):
            kind = "page" if i % 2 == 0 else "api"
            path = ("/messages?patient=" if kind == "page" else "/api/v1/messages?patient=") + \
                urllib.request.quote(patient)
            server_ms, total, body = ask(path)
            if kind == "api":
                found.append(len(json.loads(body)["messages"]))
            if i >= args.warmup:
                results[kind][0].append(server_ms)
                results[kind][1].append(total)
    finally:
        server.terminate()
        server.wait()

    print(f"store: {args.store} ({count:,} messages); {args.requests} searches by patient "
          f"(+{args.warmup} warm-up), newest 50 each; messages per answer: "
          f"median {statistics.median(found)}, max {max(found)}")
    for kind, (server_times, totals) in results.items():
        print(f"{kind:4}  server p50 {percentile(server_times, 50):7.2f} ms  p95 {percentile(server_times, 95):7.2f} ms"
              f"  max {max(server_times):7.2f} ms   |  client total p50 {percentile(totals, 50):7.2f} ms"
              f"  p95 {percentile(totals, 95):7.2f} ms  (n={len(server_times)})")


if __name__ == "__main__":
    main()
