"""What one thread hop costs: ``trio.to_thread.run_sync`` against ``trio_sos.threads.run_sync``, each calling a
function that does nothing, one after the other from one task, alternating, several rounds.

    python benchmarks/thread_hop.py [--calls 20000] [--rounds 3]

Prints per hop the process's CPU time (both threads) and the wall time, and the ratio of the two. Asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trio_sos import threads  # noqa: E402


def nothing() -> None:
    return None


async def main(calls: int, rounds: int) -> None:
    hops = {"trio.to_thread.run_sync": trio.to_thread.run_sync, "trio_sos.threads.run_sync": threads.run_sync}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in hops}
    for hop in hops.values():  # warm the thread cache
        await hop(nothing)
    for _ in range(rounds):
        for name, hop in hops.items():
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(calls):
                await hop(nothing)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            results[name].append((cpu / calls * 1e6, wall / calls * 1e6))
    print("| hop | CPU per call | wall per call |\n|---|---|---|")
    for name, runs in results.items():
        cpus, walls = " / ".join(f"{c:.0f}" for c, _ in runs), " / ".join(f"{w:.0f}" for _, w in runs)
        print(f"| {name} | {cpus} µs | {walls} µs |")
    base, light = (min(c for c, _ in runs) for runs in results.values())
    print(f"\nbest CPU per call: {light:.0f} against {base:.0f} µs ({light / base:.2f}×)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trio.run(main, args.calls, args.rounds)
