"""``serve --workers N``: N worker processes share the listening socket, the metadata and the agent; the
supervisor restarts a crashed worker, stops them all cleanly, and none outlives it."""

from __future__ import annotations

import os
import re
import signal
import time

import psutil

from tests.s3.rawhttp import connect, head_bytes, read_response, sign


def workers_of(node) -> list[psutil.Process]:
    return [c for c in psutil.Process(node.pid).children()
            if c.status() != psutil.STATUS_ZOMBIE and not c.name().startswith("trio-sos-agent")]


def request(node, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request on a fresh connection (so whichever worker accepts it serves it)."""
    headers = sign(node, method, path, {"Content-Length": str(len(body))})
    sock = connect(node, timeout=20)
    try:
        sock.sendall(head_bytes(method, path, headers) + body)
        status, _, answer = read_response(sock)
        return status, answer
    finally:
        sock.close()


def wait_for(predicate, timeout: float = 30.0, what: str = "a condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_each_worker_serves_and_sees_the_others_writes(node_factory) -> None:
    """With one worker stopped (SIGSTOP), the other serves every new connection: both accept from the one
    listening socket, and what one wrote the other reads and lists."""
    node = node_factory(workers=2)
    first, second = workers_of(node)
    assert request(node, "PUT", "/shared")[0] == 200
    os.kill(first.pid, signal.SIGSTOP)
    try:
        for i in range(5):
            assert request(node, "PUT", f"/shared/by-second-{i}", b"written by the second")[0] == 200
    finally:
        os.kill(first.pid, signal.SIGCONT)
    os.kill(second.pid, signal.SIGSTOP)
    try:
        for i in range(5):
            status, body = request(node, "GET", f"/shared/by-second-{i}")
            assert (status, body) == (200, b"written by the second")
        status, listing = request(node, "GET", "/shared?list-type=2")
        assert status == 200 and listing.count(b"<Key>by-second-") == 5
        assert request(node, "PUT", "/shared/by-first", b"written by the first")[0] == 200
    finally:
        os.kill(second.pid, signal.SIGCONT)
    assert request(node, "GET", "/shared/by-first") == (200, b"written by the first")


def test_a_killed_worker_is_replaced_and_requests_go_on(node_factory) -> None:
    node = node_factory(workers=2)
    node.allow_log(r"worker \d exited with code -9")
    s3 = node.client()
    s3.create_bucket(Bucket="workers")
    victim = workers_of(node)[0]
    victim.kill()
    failures = 0
    for i in range(40):  # fresh connections: the survivor serves them while the supervisor replaces the victim
        status, _ = request(node, "PUT", f"/workers/k{i}", b"x" * i)
        failures += status != 200
    assert failures == 0
    replaced = wait_for(lambda: len(workers_of(node)) == 2 and victim.pid not in {w.pid for w in workers_of(node)},
                        what="the killed worker to be replaced")
    assert replaced
    assert re.search(r"worker \d exited with code -9", node.log_path.read_text())
    for i in range(40):
        assert s3.get_object(Bucket="workers", Key=f"k{i}")["Body"].read() == b"x" * i


def test_sigterm_stops_every_worker_and_the_agent(node_factory) -> None:
    node = node_factory(workers=3)
    kids = psutil.Process(node.pid).children()
    assert len(workers_of(node)) == 3 and len(kids) == 4  # three workers and the agent
    node.stop()  # asserts exit code 0 and a clean log
    gone, alive = psutil.wait_procs(kids, timeout=10)
    assert not alive


def test_no_worker_outlives_a_killed_supervisor(node_factory) -> None:
    node = node_factory(workers=2)
    kids = psutil.Process(node.pid).children()
    node.allow_log(r"the supervisor is gone")
    node.kill9(children=False)
    gone, alive = psutil.wait_procs(kids, timeout=15)
    assert not alive, f"still running after the supervisor's kill -9: {alive}"


def test_one_worker_is_a_single_process(node_factory) -> None:
    node = node_factory(workers=1)
    kids = psutil.Process(node.pid).children()
    assert [k.name() for k in kids if k.status() != psutil.STATUS_ZOMBIE] == ["trio-sos-agent"]
    s3 = node.client()
    s3.create_bucket(Bucket="one")
    s3.put_object(Bucket="one", Key="k", Body=b"v")
    assert s3.get_object(Bucket="one", Key="k")["Body"].read() == b"v"


def test_a_few_long_connections_are_shared_by_the_workers(node_factory) -> None:
    """Six keep-alive connections opened one after the other end up three on each worker: a worker holding more
    connections lets the other accept first (left to the kernel's wake-ups alone, an even split of six comes
    about one time in three)."""
    node = node_factory(workers=2)
    workers = workers_of(node)
    socks = []
    try:
        for i in range(6):
            sock = connect(node, timeout=20)
            socks.append(sock)
            path = "/spread" if i == 0 else f"/spread/{i}"
            body = b"" if i == 0 else b"x"
            sock.sendall(head_bytes("PUT", path, sign(node, "PUT", path, {"Content-Length": str(len(body))})) + body)
            assert read_response(sock)[0] == 200
        ports = {s.getsockname()[1] for s in socks}
        held = [sum(1 for c in w.net_connections(kind="tcp") if c.raddr and c.raddr.port in ports) for w in workers]
        assert sorted(held) == [3, 3], held
    finally:
        for sock in socks:
            sock.close()
