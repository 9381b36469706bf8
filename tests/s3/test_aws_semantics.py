"""S3 behaviours real tools rely on, where this node used to answer differently from AWS."""

from __future__ import annotations

import os
import time

import pytest
from botocore.exceptions import ClientError

from .rawhttp import connect, head_bytes, read_response, sign

MiB = 1 << 20


def code(info) -> str:
    return info.value.response["Error"]["Code"]


def status(info) -> int:
    return info.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_upload_in_flight_does_not_land_in_a_recreated_bucket(node) -> None:
    """Alice's upload is streaming when she deletes her (still empty) bucket and Bob creates one of the same name:
    the upload must not commit into Bob's bucket."""
    alice, bob = node.client(0), node.client(1)
    alice.create_bucket(Bucket="shared")
    body = os.urandom(3 * MiB)
    headers = sign(node, "PUT", "/shared/k", {"Content-Length": str(len(body))})
    sock = connect(node, timeout=60)
    sock.sendall(head_bytes("PUT", "/shared/k", headers) + body[:MiB])
    deadline = time.monotonic() + 30
    while True:  # the upload has begun: its intent is recorded
        import sqlite3

        db = sqlite3.connect(node.data_dir / "meta.sqlite3")
        begun = db.execute("SELECT count(*) FROM intents").fetchone()[0]
        db.close()
        if begun:
            break
        assert time.monotonic() < deadline
        time.sleep(0.02)
    alice.delete_bucket(Bucket="shared")
    bob.create_bucket(Bucket="shared")
    sock.sendall(body[MiB:])
    got, _, answer = read_response(sock)
    sock.close()
    assert got == 404 and b"NoSuchBucket" in answer, answer
    assert "Contents" not in bob.list_objects_v2(Bucket="shared")


def complete(s3, key: str, upload_id: str, parts: list[tuple[int, str]]):
    return s3.complete_multipart_upload(Bucket="mpu", Key=key, UploadId=upload_id, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]})


@pytest.fixture
def mpu(node):
    s3 = node.client()
    s3.create_bucket(Bucket="mpu")
    return s3


def test_complete_again_gives_the_same_answer(mpu) -> None:
    """A client that retries CompleteMultipartUpload (its first answer was lost to a timeout) gets the same
    result, not NoSuchUpload; a different part list for the completed upload is NoSuchUpload."""
    upload_id = mpu.create_multipart_upload(Bucket="mpu", Key="k", ChecksumAlgorithm="CRC32")["UploadId"]
    one = mpu.upload_part(Bucket="mpu", Key="k", UploadId=upload_id, PartNumber=1, Body=os.urandom(5 * MiB),
                          ChecksumAlgorithm="CRC32")
    two = mpu.upload_part(Bucket="mpu", Key="k", UploadId=upload_id, PartNumber=2, Body=b"tail",
                          ChecksumAlgorithm="CRC32")
    parts = [(1, one["ETag"]), (2, two["ETag"])]
    first = complete(mpu, "k", upload_id, parts)
    again = complete(mpu, "k", upload_id, parts)
    for field in ("ETag", "Bucket", "Key", "ChecksumCRC32", "Location"):
        assert again.get(field) == first.get(field), field
    with pytest.raises(ClientError) as info:
        complete(mpu, "k", upload_id, parts[:1])
    assert code(info) == "NoSuchUpload"
    with pytest.raises(ClientError) as info:
        mpu.complete_multipart_upload(Bucket="mpu", Key="other", UploadId=upload_id, MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]})
    assert code(info) == "NoSuchUpload"
    with pytest.raises(ClientError) as info:
        mpu.list_parts(Bucket="mpu", Key="k", UploadId=upload_id)
    assert code(info) == "NoSuchUpload"


def test_part_named_twice_is_invalid_part_order(mpu) -> None:
    upload_id = mpu.create_multipart_upload(Bucket="mpu", Key="twice")["UploadId"]
    etag = mpu.upload_part(Bucket="mpu", Key="twice", UploadId=upload_id, PartNumber=1, Body=b"x" * 100)["ETag"]
    with pytest.raises(ClientError) as info:
        complete(mpu, "twice", upload_id, [(1, etag), (1, etag)])
    assert code(info) == "InvalidPartOrder" and status(info) == 400
    complete(mpu, "twice", upload_id, [(1, etag)])


