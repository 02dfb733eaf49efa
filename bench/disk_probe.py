#!/usr/bin/env python3
"""How long the disk takes to sync, sampled beside a benchmark (see BENCHMARKS.md, "Soak").

    python3 bench/disk_probe.py DIR OUT SECONDS

Every 100 ms: overwrite 4 KiB in place in a 1 MiB file under DIR, `fdatasync` it, and append
"unix_time sync_us load_average_1min" to OUT. The file is removed at the end. Its own load
is ten 4 KiB syncs a second; what it shows is what any writer on that disk would have waited
at the same moment, so a stall in hl7d's store that coincides with a slow probe is the disk's.
"""
import os
import sys
import time


def main():
    directory, out, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    path = os.path.join(directory, f"disk_probe.{os.getpid()}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.pwrite(fd, b"\0" * (1 << 20), 0)
        os.fsync(fd)
        end = time.time() + seconds
        offset = 0
        with open(out, "w") as log:
            while time.time() < end:
                os.pwrite(fd, b"p" * 4096, offset)
                offset = (offset + 4096) % (1 << 20)
                started = time.perf_counter()
                os.fdatasync(fd)
                took = (time.perf_counter() - started) * 1e6
                log.write(f"{time.time():.3f} {took:.0f} {os.getloadavg()[0]:.2f}\n")
                log.flush()
                time.sleep(0.1)
    finally:
        os.close(fd)
        os.unlink(path)


if __name__ == "__main__":
    main()
