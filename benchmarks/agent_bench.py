"""Storage agent throughput through the Python client, next to the machine's own limits, in one run.

    python benchmarks/agent_bench.py [--data-dir DIR] [--total-mib 512] [--small 3000] [--agent-arg=--OPTION ...]

Prints, for the same machine and the same moment:
- the disk limit: sequential write with fsync (dd conv=fsync) and a cached read-back (dd to /dev/null);
- the loopback limit: one TCP connection on 127.0.0.1 moving bytes between two threads with big buffers;
- the agent through ``trio_sos.agent.AgentPool``: 64 MiB chunk PUT/GET MiB/s on one connection and the agent's
  CPU per GiB of them, 4 KiB chunk PUT/GET ops/s (one task, and 16 concurrent tasks), and the agent's RSS after
  small and after huge chunks. ``--agent-arg`` passes an option to the agent (an experiment's switch).
Figures only; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.procs import AgentProcess  # noqa: E402
from trio_sos.agent import open_agent_pool  # noqa: E402

MiB = 1 << 20


def dd_write(path: Path, mib: int) -> float:
    """Files of 64 MiB, each fsynced: the same pattern as the agent's PUTs of 64 MiB chunks."""
    t0 = time.perf_counter()
    for _ in range(max(1, mib // 64)):
        subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", "count=64", "conv=fsync"],
                       check=True, capture_output=True)
    return max(1, mib // 64) * 64 / (time.perf_counter() - t0)


def dd_read(path: Path, mib: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=1M"], check=True, capture_output=True)
    return mib / (time.perf_counter() - t0)


def loopback(mib: int) -> float:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    total = mib * MiB

    def sink() -> None:
        conn, _ = server.accept()
        buf = bytearray(MiB)
        got = 0
        while got < total:
            n = conn.recv_into(buf)
            if not n:
                break
            got += n
        conn.sendall(b"k")
        conn.close()

    t = threading.Thread(target=sink)
    t.start()
    client = socket.create_connection(("127.0.0.1", port))
    data = bytes(MiB)
    t0 = time.perf_counter()
    for _ in range(mib):
        client.sendall(data)
    client.recv(1)
    elapsed = time.perf_counter() - t0
    client.close()
    t.join()
    server.close()
    return mib / elapsed


async def agent_figures(address: str, pid: int, total_mib: int, small: int) -> dict[str, float]:
    out: dict[str, float] = {}
    proc = psutil.Process(pid)
    big = os.urandom(64 * MiB)
    count = max(1, total_mib // 64)
    def cpu() -> float:
        times = proc.cpu_times()
        return times.user + times.system

    async with open_agent_pool(address, size=16) as pool:
        ids = [os.urandom(16) for _ in range(count)]
        t0, c0 = time.perf_counter(), cpu()
        for chunk_id in ids:
            async with pool.put_stream(chunk_id) as w:
                for i in range(0, len(big), MiB):
                    await w.write(big[i : i + MiB])
                await w.finish()
        out["put_64mib_mibs"] = count * 64 / (time.perf_counter() - t0)
        out["put_64mib_cpu"] = (cpu() - c0) / (count * 64 / 1024)
        out["rss_after_64mib_puts_mib"] = proc.memory_info().rss / MiB
        t0, c0 = time.perf_counter(), cpu()
        for _ in range(2):
            for chunk_id in ids:
                async for _ in pool.read(chunk_id):
                    pass
        out["get_64mib_mibs"] = 2 * count * 64 / (time.perf_counter() - t0)
        out["get_64mib_cpu"] = (cpu() - c0) / (2 * count * 64 / 1024)

        payload = os.urandom(4096)
        small_ids = [os.urandom(16) for _ in range(small)]
        t0 = time.perf_counter()
        for chunk_id in small_ids[: small // 4]:
            await pool.put(chunk_id, payload)
        out["put_4k_1task_ops"] = (small // 4) / (time.perf_counter() - t0)

        async def put_many(part: list[bytes]) -> None:
            for chunk_id in part:
                await pool.put(chunk_id, payload)

        rest = small_ids[small // 4 :]
        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for k in range(16):
                nursery.start_soon(put_many, rest[k::16])
        out["put_4k_16tasks_ops"] = len(rest) / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        for chunk_id in small_ids[: small // 4]:
            await pool.get(chunk_id)
        out["get_4k_1task_ops"] = (small // 4) / (time.perf_counter() - t0)

        async def get_many(part: list[bytes]) -> None:
            for chunk_id in part:
                await pool.get(chunk_id)

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for k in range(16):
                nursery.start_soon(get_many, rest[k::16])
        out["get_4k_16tasks_ops"] = len(rest) / (time.perf_counter() - t0)
        out["rss_after_small_mib"] = proc.memory_info().rss / MiB
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="directory on the disk to measure (default: a temp dir)")
    parser.add_argument("--total-mib", type=int, default=512)
    parser.add_argument("--small", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--agent-arg", action="append", default=[], metavar="--OPTION",
                        help="an option for the agent, repeatable (write it --agent-arg=--OPTION)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="agent-bench-", dir=args.data_dir))
    # This machine class shares its disk and cores: figures move by 2-3x between runs. Each reference and each
    # agent figure is measured in every round, rounds alternate, and the median is printed.
    rounds: list[dict[str, float]] = []
    try:
        for _ in range(args.rounds):
            scratch = base / "dd.bin"
            fig = {"disk_w": dd_write(scratch, args.total_mib), "disk_r": dd_read(scratch, 64)}
            scratch.unlink()
            fig["lo"] = loopback(max(1024, args.total_mib))
            agent = AgentProcess(base / "agent", tuple(args.agent_arg)).start()
            try:
                fig.update(trio.run(agent_figures, agent.address, agent.pid, args.total_mib, args.small))
            finally:
                agent.stop()
                subprocess.run(["rm", "-rf", str(base / "agent")], check=False)
            rounds.append(fig)
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)
    fig = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    disk_w, disk_r, lo = fig["disk_w"], fig["disk_r"], fig["lo"]

    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}, data dir {base.parent}, "
          f"median of {args.rounds} rounds")
    print(f"{'figure':<44}{'value':>12}  reference")
    rows = [
        ("disk write, dd 64 MiB files, fsync (MiB/s)", disk_w, ""),
        ("disk read (page cache), dd bs=1M (MiB/s)", disk_r, ""),
        ("loopback TCP, 1 connection (MiB/s)", lo, ""),
        ("agent PUT 64 MiB chunks, 1 conn (MiB/s)", fig["put_64mib_mibs"],
         f"{fig['put_64mib_mibs'] / disk_w:.2f}x disk write, {fig['put_64mib_mibs'] / lo:.2f}x loopback"),
        ("agent GET 64 MiB chunks (MiB/s)", fig["get_64mib_mibs"],
         f"{fig['get_64mib_mibs'] / disk_r:.2f}x cached read, {fig['get_64mib_mibs'] / lo:.2f}x loopback"),
        ("agent CPU, PUT 64 MiB chunks (s/GiB)", fig["put_64mib_cpu"], "copy, CRCs, fsync"),
        ("agent CPU, GET 64 MiB chunks (s/GiB)", fig["get_64mib_cpu"], "read, CRC check, send"),
        ("agent PUT 4 KiB, 1 task (ops/s)", fig["put_4k_1task_ops"], "each one fsynced"),
        ("agent PUT 4 KiB, 16 tasks (ops/s)", fig["put_4k_16tasks_ops"], ""),
        ("agent GET 4 KiB, 1 task (ops/s)", fig["get_4k_1task_ops"], ""),
        ("agent GET 4 KiB, 16 tasks (ops/s)", fig["get_4k_16tasks_ops"], ""),
        ("agent RSS after 64 MiB chunks (MiB)", fig["rss_after_64mib_puts_mib"], ""),
        ("agent RSS after 4 KiB chunks (MiB)", fig["rss_after_small_mib"], "memory does not follow chunk size"),
    ]
    for name, value, ref in rows:
        print(f"{name:<44}{value:>12.{2 if 's/GiB' in name else 1}f}  {ref}")


if __name__ == "__main__":
    main()
