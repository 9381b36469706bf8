"""Listing a versioned bucket: does a key's history cost ListObjects anything?

    python benchmarks/versions_bench.py [--keys 10000] [--versions 20] [--rounds 3] [--cassandra [HOST:PORT]]

Builds, in one temporary SQLite metadata file, two buckets of ``--keys`` keys: one unversioned (one version per
key), one with versioning Enabled where every key has ``--versions`` versions and every tenth key's latest is a
delete marker. Every version is written through ``put_object``/``delete_object`` (the store's own steps, run
concurrently so that group commit shares the fsyncs), then it measures, in the same run:

- ListObjects (``list_objects``, 1,000-key pages, whole bucket) on both: keys/s, rows read per key, and the
  ratio versioned / unversioned (the target: the same order);
- ListObjectVersions (``list_versions``, 1,000-entry pages) on the versioned bucket: entries/s.

With ``--cassandra`` the same on Cassandra: a running node at HOST:PORT, or, given alone, a throwaway Cassandra 5.0
node started for the run (tests/procs.py; the jars of scripts/fetch-cassandra.sh), in a keyspace of its own.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import attrs
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from trio_sos.meta.sqlite import SqliteMetaStore  # noqa: E402
from trio_sos.meta.store import Bucket, MetaStore, ObjectVersion  # noqa: E402


def obj(bucket: str, key: str) -> ObjectVersion:
    return ObjectVersion(bucket, key, "null", 100, "0" * 32, time.time(), "admin", inline=b"x" * 100)


async def fill(store: MetaStore, bucket: str, keys: list[str], versions: int) -> float:
    started = time.perf_counter()
    limiter = trio.CapacityLimiter(256)

    async def key_history(i: int, key: str) -> None:
        async with limiter:
            for _ in range(versions):
                await store.put_object(obj(bucket, key))
            if versions > 1 and i % 10 == 0:
                await store.delete_object(bucket, key)

    async with trio.open_nursery() as nursery:
        for i, key in enumerate(keys):
            nursery.start_soon(key_history, i, key)
    return time.perf_counter() - started


async def whole_listing(store: MetaStore, bucket: str) -> tuple[float, int, int]:
    started = time.perf_counter()
    marker, keys, rows = "", 0, 0
    while True:
        page = await store.list_objects(bucket, marker=marker, limit=1000)
        keys += len(page.objects)
        rows += page.rows_read
        if not page.truncated:
            return time.perf_counter() - started, keys, rows
        marker = page.last


async def whole_version_listing(store: MetaStore, bucket: str) -> tuple[float, int, int]:
    started = time.perf_counter()
    km = vm = ""
    entries = rows = 0
    while True:
        page = await store.list_versions(bucket, key_marker=km, version_id_marker=vm, limit=1000)
        entries += len(page.versions)
        rows += page.rows_read
        if not page.truncated:
            return time.perf_counter() - started, entries, rows
        km, vm = page.next_key_marker, page.next_version_id_marker


async def measure(store: MetaStore, args: argparse.Namespace) -> None:
    keys = [f"dir{i % 100:03d}/key{i:06d}" for i in range(args.keys)]
    stem = os.urandom(4).hex()
    plain_name, versioned_name = f"plain-{stem}", f"versioned-{stem}"
    await store.create_bucket(Bucket(plain_name, "admin", time.time()))
    await store.create_bucket(Bucket(versioned_name, "admin", time.time()))
    versioned = await store.get_bucket(versioned_name)
    assert versioned is not None
    await store.update_bucket(attrs.evolve(versioned, versioning="Enabled"))
    t_plain = await fill(store, plain_name, keys, 1)
    t_versioned = await fill(store, versioned_name, keys, args.versions)
    writes = args.keys * args.versions + args.keys // 10
    commits = f", {store.commits} commits in all" if isinstance(store, SqliteMetaStore) else ""
    print(f"setup: {args.keys} keys unversioned in {t_plain:.1f} s; {writes} versions and markers in "
          f"{t_versioned:.1f} s ({writes / t_versioned:,.0f} writes/s{commits})")
    results: dict[str, list[float]] = {"plain": [], "versioned": [], "versions": []}
    for _ in range(args.rounds):
        seconds, n_plain, rows_plain = await whole_listing(store, plain_name)
        results["plain"].append(n_plain / seconds)
        seconds, n_versioned, rows_versioned = await whole_listing(store, versioned_name)
        results["versioned"].append(n_versioned / seconds)
        seconds, n_entries, rows_entries = await whole_version_listing(store, versioned_name)
        results["versions"].append(n_entries / seconds)
    plain, vers = statistics.median(results["plain"]), statistics.median(results["versioned"])
    print(f"ListObjects, unversioned: {n_plain} keys, {plain:,.0f} keys/s, {rows_plain / n_plain:.2f} rows/key")
    print(f"ListObjects, {args.versions} versions per key: {n_versioned} keys (latest not a marker), "
          f"{vers:,.0f} keys/s, {rows_versioned / max(n_versioned, 1):.2f} rows/key")
    print(f"  ratio versioned / unversioned: {vers / plain:.2f}x")
    print(f"ListObjectVersions: {n_entries} entries, {statistics.median(results['versions']):,.0f} entries/s, "
          f"{rows_entries / n_entries:.2f} rows/entry")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if args.cassandra is None:
            print("SQLite")
            store = await SqliteMetaStore.open(Path(tmp) / "meta.sqlite3")
            try:
                await measure(store, args)
            finally:
                await store.aclose()
            return
        from trio_sos.meta.cassandra import CassandraMetaStore, CassandraSettings, parse_hosts

        server = None
        contact = args.cassandra
        if contact == "start":
            from tests.procs import CassandraProcess, cassandra_home

            home = cassandra_home()
            if home is None:
                sys.exit("Cassandra is not fetched: bash scripts/fetch-cassandra.sh")
            server = CassandraProcess(Path(tmp) / "cassandra", home)
            await trio.to_thread.run_sync(server.start)
            contact = server.contact
        try:
            hosts, port = parse_hosts(contact)
            settings = CassandraSettings(tuple(hosts), port=port, keyspace=f"bench_{os.urandom(4).hex()}")
            print(f"Cassandra at {contact}")
            cassandra = await CassandraMetaStore.open(settings)
            try:
                await measure(cassandra, args)
            finally:
                await cassandra.aclose()
        finally:
            if server is not None:
                await trio.to_thread.run_sync(server.stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cassandra", nargs="?", const="start", default=None,
                        help="HOST:PORT of a running Cassandra, or nothing: start one for the run")
    trio.run(main, parser.parse_args())
