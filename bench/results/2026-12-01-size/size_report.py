#!/usr/bin/env python3
"""Size breakdown of a store: python3 size_report.py DIR/messages.db (read-only; needs dbstat)."""
import os, sqlite3, sys
db = sys.argv[1]
conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
file = os.path.getsize(db)
page = conn.execute("PRAGMA page_size").fetchone()[0]
version = conn.execute("PRAGMA user_version").fetchone()[0]
raw, rows = conn.execute("SELECT sum(size), count(*) FROM messages").fetchone()
trees = conn.execute("SELECT name, count(*), sum(pgsize), sum(payload), sum(unused) FROM dbstat GROUP BY name ORDER BY 3 DESC").fetchall()
print(f"schema {version}, page size {page}, {rows} rows, raw {raw} B, file {file} B: {file / raw:.4f}x raw")
t = {n: (c, pg, pl, un) for n, c, pg, pl, un in trees}
c, pg, pl, un = t["messages"]
print(f"| raw messages | {raw:,} | 1 | {raw / rows:.0f} B |")
print(f"| table: other columns and record headers | {pl - raw:,} | {(pl - raw) / raw:.3f} | {(pl - raw) / rows:.0f} B |")
print(f"| table: free space in its pages | {un:,} | {un / raw:.3f} | {un / rows:.0f} B |")
print(f"| table: page and cell headers | {pg - pl - un:,} | {(pg - pl - un) / raw:.3f} | {(pg - pl - un) / rows:.0f} B |")
idx = [(n, v) for n, v in t.items() if n.startswith("messages_")]
ipg = sum(v[1] for _, v in idx); iun = sum(v[3] for _, v in idx)
print(f"| indexes ({len(idx)}), of which {iun / ipg:.0%} free | {ipg:,} | {ipg / raw:.3f} | {ipg / rows:.0f} B |")
rest = file - pg - ipg
print(f"| everything else (deliveries, schema, free pages) | {rest:,} | {rest / raw:.3f} | {rest / rows:.0f} B |")
print(f"| file | {file:,} | {file / raw:.3f} | {file / rows:.0f} B |")
print("indexes: " + ", ".join(f"{n} {v[1] / 1e6:.1f} MB" for n, v in sorted(idx, key=lambda x: -x[1][1])))
nulls = conn.execute("SELECT sum(lane_sender IS NOT NULL), sum(dup_key IS NOT NULL), avg(length(lane_sender) + length(lane_patient)) FROM messages").fetchone()
print(f"rows with lane keys: {nulls[0]}, with dup_key: {nulls[1]}, mean lane bytes where present: {nulls[2]}")
