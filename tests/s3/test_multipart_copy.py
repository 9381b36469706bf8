"""Multipart uploads, copies, multi-object delete and conditional PUT, through boto3 against a real node."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import timedelta

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

MiB = 1 << 20


def code(info) -> str:
    return info.value.response["Error"]["Code"]


def chunk_files(node) -> list:
    root = node.data_dir / "agent" / "chunks"
    return sorted(p for d in root.iterdir() for p in d.iterdir())


def wait_for(condition, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_transfer_manager_upload_and_download(s3, tmp_path) -> None:
    s3.create_bucket(Bucket="mpu")
    src = tmp_path / "src.bin"
    body = os.urandom(100 * MiB + 5)
    src.write_bytes(body)
    config = TransferConfig()  # boto3's defaults: 8 MiB threshold and parts
    s3.upload_file(str(src), "mpu", "dir/big.bin", Config=config)
    head = s3.head_object(Bucket="mpu", Key="dir/big.bin")
    assert head["ContentLength"] == len(body) and head["ETag"].endswith('-13"')
    parts = [body[i : i + 8 * MiB] for i in range(0, len(body), 8 * MiB)]
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-13"
    assert head["ETag"] == f'"{expected}"'
    dst = tmp_path / "dst.bin"
    s3.download_file("mpu", "dir/big.bin", str(dst), Config=config)
    assert dst.read_bytes() == body
    part2 = s3.get_object(Bucket="mpu", Key="dir/big.bin", PartNumber=2)
    assert part2["Body"].read() == parts[1] and part2["PartsCount"] == 13
    assert part2["ContentRange"] == f"bytes {8 * MiB}-{16 * MiB - 1}/{len(body)}"


def test_low_level_multipart_rules(s3, node) -> None:
    s3.create_bucket(Bucket="rules")
    up = s3.create_multipart_upload(Bucket="rules", Key="obj", ContentType="text/x-parts",
                                    Metadata={"m": "v"})["UploadId"]
    p1, p2, p3 = os.urandom(5 * MiB), os.urandom(5 * MiB), b"tail"
    e1 = s3.upload_part(Bucket="rules", Key="obj", UploadId=up, PartNumber=1, Body=p1)["ETag"]
    e3 = s3.upload_part(Bucket="rules", Key="obj", UploadId=up, PartNumber=3, Body=p3)["ETag"]
    small = s3.upload_part(Bucket="rules", Key="obj", UploadId=up, PartNumber=2, Body=b"too small")["ETag"]
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(Bucket="rules", Key="obj", UploadId=up, MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": small}, {"PartNumber": 3, "ETag": e3}]})
    assert code(info) == "EntityTooSmall"
    e2 = s3.upload_part(Bucket="rules", Key="obj", UploadId=up, PartNumber=2, Body=p2)["ETag"]  # replaces it
    listed = s3.list_parts(Bucket="rules", Key="obj", UploadId=up)
    assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [(1, 5 * MiB), (2, 5 * MiB), (3, 4)]
    page = s3.list_parts(Bucket="rules", Key="obj", UploadId=up, MaxParts=2)
    assert page["IsTruncated"] and page["NextPartNumberMarker"] == 2
    uploads = s3.list_multipart_uploads(Bucket="rules", Prefix="ob")["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("obj", up)]
    for parts, expected in [
        ([{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}], "InvalidPartOrder"),
        ([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e1}], "InvalidPart"),
        ([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 4, "ETag": e1}], "InvalidPart"),
    ]:
        with pytest.raises(ClientError) as info:
            s3.complete_multipart_upload(Bucket="rules", Key="obj", UploadId=up, MultipartUpload={"Parts": parts})
        assert code(info) == expected
    before = set(chunk_files(node))
    done = s3.complete_multipart_upload(Bucket="rules", Key="obj", UploadId=up, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}, {"PartNumber": 3, "ETag": e3}]})
    assert done["ETag"].endswith('-3"')
    assert set(chunk_files(node)) <= before  # completing wrote no chunk: the manifest is the parts' chunks
    got = s3.get_object(Bucket="rules", Key="obj")
    assert got["Body"].read() == p1 + p2 + p3
    assert got["ContentType"] == "text/x-parts" and got["Metadata"] == {"m": "v"}
    wait_for(lambda: len(chunk_files(node)) == 3, what="the replaced small part's chunk to be collected")
    with pytest.raises(ClientError) as info:
        s3.list_parts(Bucket="rules", Key="obj", UploadId=up)
    assert code(info) == "NoSuchUpload"
    with pytest.raises(ClientError) as info:
        s3.upload_part(Bucket="rules", Key="obj", UploadId="nope", PartNumber=1, Body=b"x")
    assert code(info) == "NoSuchUpload"
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="rules", Key="obj", PartNumber=4)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416


def test_abort_reclaims_chunks_and_other_bucket_ids_are_refused(s3, node) -> None:
    s3.create_bucket(Bucket="abort")
    s3.create_bucket(Bucket="other")
    up = s3.create_multipart_upload(Bucket="abort", Key="k")["UploadId"]
    s3.upload_part(Bucket="abort", Key="k", UploadId=up, PartNumber=1, Body=os.urandom(MiB))
    assert len(chunk_files(node)) == 1
    with pytest.raises(ClientError) as info:  # an upload id of another bucket
        s3.upload_part(Bucket="other", Key="k", UploadId=up, PartNumber=1, Body=b"x")
    assert code(info) == "NoSuchUpload"
    with pytest.raises(ClientError) as info:
        s3.upload_part(Bucket="abort", Key="k", UploadId=up, PartNumber=10001, Body=b"x")
    assert code(info) == "InvalidArgument"
    s3.abort_multipart_upload(Bucket="abort", Key="k", UploadId=up)
    wait_for(lambda: chunk_files(node) == [], what="the aborted upload's chunks to be collected")
    assert s3.list_multipart_uploads(Bucket="abort").get("Uploads", []) == []


def test_zero_byte_single_part_and_upload_part_copy(s3) -> None:
    s3.create_bucket(Bucket="mpc")
    up = s3.create_multipart_upload(Bucket="mpc", Key="empty")["UploadId"]
    e = s3.upload_part(Bucket="mpc", Key="empty", UploadId=up, PartNumber=1, Body=b"")["ETag"]
    s3.complete_multipart_upload(Bucket="mpc", Key="empty", UploadId=up,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]})
    assert s3.get_object(Bucket="mpc", Key="empty")["Body"].read() == b""
    source = os.urandom(7 * MiB)
    s3.put_object(Bucket="mpc", Key="src", Body=source)
    up = s3.create_multipart_upload(Bucket="mpc", Key="assembled")["UploadId"]
    c1 = s3.upload_part_copy(Bucket="mpc", Key="assembled", UploadId=up, PartNumber=1,
                             CopySource={"Bucket": "mpc", "Key": "src"},
                             CopySourceRange=f"bytes=0-{6 * MiB - 1}")["CopyPartResult"]["ETag"]
    c2 = s3.upload_part_copy(Bucket="mpc", Key="assembled", UploadId=up, PartNumber=2,
                             CopySource={"Bucket": "mpc", "Key": "src"},
                             CopySourceRange=f"bytes={6 * MiB}-{7 * MiB - 1}")["CopyPartResult"]["ETag"]
    s3.complete_multipart_upload(Bucket="mpc", Key="assembled", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": c1}, {"PartNumber": 2, "ETag": c2}]})
    assert s3.get_object(Bucket="mpc", Key="assembled")["Body"].read() == source
    up = s3.create_multipart_upload(Bucket="mpc", Key="x")["UploadId"]
    for bad in [f"bytes={7 * MiB}-{7 * MiB + 5}"]:
        with pytest.raises(ClientError) as info:
            s3.upload_part_copy(Bucket="mpc", Key="x", UploadId=up, PartNumber=1,
                                CopySource={"Bucket": "mpc", "Key": "src"}, CopySourceRange=bad)
        assert code(info) == "InvalidRange"
    with pytest.raises(ClientError) as info:
        s3.upload_part_copy(Bucket="mpc", Key="x", UploadId=up, PartNumber=1,
                            CopySource={"Bucket": "mpc", "Key": "src"}, CopySourceIfMatch='"nope"')
    assert code(info) == "PreconditionFailed"


def test_copy_object(s3, node) -> None:
    s3.create_bucket(Bucket="copy-a")
    s3.create_bucket(Bucket="copy-b")
    body = os.urandom(3 * MiB)
    key = "dir/ünï cödé+%.bin"
    etag = s3.put_object(Bucket="copy-a", Key=key, Body=body, ContentType="x/y", Metadata={"k": "v"})["ETag"]
    res = s3.copy_object(Bucket="copy-b", Key="copied", CopySource={"Bucket": "copy-a", "Key": key})
    assert res["CopyObjectResult"]["ETag"] == etag
    got = s3.get_object(Bucket="copy-b", Key="copied")
    assert got["Body"].read() == body and got["ContentType"] == "x/y" and got["Metadata"] == {"k": "v"}
    s3.copy_object(Bucket="copy-a", Key="replaced", CopySource={"Bucket": "copy-a", "Key": key},
                   MetadataDirective="REPLACE", ContentType="a/b", Metadata={"new": "1"})
    got = s3.head_object(Bucket="copy-a", Key="replaced")
    assert got["ContentType"] == "a/b" and got["Metadata"] == {"new": "1"}
    with pytest.raises(ClientError) as info:
        s3.copy_object(Bucket="copy-a", Key=key, CopySource={"Bucket": "copy-a", "Key": key})
    assert code(info) == "InvalidRequest"
    s3.copy_object(Bucket="copy-a", Key=key, CopySource={"Bucket": "copy-a", "Key": key},
                   MetadataDirective="REPLACE", Metadata={"changed": "yes"})
    assert s3.head_object(Bucket="copy-a", Key=key)["Metadata"] == {"changed": "yes"}
    assert s3.get_object(Bucket="copy-a", Key=key)["Body"].read() == body
    modified = s3.head_object(Bucket="copy-a", Key=key)["LastModified"]
    src = {"Bucket": "copy-a", "Key": key}
    for kw in [dict(CopySourceIfMatch='"x"'), dict(CopySourceIfNoneMatch=etag),
               dict(CopySourceIfModifiedSince=modified + timedelta(hours=1)),
               dict(CopySourceIfUnmodifiedSince=modified - timedelta(hours=1))]:
        with pytest.raises(ClientError) as info:
            s3.copy_object(Bucket="copy-b", Key="cond", CopySource=src, **kw)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412, kw
    s3.copy_object(Bucket="copy-b", Key="cond", CopySource=src, CopySourceIfMatch=etag,
                   CopySourceIfUnmodifiedSince=modified - timedelta(hours=1))
    with pytest.raises(ClientError) as info:
        s3.copy_object(Bucket="copy-b", Key="x", CopySource={"Bucket": "copy-a", "Key": "missing"})
    assert code(info) == "NoSuchKey"
    bob = node.client(1)
    bob.create_bucket(Bucket="bobs")
    with pytest.raises(ClientError) as info:
        bob.copy_object(Bucket="bobs", Key="stolen", CopySource=src)
    assert code(info) == "AccessDenied"


def test_delete_objects(s3) -> None:
    s3.create_bucket(Bucket="multi")
    keys = [f"k{i}" for i in range(30)]
    for k in keys:
        s3.put_object(Bucket="multi", Key=k, Body=b"x")
    res = s3.delete_objects(Bucket="multi", Delete={"Objects": [{"Key": k} for k in keys[:10]] + [{"Key": "nope"}]})
    assert sorted(d["Key"] for d in res["Deleted"]) == sorted(keys[:10] + ["nope"])
    res = s3.delete_objects(Bucket="multi", Delete={"Objects": [{"Key": k} for k in keys[10:]], "Quiet": True})
    assert "Deleted" not in res and "Errors" not in res
    assert "Contents" not in s3.list_objects_v2(Bucket="multi")
    with pytest.raises(ClientError) as info:
        s3.delete_objects(Bucket="multi", Delete={"Objects": [{"Key": f"k{i}"} for i in range(1001)]})
    assert code(info) == "MalformedXML"


def test_conditional_put(s3) -> None:
    s3.create_bucket(Bucket="condput")
    first = s3.put_object(Bucket="condput", Key="k", Body=b"one", IfNoneMatch="*")["ETag"]
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="condput", Key="k", Body=b"two", IfNoneMatch="*")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="condput", Key="k", Body=b"two", IfMatch='"0000"')
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    s3.put_object(Bucket="condput", Key="k", Body=b"three", IfMatch=first)
    assert s3.get_object(Bucket="condput", Key="k")["Body"].read() == b"three"


def test_tagging_versioning_and_overrides(s3) -> None:
    s3.create_bucket(Bucket="tags")
    s3.put_object(Bucket="tags", Key="k", Body=b"x", Tagging="a=1&b=two%20words")
    assert s3.get_object_tagging(Bucket="tags", Key="k")["TagSet"] == [{"Key": "a", "Value": "1"},
                                                                       {"Key": "b", "Value": "two words"}]
    assert s3.head_object(Bucket="tags", Key="k")["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"] == "2"
    s3.put_object_tagging(Bucket="tags", Key="k", Tagging={"TagSet": [{"Key": "c", "Value": "3"}]})
    assert s3.get_object_tagging(Bucket="tags", Key="k")["TagSet"] == [{"Key": "c", "Value": "3"}]
    with pytest.raises(ClientError) as info:
        s3.put_object_tagging(Bucket="tags", Key="k", Tagging={"TagSet": [{"Key": f"k{i}", "Value": "v"}
                                                                          for i in range(11)]})
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    s3.copy_object(Bucket="tags", Key="copy", CopySource={"Bucket": "tags", "Key": "k"})
    assert s3.get_object_tagging(Bucket="tags", Key="copy")["TagSet"] == [{"Key": "c", "Value": "3"}]
    s3.delete_object_tagging(Bucket="tags", Key="k")
    assert s3.get_object_tagging(Bucket="tags", Key="k")["TagSet"] == []
    assert "Status" not in s3.get_bucket_versioning(Bucket="tags")
    versions = s3.list_object_versions(Bucket="tags")["Versions"]
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in versions] == [("copy", "null", True),
                                                                              ("k", "null", True)]
    got = s3.get_object(Bucket="tags", Key="k", ResponseContentType="text/odd",
                        ResponseContentDisposition="attachment; filename=x.txt", ResponseCacheControl="no-cache")
    assert got["ContentType"] == "text/odd" and got["ContentDisposition"] == "attachment; filename=x.txt"
    assert got["CacheControl"] == "no-cache"


def test_cors_configuration_and_preflight(s3, node) -> None:
    import urllib.request

    s3.create_bucket(Bucket="web")
    with pytest.raises(ClientError) as info:
        s3.get_bucket_cors(Bucket="web")
    assert code(info) == "NoSuchCORSConfiguration"
    rules = [{"AllowedOrigins": ["https://*.example.com"], "AllowedMethods": ["GET", "PUT"],
              "AllowedHeaders": ["x-amz-*", "content-type"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 600}]
    s3.put_bucket_cors(Bucket="web", CORSConfiguration={"CORSRules": rules})
    got = s3.get_bucket_cors(Bucket="web")["CORSRules"]
    assert got[0]["AllowedOrigins"] == ["https://*.example.com"] and got[0]["MaxAgeSeconds"] == 600

    def preflight(origin, method, headers=""):
        req = urllib.request.Request(f"{node.endpoint}/web/file.txt", method="OPTIONS", headers={
            "Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers)

    status, headers = preflight("https://app.example.com", "PUT", "Content-Type, x-amz-meta-a")
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "PUT" in headers["Access-Control-Allow-Methods"] and headers["Access-Control-Max-Age"] == "600"
    assert preflight("https://evil.test", "GET")[0] == 403
    assert preflight("https://app.example.com", "DELETE")[0] == 403
    assert preflight("https://app.example.com", "GET", "authorization-x")[0] == 403
    s3.put_object(Bucket="web", Key="file.txt", Body=b"hi")
    s3.meta.events.register("before-sign.s3.GetObject",
                            lambda request, **kw: request.headers.__setitem__("Origin", "https://a.example.com"))
    got = s3.get_object(Bucket="web", Key="file.txt")
    assert got["ResponseMetadata"]["HTTPHeaders"]["access-control-allow-origin"] == "https://a.example.com"
    assert got["ResponseMetadata"]["HTTPHeaders"]["access-control-expose-headers"] == "ETag"
    s3.delete_bucket_cors(Bucket="web")
    assert preflight("https://app.example.com", "GET")[0] == 403


def test_browser_form_post_with_signed_policy(s3, node) -> None:
    requests = pytest.importorskip("requests", reason="requests is not installed (the project's test extras have it)")

    s3.create_bucket(Bucket="forms")
    s3 = node.client(signature_version="s3v4")  # botocore presigns POSTs with SigV2 unless told otherwise
    post = s3.generate_presigned_post(
        Bucket="forms", Key="uploads/${filename}",
        Fields={"Content-Type": "text/plain", "x-amz-meta-origin": "form"},
        Conditions=[["starts-with", "$key", "uploads/"], {"Content-Type": "text/plain"},
                    {"x-amz-meta-origin": "form"}, ["content-length-range", 1, 1000]],
        ExpiresIn=300)
    files = {"file": ("hello.txt", b"hello from a form")}
    resp = requests.post(post["url"], data=post["fields"], files=files, timeout=30)
    assert resp.status_code == 204, resp.text
    got = s3.get_object(Bucket="forms", Key="uploads/hello.txt")
    assert got["Body"].read() == b"hello from a form" and got["Metadata"] == {"origin": "form"}
    assert got["ContentType"] == "text/plain"
    too_big = requests.post(post["url"], data=post["fields"], files={"file": ("big.txt", b"x" * 2000)}, timeout=30)
    assert too_big.status_code == 400 and b"EntityTooLarge" in too_big.content
    tampered = dict(post["fields"], key="elsewhere/x.txt")
    denied = requests.post(post["url"], data=tampered, files=files, timeout=30)
    assert denied.status_code == 403
    extra = dict(post["fields"], **{"x-amz-meta-sneaky": "1"})
    denied = requests.post(post["url"], data=extra, files=files, timeout=30)
    assert denied.status_code == 403 and b"Extra input fields" in denied.content
    bad_sig = dict(post["fields"], **{"x-amz-signature": "0" * 64})
    assert requests.post(post["url"], data=bad_sig, files=files, timeout=30).status_code == 403
    assert requests.post(post["url"], data=dict(post["fields"], success_action_status="201"), files=files,
                         timeout=30).status_code == 403  # a field the policy does not cover
    post201 = s3.generate_presigned_post(Bucket="forms", Key="uploads/${filename}",
                                         Fields={"success_action_status": "201"},
                                         Conditions=[{"success_action_status": "201"}], ExpiresIn=300)
    created = requests.post(post201["url"], data=post201["fields"], files=files, timeout=30)
    assert created.status_code == 201 and b"<PostResponse" in created.content
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="forms")["Contents"]] == ["uploads/hello.txt"]


def test_multipart_checksums_composite_and_full_object(s3) -> None:
    import base64
    import zlib

    from awscrt import checksums as crt

    s3.create_bucket(Bucket="sums-mp")
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(1234)]

    def upload(key: str, algorithm: str, kind: str | None) -> dict:
        extra = {"ChecksumType": kind} if kind else {}
        up = s3.create_multipart_upload(Bucket="sums-mp", Key=key, ChecksumAlgorithm=algorithm, **extra)["UploadId"]
        done = []
        for n, body in enumerate(parts, 1):
            res = s3.upload_part(Bucket="sums-mp", Key=key, UploadId=up, PartNumber=n, Body=body,
                                 ChecksumAlgorithm=algorithm)
            done.append({"PartNumber": n, "ETag": res["ETag"], f"Checksum{algorithm}": res[f"Checksum{algorithm}"]})
        return s3.complete_multipart_upload(Bucket="sums-mp", Key=key, UploadId=up, MultipartUpload={"Parts": done},
                                            **extra)

    upload("composite", "CRC32", None)
    digests = b"".join(zlib.crc32(p).to_bytes(4, "big") for p in parts)
    expected = base64.b64encode(zlib.crc32(digests).to_bytes(4, "big")).decode() + "-3"
    head = s3.head_object(Bucket="sums-mp", Key="composite", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == expected and head["ChecksumType"] == "COMPOSITE"

    upload("full", "CRC64NVME", "FULL_OBJECT")
    whole = base64.b64encode(crt.crc64nvme(b"".join(parts)).to_bytes(8, "big")).decode()
    got = s3.get_object(Bucket="sums-mp", Key="full", ChecksumMode="ENABLED")  # boto3 validates it while reading
    assert got["ChecksumCRC64NVME"] == whole and got["Body"].read() == b"".join(parts)

    up = s3.create_multipart_upload(Bucket="sums-mp", Key="bad", ChecksumAlgorithm="CRC32")["UploadId"]
    res = s3.upload_part(Bucket="sums-mp", Key="bad", UploadId=up, PartNumber=1, Body=b"x", ChecksumAlgorithm="CRC32")
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(Bucket="sums-mp", Key="bad", UploadId=up, MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": res["ETag"], "ChecksumCRC32": "AAAAAA=="}]})
    assert code(info) == "InvalidPart"


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Delete><Object><Key>&lol3;</Key></Object></Delete>"""
EXTERNAL = b"""<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>
<Delete><Object><Key>&e;</Key></Object></Delete>"""


