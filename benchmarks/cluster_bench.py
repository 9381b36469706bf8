"""The cluster data path, measured in one run: R=1 and R=3 on three local agents, next to the embedded single-agent
node; memory per upload; and how long repair takes to restore R after an agent holding N GiB is lost.

    python benchmarks/cluster_bench.py [--mib 256] [--small 300] [--repair-gib 1]

Starts a ZooKeeper (Debian's package), three supervised agents in two zones, and nodes on that cluster (R=1 and
R=3, W=2), plus an embedded node for reference, all on this machine. Each node gets the same workload over raw
HTTP (UNSIGNED-PAYLOAD, one reused 1 MiB buffer, so the client costs little): one large PUT and GET of ``--mib``
MiB, and ``--small`` sequential 4 KiB PUTs. The node's RSS is sampled during the large PUT (peak minus before: what
one upload holds). Then a fourth agent joins, 4 agents hold ``--repair-gib`` GiB written with R=3, one is killed
with everything it holds, and the time until every chunk is on three agents again is printed, with the rate.
Everything runs on one machine's two cores and disk, so R=3 writes every byte three times to the same disk.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.procs import NodeProcess, SupervisedAgent, ZooKeeperProcess  # noqa: E402
from tests.s3.rawhttp import connect, head_bytes, read_response, sign  # noqa: E402

MiB = 1 << 20


def peak_rss(pid: int, stop: threading.Event, out: list[int]) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        out[0] = max(out[0], proc.memory_info().rss)
        time.sleep(0.02)


def large(node: NodeProcess, size: int) -> tuple[float, float, float]:
    """(PUT MiB/s, GET MiB/s, node RSS growth during the PUT in MiB)."""
    block = os.urandom(MiB)
    proc = psutil.Process(node.pid)
    before = proc.memory_info().rss
    peak = [before]
    stop = threading.Event()
    sampler = threading.Thread(target=peak_rss, args=(node.pid, stop, peak), daemon=True)
    sampler.start()
    headers = sign(node, "PUT", "/bench/big", {"Content-Length": str(size)})
    sock = connect(node, timeout=600)
    t0 = time.perf_counter()
    sock.sendall(head_bytes("PUT", "/bench/big", headers))
    for _ in range(size // MiB):
        sock.sendall(block)
    status, _, answer = read_response(sock)
    put = size / MiB / (time.perf_counter() - t0)
    stop.set()
    sampler.join()
    assert status == 200, answer
    headers = sign(node, "GET", "/bench/big")
    t0 = time.perf_counter()
    sock.sendall(head_bytes("GET", "/bench/big", headers))
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    got = len(buf.split(b"\r\n\r\n", 1)[1])
    view = bytearray(MiB)
    while got < size:
        n = sock.recv_into(view)
        if not n:
            break
        got += n
    get = got / MiB / (time.perf_counter() - t0)
    sock.close()
    return put, get, (peak[0] - before) / MiB


def small(node: NodeProcess, count: int) -> float:
    body = os.urandom(4096)
    sock = connect(node, timeout=60)
    t0 = time.perf_counter()
    for i in range(count):
        headers = sign(node, "PUT", f"/bench/s{i}", {"Content-Length": "4096"})
        sock.sendall(head_bytes("PUT", f"/bench/s{i}", headers) + body)
        status, _, answer = read_response(sock)
        assert status == 200, answer
    ops = count / (time.perf_counter() - t0)
    sock.close()
    return ops


def chunk_names(agents: list[SupervisedAgent]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for a in agents:
        for p in a.chunk_files():
            counts[p.name] = counts.get(p.name, 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256, help="size of the large object (MiB)")
    parser.add_argument("--small", type=int, default=300, help="number of 4 KiB PUTs")
    parser.add_argument("--repair-gib", type=float, default=1.0, help="data on the agent that is lost (GiB)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    zk = ZooKeeperProcess(base / "zk").start()
    agents: list[SupervisedAgent] = []
    nodes: list[NodeProcess] = []
    try:
        for i, zone in enumerate(["z1", "z1", "z2"]):
            agents.append(SupervisedAgent(base / f"agent{i}", zk.hosts, "bench", zone=zone).start())
        for a in agents:
            a.agent_id()
        rows = []
        common = {"gc_delay": 0, "repair_interval": 0.5, "dead_grace": 1, "scrub_rate": 0, "zk_session_timeout": 2}
        for label, settings in [("embedded, 1 agent", {}),
                                ("cluster R=1", {"zk": zk.hosts, "cluster": "bench", "replicas": 1}),
                                ("cluster R=3, W=2", {"zk": zk.hosts, "cluster": "bench", "replicas": 3})]:
            node = NodeProcess(base / label.replace(" ", "_").replace(",", "").replace("=", ""),
                               {**common, **settings}).start()
            nodes.append(node)
            node.client().create_bucket(Bucket="bench")
            put, get, grown = large(node, args.mib * MiB)
            ops = small(node, args.small)
            rows.append((label, put, get, grown, ops))
            node.stop()
            nodes.remove(node)
        ref = rows[0]
        print(f"large object {args.mib} MiB; {args.small} small PUTs of 4 KiB; one machine, 2 cores, one disk")
        print(f"{'':20}{'PUT MiB/s':>11}{'x embedded':>11}{'GET MiB/s':>11}{'x embedded':>11}"
              f"{'RSS +MiB':>10}{'4K PUT/s':>10}{'x embedded':>11}")
        for label, put, get, grown, ops in rows:
            print(f"{label:20}{put:>11.0f}{put / ref[1]:>11.2f}{get:>11.0f}{get / ref[2]:>11.2f}{grown:>10.1f}"
                  f"{ops:>10.0f}{ops / ref[4]:>11.2f}")

        # repair: a fourth agent, N GiB with R=3, one agent lost
        agents.append(SupervisedAgent(base / "agent3", zk.hosts, "bench", zone="z2").start())
        agents[-1].agent_id()
        node = NodeProcess(base / "repair-node", {**common, "zk": zk.hosts, "cluster": "bench", "replicas": 3,
                                                  "metadata": str(base / "repair-meta.sqlite3")}).start()
        nodes.append(node)
        node.client().create_bucket(Bucket="repair")
        earlier = set(chunk_names(agents))  # the throughput runs' chunks: another metadata's, left alone
        total = int(args.repair_gib * 1024) * MiB
        block = os.urandom(MiB)
        piece = 64 * MiB
        for i in range(max(1, total // piece)):
            headers = sign(node, "PUT", f"/repair/o{i}", {"Content-Length": str(piece)})
            sock = connect(node, timeout=600)
            sock.sendall(head_bytes("PUT", f"/repair/o{i}", headers))
            for _ in range(piece // MiB):
                sock.sendall(block)
            status, _, answer = read_response(sock)
            sock.close()
            assert status == 200, answer
        before = {name for name in chunk_names(agents) if name not in earlier}
        victim = max(agents, key=lambda a: len([p for p in a.chunk_files() if p.name in before]))
        lost = [p for p in victim.chunk_files() if p.name in before]
        lost_bytes = sum(p.stat().st_size for p in lost)
        lost_chunks = len(lost)
        victim.kill9()
        t0 = time.perf_counter()
        left = [a for a in agents if a is not victim]
        while True:
            counts = chunk_names(left)
            if all(counts.get(name, 0) >= 3 for name in before):
                break
            time.sleep(0.2)
        elapsed = time.perf_counter() - t0
        print(f"\nrepair: agent lost with {lost_chunks} chunks ({lost_bytes / MiB:.0f} MiB) of {len(before)}; "
              f"every chunk on 3 agents again after {elapsed:.1f} s (incl. 2 s session expiry + 1 s dead grace): "
              f"{lost_bytes / MiB / elapsed:.0f} MiB/s end to end")
        agents.remove(victim)
    finally:
        for node in nodes:
            node.stop()
        for a in agents:
            a.stop()
        zk.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
