"""End to end with boto3 at its defaults (checksums on) against a real node process and its real agent."""

from __future__ import annotations

import hashlib
import io
import os
import time
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError


def error_code(info: pytest.ExceptionInfo) -> str:
    return info.value.response["Error"]["Code"]


def status(info: pytest.ExceptionInfo) -> int:
    return info.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_recreate_own_bucket_outside_us_east_1_is_409(node_factory) -> None:
    node = node_factory(region="eu-west-1")
    s3 = node.client()
    conf = {"LocationConstraint": "eu-west-1"}
    s3.create_bucket(Bucket="mine", CreateBucketConfiguration=conf)
    with pytest.raises(ClientError) as info:
        s3.create_bucket(Bucket="mine", CreateBucketConfiguration=conf)
    assert error_code(info) == "BucketAlreadyOwnedByYou" and status(info) == 409


def test_bucket_lifecycle(s3, node) -> None:
    s3.create_bucket(Bucket="alpha")
    s3.create_bucket(Bucket="beta.bucket-1")
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert names == ["alpha", "beta.bucket-1"]
    s3.head_bucket(Bucket="alpha")
    assert s3.get_bucket_location(Bucket="alpha")["LocationConstraint"] is None
    # us-east-1: re-creating a bucket you own is 200 OK, and resets its ACL (S3's legacy behaviour)
    s3.put_bucket_acl(Bucket="alpha", ACL="public-read")
    s3.create_bucket(Bucket="alpha")
    assert [g["Grantee"].get("ID") for g in s3.get_bucket_acl(Bucket="alpha")["Grants"]] == ["alice"]
    bob = node.client(1)
    with pytest.raises(ClientError) as info:
        bob.create_bucket(Bucket="alpha")
    assert error_code(info) == "BucketAlreadyExists"
    assert bob.list_buckets()["Buckets"] == []
    with pytest.raises(ClientError) as info:
        bob.list_objects_v2(Bucket="alpha")
    assert error_code(info) == "AccessDenied"
    s3.put_object(Bucket="alpha", Key="k", Body=b"x")
    with pytest.raises(ClientError) as info:
        s3.delete_bucket(Bucket="alpha")
    assert error_code(info) == "BucketNotEmpty"
    s3.delete_object(Bucket="alpha", Key="k")
    s3.delete_bucket(Bucket="alpha")
    with pytest.raises(ClientError) as info:
        s3.head_bucket(Bucket="alpha")
    assert status(info) == 404
    with pytest.raises(ClientError) as info:
        s3.list_objects_v2(Bucket="alpha")
    assert error_code(info) == "NoSuchBucket"


@pytest.mark.parametrize("name", ["ab", "A-upper", "-dash", "dot..dot", "192.168.1.1", "x" * 64, "xn--punycode",
                                  "under_score"])
def test_invalid_bucket_names(s3, name) -> None:
    with pytest.raises(ClientError) as info:
        s3.create_bucket(Bucket=name)
    assert error_code(info) == "InvalidBucketName"


def test_location_constraint(s3) -> None:
    s3.create_bucket(Bucket="here", CreateBucketConfiguration={"LocationConstraint": "us-east-1"})
    with pytest.raises(ClientError) as info:
        s3.create_bucket(Bucket="there", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
    assert error_code(info) == "InvalidLocationConstraint"


KEYS = ["plain", "with space", "a/b/c", "../dotdot", "./dot", "plus+sign", "percent%20", "ünïcödé/日本語", "emoji 🎉",
        "tilde~", "x" * 1024, "semi;colon,comma", "quote\"'", "amp&eq=", "q?mark#hash", "back\\slash", "//double",
        "trailing/"]


def test_keys_of_any_utf8(s3) -> None:
    s3.create_bucket(Bucket="keys")
    for key in KEYS:
        s3.put_object(Bucket="keys", Key=key, Body=key.encode())
    for key in KEYS:
        assert s3.get_object(Bucket="keys", Key=key)["Body"].read() == key.encode(), key
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket="keys")["Contents"]]
    assert listed == sorted(KEYS, key=lambda k: k.encode())
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="keys", Key="y" * 1025, Body=b"")
    assert error_code(info) == "KeyTooLongError"


