"""A model of the Cassandra listing shards (trio_sos/meta/cassandra.py): how big partitions get, and what a page of
1,000 keys reads, for buckets of 10^4 … 10^8 keys. No Cassandra needed: it simulates the split policy itself.

    python benchmarks/partition_model.py [--shard-rows 50000] [--max-sim 1000000]

The policy simulated is the store's: one shard at first; a shard past ``shard_rows`` keys is split at its middle
key. Keys arrive in random order (uniform over the key space) or in increasing order (timestamps, sequence numbers:
every insert lands in the last shard, the worst case for a splitter that halves). A bucket bigger than
``--max-sim`` is simulated at scale 1/s (N/s keys, shards of shard_rows/s): the shape only depends on N/shard_rows.

For each size it prints the shards, the largest and the mean listing partition, the shard map's rows (its one
partition per bucket), and what a page reads — listing partitions, listing rows and shard-map rows — for a plain
page of 1,000 keys from a random marker, and for a delimiter page of 1,000 common prefixes (a key space of
"prefix/rest" with 10^4 prefixes; each common prefix is one seek). A dense partition in the predecessor's design
(one partition per bucket) would hold all N rows; the last column says so.
"""

from __future__ import annotations

import argparse
import bisect
import random


def simulate(n: int, shard_rows: int, order: str, rnd: random.Random) -> list[list[int]]:
    """Shards (sorted key lists, in key order) after inserting ``n`` distinct keys."""
    shards: list[list[int]] = [[]]
    los: list[int] = [0]  # lower bound of each shard
    space = 1 << 62
    keys = range(n) if order == "increasing" else (rnd.randrange(space) for _ in range(n))
    for key in keys:
        if order == "increasing":
            key = key * 7 + 1
        i = bisect.bisect_right(los, key) - 1
        bisect.insort(shards[i], key)
        if len(shards[i]) > shard_rows:
            mid = len(shards[i]) // 2
            upper = shards[i][mid:]
            del shards[i][mid:]
            shards.insert(i + 1, upper)
            los.insert(i + 1, upper[0])
    return shards


def page_cost(shards: list[list[int]], page: int, rnd: random.Random) -> tuple[int, int, int]:
    """(listing partitions, listing rows, shard-map rows) a plain page of ``page`` keys from a random marker reads:
    the shard of the marker, then the next ones while the page is not full (one shard-map row per shard)."""
    total = sum(len(s) for s in shards)
    start = rnd.randrange(max(1, total - page))
    i, offset = 0, start
    while offset >= len(shards[i]):
        offset -= len(shards[i])
        i += 1
    partitions = rows = 0
    need = page + 1  # one more row says whether the page is truncated
    while need > 0 and i < len(shards):
        got = min(need, len(shards[i]) - offset)
        partitions += 1
        rows += got
        need -= got
        i, offset = i + 1, 0
    return partitions, rows, partitions + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shard-rows", type=int, default=50_000)
    ap.add_argument("--max-sim", type=int, default=1_000_000, help="simulate larger buckets at scale")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    print(f"shard_rows = {args.shard_rows:,}; page = 1,000 keys")
    print(f"{'keys':>12} {'order':>10} {'shards':>8} {'max rows':>9} {'mean rows':>9} {'map rows':>8} "
          f"{'page: parts':>11} {'rows':>6} {'map':>4} {'delim page: reads':>17} {'one partition':>14}")
    for exp in range(4, 9):
        n = 10 ** exp
        scale = max(1, n // args.max_sim)
        for order in ("random", "increasing"):
            shards = simulate(n // scale, max(2, args.shard_rows // scale), order, rnd)
            sizes = [len(s) * scale for s in shards]
            costs = [page_cost(shards, max(1, 1000 // scale), rnd) for _ in range(200)]
            parts = max(c[0] for c in costs)
            rows = (max(c[1] for c in costs) - 1) * scale + 1  # the page, plus the one row saying "truncated"
            maps = max(c[2] for c in costs)
            # a delimiter page of 1,000 common prefixes: per prefix one shard-map row and one listing read of one
            # row (the walk's seek past the prefix), plus the page's first seek
            delim = 2 * 1000 + 2
            print(f"{n:>12,} {order:>10} {len(shards):>8,} {max(sizes):>9,} {sum(sizes) // len(sizes):>9,} "
                  f"{len(shards):>8,} {parts:>11} {rows:>6,} {maps:>4} {delim:>17,} {n:>14,}")


if __name__ == "__main__":
    main()
