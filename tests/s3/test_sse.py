"""Server-side encryption on a real node, through boto3 (and the AWS CLI): SSE-S3, SSE-C and default bucket
encryption — round trips, ranges, multipart, copies between keys, S3's errors — and proof that no agent (nor the
metadata) ever holds the plaintext."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError

from tests.procs import make_certificate

STATUS = {"InvalidRequest": 400, "InvalidArgument": 400, "AccessDenied": 403, "NotImplemented": 501,
          "ServerSideEncryptionConfigurationNotFoundError": 404, "MalformedXML": 400,
          "InvalidEncryptionAlgorithmError": 400}
MIB = 1 << 20


def code(call, *args, **kwargs) -> str:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    found = info.value.response["Error"]["Code"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == STATUS[found], found
    return found


def marked(size: int) -> tuple[bytes, bytes]:
    """A body that is a known marker repeated (so it can be looked for on disk), and the marker."""
    mark = os.urandom(24).hex().encode()
    return (mark * (size // len(mark) + 1))[:size], mark


def on_disk(root: Path, needle: bytes) -> list[Path]:
    """Every file under ``root`` (the agents' chunks, the metadata and its WAL) that holds ``needle``."""
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.fixture
def tls(node_factory, tmp_path):
    crt, key = make_certificate(tmp_path)
    node = node_factory(tls_cert=str(crt), tls_key=str(key), tls_listen="127.0.0.1:0")
    https = node.endpoints[1]
    return node, node.client(endpoint=https, verify=str(crt)), crt


RANGES = ["bytes=0-0", "bytes=0-65535", "bytes=65535-65536", "bytes=65536-131071", "bytes=100-200000",
          "bytes=-1", "bytes=-70000", "bytes=131072-"]


def check_ranges(s3, bucket: str, key: str, body: bytes, **extra) -> None:
    for spec in RANGES:
        lo, _, hi = spec[6:].partition("-")
        if lo == "":
            want = body[-int(hi):]
        else:
            want = body[int(lo):int(hi) + 1] if hi else body[int(lo):]
        got = s3.get_object(Bucket=bucket, Key=key, Range=spec, **extra)
        assert got["Body"].read() == want, spec
        assert got["ContentLength"] == len(want)


def test_sse_s3_round_trip_ranges_and_nothing_in_the_clear(node, s3) -> None:
    s3.create_bucket(Bucket="enc")
    body, mark = marked(3 * MIB + 12345)
    put = s3.put_object(Bucket="enc", Key="big", Body=body, ServerSideEncryption="AES256")
    assert put["ServerSideEncryption"] == "AES256"
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'  # SSE-S3: the plaintext's MD5, as AWS
    small, small_mark = marked(3000)  # kept inline in the metadata record: encrypted there too
    s3.put_object(Bucket="enc", Key="small", Body=small, ServerSideEncryption="AES256")
    got = s3.get_object(Bucket="enc", Key="big")
    assert got["Body"].read() == body and got["ServerSideEncryption"] == "AES256"
    assert s3.head_object(Bucket="enc", Key="big")["ServerSideEncryption"] == "AES256"
    assert s3.head_object(Bucket="enc", Key="big")["ContentLength"] == len(body)
    assert s3.get_object(Bucket="enc", Key="small")["Body"].read() == small
    check_ranges(s3, "enc", "big", body)
    assert [o["Size"] for o in s3.list_objects_v2(Bucket="enc")["Contents"]] == [len(body), len(small)]
    # a plaintext object beside it is not encrypted, and says so by saying nothing
    plain, plain_mark = marked(100_000)
    s3.put_object(Bucket="enc", Key="plain", Body=plain)
    assert "ServerSideEncryption" not in s3.get_object(Bucket="enc", Key="plain")
    assert on_disk(node.data_dir, plain_mark)  # (the search does find what is stored in the clear)
    assert on_disk(node.data_dir, mark) == [] and on_disk(node.data_dir, small_mark) == []
    # the master key is the node's, kept across a restart
    node.restart()
    assert node.client().get_object(Bucket="enc", Key="big", Range="bytes=5-9")["Body"].read() == body[5:10]
    assert code(s3.put_object, Bucket="enc", Key="k", Body=b"x", ServerSideEncryption="aws:kms") == \
        "NotImplemented"
    assert code(s3.put_object, Bucket="enc", Key="k", Body=b"x", ServerSideEncryption="AES256",
                SSEKMSKeyId="key") == "InvalidArgument"


def test_sse_s3_multipart_and_copies(node, s3) -> None:
    s3.create_bucket(Bucket="mpu")
    parts = [marked(5 * MIB + 3)[0], marked(70_000)[0]]
    upload = s3.create_multipart_upload(Bucket="mpu", Key="obj", ServerSideEncryption="AES256")
    assert upload["ServerSideEncryption"] == "AES256"
    etags = []
    for n, data in enumerate(parts, 1):
        done = s3.upload_part(Bucket="mpu", Key="obj", UploadId=upload["UploadId"], PartNumber=n, Body=data)
        assert done["ServerSideEncryption"] == "AES256"
        etags.append(done["ETag"])
    s3.complete_multipart_upload(Bucket="mpu", Key="obj", UploadId=upload["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    body = b"".join(parts)
    assert s3.get_object(Bucket="mpu", Key="obj")["Body"].read() == body
    spec = f"bytes={5 * MIB - 10}-{5 * MIB + 100}"  # across the two parts
    assert s3.get_object(Bucket="mpu", Key="obj", Range=spec)["Body"].read() == body[5 * MIB - 10:5 * MIB + 101]
    assert s3.get_object(Bucket="mpu", Key="obj", PartNumber=2)["Body"].read() == parts[1]
    # copies: encrypted to encrypted (the stored bytes shared), to plaintext, and plaintext to encrypted
    copied = s3.copy_object(Bucket="mpu", Key="same", CopySource="mpu/obj", ServerSideEncryption="AES256")
    assert copied["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket="mpu", Key="same", Range=spec)["Body"].read() == body[5 * MIB - 10:5 * MIB + 101]
    s3.copy_object(Bucket="mpu", Key="clear", CopySource="mpu/obj")
    clear = s3.get_object(Bucket="mpu", Key="clear")
    assert clear["Body"].read() == body and "ServerSideEncryption" not in clear
    s3.copy_object(Bucket="mpu", Key="again", CopySource="mpu/clear", ServerSideEncryption="AES256")
    assert s3.get_object(Bucket="mpu", Key="again")["ServerSideEncryption"] == "AES256"
    # encrypting an object in place: a copy to itself asking for encryption is allowed
    s3.put_object(Bucket="mpu", Key="inplace", Body=b"in place")
    s3.copy_object(Bucket="mpu", Key="inplace", CopySource="mpu/inplace", ServerSideEncryption="AES256")
    assert s3.head_object(Bucket="mpu", Key="inplace")["ServerSideEncryption"] == "AES256"
    # a part copied from an encrypted source into a plaintext upload
    plain_up = s3.create_multipart_upload(Bucket="mpu", Key="pc")
    part = s3.upload_part_copy(Bucket="mpu", Key="pc", UploadId=plain_up["UploadId"], PartNumber=1,
                               CopySource="mpu/obj", CopySourceRange=spec.replace("bytes=", "bytes="))
    s3.complete_multipart_upload(Bucket="mpu", Key="pc", UploadId=plain_up["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]})
    assert s3.get_object(Bucket="mpu", Key="pc")["Body"].read() == body[5 * MIB - 10:5 * MIB + 101]


def test_default_bucket_encryption(node, s3) -> None:
    s3.create_bucket(Bucket="dflt")
    assert code(s3.get_bucket_encryption, Bucket="dflt") == "ServerSideEncryptionConfigurationNotFoundError"
    s3.put_bucket_encryption(Bucket="dflt", ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}]})
    rule = s3.get_bucket_encryption(Bucket="dflt")["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256" and rule["BucketKeyEnabled"]
    body, mark = marked(200_000)
    assert s3.put_object(Bucket="dflt", Key="k", Body=body)["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket="dflt", Key="k")["Body"].read() == body
    # a browser-form upload into the bucket is encrypted by default too
    form_body, form_mark = marked(50_000)
    post = s3.generate_presigned_post("dflt", "form")
    sent = requests.post(post["url"], data=post["fields"], files={"file": ("f", form_body)}, timeout=30,
                         allow_redirects=False)
    assert sent.status_code == 204 and sent.headers["x-amz-server-side-encryption"] == "AES256"
    assert s3.get_object(Bucket="dflt", Key="form")["Body"].read() == form_body
    assert on_disk(node.data_dir, mark) == [] and on_disk(node.data_dir, form_mark) == []
    assert code(s3.put_bucket_encryption, Bucket="dflt", ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]}) == "NotImplemented"
    assert code(node.client(1).get_bucket_encryption, Bucket="dflt") == "AccessDenied"  # the owner's
    s3.delete_bucket_encryption(Bucket="dflt")
    assert code(s3.get_bucket_encryption, Bucket="dflt") == "ServerSideEncryptionConfigurationNotFoundError"
    assert "ServerSideEncryption" not in s3.put_object(Bucket="dflt", Key="after", Body=b"x")
    assert s3.get_object(Bucket="dflt", Key="k")["Body"].read() == body  # what was encrypted stays readable


@contextlib.contextmanager
def headers_set(s3, headers: dict):
    """Requests of ``s3`` sent with these headers replaced (what an SDK would not send), signed as sent."""
    def edit(request, **_):
        for name, value in headers.items():
            if name in request.headers:
                del request.headers[name]
            request.headers[name] = value

    s3.meta.events.register("before-sign.s3", edit)
    try:
        yield
    finally:
        s3.meta.events.unregister("before-sign.s3", edit)


def customer(key: bytes) -> dict:
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}


def copy_customer(key: bytes) -> dict:
    return {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": key}


def test_sse_c_round_trip_errors_and_nothing_in_the_clear(tls) -> None:
    node, s3, _ = tls
    s3.create_bucket(Bucket="cust")
    key, other = os.urandom(32), os.urandom(32)
    body, mark = marked(2 * MIB + 777)
    put = s3.put_object(Bucket="cust", Key="c", Body=body, **customer(key))
    assert put["SSECustomerAlgorithm"] == "AES256"
    assert put["SSECustomerKeyMD5"] == base64.b64encode(hashlib.md5(key).digest()).decode()
    assert put["ETag"] != f'"{hashlib.md5(body).hexdigest()}"'  # not the plaintext's MD5
    got = s3.get_object(Bucket="cust", Key="c", **customer(key))
    assert got["Body"].read() == body and got["SSECustomerKeyMD5"] == put["SSECustomerKeyMD5"]
    assert s3.head_object(Bucket="cust", Key="c", **customer(key))["ContentLength"] == len(body)
    check_ranges(s3, "cust", "c", body, **customer(key))
    assert code(s3.get_object, Bucket="cust", Key="c") == "InvalidRequest"  # no key
    assert code(s3.get_object, Bucket="cust", Key="c", **customer(other)) == "AccessDenied"  # another key
    s3.put_object(Bucket="cust", Key="plain", Body=b"p")
    assert code(s3.get_object, Bucket="cust", Key="plain", **customer(key)) == "InvalidRequest"
    assert code(s3.put_object, Bucket="cust", Key="x", Body=b"x", SSECustomerAlgorithm="AES256",
                SSECustomerKey=b"short") == "InvalidArgument"
    with headers_set(s3, {"x-amz-server-side-encryption-customer-key-MD5": base64.b64encode(b"0" * 16).decode()}):
        assert code(s3.put_object, Bucket="cust", Key="x", Body=b"x", **customer(key)) == "InvalidArgument"
    assert code(s3.put_object, Bucket="cust", Key="x", Body=b"x", SSECustomerAlgorithm="AES128",
                SSECustomerKey=key) == "InvalidEncryptionAlgorithmError"
    assert code(s3.put_object, Bucket="cust", Key="x", Body=b"x", ServerSideEncryption="AES256",
                **customer(key)) == "InvalidArgument"
    # refused over plain HTTP, as AWS does (the key would have crossed the network in the clear)
    assert code(node.client().put_object, Bucket="cust", Key="x", Body=b"x", **customer(key)) == "InvalidRequest"
    assert code(node.client().get_object, Bucket="cust", Key="c", **customer(key)) == "InvalidRequest"
    assert on_disk(node.data_dir, mark) == []
    assert on_disk(node.data_dir, key) == [] and on_disk(node.data_dir, base64.b64encode(key)) == []


def test_sse_c_multipart_and_copies_between_keys(tls) -> None:
    node, s3, _ = tls
    s3.create_bucket(Bucket="cmp")
    key, other = os.urandom(32), os.urandom(32)
    parts = [marked(5 * MIB)[0], marked(1234)[0]]
    up = s3.create_multipart_upload(Bucket="cmp", Key="m", **customer(key))
    assert code(s3.upload_part, Bucket="cmp", Key="m", UploadId=up["UploadId"], PartNumber=1,
                Body=parts[0]) == "InvalidRequest"  # every part needs the key
    assert code(s3.upload_part, Bucket="cmp", Key="m", UploadId=up["UploadId"], PartNumber=1, Body=parts[0],
                **customer(other)) == "AccessDenied"
    etags = [s3.upload_part(Bucket="cmp", Key="m", UploadId=up["UploadId"], PartNumber=n, Body=data,
                            **customer(key))["ETag"] for n, data in enumerate(parts, 1)]
    s3.complete_multipart_upload(Bucket="cmp", Key="m", UploadId=up["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    body = b"".join(parts)
    assert s3.get_object(Bucket="cmp", Key="m", **customer(key))["Body"].read() == body
    assert s3.get_object(Bucket="cmp", Key="m", Range=f"bytes={5 * MIB - 3}-{5 * MIB + 2}",
                         **customer(key))["Body"].read() == body[5 * MIB - 3:5 * MIB + 3]
    # copy under another customer key, then to SSE-S3, then under the same key (shared bytes)
    s3.copy_object(Bucket="cmp", Key="rekeyed", CopySource="cmp/m", **copy_customer(key), **customer(other))
    assert s3.get_object(Bucket="cmp", Key="rekeyed", **customer(other))["Body"].read() == body
    assert code(s3.get_object, Bucket="cmp", Key="rekeyed", **customer(key)) == "AccessDenied"
    assert code(s3.copy_object, Bucket="cmp", Key="nokey", CopySource="cmp/m") == "InvalidRequest"
    s3.copy_object(Bucket="cmp", Key="s3", CopySource="cmp/m", **copy_customer(key), ServerSideEncryption="AES256")
    assert s3.get_object(Bucket="cmp", Key="s3")["Body"].read() == body
    s3.copy_object(Bucket="cmp", Key="twin", CopySource="cmp/m", **copy_customer(key), **customer(key))
    assert s3.get_object(Bucket="cmp", Key="twin", **customer(key))["Body"].read() == body
    # a part copied from an SSE-C source into an SSE-C upload of another key
    up2 = s3.create_multipart_upload(Bucket="cmp", Key="pc", **customer(other))
    part = s3.upload_part_copy(Bucket="cmp", Key="pc", UploadId=up2["UploadId"], PartNumber=1, CopySource="cmp/m",
                               CopySourceRange="bytes=10-99999", **copy_customer(key), **customer(other))
    s3.complete_multipart_upload(Bucket="cmp", Key="pc", UploadId=up2["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]})
    assert s3.get_object(Bucket="cmp", Key="pc", **customer(other))["Body"].read() == body[10:100000]
    attributes = s3.get_object_attributes(  # (botocore leaves this operation's key to be encoded by the caller)
        Bucket="cmp", Key="m", ObjectAttributes=["ObjectSize"], SSECustomerAlgorithm="AES256",
        SSECustomerKey=base64.b64encode(key).decode(),
        SSECustomerKeyMD5=base64.b64encode(hashlib.md5(key).digest()).decode())
    assert attributes["ObjectSize"] == len(body)