def test_metadata_and_content_headers_round_trip(s3) -> None:
    s3.create_bucket(Bucket="meta")
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    put = s3.put_object(
        Bucket="meta", Key="doc", Body=b"<html/>", ContentType="text/html; charset=utf-8",
        ContentEncoding="identity", ContentDisposition='attachment; filename="a.html"', ContentLanguage="fr",
        CacheControl="max-age=60", Expires=expires, Metadata={"Colour": "blue", "x-y": "z 1"},
    )
    assert put["ETag"] == '"' + hashlib.md5(b"<html/>").hexdigest() + '"'
    for call in (s3.head_object, s3.get_object):
        got = call(Bucket="meta", Key="doc")
        assert got["ContentType"] == "text/html; charset=utf-8"
        assert got["ContentEncoding"] == "identity"
        assert got["ContentDisposition"] == 'attachment; filename="a.html"'
        assert got["ContentLanguage"] == "fr"
        assert got["CacheControl"] == "max-age=60"
        assert got["Expires"] == expires
        assert got["Metadata"] == {"colour": "blue", "x-y": "z 1"}
        assert got["ContentLength"] == 7 and got["ETag"] == put["ETag"]
        assert got["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]


def test_default_checksum_is_verified_and_returned(s3) -> None:
    s3.create_bucket(Bucket="sums")
    put = s3.put_object(Bucket="sums", Key="k", Body=b"checked")
    assert put.get("ChecksumCRC32")  # boto3 sent one; the node verified and stored it
    got = s3.get_object(Bucket="sums", Key="k", ChecksumMode="ENABLED")
    assert got["ChecksumCRC32"] == put["ChecksumCRC32"]
    assert got["Body"].read() == b"checked"


def test_bad_content_md5_stores_nothing(s3) -> None:
    s3.create_bucket(Bucket="md5")
    s3.put_object(Bucket="md5", Key="k", Body=b"first")
    import base64

    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="md5", Key="k", Body=b"second", ContentMD5=wrong)
    assert error_code(info) == "BadDigest"
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="md5", Key="k", Body=b"second", ContentMD5="not base64!")
    assert error_code(info) == "InvalidDigest"
    assert s3.get_object(Bucket="md5", Key="k")["Body"].read() == b"first"


def test_large_object_streams_through_several_chunks(s3) -> None:
    s3.create_bucket(Bucket="big")
    body = os.urandom(20 * 1024 * 1024 + 12345)  # several 8 MiB chunks and a partial one
    s3.put_object(Bucket="big", Key="blob", Body=io.BytesIO(body))
    got = s3.get_object(Bucket="big", Key="blob")
    assert got["ContentLength"] == len(body)
    assert hashlib.sha256(got["Body"].read()).digest() == hashlib.sha256(body).digest()
    mid = 8 * 1024 * 1024 - 10
    part = s3.get_object(Bucket="big", Key="blob", Range=f"bytes={mid}-{mid + 99}")
    assert part["Body"].read() == body[mid : mid + 100] and part["ContentRange"] == f"bytes {mid}-{mid + 99}/{len(body)}"


def test_ranges(s3) -> None:
    s3.create_bucket(Bucket="ranges")
    body = bytes(range(256)) * 4
    s3.put_object(Bucket="ranges", Key="k", Body=body)
    for header, expected in [("bytes=0-9", body[:10]), ("bytes=1000-", body[1000:]), ("bytes=-5", body[-5:]),
                             ("bytes=1020-5000", body[1020:]), ("bytes=-5000", body)]:
        got = s3.get_object(Bucket="ranges", Key="k", Range=header)
        assert got["Body"].read() == expected, header
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    for header in ["bytes=1024-", "bytes=5000-6000", "bytes=-0"]:
        with pytest.raises(ClientError) as info:
            s3.get_object(Bucket="ranges", Key="k", Range=header)
        assert error_code(info) == "InvalidRange" and status(info) == 416, header
    assert s3.get_object(Bucket="ranges", Key="k", Range="bytes=5-2")["Body"].read() == body  # ignored
    s3.put_object(Bucket="ranges", Key="empty", Body=b"")
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="ranges", Key="empty", Range="bytes=0-")
    assert error_code(info) == "InvalidRange"
    assert s3.get_object(Bucket="ranges", Key="empty")["Body"].read() == b""


