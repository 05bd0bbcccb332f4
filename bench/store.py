"""How fast the results store applies root batches, on SQLite and on PostgreSQL.

    .venv/bin/python -m bench.store --batches 300 --keys 20

One writer applies BATCHES root batches of KEYS key patches (and watermarks) each, as a
root workflow's publish activity does; prints key patches per second for each backend.
PostgreSQL is started from the `pgserver` wheel (dev extra) in a temporary folder.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.multinode import start_postgres
from timeline.dsl.incremental import SpanPatch
from timeline.models import ResultsBatch
from timeline.store import open_store


def batches(n: int, keys: int) -> list[ResultsBatch]:
    return [ResultsBatch(timeline="t", shard=0, seq=seq, results_topic="r",
                         patches=[SpanPatch(key=f"k{k}", since=seq * 10, starts=[seq * 10], values=[seq])
                                  for k in range(keys)],
                         watermarks={f"k{k}": seq * 10 for k in range(keys)})
            for seq in range(n)]


def measure(label: str, url: str, n: int, keys: int) -> float:
    store = open_store(url)
    work = batches(n, keys)
    t = time.perf_counter()
    for b in work:
        store.apply_results(b)
    dt = time.perf_counter() - t
    store.close()
    print(f"{label}: {n} batches x {keys} keys in {dt:.2f}s = {n * keys / dt:,.0f} key patches/s")
    return n * keys / dt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--keys", type=int, default=20)
    args = p.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="timeline-store-bench-"))
    server = None
    try:
        sqlite = measure("sqlite    ", f"sqlite:///{folder / 'results.db'}", args.batches, args.keys)
        server, url = start_postgres(folder / "postgres")
        pg = measure("postgresql", url, args.batches, args.keys)
        print(f"ratio postgresql / sqlite: {pg / sqlite:.2f}")
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
