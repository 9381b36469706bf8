"""Listing cost with a delimiter: rows read per page, for a bucket of 100,000 keys in 1,000 prefixes.

    python benchmarks/listing_bench.py [--prefixes 1000] [--per-prefix 100] [--rounds 5] [--no-http]

Builds a SQLite metadata store in a temporary directory (bulk-inserted: setting up 100,000 objects through
``put_object`` would be 100,000 fsynced transactions), then measures, in the same run:

- ``list_objects`` (the MetaStore's listing, which seeks past each common prefix): a delimiter listing of the
  whole bucket (1,000 common prefixes on one page) and a page inside one prefix;
- the reference: the same listings done the way the node did them before, a ``scan_objects`` range scan of up to
  1,001 full rows per common prefix, one of which was used;
- a plain 1,000-key page without a delimiter (the cheapest page there is) as the yardstick for the ratios;
- unless ``--no-http``: a real node serving that store, and the node's CPU seconds per anonymous ListObjectsV2
  with a delimiter on a public bucket (what a stranger can make it spend).

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from trio_sos.meta.keys import prefix_successor  # noqa: E402
from trio_sos.meta.sqlite import _OBJECT_COLS, SqliteMetaStore, _object_params  # noqa: E402
from trio_sos.meta.store import Bucket, ChunkRef, ObjectVersion  # noqa: E402

BUCKET = "listing-bench"


def build(path: Path, prefixes: int, per_prefix: int) -> None:
    async def make() -> None:
        store = await SqliteMetaStore.open(path)
        await store.create_bucket(Bucket(BUCKET, "admin", time.time(),
                                         acl='{"v":1,"o":["admin",""],"g":[["READ","uri",'
                                             '"http://acs.amazonaws.com/groups/global/AllUsers"]]}'))
        await store.aclose()

    trio.run(make)
    manifest = tuple(ChunkRef(os.urandom(16), 1000, 0, ("a" * 32,)) for _ in range(2))
    rows = (_object_params(ObjectVersion(BUCKET, f"dir{p:04d}/file{k:05d}.bin", "null", 2000, "0" * 32, time.time(),
                                         "admin", manifest, user_meta=(("owner", "bench"),)))
            for p in range(prefixes) for k in range(per_prefix))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    columns = len(_OBJECT_COLS.split(","))
    conn.executemany(f"INSERT INTO objects ({_OBJECT_COLS}) VALUES ({', '.join('?' * columns)})", rows)
    conn.execute("COMMIT")
    conn.close()


async def reference_listing(store: SqliteMetaStore, prefix: str, delimiter: str, limit: int) -> tuple[int, int]:
    """The node's listing before: scan_objects pages of up to limit+1 rows, restarted after each common prefix.
    Returns (entries, rows read)."""
    entries = rows = 0
    start, inclusive = prefix, True
    while True:
        want = limit - entries + 1
        page = await store.scan_objects(BUCKET, start=start, inclusive=inclusive, prefix=prefix,
                                        limit=min(1001, max(want, 2)))
        rows += len(page.objects)
        rescan = False
        for obj in page.objects:
            cut = obj.key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                if entries == limit:
                    return entries, rows
                entries += 1
                successor = prefix_successor(obj.key[: cut + len(delimiter)])
                if successor is None:
                    return entries, rows
                start, inclusive, rescan = successor, True, True
                break
            if entries == limit:
                return entries, rows
            entries += 1
            start, inclusive = obj.key, False
        if not rescan and not page.truncated:
            return entries, rows


async def measure(path: Path, rounds: int) -> None:
    store = await SqliteMetaStore.open(path)
    try:
        cases = [("whole bucket, delimiter '/'", "", "/"), ("inside one prefix, delimiter '/'", "dir0500/", "/")]
        t0 = time.perf_counter()
        for _ in range(rounds):
            plain = await store.scan_objects(BUCKET, limit=1000)
        plain_s = (time.perf_counter() - t0) / rounds
        print(f"yardstick: a 1,000-key page without delimiter: {len(plain.objects)} rows, "
              f"{plain_s * 1000:.1f} ms")
        print()
        print(f"{'listing':42} {'entries':>8} {'rows read':>10} {'ms/page':>8} {'x yardstick':>12}")
        for name, prefix, delimiter in cases:
            t0 = time.perf_counter()
            for _ in range(rounds):
                page = await store.list_objects(BUCKET, prefix=prefix, delimiter=delimiter, limit=1000)
            new_s = (time.perf_counter() - t0) / rounds
            t0 = time.perf_counter()
            for _ in range(rounds):
                ref_entries, ref_rows = await reference_listing(store, prefix, delimiter, 1000)
            ref_s = (time.perf_counter() - t0) / rounds
            entries = len(page.objects) + len(page.prefixes)
            print(f"{'now: ' + name:42} {entries:>8} {page.rows_read:>10} {new_s * 1000:>8.1f} "
                  f"{new_s / plain_s:>12.2f}")
            print(f"{'before: ' + name:42} {ref_entries:>8} {ref_rows:>10} {ref_s * 1000:>8.1f} "
                  f"{ref_s / plain_s:>12.2f}")
    finally:
        await store.aclose()


def over_http(data_dir: Path, rounds: int) -> None:
    import boto3
    import psutil
    from botocore import UNSIGNED
    from botocore.config import Config

    from tests.procs import NodeProcess

    node = NodeProcess(data_dir.parent / "node", {"gc_interval": 60})
    node.base.mkdir(parents=True, exist_ok=True)
    (node.base / "data").symlink_to(data_dir)
    node.start()
    try:
        anon = boto3.client("s3", endpoint_url=node.endpoint, region_name="us-east-1",
                            config=Config(signature_version=UNSIGNED, s3={"addressing_style": "path"}))
        proc = psutil.Process(node.pid)
        anon.list_objects_v2(Bucket=BUCKET, Delimiter="/", MaxKeys=10)
        cpu0 = sum(proc.cpu_times()[:2])
        t0 = time.perf_counter()
        for _ in range(rounds):
            got = anon.list_objects_v2(Bucket=BUCKET, Delimiter="/")
        wall = (time.perf_counter() - t0) / rounds
        cpu = (sum(proc.cpu_times()[:2]) - cpu0) / rounds
        print(f"\nover HTTP, anonymous ListObjectsV2 Delimiter='/' ({len(got.get('CommonPrefixes', []))} prefixes "
              f"on the page): node CPU {cpu * 1000:.1f} ms/request, {wall * 1000:.1f} ms wall")
    finally:
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefixes", type=int, default=1000)
    parser.add_argument("--per-prefix", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-http", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="listing-bench-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        path = data / "meta.sqlite3"
        t0 = time.perf_counter()
        build(path, args.prefixes, args.per_prefix)
        print(f"bucket: {args.prefixes * args.per_prefix:,} keys in {args.prefixes:,} prefixes "
              f"(built in {time.perf_counter() - t0:.1f} s)\n")
        trio.run(measure, path, args.rounds)
        if not args.no_http:
            over_http(data, args.rounds)


if __name__ == "__main__":
    main()
