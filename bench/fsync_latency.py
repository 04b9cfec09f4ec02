#!/usr/bin/env python3
"""fsync vs fdatasync latency for an append-only log on this machine's disk.

    python bench/fsync_latency.py [--dir DIR] [--appends 300] [--rounds 3] [--bytes 3300]

Appends --bytes (default 3300 B: ~25 SET records of -d 100, one group-commit batch of
redis-benchmark -c 50 under fsync always) and syncs after each append, alternating
fsync and fdatasync by round; prints the median, p90 and mean latency of each. Redis
uses fdatasync on Linux for appendfsync always; replikv's RecordLog.sync uses fsync.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=None, help="directory on the disk to test (default: the temp dir)")
    ap.add_argument("--appends", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bytes", type=int, default=3300)
    args = ap.parse_args()
    res: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="fsync-latency-", dir=args.dir) as d:
        rec = b"x" * args.bytes
        for r in range(args.rounds):
            order = [("fsync", os.fsync), ("fdatasync", os.fdatasync)]
            for name, fn in (order if r % 2 == 0 else order[::-1]):
                path = os.path.join(d, f"{name}.log")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    for _ in range(args.appends):
                        os.write(fd, rec)
                        t = time.perf_counter()
                        fn(fd)
                        res.setdefault(name, []).append(time.perf_counter() - t)
                finally:
                    os.close(fd)
                    os.unlink(path)
    for name, v in res.items():
        v.sort()
        print(f"{name:<10} median {statistics.median(v) * 1e3:7.3f} ms   p90 {v[int(len(v) * 0.9)] * 1e3:7.3f} ms   "
              f"mean {statistics.mean(v) * 1e3:7.3f} ms   (n={len(v)}, {args.bytes} B per append)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
