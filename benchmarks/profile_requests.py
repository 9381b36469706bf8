"""Where a node's time goes per request: one workload driven for a while against a one-process node, sampled with
py-spy, summed by phase (h11, SigV4, metadata, response, log, scheduler) and by function.

    pip install py-spy
    python benchmarks/profile_requests.py get          # 4 KiB GETs, 16 clients
    python benchmarks/profile_requests.py range        # 256 KiB ranged GETs of a 64 MiB object
    python benchmarks/profile_requests.py bigput       # 64 MiB PUTs, 4 clients
    python benchmarks/profile_requests.py deletes      # DeleteObjects of 1,000 keys (2,000 small ones), 2 clients
    python benchmarks/profile_requests.py delete       # DELETE of one 4 KiB object each, 16 clients (never absent)
    python benchmarks/profile_requests.py put|list [--seconds 10] [--set NAME=VALUE ...] [--raw FILE] [--sse]

Prints the rate, the node's CPU per request, the share of sampled time in each phase and per request, and the
functions with the most samples of their own. The samples are of threads that were running or waiting for the GIL
(py-spy without --idle), so a phase's share is its wall time in active threads, not pure CPU. Asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import collections
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.s3_bench import Conn, Target, tree  # noqa: E402
from tests.procs import NodeProcess  # noqa: E402

PHASES = [
    ("h11: read and parse the request head", ["_Connection._read_head"]),
    ("SigV4 authentication", ["S3App._authenticate"]),
    ("metadata: thread hop and query", ["SqliteMetaStore._read", "SqliteMetaStore._batched", "SqliteMetaStore._write",
                                        "_read_group", "_group (", "WorkerThread", "to_thread_run_sync"]),
    ("agent: chunk windows", ["open_direct", "DirectWindow", "read_chunk", "AgentPool.get", "AgentConnection._reader",
                              "AgentPool.put"]),
    ("send the response (h11 and socket)", ["_Connection._send_response"]),
    ("access log line", ["Logger.info"]),
    ("trio scheduler, epoll", ["EpollIOManager.get_events"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=["get", "put", "range", "list", "bigput", "deletes", "delete"])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=0, help="default: 16 (2 for list)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--raw", help="keep py-spy's raw samples in this file")
    parser.add_argument("--sse", action="store_true", help="the bucket encrypts every object (SSE-S3)")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.set)
    base = Path(tempfile.mkdtemp(prefix="profile-"))
    raw = args.raw or str(base / "samples.txt")
    node = NodeProcess(base / "node", settings={"workers": 1, "gc_interval": 5.0, **extra}).start()
    try:
        target = Target("trio_sos", node.port, lambda: tree(node.pid), True)
        conn, signer = Conn(node.port), target.signer()
        target.call(conn, signer, "PUT", "/bench")
        if args.sse:
            xml = (b"<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault>"
                   b"<SSEAlgorithm>AES256</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule>"
                   b"</ServerSideEncryptionConfiguration>")
            status, _, _ = target.call(conn, signer, "PUT", "/bench", {"encryption": ""}, body=xml, headers={
                "Content-MD5": base64.b64encode(hashlib.md5(xml).digest()).decode()})
            assert status == 200, status
        big, small = os.urandom(64 << 20), os.urandom(4096)
        if args.workload == "range":
            target.call(conn, signer, "PUT", "/bench/large/0", body=big)
        for i in range(2000):
            target.call(conn, signer, "PUT", f"/bench/small/{i:08d}", body=small)
        if args.workload == "delete":
            # every DELETE removes an object that exists: enough of them for the run at a few thousand a second,
            # written by 16 clients at once, each client later deleting its own
            doomed = args.seconds * 5000
            prep = [threading.Thread(target=lambda j=j: [
                target.call(c, s, "PUT", f"/bench/doomed/{j:02d}/{i:08d}", body=small)
                for c, s in [(Conn(node.port), target.signer())] for i in range(doomed // 16)]) for j in range(16)]
            for t in prep:
                t.start()
            for t in prep:
                t.join()
        next_doomed = iter(range(16))
        stop = time.monotonic() + args.seconds + 3
        done = [0]

        def client() -> None:
            c, s, rng = Conn(node.port), target.signer(), random.Random()
            mine, left = next(next_doomed), iter(range(args.seconds * 5000 // 16))
            while time.monotonic() < stop:
                if args.workload == "get":
                    status, _, body = target.call(c, s, "GET", f"/bench/small/{rng.randrange(2000):08d}")
                    ok = status == 200 and body == small
                elif args.workload == "put":
                    status, _, _ = target.call(c, s, "PUT", f"/bench/small/{rng.randrange(2000):08d}", body=small)
                    ok = status == 200
                elif args.workload == "bigput":
                    status, _, _ = target.call(c, s, "PUT", f"/bench/large/{rng.randrange(8)}", body=big)
                    ok = status == 200
                elif args.workload == "delete":
                    status, _, _ = target.call(c, s, "DELETE", f"/bench/doomed/{mine:02d}/{next(left):08d}")
                    ok = status == 204
                elif args.workload == "deletes":
                    # the first batches delete the keys; later ones absent keys, which still costs every
                    # per-key step but the row's removal
                    first = rng.randrange(2) * 1000
                    xml = ("<Delete><Quiet>true</Quiet>" + "".join(
                        f"<Object><Key>small/{i:08d}</Key></Object>" for i in range(first, first + 1000))
                        + "</Delete>").encode()
                    md5 = base64.b64encode(hashlib.md5(xml).digest()).decode()
                    status, _, body = target.call(c, s, "POST", "/bench", {"delete": ""}, body=xml,
                                                  headers={"Content-MD5": md5})
                    ok = status == 200 and b"<Error>" not in bytes(body)
                elif args.workload == "range":
                    a = rng.randrange(0, (64 << 20) - (256 << 10))
                    status, _, body = target.call(c, s, "GET", "/bench/large/0",
                                                  headers={"Range": f"bytes={a}-{a + (256 << 10) - 1}"})
                    ok = status == 206 and body == big[a:a + (256 << 10)]
                else:
                    status, _, body = target.call(c, s, "GET", "/bench",
                                                  {"list-type": "2", "prefix": "small/", "max-keys": "1000"})
                    ok = status == 200 and bytes(body).count(b"<Key>") == 1000
                if not ok:
                    raise AssertionError(f"{args.workload}: HTTP {status}")
                done[0] += 1

        threads = [threading.Thread(target=client, daemon=True)
                   for _ in range(args.clients or {"list": 2, "deletes": 2, "bigput": 4}.get(args.workload, 16))]
        for t in threads:
            t.start()
        time.sleep(1)  # warm up before sampling (not synchronisation: a benchmark's settling time)
        proc = psutil.Process(node.pid)
        cpu0, n0, t0 = proc.cpu_times(), done[0], time.monotonic()
        subprocess.run(["py-spy", "record", "-p", str(node.pid), "-d", str(args.seconds), "-r", "200", "-f", "raw",
                        "-o", raw, "--nonblocking"], check=True, capture_output=True)
        cpu1, n1, t1 = proc.cpu_times(), done[0], time.monotonic()
        for t in threads:
            t.join()
    finally:
        node.stop()
    requests = n1 - n0
    cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    samples, phase, own = 0, collections.Counter(), collections.Counter()
    for line in open(raw):
        stack, _, count = line.rstrip().rpartition(" ")
        n = int(count)
        samples += n
        own[stack.split(";")[-1]] += n
        for name, keys in PHASES:
            if any(k in stack for k in keys):
                phase[name] += n
    per_request = samples / 200 / requests * 1e6  # µs of sampled thread time per request
    print(f"{args.workload}: {requests / (t1 - t0):,.0f} requests/s, node CPU {cpu / requests * 1e6:,.0f} µs/request, "
          f"{samples} samples ({per_request:,.0f} µs of sampled thread time per request)")
    print("| phase | share | per request |\n|---|---|---|")
    for name, _ in PHASES:
        print(f"| {name} | {phase[name] / samples * 100:.1f}% | {phase[name] / samples * per_request:,.0f} µs |")
    print("\nfunctions with the most samples of their own:")
    for frame, n in own.most_common(15):
        print(f"  {n / samples * 100:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
