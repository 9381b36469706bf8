"""aws-chunked uploads, presigned URLs (SigV4 and SigV2) and SigV2 requests against a real node."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import zlib
from urllib.parse import urlsplit

import pytest

from tests.procs import make_certificate
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.auth.test_chunked import encode
from trio_sos.auth.sigv4 import Verified, derive_signing_key

from .rawhttp import connect, head_bytes, read_response

SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


class _StreamingAuth(S3SigV4Auth):
    def __init__(self, credentials, mode: str) -> None:
        super().__init__(credentials, "s3", "us-east-1")
        self.mode = mode

    def payload(self, request) -> str:
        return self.mode


def streaming_request(node, path: str, payload: bytes, mode: str, *, sizes=(65536,), trailers=None,
                      tamper=None, headers=None) -> tuple[int, bytes]:
    u = node.users[0]
    extra = {"Content-Encoding": "aws-chunked", "X-Amz-Decoded-Content-Length": str(len(payload)), **(headers or {})}
    if trailers:
        extra["X-Amz-Trailer"] = ",".join(trailers)
    request = AWSRequest(method="PUT", url=node.endpoint + path, headers=extra)
    _StreamingAuth(Credentials(u["access_key"], u["secret_key"]), mode).add_auth(request)
    hdrs = dict(request.prepare().headers.items())
    amz_date = hdrs["X-Amz-Date"]
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    seed = hdrs["Authorization"].rsplit("Signature=", 1)[1]
    verified = Verified(access_key=u["access_key"], region="us-east-1", service="s3", amz_date=amz_date,
                        request_time=None, scope=scope,
                        signing_key=derive_signing_key(u["secret_key"], amz_date[:8], "us-east-1", "s3"),
                        seed_signature=seed, payload_hash=mode)
    body = encode(payload, list(sizes), mode, verified if mode != UNSIGNED_TRAILER else None, trailers)
    if tamper:
        body = tamper(body)
    hdrs["Content-Length"] = str(len(body))
    hdrs["Host"] = urlsplit(node.endpoint).netloc
    sock = connect(node)
    try:
        sock.sendall(head_bytes("PUT", path, hdrs) + body)
        status, _, answer = read_response(sock)
    finally:
        sock.close()
    return status, answer


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def test_signed_chunks(s3, node) -> None:
    s3.create_bucket(Bucket="chunks")
    payload = os.urandom(200_000)
    status, answer = streaming_request(node, "/chunks/k", payload, SIGNED)
    assert status == 200, answer
    assert s3.get_object(Bucket="chunks", Key="k")["Body"].read() == payload  # no framing in the object
    flip = lambda b: b[:70_000] + bytes([b[70_000] ^ 1]) + b[70_001:]  # noqa: E731  (a data byte of chunk 2)
    status, answer = streaming_request(node, "/chunks/k", os.urandom(200_000), SIGNED, tamper=flip)
    assert status == 403 and b"SignatureDoesNotMatch" in answer
    assert s3.get_object(Bucket="chunks", Key="k")["Body"].read() == payload  # the old version is intact
    cut = lambda b: b[: len(b) // 2]  # noqa: E731
    status, answer = streaming_request(node, "/chunks/k2", os.urandom(200_000), SIGNED, tamper=cut)
    assert status == 400
    assert "Contents" not in s3.list_objects_v2(Bucket="chunks", Prefix="k2")


def test_replayed_chunk_signatures_are_refused(s3, node) -> None:
    s3.create_bucket(Bucket="replay")
    payload = os.urandom(150_000)
    captured = {}

    def keep(body: bytes) -> bytes:
        captured["body"] = body
        return body

    assert streaming_request(node, "/replay/a", payload, SIGNED, tamper=keep)[0] == 200
    # another key, so another seed signature: the captured chunk signatures chain from the first one
    status, answer = streaming_request(node, "/replay/b", payload, SIGNED, tamper=lambda _: captured["body"])
    assert status == 403 and b"SignatureDoesNotMatch" in answer


def test_trailing_checksums(s3, node) -> None:
    s3.create_bucket(Bucket="trailers")
    payload = os.urandom(100_000)
    good = {"x-amz-checksum-crc32": crc32_b64(payload)}
    for mode in (SIGNED_TRAILER, UNSIGNED_TRAILER):
        status, answer = streaming_request(node, f"/trailers/{mode}", payload, mode, trailers=good)
        assert status == 200, answer
        got = s3.get_object(Bucket="trailers", Key=mode, ChecksumMode="ENABLED")
        assert got["Body"].read() == payload and got["ChecksumCRC32"] == good["x-amz-checksum-crc32"]
        bad = {"x-amz-checksum-crc32": crc32_b64(payload + b"x")}
        status, answer = streaming_request(node, f"/trailers/{mode}-bad", payload, mode, trailers=bad)
        assert status == 400 and b"BadDigest" in answer
    # a trailer mode with no x-amz-trailer: the object gets S3's default CRC64NVME, computed here
    status, _ = streaming_request(node, "/trailers/default", payload, UNSIGNED_TRAILER)
    assert status == 200
    got = s3.get_object(Bucket="trailers", Key="default", ChecksumMode="ENABLED")
    assert got["Body"].read() == payload and got.get("ChecksumCRC64NVME")
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket="trailers")["Contents"]) == sorted(
        [UNSIGNED_TRAILER, SIGNED_TRAILER, "default"])  # the refused ones left nothing


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", *args], capture_output=True,
                          timeout=60)


def test_presigned_urls_with_curl(s3, node, tmp_path) -> None:
    s3.create_bucket(Bucket="presign")
    s3.put_object(Bucket="presign", Key="dir/file é.txt", Body=b"presigned body")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "presign", "Key": "dir/file é.txt"},
                                    ExpiresIn=300)
    done = curl(url)
    body, code = done.stdout.rsplit(b"\n", 1)
    assert code == b"200" and body == b"presigned body"
    head = curl("-I", url.replace("X-Amz-Signature=", "X-Amz-Signature=0"))
    assert head.stdout.rsplit(b"\n", 1)[1] == b"403"
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": "presign", "Key": "uploaded"},
                                        ExpiresIn=300)
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(300_000))
    done = curl("-X", "PUT", "-T", str(src), put_url)
    assert done.stdout.rsplit(b"\n", 1)[1] == b"200", done.stdout
    assert s3.get_object(Bucket="presign", Key="uploaded")["Body"].read() == src.read_bytes()
    # valid for 0 s: expired as soon as made (its expiry is a whole second, the server's clock is finer)
    expired = s3.generate_presigned_url("get_object", Params={"Bucket": "presign", "Key": "uploaded"},
                                        ExpiresIn=0)
    done = curl(expired)
    body, code = done.stdout.rsplit(b"\n", 1)
    assert code == b"403" and b"expired" in body
    other = s3.generate_presigned_url("get_object", Params={"Bucket": "presign", "Key": "uploaded"},
                                      ExpiresIn=300).replace("/uploaded", "/dir/file%20%C3%A9.txt")
    assert curl(other).stdout.rsplit(b"\n", 1)[1] == b"403"  # a signature is for its own key only


def test_sigv2_requests_and_urls(node) -> None:
    s3v2 = node.client(signature_version="s3")
    s3v2.create_bucket(Bucket="version2")
    s3v2.put_object(Bucket="version2", Key="a b+c", Body=b"v2 body", Metadata={"m": "1"})
    assert s3v2.get_object(Bucket="version2", Key="a b+c")["Body"].read() == b"v2 body"
    assert [o["Key"] for o in s3v2.list_objects(Bucket="version2")["Contents"]] == ["a b+c"]
    url = s3v2.generate_presigned_url("get_object", Params={"Bucket": "version2", "Key": "a b+c"}, ExpiresIn=60)
    assert "AWSAccessKeyId=" in url
    body, code = curl(url).stdout.rsplit(b"\n", 1)
    assert code == b"200" and body == b"v2 body"
    import boto3

    wrong = boto3.client("s3", endpoint_url=node.endpoint, region_name="us-east-1",
                         aws_access_key_id=node.users[0]["access_key"], aws_secret_access_key="not-the-secret",
                         config=Config(signature_version="s3", retries={"total_max_attempts": 1, "mode": "standard"}))
    with pytest.raises(ClientError) as info:
        wrong.get_object(Bucket="version2", Key="a b+c")
    assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_boto3_over_https_multipart_with_trailing_checksums(node_factory, tmp_path) -> None:
    from boto3.s3.transfer import TransferConfig

    crt, key = make_certificate(tmp_path)
    node = node_factory(tls_cert=str(crt), tls_key=str(key))
    s3 = node.client(verify=str(crt))
    assert node.endpoint.startswith("https://")
    s3.create_bucket(Bucket="securemp")
    body = os.urandom(18 << 20)
    src = tmp_path / "src.bin"
    src.write_bytes(body)
    s3.upload_file(str(src), "securemp", "big", Config=TransferConfig(multipart_threshold=8 << 20,
                                                                       multipart_chunksize=8 << 20))
    assert hashlib.sha256(s3.get_object(Bucket="securemp", Key="big")["Body"].read()).digest() == \
        hashlib.sha256(body).digest()
    s3.put_object(Bucket="securemp", Key="small", Body=b"checked over TLS")
    got = s3.get_object(Bucket="securemp", Key="small", ChecksumMode="ENABLED")
    assert got["Body"].read() == b"checked over TLS" and got.get("ChecksumCRC32")
