"""Metadata-only copies: CopyObject and UploadPartCopy write no byte of the body — the copy's chunks are the
source's files under new names (LINK), a slice of a chunk where a range starts or ends inside one. Deleting one
of two objects that share chunks never touches the other's bytes; kill -9 during a copy or a delete leaks nothing
for good and loses nothing. Through boto3 against a real node and its agent, watching the agent's files."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MiB = 1 << 20
CHUNK = 256 * 1024


def chunk_files(node) -> list:
    root = node.data_dir / "agent" / "chunks"
    return sorted(p for d in root.iterdir() for p in d.iterdir()) if root.exists() else []


def files_on_disk(node) -> dict[int, int]:
    """inode -> size of each chunk file, however many names it has: the bytes the agent really holds."""
    return {p.stat().st_ino: p.stat().st_size for p in chunk_files(node)}


def wait_for(condition, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One node for the module (chunks of 256 KiB, every body on the agent), and the names it had at the start."""
    from tests.procs import NodeProcess

    node = NodeProcess(tmp_path_factory.mktemp("shared") / "node",
                       {"gc_delay": 0, "gc_interval": 0.2, "workers": 1, "inline_max": 0,
                        "chunk_size": CHUNK}).start()
    yield node
    node.stop()


def test_copy_object_writes_no_byte_and_each_copy_lives_on_its_own(shared) -> None:
    s3 = shared.client()
    s3.create_bucket(Bucket="cpy")
    body = os.urandom(5 * MiB + 12345)  # 21 chunks
    s3.put_object(Bucket="cpy", Key="src", Body=body, Metadata={"m": "1"}, ContentType="text/x-src")
    files, names = files_on_disk(shared), len(chunk_files(shared))
    done = s3.copy_object(Bucket="cpy", Key="dst", CopySource={"Bucket": "cpy", "Key": "src"})
    assert done["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert files_on_disk(shared) == files  # not one byte more on the agent: the same files
    assert len(chunk_files(shared)) == names + 21  # under 21 new names
    copy = s3.get_object(Bucket="cpy", Key="dst")
    assert copy["Body"].read() == body and copy["Metadata"] == {"m": "1"} and copy["ContentType"] == "text/x-src"
    assert s3.get_object(Bucket="cpy", Key="dst", Range="bytes=262100-262200")["Body"].read() == body[262100:262201]
    # deleting the source leaves the copy's bytes alone: only the source's names go
    s3.delete_object(Bucket="cpy", Key="src")
    wait_for(lambda: len(chunk_files(shared)) == names, what="the source's names to be collected")
    assert files_on_disk(shared) == files
    assert s3.get_object(Bucket="cpy", Key="dst")["Body"].read() == body
    # a copy of the copy, then the copy goes: the last name of each file gives its bytes back
    s3.copy_object(Bucket="cpy", Key="third", CopySource="cpy/dst")
    s3.delete_object(Bucket="cpy", Key="dst")
    wait_for(lambda: len(chunk_files(shared)) == names, what="the copy's names to be collected")
    assert s3.get_object(Bucket="cpy", Key="third")["Body"].read() == body
    s3.delete_object(Bucket="cpy", Key="third")
    wait_for(lambda: len(chunk_files(shared)) == names - 21, what="the last names to be collected")
    assert len(files_on_disk(shared)) == len(files) - 21


def test_copy_of_a_multipart_object_keeps_its_etag_parts_and_checksums(shared) -> None:
    s3 = shared.client()
    s3.create_bucket(Bucket="mpu")
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB + 3), b"tail" * 1000]
    up = s3.create_multipart_upload(Bucket="mpu", Key="src", ChecksumAlgorithm="CRC32")["UploadId"]
    done = [s3.upload_part(Bucket="mpu", Key="src", UploadId=up, PartNumber=i + 1, Body=p, ChecksumAlgorithm="CRC32")
            for i, p in enumerate(parts)]
    s3.complete_multipart_upload(Bucket="mpu", Key="src", UploadId=up, MultipartUpload={"Parts": [
        {"PartNumber": i + 1, "ETag": d["ETag"], "ChecksumCRC32": d["ChecksumCRC32"]} for i, d in enumerate(done)]})
    source = s3.head_object(Bucket="mpu", Key="src", ChecksumMode="ENABLED")
    files = files_on_disk(shared)
    s3.copy_object(Bucket="mpu", Key="dst", CopySource="mpu/src")
    assert files_on_disk(shared) == files
    copy = s3.head_object(Bucket="mpu", Key="dst", ChecksumMode="ENABLED")
    assert copy["ETag"] == source["ETag"] and copy["ETag"].endswith('-3"')
    assert copy["ChecksumCRC32"] == source["ChecksumCRC32"]
    second = s3.get_object(Bucket="mpu", Key="dst", PartNumber=2)
    assert second["Body"].read() == parts[1] and second["PartsCount"] == 3
    assert s3.get_object(Bucket="mpu", Key="dst")["Body"].read() == b"".join(parts)


