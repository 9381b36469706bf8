"""Small bodies (up to ``inline_max``) live in the object's metadata record: no chunk, no intent, no agent round
trip — and everything S3 does with an object still holds for them."""

from __future__ import annotations

import hashlib
import os
import sqlite3

import pytest
from botocore.exceptions import ClientError


def chunk_files(node) -> list:
    root = node.data_dir / "agent" / "chunks"
    return sorted(p for d in root.iterdir() for p in d.iterdir()) if root.exists() else []


def rows(node, sql: str) -> list:
    conn = sqlite3.connect(f"file:{node.data_dir / 'meta.sqlite3'}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture
def small(node_factory):
    return node_factory(inline_max=1000)


def test_a_small_body_is_inline_and_a_larger_one_is_a_chunk(small) -> None:
    s3 = small.client()
    s3.create_bucket(Bucket="inline")
    s3.put_object(Bucket="inline", Key="at-limit", Body=b"a" * 1000)
    s3.put_object(Bucket="inline", Key="empty", Body=b"")
    assert chunk_files(small) == []
    assert rows(small, "SELECT count(*) FROM intents") == [(0,)]
    s3.put_object(Bucket="inline", Key="over", Body=b"b" * 1001)
    assert len(chunk_files(small)) == 1
    stored = dict(rows(small, "SELECT key, inline IS NOT NULL FROM objects"))
    assert stored == {"at-limit": 1, "empty": 0, "over": 0}
    got = s3.get_object(Bucket="inline", Key="at-limit")
    assert got["Body"].read() == b"a" * 1000 and got["ETag"] == f'"{hashlib.md5(b"a" * 1000).hexdigest()}"'
    assert s3.get_object(Bucket="inline", Key="empty")["Body"].read() == b""
    assert s3.get_object(Bucket="inline", Key="over")["Body"].read() == b"b" * 1001


def test_inline_bodies_read_range_copy_and_survive_a_kill(small) -> None:
    s3 = small.client()
    s3.create_bucket(Bucket="inline")
    body = os.urandom(777)
    s3.put_object(Bucket="inline", Key="k", Body=body, ContentType="text/x-small", Metadata={"m": "v"},
                  ChecksumAlgorithm="CRC32")
    assert s3.get_object(Bucket="inline", Key="k", Range="bytes=100-199")["Body"].read() == body[100:200]
    assert s3.get_object(Bucket="inline", Key="k", Range="bytes=-10")["Body"].read() == body[-10:]
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="inline", Key="k", Range="bytes=777-")
    assert info.value.response["Error"]["Code"] == "InvalidRange"
    head = s3.head_object(Bucket="inline", Key="k")
    assert head["ContentLength"] == 777 and head["ContentType"] == "text/x-small" and head["Metadata"] == {"m": "v"}
    s3.copy_object(Bucket="inline", Key="copy", CopySource={"Bucket": "inline", "Key": "k"})
    assert s3.get_object(Bucket="inline", Key="copy")["Body"].read() == body
    assert chunk_files(small) == []
    small.kill9()  # a 200 means durable: the metadata commit was fsynced with the body in it
    small.start()
    s3 = small.client()
    assert s3.get_object(Bucket="inline", Key="k")["Body"].read() == body
    assert s3.get_object(Bucket="inline", Key="copy")["Body"].read() == body


def test_overwrites_between_inline_and_chunked_collect_only_chunks(small) -> None:
    s3 = small.client()
    s3.create_bucket(Bucket="inline")
    s3.put_object(Bucket="inline", Key="k", Body=b"x" * 5000)  # a chunk
    assert len(chunk_files(small)) == 1
    s3.put_object(Bucket="inline", Key="k", Body=b"small now")  # inline: the old chunk goes to the GC
    from tests.node.test_workers import wait_for

    wait_for(lambda: chunk_files(small) == [], what="the replaced chunk to be collected")
    assert s3.get_object(Bucket="inline", Key="k")["Body"].read() == b"small now"
    s3.put_object(Bucket="inline", Key="k", Body=b"y" * 5000)
    assert s3.get_object(Bucket="inline", Key="k")["Body"].read() == b"y" * 5000
    s3.delete_object(Bucket="inline", Key="k")
    wait_for(lambda: chunk_files(small) == [], what="the deleted object's chunk to be collected")


def test_multipart_parts_are_never_inline(small) -> None:
    s3 = small.client()
    s3.create_bucket(Bucket="inline")
    upload = s3.create_multipart_upload(Bucket="inline", Key="mp")["UploadId"]
    etag = s3.upload_part(Bucket="inline", Key="mp", UploadId=upload, PartNumber=1, Body=b"tiny part")["ETag"]
    assert len(chunk_files(small)) == 1
    s3.complete_multipart_upload(Bucket="inline", Key="mp", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert s3.get_object(Bucket="inline", Key="mp")["Body"].read() == b"tiny part"