@pytest.mark.parametrize("document", [BOMB, EXTERNAL, b"<Delete><Object><Key>unclosed", b"\x00\xff garbage",
                                      b'<?xml version="1.0" encoding="x-bogus"?><Delete/>'])
def test_hostile_xml_is_malformed_and_changes_nothing(s3, node, document) -> None:
    import base64

    from tests.s3.rawhttp import connect, head_bytes, read_response, sign

    s3.create_bucket(Bucket="xml")
    s3.put_object(Bucket="xml", Key="keep", Body=b"still here")
    md5 = base64.b64encode(hashlib.md5(document).digest()).decode()
    for target in ["/xml?delete", "/xml?cors", "/xml/keep?tagging", "/xml?acl"]:
        method = "POST" if target.endswith("delete") else "PUT"
        headers = sign(node, method, target, {"Content-Length": str(len(document)), "Content-MD5": md5},
                       body=document)
        sock = connect(node)
        sock.sendall(head_bytes(method, target, headers) + document)
        status, _, answer = read_response(sock)
        sock.close()
        assert status == 400 and (b"MalformedXML" in answer or b"MalformedACLError" in answer), (target, answer)
    assert s3.get_object(Bucket="xml", Key="keep")["Body"].read() == b"still here"


def test_list_multipart_uploads_encoding_and_delimiter(node) -> None:
    """encoding-type=url encodes keys, prefixes and markers (a key with a control character made the XML
    unparseable); common prefixes are rolled up and paged."""
    import xml.etree.ElementTree as ET
    from urllib.parse import unquote

    from .rawhttp import connect, head_bytes, read_response, sign

    s3 = node.client()
    s3.create_bucket(Bucket="uploads")
    keys = ["a/1", "a/2", "b\x01c", "c d", "é/x"]
    ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
    from urllib.parse import quote

    for k in keys:  # raw: boto3 cannot read &#x1; (XML 1.0 has no such character), which S3 answers for b\x01c
        path = f"/uploads/{quote(k)}?uploads"
        sock = connect(node)
        sock.sendall(head_bytes("POST", path, sign(node, "POST", path)))
        status, _, body = read_response(sock)
        assert status == 200, body
        if k == "b\x01c":
            assert b"<Key>b&#x1;c</Key>" in body

    def ls(query: str):
        headers = sign(node, "GET", f"/uploads?uploads&{query}")
        sock = connect(node)
        sock.sendall(head_bytes("GET", f"/uploads?uploads&{query}", headers))
        status, _, body = read_response(sock)
        assert status == 200, body
        return ET.fromstring(body)  # parses: no raw control character in the document

    root = ls("encoding-type=url&delimiter=%2F")
    assert root.find(f"{ns}EncodingType").text == "url"
    assert [unquote(u.find(f"{ns}Key").text) for u in root.iter(f"{ns}Upload")] == ["b\x01c", "c d"]
    assert [unquote(p.find(f"{ns}Prefix").text) for p in root.iter(f"{ns}CommonPrefixes")] == ["a/", "é/"]
    assert unquote(root.find(f"{ns}Delimiter").text) == "/"
    # paged two at a time, following NextKeyMarker / NextUploadIdMarker
    seen, query = [], "encoding-type=url&delimiter=%2F&max-uploads=2"
    for _ in range(5):
        root = ls(query)
        seen += [unquote(u.find(f"{ns}Key").text) for u in root.iter(f"{ns}Upload")]
        seen += [unquote(p.find(f"{ns}Prefix").text) for p in root.iter(f"{ns}CommonPrefixes")]
        if root.find(f"{ns}IsTruncated").text != "true":
            break
        marker = unquote(root.find(f"{ns}NextKeyMarker").text)
        id_marker = root.find(f"{ns}NextUploadIdMarker").text or ""
        query = f"encoding-type=url&delimiter=%2F&max-uploads=2&key-marker={quote(marker, safe='')}" + (
            f"&upload-id-marker={id_marker}" if id_marker else "")
    assert sorted(seen) == sorted(["a/", "b\x01c", "c d", "é/"])