def test_upload_part_copy_shares_slices_of_chunks(shared) -> None:
    s3 = shared.client()
    s3.create_bucket(Bucket="upc")
    body = os.urandom(12 * MiB + 777)
    s3.put_object(Bucket="upc", Key="src", Body=body)
    files, names = files_on_disk(shared), len(chunk_files(shared))
    up = s3.create_multipart_upload(Bucket="upc", Key="dst")["UploadId"]
    # ranges that start and end inside chunks, overlap each other, and read the source out of order
    ranges = [(300_001, 300_001 + 5 * MiB), (7 * MiB + 5, 12 * MiB + 776), (1, 100)]
    etags = []
    for number, (first, last) in enumerate(ranges, 1):
        got = s3.upload_part_copy(Bucket="upc", Key="dst", UploadId=up, PartNumber=number,
                                  CopySource="upc/src", CopySourceRange=f"bytes={first}-{last}")
        etag = got["CopyPartResult"]["ETag"]
        assert etag == f'"{hashlib.md5(body[first:last + 1]).hexdigest()}"'  # the MD5 of the part's bytes
        etags.append(etag)
    assert files_on_disk(shared) == files
    s3.complete_multipart_upload(Bucket="upc", Key="dst", UploadId=up, MultipartUpload={"Parts": [
        {"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})
    expected = b"".join(body[first:last + 1] for first, last in ranges)
    assert files_on_disk(shared) == files  # completing the upload is metadata only too
    assert s3.get_object(Bucket="upc", Key="dst")["Body"].read() == expected
    for first, last in [(0, 0), (5 * MiB - 10, 5 * MiB + 10), (len(expected) - 150, len(expected) - 1)]:
        got = s3.get_object(Bucket="upc", Key="dst", Range=f"bytes={first}-{last}")["Body"].read()
        assert got == expected[first:last + 1]
    assert s3.get_object(Bucket="upc", Key="dst", PartNumber=3)["Body"].read() == body[1:101]
    s3.delete_object(Bucket="upc", Key="src")
    wait_for(lambda: len(chunk_files(shared)) < names, what="the source's names to be collected")
    assert s3.get_object(Bucket="upc", Key="dst")["Body"].read() == expected
    assert set(files_on_disk(shared)) <= set(files)  # never a byte written


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_range_copies_exactly_its_bytes(shared, data) -> None:
    s3 = shared.client()
    if not any(b["Name"] == "ranges" for b in s3.list_buckets()["Buckets"]):
        s3.create_bucket(Bucket="ranges")
    key = f"src-{data.draw(st.integers(0, 3))}"
    size = data.draw(st.integers(1, 4 * CHUNK + 10), label="size")
    body = hashlib.sha256(f"{key}-{size}".encode()).digest() * (size // 32 + 1)
    body = body[:size]
    s3.put_object(Bucket="ranges", Key=key, Body=body)
    first = data.draw(st.integers(0, size - 1), label="first")
    last = data.draw(st.integers(first, size - 1), label="last")
    up = s3.create_multipart_upload(Bucket="ranges", Key="dst")["UploadId"]
    etag = s3.upload_part_copy(Bucket="ranges", Key="dst", UploadId=up, PartNumber=1, CopySource=f"ranges/{key}",
                               CopySourceRange=f"bytes={first}-{last}")["CopyPartResult"]["ETag"]
    s3.complete_multipart_upload(Bucket="ranges", Key="dst", UploadId=up,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    want = body[first:last + 1]
    assert s3.get_object(Bucket="ranges", Key="dst")["Body"].read() == want
    a = data.draw(st.integers(0, len(want) - 1), label="a")
    b = data.draw(st.integers(a, len(want) - 1), label="b")
    assert s3.get_object(Bucket="ranges", Key="dst", Range=f"bytes={a}-{b}")["Body"].read() == want[a:b + 1]


def test_kill9_during_a_copy_leaks_nothing_and_loses_nothing(node_factory) -> None:
    node = node_factory(intent_grace=1, inline_max=0, chunk_size=64 * 1024)
    s3 = node.client()
    s3.create_bucket(Bucket="crash")
    body = os.urandom(64 * MiB)  # 1,024 chunks: a copy makes 1,024 names, one durable LINK each
    s3.put_object(Bucket="crash", Key="src", Body=body)
    names, files = len(chunk_files(node)), files_on_disk(node)
    failed: list[BaseException] = []

    def copy() -> None:
        try:
            s3.copy_object(Bucket="crash", Key="dst", CopySource="crash/src")
        except BaseException as exc:  # the node is killed under it
            failed.append(exc)

    thread = threading.Thread(target=copy)
    thread.start()
    wait_for(lambda: len(chunk_files(node)) > names, what="the copy's first names")
    node.kill9()
    thread.join()
    node.start()
    s3 = node.client()
    if len(chunk_files(node)) < 2 * names:  # killed mid-copy (the usual case): the copy never committed
        with pytest.raises(ClientError):
            s3.head_object(Bucket="crash", Key="dst")
        # its names belong to an intent that is no longer renewed: collected after intent_grace (1 s)
        wait_for(lambda: len(chunk_files(node)) == names, what="the crashed copy's names to be collected")
    assert files_on_disk(node) == files
    assert hashlib.md5(s3.get_object(Bucket="crash", Key="src")["Body"].read()).digest() == hashlib.md5(body).digest()


def test_kill9_after_deleting_one_of_two_sharing_objects(node_factory) -> None:
    node = node_factory(inline_max=0, chunk_size=64 * 1024, gc_interval=3600)  # no GC pass before the kill
    s3 = node.client()
    s3.create_bucket(Bucket="dels")
    body = os.urandom(3 * MiB)
    s3.put_object(Bucket="dels", Key="a", Body=body)
    s3.copy_object(Bucket="dels", Key="b", CopySource="dels/a")
    names = len(chunk_files(node))
    s3.delete_object(Bucket="dels", Key="a")  # queued for GC, not collected yet
    assert len(chunk_files(node)) == names
    node.kill9()
    node.settings["gc_interval"] = 0.2
    node.start()
    s3 = node.client()
    wait_for(lambda: len(chunk_files(node)) == names // 2, what="a's names to be collected after the restart")
    assert s3.get_object(Bucket="dels", Key="b")["Body"].read() == body
    with pytest.raises(ClientError):
        s3.head_object(Bucket="dels", Key="a")


def test_an_encrypted_copy_under_the_same_key_shares_its_bytes(shared) -> None:
    """SSE-S3 to SSE-S3 keeps the source's data key (wrapped again): no byte is written, the copy reads back; to
    plaintext it is decrypted on its way, and takes its own bytes."""
    s3 = shared.client()
    s3.create_bucket(Bucket="cpy-sse")
    body = os.urandom(3 * MiB + 5)
    s3.put_object(Bucket="cpy-sse", Key="src", Body=body, ServerSideEncryption="AES256")
    files = files_on_disk(shared)
    s3.copy_object(Bucket="cpy-sse", Key="dst", CopySource="cpy-sse/src", ServerSideEncryption="AES256")
    assert files_on_disk(shared) == files
    got = s3.get_object(Bucket="cpy-sse", Key="dst", Range="bytes=262100-300000")
    assert got["Body"].read() == body[262100:300001] and got["ServerSideEncryption"] == "AES256"
    s3.copy_object(Bucket="cpy-sse", Key="clear", CopySource="cpy-sse/src")
    assert sum(files_on_disk(shared).values()) >= sum(files.values()) + len(body)  # (chunk footers aside)
    assert s3.get_object(Bucket="cpy-sse", Key="clear")["Body"].read() == body
    for key in ("src", "dst", "clear"):
        s3.delete_object(Bucket="cpy-sse", Key=key)
