#!/usr/bin/env python3
"""Where the store's slow batches come from (see BENCHMARKS.md, "Soak").

    python3 bench/stalls.py HL7D_LOG [DISK_PROBE_LOG]

Reads the debug lines of `hl7d serve` run with RUST_LOG=warn,hl7d::store::sqlite=debug
(human format): "store batch slow" (a batch whose first message waited 10 ms or more from
`append` to its answer: queued_us, commit_us), "store checkpoint" (PASSIVE, on the
checkpoint thread) and "store WAL restart" (on the writer, between batches), each with its
elapsed time; and, if given, bench/disk_probe.py's log. For the slow batches of 50, 100 and
200 ms or more it counts how many waited across a WAL restart, across a checkpoint, across
neither, had their own commit as the larger part, and coincided with a probe sync of 20 ms
or more; then it lists the slowest batches with what was going on, and the worst per minute.
No message content is in these lines.
"""
import collections
import datetime
import re
import sys


def timestamp(line):
    return datetime.datetime.fromisoformat(line[:26]).replace(tzinfo=datetime.timezone.utc).timestamp()


def field(line, name):
    return int(re.search(rf"{name}=(\d+)", line).group(1)) / 1e6


def main():
    restarts, checkpoints, slow = [], [], []
    for line in open(sys.argv[1]):
        if "store WAL restart" in line:
            took, end = field(line, "elapsed_us"), timestamp(line)
            restarts.append((end - took, end))
        elif "store checkpoint" in line:
            took, end = field(line, "elapsed_us"), timestamp(line)
            checkpoints.append((end - took, end))
        elif "store batch slow" in line:
            queued, commit, end = field(line, "queued_us"), field(line, "commit_us"), timestamp(line)
            slow.append((end - commit - queued, end, queued, commit))
    probe = []
    if len(sys.argv) > 2:
        probe = [tuple(map(float, l.split())) for l in open(sys.argv[2]) if l.strip()]

    def during(spans, start, end):
        return [s for s in spans if s[0] < end and s[1] > start]

    def probe_max(start, end):
        return max((p[1] / 1000 for p in probe if start - 0.1 <= p[0] <= end + 0.05), default=0)

    def ms(seconds):
        return f"{seconds * 1000:.0f} ms"

    print(f"{len(slow)} batches waited 10 ms or more; {len(restarts)} WAL restarts on the writer "
          f"(mean {ms(sum(e - s for s, e in restarts) / max(1, len(restarts)))}, max "
          f"{ms(max((e - s for s, e in restarts), default=0))}); {len(checkpoints)} checkpoints (mean "
          f"{ms(sum(e - s for s, e in checkpoints) / max(1, len(checkpoints)))}, max "
          f"{ms(max((e - s for s, e in checkpoints), default=0))})")
    if probe:
        syncs = sorted(p[1] for p in probe)
        loads = [p[2] for p in probe]
        print(f"disk probe: {len(syncs)} syncs of 4 KiB, p50 {syncs[len(syncs) // 2] / 1000:.2f} ms, "
              f"p99 {syncs[int(len(syncs) * 0.99)] / 1000:.1f} ms, max {syncs[-1] / 1000:.0f} ms; "
              f"load average {min(loads):.1f}–{max(loads):.1f}")
    for threshold in (0.05, 0.1, 0.2):
        chosen = [b for b in slow if b[2] + b[3] >= threshold]
        restart = sum(1 for b in chosen if during(restarts, b[0], b[1]))
        checkpoint = sum(1 for b in chosen if during(checkpoints, b[0], b[1]))
        neither = sum(1 for b in chosen if not during(restarts, b[0], b[1]) and not during(checkpoints, b[0], b[1]))
        own = sum(1 for b in chosen if b[3] >= b[2])
        line = (f">= {ms(threshold)}: {len(chosen)} batches; across a WAL restart {restart}, across a "
                f"checkpoint {checkpoint}, across neither {neither}; own commit the larger part {own}")
        if probe:
            line += f"; disk probe >= 20 ms meanwhile {sum(1 for b in chosen if probe_max(b[0], b[1]) >= 20)}"
        print(line)
    print("slowest batches:")
    for start, end, queued, commit in sorted(slow, key=lambda b: -(b[2] + b[3]))[:10]:
        at = datetime.datetime.fromtimestamp(end, datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
        overlapping = [ms(e - s) for s, e in during(restarts, start, end)]
        ckpt = [ms(e - s) for s, e in during(checkpoints, start, end)]
        extra = f"; disk probe max {probe_max(start, end):.0f} ms" if probe else ""
        print(f"  {at} {ms(queued + commit)} (queued {ms(queued)}, commit {ms(commit)}); "
              f"WAL restarts {overlapping or '-'}; checkpoints {ckpt or '-'}{extra}")
    worst = collections.defaultdict(float)
    for start, end, queued, commit in slow:
        minute = datetime.datetime.fromtimestamp(end, datetime.timezone.utc).strftime("%H:%M")
        worst[minute] = max(worst[minute], queued + commit)
    print("worst per minute: " + ", ".join(f"{m} {ms(v)}" for m, v in sorted(worst.items())))


if __name__ == "__main__":
    main()
