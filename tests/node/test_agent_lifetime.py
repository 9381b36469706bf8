"""The node's local agent lives exactly as long as the node, and a restart of it costs clients no more than the
requests that were in flight on it.

(The agent used to be stopped every 10–20 s: PR_SET_PDEATHSIG followed the Trio worker thread that forked it,
which Trio retires after 10 s idle.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time

import psutil
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

IDLE_SECONDS = 62


@pytest.fixture
def node(node_factory):
    """Every body on the agent (inline_max 0): these tests follow requests through the agent's restarts."""
    return node_factory(inline_max=0)


def test_idle_node_keeps_its_agent(node_factory) -> None:
    """Idle for over a minute — long past Trio's 10 s worker-thread retirement — the agent is the same process,
    and the node never logged a stop or a restart of it. (The node runs with its default GC interval: the tests'
    usual 0.2 s GC keeps a worker thread busy, which hid the bug.)"""
    node = node_factory(gc_interval=10, gc_delay=300)
    s3 = node.client()
    s3.create_bucket(Bucket="idle")
    s3.put_object(Bucket="idle", Key="k", Body=b"before")
    pid = node.agent_pid()
    deadline = time.monotonic() + IDLE_SECONDS
    while time.monotonic() < deadline:  # checked once a second: any replacement within the minute is seen
        assert node.agent_pid() == pid, "the agent was replaced while the node was idle"
        time.sleep(1)
    assert node.agent_pid() == pid
    assert s3.get_object(Bucket="idle", Key="k")["Body"].read() == b"before"
    log = node.log_path.read_text()
    assert "agent stopping" not in log and "restart" not in log, log[-3000:]


def test_agent_dies_with_a_killed_node(node) -> None:
    """kill -9 of the node alone (not its children): the agent notices its supervisor is gone and exits."""
    agent = psutil.Process(node.agent_pid())
    node.kill9(children=False)
    gone, alive = psutil.wait_procs([agent], timeout=5)
    assert agent in gone and not alive, "the agent outlived its node by more than 5 s"


def test_agent_refuses_exit_with_parent_without_a_pipe(tmp_path) -> None:
    import subprocess

    from trio_sos.agent.binary import agent_binary

    proc = subprocess.run([str(agent_binary()), "--data-dir", str(tmp_path / "d"), "--exit-with-parent"],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
    assert proc.returncode == 2
    assert b"needs stdin to be a pipe" in proc.stderr


def test_clean_agent_stop_is_restarted_at_once_and_not_called_a_crash(node) -> None:
    s3 = node.client()
    s3.create_bucket(Bucket="clean")
    first = psutil.Process(node.agent_pid())
    first.terminate()  # SIGTERM: the agent exits with code 0
    first.wait(10)
    deadline = time.monotonic() + 10
    while True:
        try:
            if node.agent_pid() != first.pid:
                break
        except (AssertionError, psutil.NoSuchProcess):
            pass
        assert time.monotonic() < deadline, "no new agent"
        time.sleep(0.02)
    s3.put_object(Bucket="clean", Key="k", Body=b"after")
    log = node.log_path.read_text()
    assert f"pid {first.pid} stopped cleanly (exit code 0); starting it again" in log, log[-3000:]
    assert "restarting in" not in log


def test_requests_started_while_the_agent_is_down_wait_for_it(node) -> None:
    """A request that arrives while the supervisor is restarting the agent (it waits 0.1 s after a crash) waits
    for the agent to come back instead of failing at once with 503."""
    s3 = node.client()
    s3.create_bucket(Bucket="gap")
    s3.put_object(Bucket="gap", Key="k", Body=b"stored before")
    for round_ in range(3):
        agent = psutil.Process(node.agent_pid())
        agent.kill()
        # at once: the supervisor has not started the replacement yet
        assert s3.get_object(Bucket="gap", Key="k")["Body"].read() == b"stored before"
        s3.put_object(Bucket="gap", Key=f"after-{round_}", Body=b"written while it restarted")
        assert node.agent_pid() != agent.pid
    assert s3.get_object(Bucket="gap", Key="after-2")["Body"].read() == b"written while it restarted"


@pytest.mark.parametrize("workers", [1, 4])
def test_client_loop_across_agent_kill9(node_factory, workers: int) -> None:
    """Clients keep writing and reading while the agent is killed, three times: only uploads in flight on the
    agent when it died may fail (at most one per client and kill); reads never do (they resume on a new
    connection), every later request succeeds, and every acknowledged write reads back."""
    node = node_factory(inline_max=0)
    s3 = node.client()
    s3.create_bucket(Bucket="loop")
    stop = threading.Event()
    results: list[list[tuple[str, str, bool, str]]] = [[] for _ in range(workers)]
    stored: dict[str, bytes] = {}
    kills = 3

    def client(n: int) -> None:
        c = node.client()
        i = 0
        while not stop.is_set():
            key = f"w{n}/k{i}"
            body = os.urandom(64 * 1024 + i)
            op = "PutObject"
            try:
                c.put_object(Bucket="loop", Key=key, Body=body)
                stored[key] = body
                op = "GetObject"
                got = c.get_object(Bucket="loop", Key=key)["Body"].read()
                assert got == body
                results[n].append((key, op, True, ""))
            except (ClientError, EndpointConnectionError) as exc:
                results[n].append((key, op, False, str(exc)))
            i += 1

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(workers)]
    for t in threads:
        t.start()
    killed = []
    try:
        deadline = time.monotonic() + 120
        for _ in range(kills):
            marks = [len(r) for r in results]
            while any(len(r) < m + 10 for r, m in zip(results, marks, strict=True)):
                assert time.monotonic() < deadline, [len(r) for r in results]
                time.sleep(0.01)
            agent = psutil.Process(node.agent_pid())
            agent.kill()
            agent.wait(10)
            killed.append(agent.pid)
        marks = [len(r) for r in results]
        while any(len(r) < m + 20 for r, m in zip(results, marks, strict=True)):
            assert time.monotonic() < deadline, [len(r) for r in results]
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    for n, r in enumerate(results):
        failed = [entry for entry in r if not entry[2]]
        assert len(failed) <= kills, f"client {n}: {failed}"
        assert all(op == "PutObject" for _, op, _, _ in failed), f"client {n}: a read failed: {failed}"
        assert all(entry[2] for entry in r[-15:]), f"client {n} did not recover: {r[-15:]}"
    for key, body in stored.items():
        assert s3.get_object(Bucket="loop", Key=key)["Body"].read() == body
    assert node.agent_pid() not in killed


