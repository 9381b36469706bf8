"""The ETag (MD5) and the checksums of a stored body are those of its bytes, whichever way they were hashed: a body
that ends within its first piece is hashed where it arrives (in one thread hop when large), a longer one piece by
piece by a hash worker beside the upload (trio_sos/data/objects.py); sent with a Content-Length (read straight from
the socket) or aws-chunked (through h11)."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest

from trio_sos.data.objects import THREAD_HASH_MIN

MiB = 1 << 20
SIZES = [
    16 * 1024 + 1,  # just above the default inline_max: one chunk, one small piece
    THREAD_HASH_MIN - 1,  # one piece, hashed in the event loop
    THREAD_HASH_MIN,  # one piece, hashed in one thread hop
    MiB - 1,
    MiB,  # one whole piece read straight from the socket, then the body's end: the hash worker
    MiB + 1,  # two pieces
    3 * MiB + 5,
]


def test_etag_and_checksums_are_the_bodys(node) -> None:
    plain = node.client(request_checksum_calculation="when_required")  # Content-Length, no aws-chunked
    chunked = node.client()  # the SDK's default: aws-chunked with a trailing checksum
    plain.create_bucket(Bucket="digests")
    for how, s3 in (("content-length", plain), ("aws-chunked", chunked)):
        for size in SIZES:
            body = os.urandom(size)
            key = f"{how}/{size}"
            put = s3.put_object(Bucket="digests", Key=key, Body=body, ChecksumAlgorithm="SHA256")
            assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"', key
            assert put["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(body).digest()).decode(), key
            got = s3.get_object(Bucket="digests", Key=key, ChecksumMode="ENABLED")
            assert got["Body"].read() == body, key
            assert (got["ETag"], got["ChecksumSHA256"]) == (put["ETag"], put["ChecksumSHA256"]), key


def test_a_wrong_content_md5_on_a_one_piece_body_stores_nothing(node) -> None:
    from botocore.exceptions import ClientError

    plain = node.client(request_checksum_calculation="when_required")
    plain.create_bucket(Bucket="digests")
    body = os.urandom(THREAD_HASH_MIN + 10)
    wrong = base64.b64encode(hashlib.md5(body + b"x").digest()).decode()
    with pytest.raises(ClientError) as caught:
        plain.put_object(Bucket="digests", Key="bad-md5", Body=body, ContentMD5=wrong)
    assert caught.value.response["Error"]["Code"] == "BadDigest"
    with pytest.raises(ClientError) as missing:
        plain.head_object(Bucket="digests", Key="bad-md5")
    assert missing.value.response["Error"]["Code"] == "404"
