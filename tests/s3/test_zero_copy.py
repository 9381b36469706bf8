"""Zero-copy GETs (``zero_copy_get``, on by default): chunk bytes are spliced from the agent's socket to the
client's, and every response is byte for byte what the copying path sends — whole objects, ranges across block,
window and chunk boundaries, parts, keep-alive runs of them — with a corrupt block never served as data."""

from __future__ import annotations

import os
import random

import pytest

from .rawhttp import connect, head_bytes, read_response, sign
from tests.node.test_workers import wait_for

from .test_inline import chunk_files, rows

pytestmark = pytest.mark.skipif(not hasattr(os, "splice"), reason="zero-copy reads need os.splice (Linux)")

BLOCK = 64 * 1024
CHUNK = 256 * 1024
MiB = 1 << 20


def pipes(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:")
        except FileNotFoundError:
            pass  # closed since the listing (a connection ending)
    return count


def ranges(size: int, seed: int) -> list[tuple[int, int]]:
    """Inclusive byte ranges: every boundary of a block, a 1 MiB window and a chunk, ±1, and random ones."""
    edges = sorted({e for b in range(0, size + 1, BLOCK) for e in (b - 1, b, b + 1) if 0 <= e < size})
    rng = random.Random(seed)
    out = [(0, size - 1), (size - 1, size - 1), (0, 0), (CHUNK - 1, CHUNK), (MiB - 1, MiB), (MiB, 2 * MiB + 3)]
    out += [(a, min(size - 1, a + rng.randrange(1, 3 * BLOCK))) for a in rng.sample(edges, 40)]
    out += [tuple(sorted(rng.sample(range(size), 2))) for _ in range(20)]
    return out


@pytest.fixture
def pair(node_factory):
    """The same objects on a node that splices and on one that copies."""
    nodes = [node_factory("zero-copy", chunk_size=CHUNK), node_factory("copying", chunk_size=CHUNK,
                                                                        zero_copy_get=False)]
    body = os.urandom(5 * MiB + 777)
    for node in nodes:
        s3 = node.client()
        s3.create_bucket(Bucket="zcopy")
        s3.put_object(Bucket="zcopy", Key="obj", Body=body)
        upload = s3.create_multipart_upload(Bucket="zcopy", Key="mp")["UploadId"]
        parts = []
        for n, (a, b) in enumerate([(0, 5 * MiB), (5 * MiB, len(body))], start=1):
            etag = s3.upload_part(Bucket="zcopy", Key="mp", UploadId=upload, PartNumber=n, Body=body[a:b])["ETag"]
            parts.append({"PartNumber": n, "ETag": etag})
        s3.complete_multipart_upload(Bucket="zcopy", Key="mp", UploadId=upload, MultipartUpload={"Parts": parts})
    return nodes, body


def test_ranges_parts_and_whole_objects_are_the_copying_paths_bytes(pair) -> None:
    nodes, body = pair
    splicing, copying = nodes
    before = [pipes(n.pid) for n in nodes]
    for node in nodes:
        sock = connect(node)
        try:
            # one keep-alive connection for all: h11 must account exactly for every spliced byte
            for key in ("obj", "mp"):
                for first, last in ranges(len(body), seed=len(key)):
                    headers = sign(node, "GET", f"/zcopy/{key}", {"Range": f"bytes={first}-{last}"})
                    sock.sendall(head_bytes("GET", f"/zcopy/{key}", headers))
                    status, got_headers, data = read_response(sock)
                    assert status == 206, (key, first, last, data[:200])
                    assert got_headers["content-range"] == f"bytes {first}-{last}/{len(body)}"
                    assert data == body[first:last + 1], (node.base.name, key, first, last)
                sock.sendall(head_bytes("GET", f"/zcopy/{key}", sign(node, "GET", f"/zcopy/{key}")))
                status, _, data = read_response(sock)
                assert status == 200 and data == body
                for number, (a, b) in ((1, (0, 5 * MiB)), (2, (5 * MiB, len(body)))):
                    target = f"/zcopy/{key}?partNumber={number}"
                    sock.sendall(head_bytes("GET", target, sign(node, "GET", target)))
                    status, _, data = read_response(sock)
                    if key == "mp":
                        assert status == 206 and data == body[a:b]
                    elif number == 1:
                        assert status == 200 and data == body
        finally:
            sock.close()
        assert node.client().get_object(Bucket="zcopy", Key="obj")["Body"].read() == body
    # the splicing node keeps the pipe it moved bytes through; the copying one never made one
    assert pipes(splicing.pid) > before[0]
    assert pipes(copying.pid) == before[1]


def test_a_corrupt_block_is_never_sent_as_data(node_factory) -> None:
    node = node_factory(chunk_size=2 * MiB)
    s3 = node.client()
    s3.create_bucket(Bucket="zcopy")
    body = os.urandom(2 * MiB)
    s3.put_object(Bucket="zcopy", Key="obj", Body=body)
    [path] = chunk_files(node)
    with open(path, "r+b") as f:  # a data byte of block 20, in the second 1 MiB window
        f.seek(20 * (BLOCK + 4) + 3)
        byte = f.read(1)
        f.seek(20 * (BLOCK + 4) + 3)
        f.write(bytes([byte[0] ^ 0x40]))
    node.allow_log(r"CORRUPT|object data unavailable|response to GET .* aborted|no replica of chunk")
    sock = connect(node)
    try:
        # the first window is good and goes out; the second is refused by the agent before any of it moves,
        # so the response stops short of its Content-Length and the connection is closed
        sock.sendall(head_bytes("GET", "/zcopy/obj", sign(node, "GET", "/zcopy/obj")))
        status, headers, data = read_response(sock)
        assert status == 200 and int(headers["content-length"]) == len(body)
        assert len(data) < len(body)
        assert data == body[:len(data)]
    finally:
        sock.close()
    # a range in the corrupt window is refused before the status line: a 503 the client may retry
    sock = connect(node)
    try:
        target = "/zcopy/obj"
        headers = sign(node, "GET", target, {"Range": f"bytes={20 * BLOCK}-{20 * BLOCK + 9}"})
        sock.sendall(head_bytes("GET", target, headers))
        status, _, data = read_response(sock)
        assert status == 503, data[:300]
        # the reads reported the replica corrupt; repair has no good copy to make a new one from, so it keeps the
        # only replica there is (its other blocks still serve) instead of dropping it
        wait_for(lambda: rows(node, "SELECT count(*) FROM replica_reports") == [(0,)],
                 what="repair to handle the corrupt replica report")
        headers = sign(node, "GET", target, {"Range": f"bytes=5-{BLOCK * 3}"})
        sock.sendall(head_bytes("GET", target, headers))
        status, _, data = read_response(sock)
        assert status == 206, (status, data[:300])
        assert data == body[5:BLOCK * 3 + 1]
    finally:
        sock.close()