def test_conditional_requests(s3) -> None:
    s3.create_bucket(Bucket="cond")
    etag = s3.put_object(Bucket="cond", Key="k", Body=b"v1")["ETag"]
    modified = s3.head_object(Bucket="cond", Key="k")["LastModified"]
    before, after = modified - timedelta(hours=1), modified + timedelta(hours=1)
    ok = [dict(IfMatch=etag), dict(IfNoneMatch='"other"'), dict(IfModifiedSince=before),
          dict(IfUnmodifiedSince=after), dict(IfMatch=etag, IfUnmodifiedSince=before)]
    for kw in ok:
        assert s3.get_object(Bucket="cond", Key="k", **kw)["Body"].read() == b"v1", kw
    for kw, code in [(dict(IfMatch='"other"'), 412), (dict(IfUnmodifiedSince=before), 412),
                     (dict(IfNoneMatch=etag), 304), (dict(IfModifiedSince=after), 304),
                     (dict(IfNoneMatch=etag, IfModifiedSince=before), 304)]:
        for call in (s3.get_object, s3.head_object):
            with pytest.raises(ClientError) as info:
                call(Bucket="cond", Key="k", **kw)
            assert status(info) == code, (kw, call)


def test_errors_for_missing_things(s3) -> None:
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="nope", Key="k")
    assert error_code(info) == "NoSuchBucket"
    s3.create_bucket(Bucket="there")
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="there", Key="missing")
    assert error_code(info) == "NoSuchKey" and status(info) == 404
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket="there", Key="missing")
    assert status(info) == 404
    s3.delete_object(Bucket="there", Key="missing")  # S3 answers 204 for a missing key


def test_overwrite_and_delete_reclaim_chunks(s3, node) -> None:
    s3.create_bucket(Bucket="gcbkt")
    chunk_files = lambda: sorted(p for d in (node.data_dir / "agent" / "chunks").iterdir() for p in d.iterdir())
    s3.put_object(Bucket="gcbkt", Key="k", Body=os.urandom(100_000))
    first = chunk_files()
    assert len(first) == 1
    s3.put_object(Bucket="gcbkt", Key="k", Body=os.urandom(100_000))
    s3.put_object(Bucket="gcbkt", Key="k2", Body=b"keep me" * 10_000)  # above inline_max: a chunk
    deadline = time.monotonic() + 20
    while first[0].exists():  # gc_delay is 0 in tests; the GC runs every 0.2 s
        assert time.monotonic() < deadline, "the overwritten version's chunk was not collected"
        time.sleep(0.05)
    assert len(chunk_files()) == 2
    s3.delete_object(Bucket="gcbkt", Key="k")
    while len(chunk_files()) != 1:
        assert time.monotonic() < deadline, "the deleted object's chunk was not collected"
        time.sleep(0.05)
    assert s3.get_object(Bucket="gcbkt", Key="k2")["Body"].read() == b"keep me" * 10_000


def test_bad_credentials(node) -> None:
    import boto3
    from botocore.config import Config

    s3 = node.client()
    s3.create_bucket(Bucket="auth")
    wrong_secret = boto3.client("s3", endpoint_url=node.endpoint, region_name="us-east-1",
                                aws_access_key_id=node.users[0]["access_key"], aws_secret_access_key="wrong-secret",
                                config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))
    with pytest.raises(ClientError) as info:
        wrong_secret.put_object(Bucket="auth", Key="k", Body=b"nope")
    assert error_code(info) == "SignatureDoesNotMatch" and status(info) == 403
    unknown = boto3.client("s3", endpoint_url=node.endpoint, region_name="us-east-1",
                           aws_access_key_id="AKIDUNKNOWN000000000", aws_secret_access_key="whatever-secret",
                           config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))
    with pytest.raises(ClientError) as info:
        unknown.list_buckets()
    assert error_code(info) == "InvalidAccessKeyId"
    with pytest.raises(ClientError):
        s3.head_object(Bucket="auth", Key="k")
    from botocore import UNSIGNED

    anonymous = boto3.client("s3", endpoint_url=node.endpoint, region_name="us-east-1",
                             config=Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1, "mode": "standard"}))
    with pytest.raises(ClientError) as info:
        anonymous.list_objects_v2(Bucket="auth")
    assert error_code(info) == "AccessDenied"


def test_not_built_yet_is_not_implemented(s3) -> None:
    s3.create_bucket(Bucket="later")
    with pytest.raises(ClientError) as info:
        s3.put_bucket_website(Bucket="later", WebsiteConfiguration={"IndexDocument": {"Suffix": "index.html"}})
    assert error_code(info) == "NotImplemented" and status(info) == 501


def test_restart_keeps_data(node) -> None:
    s3 = node.client()
    s3.create_bucket(Bucket="durable")
    body = os.urandom(3 * 1024 * 1024)
    s3.put_object(Bucket="durable", Key="k", Body=body, Metadata={"a": "b"})
    node.restart()
    s3 = node.client()
    got = s3.get_object(Bucket="durable", Key="k")
    assert got["Body"].read() == body and got["Metadata"] == {"a": "b"}
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["durable"]
