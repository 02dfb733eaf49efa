#!/usr/bin/env python3
"""Which b-tree each WAL frame belongs to: frames per commit by table and index.

    python3 bench/wal_frames.py COPY/messages.db     # COPY/messages.db-wal next to it
    python3 bench/wal_frames.py COPY/messages.db 9.8 # and per message, at 9.8 messages a commit

Reads the write-ahead log's frames (the valid ones: the current salts, up to the last commit
frame), maps each frame's page number to the table or index owning that page (SQLite's
`dbstat` over the same copy, WAL applied) and prints, per b-tree, the frames written, the
frames per commit, and how many of them were interior (not leaf) pages. Run it on a *copy* of a store taken while hl7d is idle (bench/wal_pages.sh
does, with BREAKDOWN=1): opening the copy may checkpoint it.
"""
import collections
import sqlite3
import struct
import sys


def frames(wal_path):
    """(page number, is commit) of every valid frame, in order."""
    data = open(wal_path, "rb").read()
    if len(data) < 32:
        return [], 0
    magic, _version, page_size, _seq, salt1, salt2 = struct.unpack(">IIIIII", data[:24])
    if magic not in (0x377F0682, 0x377F0683):
        sys.exit(f"{wal_path}: not a WAL file")
    out, pending = [], []
    offset = 32
    while offset + 24 + page_size <= len(data):
        pgno, commit, s1, s2 = struct.unpack(">IIII", data[offset:offset + 16])
        if (s1, s2) != (salt1, salt2):
            break
        pending.append(pgno)
        if commit:
            out.extend((p, i == len(pending) - 1) for i, p in enumerate(pending))
            pending = []
        offset += 24 + page_size
    return out, page_size


def main():
    db = sys.argv[1]
    written, page_size = frames(db + "-wal")
    if not written:
        sys.exit("no committed frames in the WAL copy")
    commits = sum(1 for _, c in written if c)
    # Read the page map before anything else opens the copy: dbstat sees the WAL's pages.
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    owner = dict((p, (n, t)) for n, p, t in conn.execute("SELECT name, pageno, pagetype FROM dbstat"))
    rows = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    by_tree = collections.Counter(owner.get(p, ("(free)", ""))[0] for p, _ in written)
    inner = collections.Counter(owner[p][0] for p, _ in written if owner.get(p, ("", ""))[1] == "internal")
    print(f"{len(written)} frames of {page_size} bytes in {commits} commits "
          f"({len(written) / commits:.2f} per commit); {rows} rows in the copy")
    # Messages per commit, when given (the run's, from hl7d's metrics): frames and bytes per
    # message, each frame being its 24-byte header and one page.
    per_commit = float(sys.argv[2]) if len(sys.argv) > 2 else None
    messages = commits * per_commit if per_commit else None
    extra = f" {'per message':>12} {'KiB/message':>12}" if messages else ""
    print(f"{'b-tree':<28} {'frames':>8} {'per commit':>11} {'of them interior':>17}{extra}")
    for name, count in by_tree.most_common() + [("(all)", len(written))]:
        line = f"{name:<28} {count:>8} {count / commits:>11.2f} {inner[name]:>17}"
        if messages:
            line += f" {count / messages:>12.3f} {count * (page_size + 24) / 1024 / messages:>12.2f}"
        print(line)


if __name__ == "__main__":
    main()
