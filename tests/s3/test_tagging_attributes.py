"""Bucket tagging and GetObjectAttributes through boto3 against a real node, with S3's limits and errors."""

from __future__ import annotations

import hashlib
import os

import pytest
from botocore.exceptions import ClientError

MiB = 1 << 20


def code(info) -> str:
    return info.value.response["Error"]["Code"]


def test_bucket_tagging(s3, node) -> None:
    s3.create_bucket(Bucket="btags")
    with pytest.raises(ClientError) as info:
        s3.get_bucket_tagging(Bucket="btags")
    assert code(info) == "NoSuchTagSet"
    tags = [{"Key": "team", "Value": "storage"}, {"Key": "cost centre", "Value": "42 é"}, {"Key": "e", "Value": ""}]
    s3.put_bucket_tagging(Bucket="btags", Tagging={"TagSet": tags})
    assert s3.get_bucket_tagging(Bucket="btags")["TagSet"] == tags
    for bad, expected in [([{"Key": f"k{i}", "Value": "v"} for i in range(51)], "InvalidTag"),
                          ([{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}], "InvalidTag"),
                          ([{"Key": "aws:cloudformation", "Value": "x"}], "InvalidTag"),
                          ([{"Key": "k" * 129, "Value": "x"}], "InvalidTag"),
                          ([{"Key": "k", "Value": "v" * 257}], "InvalidTag"),
                          ([{"Key": "semi;colon", "Value": "x"}], "InvalidTag")]:
        with pytest.raises(ClientError) as info:
            s3.put_bucket_tagging(Bucket="btags", Tagging={"TagSet": bad})
        assert code(info) == expected, bad
    assert s3.get_bucket_tagging(Bucket="btags")["TagSet"] == tags  # unchanged by the refused ones
    s3.put_bucket_tagging(Bucket="btags", Tagging={"TagSet": [{"Key": f"k{i}", "Value": "v"} for i in range(50)]})
    bob = node.client(1)
    for call in (lambda: bob.get_bucket_tagging(Bucket="btags"),
                 lambda: bob.put_bucket_tagging(Bucket="btags", Tagging={"TagSet": []}),
                 lambda: bob.delete_bucket_tagging(Bucket="btags")):
        with pytest.raises(ClientError) as info:
            call()
        assert code(info) == "AccessDenied"
    s3.delete_bucket_tagging(Bucket="btags")
    with pytest.raises(ClientError) as info:
        s3.get_bucket_tagging(Bucket="btags")
    assert code(info) == "NoSuchTagSet"
    # object tags keep their own limit, and the same character rules
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="btags", Key="o", Body=b"x", Tagging="aws%3Ax=1")
    assert code(info) == "InvalidTag"


def test_get_object_attributes(s3) -> None:
    s3.create_bucket(Bucket="attrs")
    s3.put_bucket_versioning(Bucket="attrs", VersioningConfiguration={"Status": "Enabled"})
    body = os.urandom(1000)
    first = s3.put_object(Bucket="attrs", Key="k", Body=body, ChecksumAlgorithm="SHA256")
    got = s3.get_object_attributes(Bucket="attrs", Key="k",
                                   ObjectAttributes=["ETag", "Checksum", "StorageClass", "ObjectSize"])
    assert got["ETag"] == hashlib.md5(body).hexdigest() and got["ObjectSize"] == 1000
    assert got["StorageClass"] == "STANDARD" and got["Checksum"]["ChecksumSHA256"] == first["ChecksumSHA256"]
    assert got["VersionId"] == first["VersionId"]
    up = s3.create_multipart_upload(Bucket="attrs", Key="k")["UploadId"]
    sizes = [5 * MiB, 5 * MiB, 123]
    parts = [{"PartNumber": i + 1, "ETag": s3.upload_part(Bucket="attrs", Key="k", UploadId=up, PartNumber=i + 1,
                                                          Body=os.urandom(size))["ETag"]}
             for i, size in enumerate(sizes)]
    s3.complete_multipart_upload(Bucket="attrs", Key="k", UploadId=up, MultipartUpload={"Parts": parts})
    got = s3.get_object_attributes(Bucket="attrs", Key="k", ObjectAttributes=["ObjectParts"], MaxParts=2)
    op = got["ObjectParts"]
    assert op["TotalPartsCount"] == 3 and op["IsTruncated"] and op["NextPartNumberMarker"] == 2
    assert [(p["PartNumber"], p["Size"]) for p in op["Parts"]] == [(1, 5 * MiB), (2, 5 * MiB)]
    rest = s3.get_object_attributes(Bucket="attrs", Key="k", ObjectAttributes=["ObjectParts"],
                                    PartNumberMarker=2)["ObjectParts"]
    assert [(p["PartNumber"], p["Size"]) for p in rest["Parts"]] == [(3, 123)] and not rest["IsTruncated"]
    # an older version, by id
    old = s3.get_object_attributes(Bucket="attrs", Key="k", VersionId=first["VersionId"],
                                   ObjectAttributes=["ObjectSize"])
    assert old["ObjectSize"] == 1000
    with pytest.raises(ClientError) as info:
        s3.get_object_attributes(Bucket="attrs", Key="k", ObjectAttributes=["Colour"])
    assert code(info) == "InvalidArgument"
    s3.delete_object(Bucket="attrs", Key="k")
    with pytest.raises(ClientError) as info:
        s3.get_object_attributes(Bucket="attrs", Key="k", ObjectAttributes=["ETag"])
    assert code(info) == "NoSuchKey"


def test_parts_keep_their_checksums(s3) -> None:
    """An upload with a checksum algorithm: each part's checksum, in GetObjectAttributes' ObjectParts and on a
    partNumber read with checksum mode, also for a copy of the object (its parts are the same)."""
    import base64
    import zlib

    s3.create_bucket(Bucket="part-sums")
    bodies = [os.urandom(5 * MiB), os.urandom(5 * MiB + 7), os.urandom(99)]
    up = s3.create_multipart_upload(Bucket="part-sums", Key="k", ChecksumAlgorithm="CRC32")["UploadId"]
    done = [s3.upload_part(Bucket="part-sums", Key="k", UploadId=up, PartNumber=i + 1, Body=b,
                           ChecksumAlgorithm="CRC32") for i, b in enumerate(bodies)]
    expected = [base64.b64encode(zlib.crc32(b).to_bytes(4, "big")).decode() for b in bodies]
    assert [d["ChecksumCRC32"] for d in done] == expected
    s3.complete_multipart_upload(Bucket="part-sums", Key="k", UploadId=up, MultipartUpload={"Parts": [
        {"PartNumber": i + 1, "ETag": d["ETag"], "ChecksumCRC32": d["ChecksumCRC32"]} for i, d in enumerate(done)]})
    s3.copy_object(Bucket="part-sums", Key="copy", CopySource="part-sums/k")
    for key in ("k", "copy"):
        got = s3.get_object_attributes(Bucket="part-sums", Key=key, ObjectAttributes=["ObjectParts", "Checksum"])
        assert [p["ChecksumCRC32"] for p in got["ObjectParts"]["Parts"]] == expected
        assert got["Checksum"]["ChecksumCRC32"].endswith("-3")
        head = s3.head_object(Bucket="part-sums", Key=key, PartNumber=2, ChecksumMode="ENABLED")
        assert head["ChecksumCRC32"] == expected[1] and head["ContentLength"] == len(bodies[1])
