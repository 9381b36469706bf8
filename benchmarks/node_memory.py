"""Memory of a node while a large object streams through it, and the throughput of that stream.

    python benchmarks/node_memory.py [--gib 1]

Starts a real node (embedded: SQLite + local agent), PUTs an object of ``--gib`` GiB from a reused 1 MiB buffer
over raw HTTP (UNSIGNED-PAYLOAD, Content-Length), then GETs it and discards the bytes, sampling the node's and
the agent's RSS every 20 ms. Prints RSS before, peak during and after each transfer, and MiB/s next to a bare
loopback copy measured in the same run. Nothing asserted: the claim "memory does not grow with object size" is
read off the peak-minus-before column (compare --gib 0.25 with --gib 2).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.agent_bench import loopback  # noqa: E402
from tests.procs import NodeProcess  # noqa: E402
from tests.s3.rawhttp import connect, head_bytes, read_response, sign  # noqa: E402

MiB = 1 << 20


class Sampler:
    def __init__(self, procs: list[psutil.Process]) -> None:
        self.procs = procs
        self.peak = [0] * len(procs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for i, p in enumerate(self.procs):
                self.peak[i] = max(self.peak[i], p.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def rss(procs: list[psutil.Process]) -> list[int]:
    return [p.memory_info().rss for p in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0)
    args = parser.parse_args()
    size = int(args.gib * 1024) * MiB
    base = Path(tempfile.mkdtemp(prefix="node-mem-"))
    node = NodeProcess(base / "node", {"gc_delay": 0}).start()
    try:
        node.client().create_bucket(Bucket="bench")
        procs = [psutil.Process(node.pid)] + psutil.Process(node.pid).children(recursive=True)
        block = os.urandom(MiB)
        rows = []

        before = rss(procs)
        headers = sign(node, "PUT", "/bench/big", {"Content-Length": str(size)})
        sock = connect(node, timeout=600)
        t0 = time.perf_counter()
        with Sampler(procs) as sampler:
            sock.sendall(head_bytes("PUT", "/bench/big", headers))
            for _ in range(size // MiB):
                sock.sendall(block)
            status, _, _ = read_response(sock)
        put_rate = size / MiB / (time.perf_counter() - t0)
        assert status == 200, status
        rows.append(("PUT", before, sampler.peak, rss(procs), put_rate))

        before = rss(procs)
        headers = sign(node, "GET", "/bench/big")
        t0 = time.perf_counter()
        got = 0
        h = hashlib.md5()
        with Sampler(procs) as sampler:
            sock.sendall(head_bytes("GET", "/bench/big", headers))
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += sock.recv(65536)
            rest = buf.split(b"\r\n\r\n", 1)[1]
            got = len(rest)
            view = bytearray(MiB)
            while got < size:
                n = sock.recv_into(view)
                if not n:
                    break
                got += n
        get_rate = got / MiB / (time.perf_counter() - t0)
        rows.append(("GET", before, sampler.peak, rss(procs), get_rate))
        sock.close()
        del h
    finally:
        node.stop()
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    lo = loopback(1024)
    print(f"object size {size / MiB:.0f} MiB; RSS in MiB (node process / agent process); loopback copy "
          f"{lo:.0f} MiB/s")
    print(f"{'':5}{'before':>16}{'peak':>16}{'after':>16}{'peak-before':>16}{'MiB/s':>10}{'x loopback':>12}")
    for name, b, p, a, rate in rows:
        fmt = lambda v: f"{v[0] / MiB:7.1f} / {v[1] / MiB:5.1f}"  # noqa: E731
        growth = [p[i] - b[i] for i in range(2)]
        print(f"{name:5}{fmt(b):>16}{fmt(p):>16}{fmt(a):>16}{fmt(growth):>16}{rate:>10.0f}{rate / lo:>12.2f}")


if __name__ == "__main__":
    main()
