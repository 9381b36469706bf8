"""An upload that is alive keeps its chunks, however slowly its client sends and whatever the wall clock does; a
200 is never given for data the garbage collector took.

The node runs with ``intent_grace = 1`` s (renewals every 0.25 s) and a GC pass every 0.2 s, so each test covers
many grace periods.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time

from .rawhttp import connect, head_bytes, read_response, sign

SLOW_SECONDS = 4.0


def slow_put(node, path: str, body: bytes, seconds: float, during=None) -> tuple[int, bytes]:
    """PUT ``body`` in small pieces spread over ``seconds`` (far less than 1 MiB per intent_grace); ``during`` is
    called between pieces. Returns the status and the answer."""
    headers = sign(node, "PUT", path, {"Content-Length": str(len(body))})
    sock = connect(node, timeout=60)
    sock.sendall(head_bytes("PUT", path, headers))
    pieces = 40
    step = len(body) // pieces + 1
    for i in range(0, len(body), step):
        sock.sendall(body[i:i + step])
        if during is not None:
            during()
        time.sleep(seconds / pieces)  # the client's pace is what is under test
    status, _, answer = read_response(sock)
    sock.close()
    return status, answer


def test_slow_upload_keeps_its_chunks(node_factory) -> None:
    """Less than 1 MiB per intent_grace (the old renewal only happened after a 1 MiB piece): 200, and readable."""
    node = node_factory(intent_grace=1, chunk_size=64 * 1024)
    s3 = node.client()
    s3.create_bucket(Bucket="slow")
    body = os.urandom(1_500_000)  # 1 MiB pieces of 64 KiB chunks: many chunks written, across many grace periods
    status, answer = slow_put(node, "/slow/k", body, SLOW_SECONDS)
    assert status == 200, answer
    for _ in range(10):  # GC passes run every 0.2 s: give them time to do harm if they would
        assert s3.get_object(Bucket="slow", Key="k")["Body"].read() == body
        time.sleep(0.2)
    assert "abandoned upload" not in node.log_path.read_text()


def test_wall_clock_jump_does_not_collect_live_uploads(node_factory) -> None:
    """Every intent made to look renewed long ago — what a forward jump of the wall clock does — while an upload
    streams: the collector watches heartbeats on its monotonic clock, sees this one move, and leaves it alone."""
    node = node_factory(intent_grace=1, chunk_size=64 * 1024)
    s3 = node.client()
    s3.create_bucket(Bucket="clock")
    db = sqlite3.connect(node.data_dir / "meta.sqlite3", timeout=10, isolation_level=None)
    rewrites = []

    def age_intents() -> None:
        rewrites.append(db.execute("UPDATE intents SET renewed = 0, created = 0").rowcount)

    body = os.urandom(1_500_000)
    status, answer = slow_put(node, "/clock/k", body, SLOW_SECONDS, during=age_intents)
    db.close()
    assert status == 200, answer
    assert sum(rewrites) >= 30  # the intent was there, and aged, all along
    assert s3.get_object(Bucket="clock", Key="k")["Body"].read() == body
    assert "abandoned upload" not in node.log_path.read_text()


def test_abandoned_upload_is_still_collected(node_factory) -> None:
    """The other side: a client that stops sending keeps its connection (and the node its upload) alive until the
    body timeout, and the intent is renewed meanwhile; once the upload is dead — here the node is killed and
    restarted — its intent stops moving, and its chunks go after a grace period of watching."""
    node = node_factory(intent_grace=1, chunk_size=64 * 1024)
    s3 = node.client()
    s3.create_bucket(Bucket="dead")
    headers = sign(node, "PUT", "/dead/k", {"Content-Length": str(3_000_000)})
    sock = connect(node)
    sock.sendall(head_bytes("PUT", "/dead/k", headers) + os.urandom(1_200_000))  # one 1 MiB piece: 16 chunks
    chunks = node.data_dir / "agent" / "chunks"

    def count() -> int:
        return sum(1 for d in chunks.iterdir() for _ in d.iterdir()) if chunks.exists() else 0

    deadline = time.monotonic() + 30
    while count() < 16:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    node.kill9()
    sock.close()
    node.start()
    deadline = time.monotonic() + 30
    while count() > 0:
        assert time.monotonic() < deadline, "the dead upload's chunks were not collected"
        time.sleep(0.05)
    assert re.search(r"collected (1[6-9]|2\d) chunks of abandoned upload", node.log_path.read_text())
    assert "Contents" not in s3.list_objects_v2(Bucket="dead")


def test_put_part_slowly_keeps_its_chunks(node_factory) -> None:
    node = node_factory(intent_grace=1, chunk_size=64 * 1024)
    s3 = node.client()
    s3.create_bucket(Bucket="parts")
    upload_id = s3.create_multipart_upload(Bucket="parts", Key="k")["UploadId"]
    body = os.urandom(1_500_000)
    status, answer = slow_put(node, f"/parts/k?partNumber=1&uploadId={upload_id}", body, SLOW_SECONDS)
    assert status == 200, answer
    etag = s3.list_parts(Bucket="parts", Key="k", UploadId=upload_id)["Parts"][0]["ETag"]
    s3.complete_multipart_upload(Bucket="parts", Key="k", UploadId=upload_id,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert s3.get_object(Bucket="parts", Key="k")["Body"].read() == body