def test_upload_part_copy_range_outside_the_source(mpu) -> None:
    mpu.put_object(Bucket="mpu", Key="src", Body=b"x" * 100)
    upload_id = mpu.create_multipart_upload(Bucket="mpu", Key="dst")["UploadId"]
    for bad in ("bytes=50-100", "bytes=100-120"):
        with pytest.raises(ClientError) as info:
            mpu.upload_part_copy(Bucket="mpu", Key="dst", UploadId=upload_id, PartNumber=1,
                                 CopySource={"Bucket": "mpu", "Key": "src"}, CopySourceRange=bad)
        assert code(info) == "InvalidRange" and status(info) == 416, bad
    done = mpu.upload_part_copy(Bucket="mpu", Key="dst", UploadId=upload_id, PartNumber=1,
                                CopySource={"Bucket": "mpu", "Key": "src"}, CopySourceRange="bytes=50-99")
    assert done["CopyPartResult"]["ETag"]


def test_delete_bucket_with_only_unfinished_uploads(node, mpu) -> None:
    upload_id = mpu.create_multipart_upload(Bucket="mpu", Key="pending")["UploadId"]
    mpu.upload_part(Bucket="mpu", Key="pending", UploadId=upload_id, PartNumber=1, Body=os.urandom(MiB))
    chunks = node.data_dir / "agent" / "chunks"

    def count() -> int:
        return sum(1 for d in chunks.iterdir() for _ in d.iterdir())

    assert count() == 1
    mpu.delete_bucket(Bucket="mpu")
    with pytest.raises(ClientError) as info:
        mpu.head_bucket(Bucket="mpu")
    assert status(info) == 404
    deadline = time.monotonic() + 30
    while count():  # the aborted upload's part goes to the GC
        assert time.monotonic() < deadline
        time.sleep(0.05)
    mpu.create_bucket(Bucket="mpu")
    assert mpu.list_multipart_uploads(Bucket="mpu").get("Uploads", []) == []


def test_put_object_conditions_as_rfc_9110(mpu) -> None:
    with pytest.raises(ClientError) as info:
        mpu.put_object(Bucket="mpu", Key="c", Body=b"1", IfMatch="*")  # no such key
    assert status(info) == 412
    first = mpu.put_object(Bucket="mpu", Key="c", Body=b"1", IfNoneMatch='"0123456789abcdef0123456789abcdef"')
    second = mpu.put_object(Bucket="mpu", Key="c", Body=b"2", IfMatch="*")  # exists: proceeds
    with pytest.raises(ClientError) as info:
        mpu.put_object(Bucket="mpu", Key="c", Body=b"3", IfNoneMatch=second["ETag"])
    assert status(info) == 412 and code(info) == "PreconditionFailed"
    mpu.put_object(Bucket="mpu", Key="c", Body=b"4", IfNoneMatch=first["ETag"])  # not the current one: proceeds
    with pytest.raises(ClientError):
        mpu.put_object(Bucket="mpu", Key="c", Body=b"5", IfNoneMatch="*")
    mpu.put_object(Bucket="mpu", Key="c", Body=b"6", IfMatch=f'"nope", {mpu.head_object(Bucket="mpu", Key="c")["ETag"]}')
    assert mpu.get_object(Bucket="mpu", Key="c")["Body"].read() == b"6"


def test_acl_grants_are_listed_groups_first(mpu) -> None:
    mpu.put_bucket_acl(Bucket="mpu", GrantFullControl='id="alice"', GrantRead='uri="http://acs.amazonaws.com/groups/global/AllUsers"',
                       GrantWrite='id="bob"')
    kinds = [g["Grantee"]["Type"] for g in mpu.get_bucket_acl(Bucket="mpu")["Grants"]]
    assert kinds == ["Group", "CanonicalUser", "CanonicalUser"]
    mpu.put_object(Bucket="mpu", Key="o", Body=b"x", ACL="public-read")
    kinds = [g["Grantee"]["Type"] for g in mpu.get_object_acl(Bucket="mpu", Key="o")["Grants"]]
    assert kinds == ["Group", "CanonicalUser"]
