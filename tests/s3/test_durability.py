"""Crashes and hang-ups mid-upload: no partial object becomes visible, the previous version stays whole, and the
chunks of the failed upload are collected."""

from __future__ import annotations

import os
import time

import pytest

from .rawhttp import connect, head_bytes, sign

MiB = 1 << 20


@pytest.fixture
def node(node_factory):
    """Every body goes to the agent (inline_max 0): these tests follow an upload's chunks there."""
    return node_factory(inline_max=0)


def chunk_files(node) -> list:
    root = node.data_dir / "agent" / "chunks"
    return sorted(p for d in root.iterdir() for p in d.iterdir()) if root.exists() else []


def wait_for(condition, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def start_overwrite(node, size: int, sent: int):
    """Send the head and ``sent`` bytes of a PUT of ``size`` bytes to overwrite durable/k; return the socket."""
    headers = sign(node, "PUT", "/durable/k", {"Content-Length": str(size)})
    sock = connect(node)
    sock.sendall(head_bytes("PUT", "/durable/k", headers))
    sock.sendall(os.urandom(sent))
    return sock


def test_kill9_during_overwrite_keeps_old_version_and_collects_new_chunks(node_factory) -> None:
    node = node_factory(intent_grace=1, inline_max=0)
    s3 = node.client()
    s3.create_bucket(Bucket="durable")
    old = os.urandom(MiB + 7)
    s3.put_object(Bucket="durable", Key="k", Body=old)
    assert len(chunk_files(node)) == 1
    sock = start_overwrite(node, 40 * MiB, 20 * MiB)  # two 8 MiB chunks of the new version are written
    wait_for(lambda: len(chunk_files(node)) >= 3, what="the new version's chunks on disk")
    node.kill9()
    sock.close()
    node.start()
    s3 = node.client()
    got = s3.get_object(Bucket="durable", Key="k")
    assert got["Body"].read() == old and got["ContentLength"] == len(old)
    # the abandoned upload's chunks go once its intent is older than intent_grace (1 s here)
    wait_for(lambda: len(chunk_files(node)) == 1, what="the abandoned upload's chunks to be collected")
    assert s3.get_object(Bucket="durable", Key="k")["Body"].read() == old


def test_client_hang_up_mid_upload(node) -> None:
    s3 = node.client()
    s3.create_bucket(Bucket="durable")
    s3.put_object(Bucket="durable", Key="k", Body=b"previous")
    sock = start_overwrite(node, 30 * MiB, 17 * MiB)
    wait_for(lambda: len(chunk_files(node)) >= 3, what="the new version's chunks on disk")
    sock.close()
    wait_for(lambda: len(chunk_files(node)) == 1, what="the failed upload's chunks to be collected")
    assert s3.get_object(Bucket="durable", Key="k")["Body"].read() == b"previous"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="durable")["Contents"]] == ["k"]


def test_wrong_payload_hash_stores_nothing(node) -> None:
    import hashlib

    from .rawhttp import read_response

    s3 = node.client()
    s3.create_bucket(Bucket="durable")
    body = b"the body that was signed"
    headers = sign(node, "PUT", "/durable/k", {"Content-Length": str(len(body))}, body=body)
    assert headers["X-Amz-Content-SHA256"] == hashlib.sha256(body).hexdigest()
    sock = connect(node)
    sock.sendall(head_bytes("PUT", "/durable/k", headers) + b"the body that was SIGNED")
    status, _, answer = read_response(sock)
    assert status == 400 and b"XAmzContentSHA256Mismatch" in answer
    assert "Contents" not in s3.list_objects_v2(Bucket="durable")
    wait_for(lambda: chunk_files(node) == [], what="the rejected body's chunk to be collected")