@pytest.mark.parametrize("direct", [True, False])
def test_agent_direct_io_settings_reach_the_agent(node_factory, direct) -> None:
    """``agent_direct_writes = false`` starts the local agent with --no-direct, ``agent_direct_reads = false``
    with --no-direct-reads; objects are stored and read either way."""
    node = node_factory(agent_direct_writes=direct, agent_direct_reads=direct, inline_max=0)
    s3 = node.client()
    s3.create_bucket(Bucket="direct")
    body = os.urandom(3 << 20)
    s3.put_object(Bucket="direct", Key="k", Body=body)
    assert s3.get_object(Bucket="direct", Key="k")["Body"].read() == body
    assert s3.get_object(Bucket="direct", Key="k", Range="bytes=70000-1100000")["Body"].read() == body[70000:1100001]
    cmdline = psutil.Process(node.agent_pid()).cmdline()
    assert ("--no-direct" in cmdline) is not direct
    assert ("--no-direct-reads" in cmdline) is not direct


@pytest.mark.skipif(shutil.which("fincore") is None, reason="util-linux's fincore is not installed")
def test_an_object_read_once_stays_out_of_the_page_cache(node_factory) -> None:
    """The local agent writes a large object's chunks past the page cache and reads them past it while they are
    not cached: a GET of the whole object (each chunk in several windows) leaves them uncached; a second GET is a
    read again, through the cache, which then keeps them. The chunks of one object have ids that differ only at
    the end: each is still counted as a chunk of its own."""
    node = node_factory(inline_max=0, chunk_size="2MiB")
    s3 = node.client()
    s3.create_bucket(Bucket="cold")
    body = os.urandom(9 << 20)
    s3.put_object(Bucket="cold", Key="k", Body=body)
    chunks = [str(p) for p in (node.data_dir / "agent" / "chunks").rglob("*") if p.is_file()]
    assert len(chunks) == 5

    def cached() -> int:
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", *chunks],
                             capture_output=True, text=True, check=True).stdout
        return sum(int(n) for n in out.split())

    if subprocess.run(["stat", "-f", "-c", "%T", str(node.data_dir)], capture_output=True,
                      text=True).stdout.strip() == "tmpfs":  # pragma: no cover
        pytest.skip("the data dir is on tmpfs")
    assert cached() <= 5 * 64 * 1024
    assert s3.get_object(Bucket="cold", Key="k")["Body"].read() == body
    assert cached() <= 5 * 64 * 1024  # a footer page or so each, read as the chunk is opened
    assert s3.get_object(Bucket="cold", Key="k")["Body"].read() == body
    assert cached() >= len(body)
