"""trio_sos next to a reference on the same machine, in one run: the workloads of the speed issue, with rates,
latencies, the server's CPU and the ratio to nginx (files over WebDAV PUT/GET, no fsync) and to the loopback and
disk limits.

    python benchmarks/s3_bench.py [--workers N] [--cluster] [--scale 1.0] [--skip-reference] [--sse]

Needs Debian's ``nginx-core``, ``fio`` and ``iperf3`` (``apt-get install nginx-core fio iperf3``) for the reference
figures; ``--skip-reference`` runs without them. ``--cluster`` runs the node on a 3-agent cluster with R=3 (and a
ZooKeeper, Debian's ``zookeeper``) instead of the embedded default. ``--workers`` is passed to ``serve`` (default:
its own default, one per core).

The load generator is this process: one thread per concurrent client, each with a keep-alive socket, requests
signed with a small SigV4 signer (UNSIGNED-PAYLOAD), bodies sent from and compared against prepared buffers — every
GET body is checked byte for byte. Its CPU is measured (``client cpu``) and printed beside the server's (the node's
processes and its agents: ``server cpu`` per GiB or per op, ``server cores`` = server CPU seconds per second).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.procs import TEST_USERS, NodeProcess, SupervisedAgent, ZooKeeperProcess, _free_port as free_port  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30


# -- a small HTTP/1.1 client --

class Conn:
    """One keep-alive connection; ``request`` returns (status, headers, body) and reads bodies into ``into`` when
    given (a preallocated buffer, for large GETs)."""

    def __init__(self, port: int):
        self.port = port
        self.sock: socket.socket | None = None
        self.buf = bytearray()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=300)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.buf = bytearray()
        return sock

    def request(self, method: str, target: str, headers: dict[str, str], body: bytes | memoryview = b"",
                into: bytearray | None = None) -> tuple[int, dict[str, str], bytes | memoryview]:
        sock = self.sock or self._connect()
        head = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        data = ("\r\n".join(head) + "\r\n\r\n").encode()
        if len(body) <= 65536:
            sock.sendall(data + bytes(body))
        else:
            sock.sendall(data)
            view = memoryview(body)
            for offset in range(0, len(view), 4 * MiB):
                sock.sendall(view[offset:offset + 4 * MiB])
        return self._response(sock, method, into)

    def _fill(self, sock: socket.socket) -> None:
        data = sock.recv(262144)
        if not data:
            raise EOFError("server closed the connection")
        self.buf += data

    def _response(self, sock: socket.socket, method: str, into: bytearray | None):
        buf = self.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            self._fill(sock)
            buf = self.buf
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        del buf[:end + 4]
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.lower()] = v.strip()
        if method == "HEAD" or status in (204, 304):
            return status, headers, b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                while (eol := self.buf.find(b"\r\n")) < 0:
                    self._fill(sock)
                size = int(bytes(self.buf[:eol]).split(b";")[0], 16)
                del self.buf[:eol + 2]
                while len(self.buf) < size + 2:
                    self._fill(sock)
                out += self.buf[:size]
                del self.buf[:size + 2]
                if size == 0:
                    return status, headers, bytes(out)
        length = int(headers.get("content-length", "0"))
        if into is None:
            while len(self.buf) < length:
                self._fill(sock)
            body = bytes(self.buf[:length])
            del self.buf[:length]
            return status, headers, body
        view = memoryview(into)[:length]
        have = min(len(self.buf), length)
        view[:have] = self.buf[:have]
        del self.buf[:have]
        while have < length:
            n = sock.recv_into(view[have:], length - have)
            if not n:
                raise EOFError("server closed the connection mid-body")
            have += n
        return status, headers, view


class Signer:
    """SigV4 with UNSIGNED-PAYLOAD, path-style, region us-east-1, the day's signing key cached."""

    def __init__(self, access_key: str, secret_key: str, port: int):
        self.access_key, self.secret, self.port = access_key, secret_key, port
        self.day = ""
        self.key = b""

    def headers(self, method: str, path: str, query: dict[str, str] | None = None,
                extra: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
        now = datetime.now(UTC)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        if day != self.day:
            k = hmac.digest(("AWS4" + self.secret).encode(), day.encode(), "sha256")
            for part in ("us-east-1", "s3", "aws4_request"):
                k = hmac.digest(k, part.encode(), "sha256")
            self.day, self.key = day, k
        canonical_path = quote(path, safe="/-_.~")
        q = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted((query or {}).items()))
        hdrs = {"x-amz-content-sha256": "UNSIGNED-PAYLOAD", "x-amz-date": stamp, **(extra or {})}
        signed = {"host": f"127.0.0.1:{self.port}", **{k.lower(): v.strip() for k, v in hdrs.items()}}
        names = sorted(signed)
        canonical = "\n".join([method, canonical_path, q, *(f"{n}:{signed[n]}" for n in names), "",
                               ";".join(names), "UNSIGNED-PAYLOAD"])
        scope = f"{day}/us-east-1/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self.key, to_sign.encode(), "sha256").hexdigest()
        hdrs["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                                 f"SignedHeaders={';'.join(names)}, Signature={signature}")
        return canonical_path + ("?" + q if q else ""), hdrs


class Target:
    """What a workload talks to: an S3 node (signed requests, buckets) or nginx (plain WebDAV paths)."""

    def __init__(self, name: str, port: int, pids: Callable[[], list[int]], s3: bool):
        self.name, self.port, self.pids, self.s3 = name, port, pids, s3

    def signer(self) -> Signer | None:
        if not self.s3:
            return None
        return Signer(TEST_USERS[0]["access_key"], TEST_USERS[0]["secret_key"], self.port)

    def call(self, conn: Conn, signer: Signer | None, method: str, path: str, query: dict[str, str] | None = None,
             body: bytes | memoryview = b"", headers: dict[str, str] | None = None, into: bytearray | None = None):
        if signer is None:
            target = path + ("?" + "&".join(f"{k}={v}" for k, v in (query or {}).items()) if query else "")
            hdrs = dict(headers or {})
        else:
            target, hdrs = signer.headers(method, path, query, headers)
        return conn.request(method, target, hdrs, body, into)


def cpu_by_kind(pids: list[int]) -> dict[str, float]:
    """CPU seconds of ``pids`` so far, split into the storage agents' ("agent") and the rest ("node")."""
    out = {"node": 0.0, "agent": 0.0}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            t = proc.cpu_times()
            kind = "agent" if "agent" in proc.name() else "node"
        except psutil.NoSuchProcess:
            continue
        out[kind] += t.user + t.system
    return out


def node_settings(parser: argparse.ArgumentParser, items: list[str]) -> dict:
    """``--set NAME=VALUE`` options as node settings (``true``/``false`` as booleans)."""
    extra: dict = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected NAME=VALUE")
        extra[name.strip()] = {"true": True, "false": False}.get(value.strip().lower(), value.strip())
    return extra


def tree(pid: int) -> list[int]:
    proc = psutil.Process(pid)
    return [pid] + [c.pid for c in proc.children(recursive=True)]


class Result:
    def __init__(self, name: str, count: int, nbytes: int, seconds: float, latencies: list[float],
                 server_cpu: float, client_cpu: float, unit: str, agent_cpu: float = 0.0):
        self.name, self.count, self.nbytes, self.seconds = name, count, nbytes, seconds
        self.agent_cpu = agent_cpu
        latencies.sort()
        self.p50 = latencies[len(latencies) // 2] if latencies else 0.0
        self.p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
        self.server_cpu, self.client_cpu, self.unit = server_cpu, client_cpu, unit

    @property
    def rate(self) -> float:
        if self.unit == "MiB/s":
            return self.nbytes / MiB / self.seconds
        return self.count / self.seconds

    def cost(self, cpu: float | None = None) -> str:
        cpu = self.server_cpu if cpu is None else cpu
        if self.unit == "MiB/s":
            return f"{cpu / (self.nbytes / GiB):.2f} s/GiB"
        per = cpu / self.count
        return f"{per * 1e6:.0f} µs/key" if self.unit == "keys/s" else f"{per * 1e3:.2f} ms/op"


def run(target: Target, name: str, concurrency: int, jobs: list, job: Callable, unit: str,
        nbytes_of: Callable[[object], int] = lambda j: 0) -> Result:
    """Run ``job(target, conn, signer, item)`` over ``jobs`` from ``concurrency`` threads; count and time it."""
    lock = threading.Lock()
    it = iter(jobs)
    latencies: list[float] = []
    errors: list[BaseException] = []
    count = [0, 0]

    def worker() -> None:
        conn, signer = Conn(target.port), target.signer()
        mine: list[float] = []
        try:
            while True:
                with lock:
                    item = next(it, None)
                if item is None:
                    break
                t0 = time.perf_counter()
                n = job(target, conn, signer, item)
                mine.append(time.perf_counter() - t0)
                with lock:
                    count[0] += n if isinstance(n, int) and unit == "keys/s" else 1
                    count[1] += nbytes_of(item)
        except BaseException as exc:  # reported after the run
            errors.append(exc)
        finally:
            with lock:
                latencies.extend(mine)
            if conn.sock is not None:
                conn.sock.close()

    pids = target.pids()
    server0, client0, t0 = cpu_by_kind(pids), time.process_time(), time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    client = time.process_time() - client0
    server1 = cpu_by_kind(pids)
    server = sum(server1.values()) - sum(server0.values())
    if errors:
        raise RuntimeError(f"{target.name} {name}: {errors[0]!r}") from errors[0]
    return Result(name, count[0], count[1], seconds, latencies, server, client, unit,
                  agent_cpu=server1["agent"] - server0["agent"])


def check(status: int, want: tuple[int, ...], what: str, body: bytes | memoryview = b"") -> None:
    if status not in want:
        raise AssertionError(f"{what}: HTTP {status} {bytes(body[:300])!r}")


# -- the workloads --

LARGE = ("large PUT", "large GET", "ranged GET")
SMALL = ("small PUT", "small GET", "LIST", "DELETE", "DeleteObjects")


def workloads(target: Target, scale: float, only: tuple[str, ...] = (), sse: bool = False) -> list[Result]:
    """The workloads in order; ``only`` (name prefixes) keeps some of them, and the writes those read from.
    ``sse``: the bucket encrypts every write (default encryption SSE-S3)."""
    def wanted(name: str) -> bool:
        return not only or any(name.lower().startswith(o.lower()) for o in only)

    large = [w for w in LARGE if wanted(w)]
    small = [w for w in SMALL if wanted(w)]
    large_size = 64 * MiB
    large_count = max(4, int(16 * scale))
    small_count = max(200, int(10000 * scale))
    big = os.urandom(large_size)
    small_body = os.urandom(4096)
    bucket = "/bench" if target.s3 else ""
    results = []
    conn0, signer0 = Conn(target.port), target.signer()
    if target.s3:
        status, _, body = target.call(conn0, signer0, "PUT", "/bench")
        check(status, (200, 409), "create bucket", body)
        if sse:
            xml = (b"<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault>"
                   b"<SSEAlgorithm>AES256</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule>"
                   b"</ServerSideEncryptionConfiguration>")
            status, _, body = target.call(conn0, signer0, "PUT", "/bench", {"encryption": ""}, body=xml,
                                          headers={"Content-MD5": base64.b64encode(hashlib.md5(xml).digest()).decode()})
            check(status, (200,), "default encryption", body)

    def put_large(t, conn, signer, i):
        status, _, body = t.call(conn, signer, "PUT", f"{bucket}/large/{i}", body=big)
        check(status, (200, 201, 204), "large PUT", body)

    if large:
        results.append(run(target, "large PUT 64 MiB", 4, list(range(large_count)), put_large, "MiB/s",
                           lambda _: large_size))

    def get_large(t, conn, signer, i):
        into = getattr(conn, "into", None)
        if into is None:
            into = conn.into = bytearray(large_size)
        status, _, body = t.call(conn, signer, "GET", f"{bucket}/large/{i}", into=into)
        check(status, (200,), "large GET", body)
        if body != big:
            raise AssertionError(f"large GET {i}: wrong bytes")

    if wanted("large GET"):
        results.append(run(target, "large GET 64 MiB", 4, list(range(large_count)), get_large, "MiB/s",
                           lambda _: large_size))

    rng = random.Random(1)
    span = 256 * 1024
    ranges = [(rng.randrange(large_count), rng.randrange(0, large_size - span)) for _ in range(int(2000 * scale) + 8)]

    def get_range(t, conn, signer, item):
        i, start = item
        status, _, body = t.call(conn, signer, "GET", f"{bucket}/large/{i}",
                                 headers={"Range": f"bytes={start}-{start + span - 1}"})
        check(status, (206,), "ranged GET", body)
        if body != big[start:start + span]:
            raise AssertionError("ranged GET: wrong bytes")

    if wanted("ranged GET"):
        results.append(run(target, "ranged GET 256 KiB", 8, ranges, get_range, "MiB/s", lambda _: span))

    if target.s3 and wanted("multipart"):
        part = 8 * MiB
        total = 256 * MiB if scale >= 1 else 128 * MiB
        uploads = 4

        def multipart(t, conn, signer, u):
            key = f"/bench/multi/{u}"
            status, _, body = t.call(conn, signer, "POST", key, {"uploads": ""})
            check(status, (200,), "create upload", body)
            upload_id = bytes(body).split(b"<UploadId>")[1].split(b"</UploadId>")[0].decode()
            etags = []
            for n in range(total // part):
                chunk = memoryview(big)[(n * part) % large_size:][:part]
                status, headers, body = t.call(conn, signer, "PUT", key,
                                               {"partNumber": str(n + 1), "uploadId": upload_id}, body=chunk)
                check(status, (200,), "upload part", body)
                etags.append(headers["etag"])
            xml = "<CompleteMultipartUpload>" + "".join(
                f"<Part><PartNumber>{n + 1}</PartNumber><ETag>{e}</ETag></Part>" for n, e in enumerate(etags)
            ) + "</CompleteMultipartUpload>"
            status, _, body = t.call(conn, signer, "POST", key, {"uploadId": upload_id}, body=xml.encode())
            check(status, (200,), "complete upload", body)
            if b"<Error>" in bytes(body):
                raise AssertionError(f"complete upload: {bytes(body)[:300]!r}")

        results.append(run(target, f"multipart {total // MiB} MiB, 8 MiB parts", uploads, list(range(uploads)),
                           multipart, "MiB/s", lambda _: total))

    def put_small(t, conn, signer, i):
        status, _, body = t.call(conn, signer, "PUT", f"{bucket}/small/{i:08d}", body=small_body)
        check(status, (200, 201, 204), "small PUT", body)

    if small:
        results.append(run(target, "small PUT 4 KiB", 32, list(range(small_count)), put_small, "ops/s"))

    def get_small(t, conn, signer, i):
        status, _, body = t.call(conn, signer, "GET", f"{bucket}/small/{i:08d}")
        check(status, (200,), "small GET", body)
        if body != small_body:
            raise AssertionError("small GET: wrong bytes")

    if wanted("small GET"):
        results.append(run(target, "small GET 4 KiB", 32, list(range(small_count)), get_small, "ops/s"))

    if target.s3 and wanted("LIST"):
        rounds = max(2, int(6 * scale))

        def list_all(t, conn, signer, _):
            token, keys = None, 0
            while True:
                query = {"list-type": "2", "prefix": "small/", "max-keys": "1000"}
                if token:
                    query["continuation-token"] = token
                status, _, body = t.call(conn, signer, "GET", "/bench", query)
                check(status, (200,), "LIST", body)
                text = bytes(body)
                keys += text.count(b"<Key>")
                if b"<IsTruncated>true</IsTruncated>" not in text:
                    break
                token = text.split(b"<NextContinuationToken>")[1].split(b"</NextContinuationToken>")[0].decode()
            if keys != small_count:
                raise AssertionError(f"LIST: {keys} keys, expected {small_count}")
            return keys

        results.append(run(target, "LIST, 1,000-key pages", 2, list(range(rounds)), list_all, "keys/s"))

    half = small_count // 2

    def delete_one(t, conn, signer, i):
        status, _, body = t.call(conn, signer, "DELETE", f"{bucket}/small/{i:08d}")
        check(status, (204, 200), "DELETE", body)

    if wanted("DELETE"):
        results.append(run(target, "DELETE", 32, list(range(half)), delete_one, "ops/s"))

    if target.s3 and wanted("DeleteObjects"):
        batches = [list(range(s, min(s + 1000, small_count))) for s in range(half, small_count, 1000)]

        def delete_many(t, conn, signer, keys):
            xml = ("<Delete><Quiet>true</Quiet>" + "".join(f"<Object><Key>small/{i:08d}</Key></Object>" for i in keys)
                   + "</Delete>").encode()
            md5 = base64.b64encode(hashlib.md5(xml).digest()).decode()
            status, _, body = t.call(conn, signer, "POST", "/bench", {"delete": ""}, body=xml,
                                     headers={"Content-MD5": md5})
            check(status, (200,), "DeleteObjects", body)
            if b"<Error>" in bytes(body):
                raise AssertionError(f"DeleteObjects: {bytes(body)[:300]!r}")
            return len(keys)

        results.append(run(target, "DeleteObjects, 1,000 keys", 2, batches, delete_many, "keys/s"))
    return results


# -- the references --

NGINX_CONF = """
daemon off;
user root;
worker_processes {workers};
pid {base}/nginx.pid;
error_log {base}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {base}/body;
  proxy_temp_path {base}/proxy;
  fastcgi_temp_path {base}/fastcgi;
  uwsgi_temp_path {base}/uwsgi;
  scgi_temp_path {base}/scgi;
  client_max_body_size 0;
  client_body_buffer_size 1m;
  keepalive_requests 1000000;
  sendfile on;
  server {{
    listen 127.0.0.1:{port};
    root {base}/www;
    location / {{ dav_methods PUT DELETE; create_full_put_path on; }}
  }}
}}
"""


def start_nginx(base: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    (base / "www").mkdir(parents=True)
    conf = base / "nginx.conf"
    conf.write_text(NGINX_CONF.format(base=base, port=port, workers=os.cpu_count() or 1))
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(base)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("nginx did not start") from None
            time.sleep(0.05)


def disk_rate(directory: Path, direct: bool) -> float:
    """Sequential write, fsync every 8 MiB (as the agent does per chunk), 1 GiB: MiB/s — through the page cache, or
    with O_DIRECT (as the agent writes chunks of a MiB and more)."""
    out = subprocess.run(["fio", "--name=seq", f"--filename={directory / 'fio.dat'}", "--rw=write", "--bs=1M",
                          "--size=1G", "--ioengine=psync", "--fsync=8", "--end_fsync=1", f"--direct={int(direct)}",
                          "--output-format=json"], capture_output=True, check=True, text=True).stdout
    (directory / "fio.dat").unlink(missing_ok=True)
    return json.loads(out)["jobs"][0]["write"]["bw"] / 1024


def loopback_rate() -> float:
    port = free_port()
    server = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", "3", "-J"],
                                 capture_output=True, text=True)
            if out.returncode == 0:
                received = json.loads(out.stdout).get("end", {}).get("sum_received")
                if received:
                    return received["bits_per_second"] / 8 / MiB
            time.sleep(0.05)  # the server is not listening yet (or the run reported an error): again
        raise RuntimeError("iperf3 failed")
    finally:
        server.kill()
        server.wait()


# -- the systems under test --

def start_node(base: Path, workers: int | None, cluster: bool, extra: dict | None = None):
    """The node (and for ``cluster`` a ZooKeeper and three agents, R=3); returns (target, stop)."""
    settings: dict = {"gc_interval": 5.0, **(extra or {})}
    if workers is not None:
        settings["workers"] = workers
    stops: list[Callable[[], object]] = []
    agents: list[SupervisedAgent] = []
    if cluster:
        zk = ZooKeeperProcess(base / "zk").start()
        stops.append(zk.stop)
        for i in range(3):
            agent = SupervisedAgent(base / f"agent{i}", zk.hosts, "bench", zone=f"z{i % 2}").start()
            agents.append(agent)
            stops.append(agent.stop)
        for agent in agents:
            agent.agent_id()
        settings.update(zk=zk.hosts, cluster="bench", replicas=3)
    node = NodeProcess(base / "node", settings=settings).start()
    stops.append(node.stop)

    def pids() -> list[int]:
        out = tree(node.pid)
        for agent in agents:
            out += tree(agent.proc.pid)
        return out

    def stop() -> None:
        for fn in reversed(stops):
            fn()

    return Target("trio_sos", node.port, pids, True), stop


TARGETS = {
    "large PUT 64 MiB": "≥ 0.8× the durable ceiling, ≤ 2.0 s/GiB",
    "large GET 64 MiB": "≥ 0.75×, ≤ 0.6 s/GiB",
    "ranged GET 256 KiB": "≥ 0.3×",
    "small PUT 4 KiB": "≥ 0.5×, ≤ 0.5 ms/op",
    "small GET 4 KiB": "≥ 0.2×, ≤ 0.25 ms/op",
    "LIST, 1,000-key pages": "≥ 250,000 keys/s",
    "DELETE": "≥ 0.3×",
    "DeleteObjects, 1,000 keys": "≥ 20,000 keys/s",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, help="serve --workers (default: serve's default)")
    parser.add_argument("--cluster", action="store_true", help="3 agents, R=3, through ZooKeeper")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the amount of work (0.2: a quick run)")
    parser.add_argument("--skip-reference", action="store_true", help="no nginx / fio / iperf3")
    parser.add_argument("--only", action="append", default=[], metavar="WORKLOAD",
                        help="run only the workloads whose names start with this (and the writes they read), "
                             "repeatable: e.g. --only 'large GET' --only LIST")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a node setting (e.g. zero_copy_get=false), repeatable")
    parser.add_argument("--sse", action="store_true", help="the bucket encrypts every object (SSE-S3 by default)")
    args = parser.parse_args()
    extra = node_settings(parser, args.set)
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    base = Path(tempfile.mkdtemp(prefix="s3-bench-", dir=os.environ.get("BENCH_DIR")))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    print(f"commit {commit}, {os.cpu_count()} cores, {'cluster R=3 (3 agents)' if args.cluster else 'embedded'}, "
          f"workers {args.workers or 'default'}, scale {args.scale}"
          + "".join(f", {k}={v}" for k, v in extra.items()) + (", SSE-S3" if args.sse else ""), flush=True)
    try:
        reference: dict[str, Result] = {}
        ceiling = None
        if not args.skip_reference:
            # the ceiling is the better of the two ways to write: the agent's direct writes can beat buffered ones
            buffered, direct = disk_rate(base, False), disk_rate(base, True)
            disk = max(buffered, direct)
            loop = loopback_rate()
            print(f"disk: sequential write + fsync {buffered:.0f} MiB/s buffered, {direct:.0f} MiB/s O_DIRECT; "
                  f"loopback {loop:.0f} MiB/s", flush=True)
            proc, port = start_nginx(base / "nginx")
            try:
                nginx = Target("nginx", port, lambda: tree(proc.pid), False)
                for r in workloads(nginx, args.scale, tuple(args.only)):
                    reference[r.name] = r
            finally:
                proc.terminate()
                proc.wait()
                shutil.rmtree(base / "nginx", ignore_errors=True)
            if "large PUT 64 MiB" in reference:
                ceiling = min(reference["large PUT 64 MiB"].rate, disk) / (3 if args.cluster else 1)
        target, stop = start_node(base, args.workers, args.cluster, extra)
        try:
            results = workloads(target, args.scale, tuple(args.only), args.sse)
        finally:
            stop()
        header = ("| workload (conc) | trio_sos | p50 | p99 | server cpu | of which agents | server cores | client cpu "
                  "| nginx | ratio | target |\n|---|---|---|---|---|---|---|---|---|---|---|")
        print(header)
        conc = {"large PUT 64 MiB": 4, "large GET 64 MiB": 4, "ranged GET 256 KiB": 8, "small PUT 4 KiB": 32,
                "small GET 4 KiB": 32, "LIST, 1,000-key pages": 2, "DELETE": 32, "DeleteObjects, 1,000 keys": 2}
        for r in results:
            ref = reference.get(r.name)
            ratio = ""
            if ref is not None:
                ratio = f"{r.rate / ref.rate:.2f}×"
                if r.name == "large PUT 64 MiB" and ceiling:
                    ratio += f" ({r.rate / ceiling:.2f}× ceiling {ceiling:.0f})"
            print(f"| {r.name} ({conc.get(r.name, 4)}) | {r.rate:,.0f} {r.unit} | {r.p50 * 1e3:.1f} ms "
                  f"| {r.p99 * 1e3:.1f} ms | {r.cost()} | {r.cost(r.agent_cpu)} | {r.server_cpu / r.seconds:.2f} "
                  f"| {r.client_cpu / r.seconds:.2f} cores | {f'{ref.rate:,.0f}' if ref else '–'} | {ratio or '–'} "
                  f"| {TARGETS.get(r.name, '≥ large PUT rate')} |", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
