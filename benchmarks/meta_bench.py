"""Metadata operations per second and p99 on SQLite and on a real Cassandra, in the same run; then, on Cassandra,
what a listing page reads and how big the partitions get for buckets of growing size.

    python benchmarks/meta_bench.py [--ops 3000] [--concurrency 32] [--sizes 10000,100000] [--cassandra HOST:PORT]

Without ``--cassandra`` it starts a throwaway Cassandra 5.0 node (tests/procs.py; the jars of
scripts/fetch-cassandra.sh) and stops it at the end. Each backend gets: ``put`` (new keys, small records),
``get``, ``list`` (pages of 1,000 keys), ``delete``, by ``--concurrency`` tasks on one store instance — a node's
view of its metadata. Then for each of ``--sizes``, a bucket of that many keys is written through the store (the
maintainer splitting shards as it goes, as the GC leader does), and pages are read: listing partitions and rows per
page (plain, and with a delimiter), and the largest listing partition — the measured counterpart of
benchmarks/partition_model.py. Figures only: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import bisect
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trio_sos.meta.sqlite import SqliteMetaStore  # noqa: E402
from trio_sos.meta.store import Bucket, MetaStore, ObjectVersion  # noqa: E402


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


async def timed(n: int, concurrency: int, op) -> tuple[float, list[float]]:
    latencies: list[float] = []
    it = iter(range(n))
    start = time.perf_counter()

    async def worker() -> None:
        for i in it:
            t = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - t)

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return time.perf_counter() - start, latencies


def obj(bucket: str, key: str) -> ObjectVersion:
    return ObjectVersion(bucket, key, "null", 100, uuid.uuid4().hex, time.time(), "bench", inline=b"x" * 100)


async def ops_bench(name: str, store: MetaStore, n: int, concurrency: int) -> None:
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    await store.create_bucket(Bucket(bucket, "bench", time.time()))
    keys = [f"k/{i:08d}" for i in range(n)]

    async def put(i: int) -> None:
        await store.put_object(obj(bucket, keys[i]))

    async def get(i: int) -> None:
        assert await store.get_object(bucket, keys[i]) is not None

    pages = max(1, n // 1000)

    async def list_page(i: int) -> None:
        await store.list_objects(bucket, marker=keys[(i * 1000) % n], limit=1000)

    async def delete(i: int) -> None:
        await store.delete_object(bucket, keys[i])

    for label, count, op, conc, unit in [("put", n, put, concurrency, "ops"), ("get", n, get, concurrency, "ops"),
                                         ("list 1,000", pages, list_page, 2, "pages"),
                                         ("delete", n, delete, concurrency, "ops")]:
        elapsed, lat = await timed(count, conc, op)
        rate = count / elapsed
        extra = f" ({rate * 1000:,.0f} keys/s)" if unit == "pages" else ""
        print(f"  {name:<10} {label:<11} {rate:>9,.0f} {unit}/s{extra:<20} p50 {pct(lat, .5) * 1000:7.2f} ms  "
              f"p99 {pct(lat, .99) * 1000:7.2f} ms", flush=True)


async def partitions_bench(store, session, sizes: list[int], concurrency: int, bulk: bool) -> None:
    from trio_sos.meta.cassandra import CassandraMetaStore

    assert isinstance(store, CassandraMetaStore)
    for size in sizes:
        await one_size(store, session, size, concurrency, bulk)


def bulk_load(store, bucket: str, keys: list[str], step: int) -> int:
    """Listing entries written straight into the shards the map names (no object records: only the listing's
    shape is measured), ``step`` keys at a time with a maintainer pass after each, as a bucket grows. Returns the
    splits made."""
    splits = 0
    for i in range(0, len(keys), step):
        batch = keys[i:i + step]
        counts: dict[str, int] = {}
        # a put looks its key's shard up; bulk loading reads the shard map once per batch instead
        ranges = store._shard_ranges(bucket)
        los = [r[0].encode() for r in ranges]
        work = []
        for key in batch:
            lo_i = bisect.bisect_right(los, key.encode()) - 1
            shard = ranges[lo_i][1]
            counts[shard] = counts.get(shard, 0) + 1
            work.append(("INSERT INTO listing (bucket, shard, key, version_id, size, etag, last_modified, owner_id) "
                         "VALUES (?, ?, ?, 'null', 100, ?, ?, 'bench')", (bucket, shard, key, uuid.uuid4().hex,
                                                                         time.time())))
        for j in range(0, len(work), 256):
            store._many(work[j:j + 256])
        store._many(("UPDATE shard_rows SET n = n + ? WHERE bucket = ? AND shard = ?", (n, bucket, shard))
                    for shard, n in counts.items())
        while True:
            made = store.split_shards(store.settings.shard_rows)
            splits += made
            if not made:
                break
    return splits


async def one_size(store, session, size: int, concurrency: int, bulk: bool) -> None:
    bucket = f"scale-{size}-{uuid.uuid4().hex[:6]}"
    await store.create_bucket(Bucket(bucket, "bench", time.time()))
    prefixes = max(1, size // 100)
    keys = [f"p{(i * 7919) % prefixes:06d}/{i:09d}" for i in range(size)]  # spread over the key space
    splits = 0
    done = bulk

    async def maintainer() -> None:
        nonlocal splits
        while not done:
            splits += await trio.to_thread.run_sync(store.split_shards, store.settings.shard_rows)
            await trio.sleep(0.5)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(maintainer)

        async def put(i: int) -> None:
            await store.put_object(obj(bucket, keys[i]))

        if bulk:
            order = keys[:]
            random.Random(size).shuffle(order)
            splits += await trio.to_thread.run_sync(bulk_load, store, bucket, order, 20_000)
        else:
            await timed(size, concurrency, put)
        done = True
    while await trio.to_thread.run_sync(store.split_shards, store.settings.shard_rows):
        splits += 1
    wrote = time.perf_counter() - start
    shards = [r.shard for r in session.execute("SELECT shard FROM shards WHERE bucket = %s", (bucket,))]
    rows = [session.execute("SELECT count(*) FROM listing WHERE bucket = %s AND shard = %s",
                            (bucket, s)).one()[0] for s in shards]
    # what pages read: count the statements on the listing and shards tables during each page
    counts = {"listing": 0, "shards": 0}
    real = store._rows, store._one

    def counting_rows(cql, params=()):
        for table in counts:
            if f"FROM {table} " in cql:
                counts[table] += 1
        return real[0](cql, params)

    def counting_one(cql, params=()):
        for table in counts:
            if f"FROM {table} " in cql:
                counts[table] += 1
        return real[1](cql, params)

    store._rows, store._one = counting_rows, counting_one
    plain, delim = [], []
    try:
        for marker in sorted(keys)[:: max(1, size // 20)][:20]:
            counts.update(listing=0, shards=0)
            page = await store.list_objects(bucket, marker=marker, limit=1000)
            plain.append((counts["listing"], counts["shards"], len(page.objects)))
        for j in range(5):
            counts.update(listing=0, shards=0)
            page = await store.list_objects(bucket, delimiter="/", marker=f"p{j * prefixes // 5:06d}",
                                            limit=1000)
            delim.append((counts["listing"], counts["shards"], len(page.prefixes) + len(page.objects)))
    finally:
        store._rows, store._one = real
    how = "loaded" if bulk else "written"
    print(f"  {size:>10,} keys: {how} in {wrote:6.1f} s ({size / wrote:,.0f}/s), {len(shards):,} shards "
          f"({splits} splits), listing partition rows max {max(rows):,} mean {statistics.mean(rows):,.0f}; "
          f"page of 1,000: listing reads max {max(p[0] for p in plain)}, shard-map reads max "
          f"{max(p[1] for p in plain)}; delimiter page of {max(d[2] for d in delim):,} prefixes: listing reads "
          f"max {max(d[0] for d in delim):,}, shard-map reads max {max(d[1] for d in delim):,}", flush=True)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--shard-rows", type=int, default=50_000)
    ap.add_argument("--cassandra", help="HOST:PORT of a running Cassandra (default: start one)")
    ap.add_argument("--bulk", action="store_true", help="load the --sizes buckets' listings directly (not through "
                    "puts: only their shape and listing cost are measured), so 10^6 keys take minutes")
    ap.add_argument("--skip-ops", action="store_true", help="only the listing-shard measurement")
    args = ap.parse_args()
    from trio_sos.meta.cassandra import CassandraMetaStore, CassandraSettings, parse_hosts

    server = None
    tmp = Path(tempfile.mkdtemp(prefix="meta-bench-"))
    if args.cassandra:
        contact = args.cassandra
    else:
        from tests.procs import CassandraProcess, cassandra_home

        home = cassandra_home()
        if home is None:
            sys.exit("Cassandra is not fetched: bash scripts/fetch-cassandra.sh")
        server = CassandraProcess(tmp / "cassandra", home)
        await trio.to_thread.run_sync(server.start)
        contact = server.contact
    try:
        if not args.skip_ops:
            print(f"metadata ops, {args.ops:,} keys, concurrency {args.concurrency} (list: 2), one store instance")
            sqlite = await SqliteMetaStore.open(tmp / "meta.sqlite3")
            try:
                await ops_bench("sqlite", sqlite, args.ops, args.concurrency)
            finally:
                await sqlite.aclose()
        hosts, port = parse_hosts(contact)
        settings = CassandraSettings(tuple(hosts), port=port, keyspace=f"bench_{uuid.uuid4().hex[:8]}",
                                     shard_rows=args.shard_rows)
        cassandra = await CassandraMetaStore.open(settings)
        try:
            if not args.skip_ops:
                await ops_bench("cassandra", cassandra, args.ops, args.concurrency)
            sizes = [int(s) for s in args.sizes.split(",") if s]
            if sizes:
                print(f"listing shards on Cassandra (shard_rows {args.shard_rows:,}; writes at concurrency "
                      f"{args.concurrency})")
                await partitions_bench(cassandra, cassandra._session, sizes, args.concurrency, args.bulk)
        finally:
            await cassandra.aclose()
    finally:
        if server is not None:
            await trio.to_thread.run_sync(server.stop)


if __name__ == "__main__":
    trio.run(main)