def test_node_restarts_its_agent(node) -> None:
    """The node's supervisor replaces a killed agent on the same port; the pool reconnects; data is there."""
    import psutil
    from botocore.exceptions import ClientError, EndpointConnectionError

    s3 = node.client()
    s3.create_bucket(Bucket="durable")
    s3.put_object(Bucket="durable", Key="k", Body=b"survives its agent")
    agent = psutil.Process(node.agent_pid())
    agent.kill()
    deadline = time.monotonic() + 30
    while True:
        try:
            assert s3.get_object(Bucket="durable", Key="k")["Body"].read() == b"survives its agent"
            break
        except (ClientError, EndpointConnectionError):
            assert time.monotonic() < deadline, "the node did not recover its agent"
            time.sleep(0.1)
    assert node.agent_pid() != agent.pid
    s3.put_object(Bucket="durable", Key="k2", Body=b"new writes work too")
    assert s3.get_object(Bucket="durable", Key="k2")["Body"].read() == b"new writes work too"


def test_put_while_agent_is_stopped_is_a_503_and_stores_nothing(node_factory) -> None:
    """A PUT while the agent is down either waits for it (agent_wait) and is stored whole — a 200 — or fails with
    503 and changes nothing. What a later GET returns is tied to what the PUT answered."""
    import psutil
    from botocore.exceptions import ClientError

    node = node_factory(agent_wait=0, inline_max=0)  # no waiting: the PUT may well meet the agent down and fail
    node.allow_log(r"connect to agent")
    s3 = node.client(read_timeout=60)
    s3.create_bucket(Bucket="durable")
    s3.put_object(Bucket="durable", Key="k", Body=b"before")
    agent = psutil.Process(node.agent_pid())
    agent.kill()
    agent.wait(10)
    try:
        s3.put_object(Bucket="durable", Key="k", Body=b"during")
        stored = b"during"
    except ClientError as exc:
        assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 503, exc.response
        stored = b"before"
    deadline = time.monotonic() + 30
    while True:
        try:
            body = s3.get_object(Bucket="durable", Key="k")["Body"].read()
            break
        except ClientError:  # reads fail fast too while the agent is still down (agent_wait=0)
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert body == stored


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"])
def test_wrong_checksum_header_stores_nothing(node, algorithm: str) -> None:
    """An x-amz-checksum-* header that does not match the body: 400 BadDigest, the previous version intact, the
    rejected body's chunks collected — for PutObject and UploadPart."""
    import base64

    from trio_sos.data.checksums import new_hasher

    from .rawhttp import read_response

    s3 = node.client()
    s3.create_bucket(Bucket="durable")
    s3.put_object(Bucket="durable", Key="k", Body=b"previous")
    before = chunk_files(node)
    body = os.urandom(100_000)
    hasher = new_hasher(algorithm.upper())
    hasher.update(body + b"!")  # the digest of other bytes: well-formed, wrong
    wrong = base64.b64encode(hasher.digest()).decode()
    upload_id = s3.create_multipart_upload(Bucket="durable", Key="mp")["UploadId"]
    for path in ("/durable/k", f"/durable/mp?partNumber=1&uploadId={upload_id}"):
        headers = sign(node, "PUT", path, {"Content-Length": str(len(body)), f"x-amz-checksum-{algorithm}": wrong})
        sock = connect(node)
        sock.sendall(head_bytes("PUT", path, headers) + body)
        status, _, answer = read_response(sock)
        sock.close()
        assert status == 400 and b"<Code>BadDigest</Code>" in answer, answer
    assert s3.get_object(Bucket="durable", Key="k")["Body"].read() == b"previous"
    assert s3.list_parts(Bucket="durable", Key="mp", UploadId=upload_id).get("Parts", []) == []
    wait_for(lambda: chunk_files(node) == before, what="the rejected bodies' chunks to be collected")
    # a value that is no digest of that algorithm is refused before the body is read
    headers = sign(node, "PUT", "/durable/k", {"Content-Length": str(len(body)), f"x-amz-checksum-{algorithm}": "AAAA=="})
    sock = connect(node)
    sock.sendall(head_bytes("PUT", "/durable/k", headers))
    status, _, answer = read_response(sock)
    sock.close()
    assert status == 400 and b"<Code>InvalidRequest</Code>" in answer and b"is invalid" in answer, answer
