"""Bucket versioning through boto3 against a real node: versions, delete markers, version ids on every operation
that takes one, ListObjectVersions paging, and a stateful test against a reference model."""

from __future__ import annotations

import hashlib
import os

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

MiB = 1 << 20


def code(info) -> str:
    return info.value.response["Error"]["Code"]


def status(info) -> int:
    return info.value.response["ResponseMetadata"]["HTTPStatusCode"]


def headers(info) -> dict[str, str]:
    return info.value.response["ResponseMetadata"]["HTTPHeaders"]


def every_version(s3, bucket: str, page: int = 1000, **kw) -> list[tuple[str, str, bool, bool]]:
    """(key, version id, is latest, is a marker) of every entry, in the answer's order, paging by ``page``."""
    out: list[tuple[str, str, bool, bool]] = []
    marker: dict[str, str] = {}
    while True:
        got = s3.list_object_versions(Bucket=bucket, MaxKeys=page, **marker, **kw)
        entries = [(v["Key"], v["VersionId"], v["IsLatest"], False) for v in got.get("Versions", [])]
        entries += [(d["Key"], d["VersionId"], d["IsLatest"], True) for d in got.get("DeleteMarkers", [])]
        # boto3 splits the two kinds apart: put them back in S3's order (by key, newest first)
        order = {(e[0], e[1]): i for i, e in enumerate(_raw_order(got))}
        out += sorted(entries, key=lambda e: order[(e[0], e[1])])
        if not got["IsTruncated"]:
            return out
        marker = {"KeyMarker": got["NextKeyMarker"]}
        if got.get("NextVersionIdMarker"):
            marker["VersionIdMarker"] = got["NextVersionIdMarker"]


def _raw_order(got) -> list[tuple[str, str]]:
    """The entries' order as the XML had them (boto3 keeps each list in document order; merge them by key and
    then by the position the LastModified/ids imply — a version and a marker of one key are never equal)."""
    items = [(v["Key"], v["VersionId"], v["LastModified"]) for v in got.get("Versions", [])]
    items += [(d["Key"], d["VersionId"], d["LastModified"]) for d in got.get("DeleteMarkers", [])]
    # newest first within a key; our non-null version ids sort newest first too, "null" by its time
    items.sort(key=lambda i: (i[0].encode(), -i[2].timestamp()))
    return [(k, v) for k, v, _ in items]


def test_versioning_state_machine_of_a_bucket(s3) -> None:
    s3.create_bucket(Bucket="vstate")
    assert "Status" not in s3.get_bucket_versioning(Bucket="vstate")
    s3.put_bucket_versioning(Bucket="vstate", VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket="vstate")["Status"] == "Enabled"
    s3.put_bucket_versioning(Bucket="vstate", VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket="vstate")["Status"] == "Suspended"
    with pytest.raises(ClientError) as info:
        s3.put_bucket_versioning(Bucket="vstate", VersioningConfiguration={"Status": "Enabled", "MFADelete": "Enabled"})
    assert status(info) in (400, 501)
    assert s3.get_bucket_versioning(Bucket="vstate")["Status"] == "Suspended"  # nothing changed


def test_bad_versioning_documents_are_refused(node) -> None:
    from tests.s3.rawhttp import connect, head_bytes, read_response, sign

    s3 = node.client()
    s3.create_bucket(Bucket="vbad")
    for bad in (b"<VersioningConfiguration><Status>Off</Status></VersioningConfiguration>",
                b"<VersioningConfiguration><Other/></VersioningConfiguration>", b"<Nope/>", b"not xml",
                b"<VersioningConfiguration><Status>Enabled</Status><Status>Enabled</Status>"
                b"</VersioningConfiguration>"):
        headers = sign(node, "PUT", "/vbad?versioning", {"Content-Length": str(len(bad))}, body=bad)
        with connect(node) as sock:
            sock.sendall(head_bytes("PUT", "/vbad?versioning", headers) + bad)
            status_code, _, body = read_response(sock)
        assert status_code == 400 and b"MalformedXML" in body, (bad, body)
    assert "Status" not in s3.get_bucket_versioning(Bucket="vbad")


def test_versions_markers_and_version_ids(s3) -> None:
    s3.create_bucket(Bucket="ver")
    s3.put_bucket_versioning(Bucket="ver", VersioningConfiguration={"Status": "Enabled"})
    ids = [s3.put_object(Bucket="ver", Key="k", Body=f"body {i}".encode())["VersionId"] for i in range(3)]
    assert len(set(ids)) == 3 and "null" not in ids
    for i, vid in enumerate(ids):
        got = s3.get_object(Bucket="ver", Key="k", VersionId=vid)
        assert got["Body"].read() == f"body {i}".encode() and got["VersionId"] == vid
        assert s3.head_object(Bucket="ver", Key="k", VersionId=vid)["VersionId"] == vid
    assert s3.get_object(Bucket="ver", Key="k")["VersionId"] == ids[2]
    assert every_version(s3, "ver") == [("k", ids[2], True, False), ("k", ids[1], False, False),
                                        ("k", ids[0], False, False)]

    # a delete without a version id puts a marker; the key is gone for GET, HEAD and listings
    deleted = s3.delete_object(Bucket="ver", Key="k")
    assert deleted["DeleteMarker"] is True and deleted["VersionId"] not in ids
    marker = deleted["VersionId"]
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="ver", Key="k")
    assert code(info) == "NoSuchKey" and headers(info)["x-amz-delete-marker"] == "true"
    assert headers(info)["x-amz-version-id"] == marker
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket="ver", Key="k")
    assert status(info) == 404 and headers(info)["x-amz-delete-marker"] == "true"
    for call in (s3.get_object, s3.head_object):  # the marker itself, by its id: 405
        with pytest.raises(ClientError) as info:
            call(Bucket="ver", Key="k", VersionId=marker)
        assert status(info) == 405 and headers(info)["x-amz-delete-marker"] == "true"
    assert s3.list_objects_v2(Bucket="ver")["KeyCount"] == 0
    assert every_version(s3, "ver")[0] == ("k", marker, True, True)

    # old versions stay readable by id; bad and unknown ids are told apart
    assert s3.get_object(Bucket="ver", Key="k", VersionId=ids[0])["Body"].read() == b"body 0"
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="ver", Key="k", VersionId="not-a-version")
    assert code(info) == "InvalidArgument" and status(info) == 400
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="ver", Key="k", VersionId="0" * 32)
    assert code(info) == "NoSuchVersion" and status(info) == 404
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="ver", Key="k", VersionId="null")
    assert code(info) == "NoSuchVersion"

    # deleting the marker by id brings the object back; deleting a version by id removes it for good
    gone = s3.delete_object(Bucket="ver", Key="k", VersionId=marker)
    assert gone["DeleteMarker"] is True and gone["VersionId"] == marker
    assert s3.get_object(Bucket="ver", Key="k")["Body"].read() == b"body 2"
    gone = s3.delete_object(Bucket="ver", Key="k", VersionId=ids[2])
    assert gone["VersionId"] == ids[2] and "DeleteMarker" not in gone
    assert s3.get_object(Bucket="ver", Key="k")["Body"].read() == b"body 1"
    with pytest.raises(ClientError) as info:
        s3.delete_bucket(Bucket="ver")
    assert code(info) == "BucketNotEmpty"
    for vid in ids[:2]:
        s3.delete_object(Bucket="ver", Key="k", VersionId=vid)
    assert every_version(s3, "ver") == []
    s3.delete_bucket(Bucket="ver")


def test_suspended_bucket_keeps_old_versions_and_one_null(s3) -> None:
    s3.create_bucket(Bucket="susp")
    s3.put_object(Bucket="susp", Key="k", Body=b"before versioning")  # the null version
    s3.put_bucket_versioning(Bucket="susp", VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket="susp", Key="k", Body=b"v1")["VersionId"]
    s3.put_bucket_versioning(Bucket="susp", VersioningConfiguration={"Status": "Suspended"})
    assert s3.put_object(Bucket="susp", Key="k", Body=b"null again")["VersionId"] == "null"
    assert every_version(s3, "susp") == [("k", "null", True, False), ("k", v1, False, False)]
    assert s3.get_object(Bucket="susp", Key="k", VersionId="null")["Body"].read() == b"null again"
    deleted = s3.delete_object(Bucket="susp", Key="k")
    assert deleted["DeleteMarker"] is True and deleted["VersionId"] == "null"
    assert every_version(s3, "susp") == [("k", "null", True, True), ("k", v1, False, False)]
    # restore the old version by copying it over the key (what backup tools do)
    copied = s3.copy_object(Bucket="susp", Key="k", CopySource={"Bucket": "susp", "Key": "k", "VersionId": v1})
    assert copied["CopySourceVersionId"] == v1 and copied["VersionId"] == "null"
    assert s3.get_object(Bucket="susp", Key="k")["Body"].read() == b"v1"


def test_version_ids_on_copy_multipart_tagging_acl_and_batch_delete(s3) -> None:
    s3.create_bucket(Bucket="vops")
    s3.put_bucket_versioning(Bucket="vops", VersioningConfiguration={"Status": "Enabled"})
    old_body = os.urandom(6 * MiB)
    old = s3.put_object(Bucket="vops", Key="src", Body=old_body, Tagging="gen=old")["VersionId"]
    new = s3.put_object(Bucket="vops", Key="src", Body=b"new")["VersionId"]
    # copy of an old version, whole and as an upload's part
    copied = s3.copy_object(Bucket="vops", Key="dst", CopySource={"Bucket": "vops", "Key": "src", "VersionId": old})
    assert copied["CopySourceVersionId"] == old and copied["VersionId"] not in (old, new)
    assert s3.get_object(Bucket="vops", Key="dst")["Body"].read() == old_body
    up = s3.create_multipart_upload(Bucket="vops", Key="mp")["UploadId"]
    part = s3.upload_part_copy(Bucket="vops", Key="mp", UploadId=up, PartNumber=1,
                               CopySource={"Bucket": "vops", "Key": "src", "VersionId": old},
                               CopySourceRange="bytes=0-5242879")
    assert part["CopySourceVersionId"] == old
    done = s3.complete_multipart_upload(Bucket="vops", Key="mp", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]})
    assert done["VersionId"] and s3.head_object(Bucket="vops", Key="mp")["VersionId"] == done["VersionId"]
    assert s3.get_object(Bucket="vops", Key="mp")["Body"].read() == old_body[:5 * MiB]
    # tagging and ACLs of one version
    assert s3.get_object_tagging(Bucket="vops", Key="src", VersionId=old)["TagSet"] == [{"Key": "gen", "Value": "old"}]
    assert s3.get_object_tagging(Bucket="vops", Key="src")["TagSet"] == []
    put = s3.put_object_tagging(Bucket="vops", Key="src", VersionId=old, Tagging={"TagSet": [{"Key": "x", "Value": "y"}]})
    assert put["VersionId"] == old
    assert s3.get_object_tagging(Bucket="vops", Key="src", VersionId=old)["TagSet"] == [{"Key": "x", "Value": "y"}]
    assert s3.get_object_tagging(Bucket="vops", Key="src", VersionId=new)["TagSet"] == []
    s3.put_object_acl(Bucket="vops", Key="src", VersionId=old, ACL="public-read")
    grants = s3.get_object_acl(Bucket="vops", Key="src", VersionId=old)["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("AllUsers") for g in grants)
    assert not any(g["Grantee"].get("URI", "").endswith("AllUsers")
                   for g in s3.get_object_acl(Bucket="vops", Key="src")["Grants"])
    # a copy source naming a delete marker, or a version that is not there
    marker = s3.delete_object(Bucket="vops", Key="gone")["VersionId"]
    with pytest.raises(ClientError) as info:
        s3.copy_object(Bucket="vops", Key="x", CopySource={"Bucket": "vops", "Key": "gone", "VersionId": marker})
    assert status(info) == 400
    with pytest.raises(ClientError) as info:
        s3.copy_object(Bucket="vops", Key="x", CopySource={"Bucket": "vops", "Key": "gone"})
    assert code(info) == "NoSuchKey"
    # DeleteObjects: versions by id, markers put and removed, in one request
    result = s3.delete_objects(Bucket="vops", Delete={"Objects": [
        {"Key": "src", "VersionId": old}, {"Key": "dst"}, {"Key": "gone", "VersionId": marker},
        {"Key": "src", "VersionId": "bogus"}]})
    deleted = {(d["Key"], d.get("VersionId")): d for d in result["Deleted"]}
    assert set(deleted) == {("src", old), ("dst", None), ("gone", marker)}
    assert deleted[("dst", None)]["DeleteMarker"] is True and deleted[("dst", None)]["DeleteMarkerVersionId"]
    assert deleted[("gone", marker)]["DeleteMarker"] is True
    assert "DeleteMarker" not in deleted[("src", old)]
    assert [(e["Key"], e["Code"]) for e in result["Errors"]] == [("src", "NoSuchVersion")]
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="vops", Key="src", VersionId=old)
    assert code(info) == "NoSuchVersion"
    assert [k for k, *_ in every_version(s3, "vops")].count("gone") == 0


def test_list_object_versions_parameters(s3) -> None:
    s3.create_bucket(Bucket="vlist")
    s3.put_bucket_versioning(Bucket="vlist", VersioningConfiguration={"Status": "Enabled"})
    for key in ["a/1", "a/2", "b", "c d/é"]:
        for _ in range(3):
            s3.put_object(Bucket="vlist", Key=key, Body=b"x")
    s3.delete_object(Bucket="vlist", Key="b")
    everything = every_version(s3, "vlist")
    assert len(everything) == 13
    assert [k for k, _, latest, _ in everything if latest] == ["a/1", "a/2", "b", "c d/é"]  # one latest per key
    for page in (1, 2, 5):
        assert every_version(s3, "vlist", page=page) == everything
    got = s3.list_object_versions(Bucket="vlist", Delimiter="/")
    assert [p["Prefix"] for p in got["CommonPrefixes"]] == ["a/", "c d/"]
    assert {v["Key"] for v in got["Versions"]} == {"b"} and len(got["DeleteMarkers"]) == 1
    got = s3.list_object_versions(Bucket="vlist", Prefix="a/", MaxKeys=4)
    assert got["IsTruncated"] and got["NextKeyMarker"] == "a/2" and len(got["Versions"]) == 4
    rest = s3.list_object_versions(Bucket="vlist", Prefix="a/", KeyMarker=got["NextKeyMarker"],
                                   VersionIdMarker=got["NextVersionIdMarker"])
    assert len(rest["Versions"]) == 2 and not rest["IsTruncated"]
    assert not any(v["IsLatest"] for v in rest["Versions"])
    encoded = s3.list_object_versions(Bucket="vlist", Prefix="c", EncodingType="url")
    assert {v["Key"] for v in encoded["Versions"]} == {"c%20d/%C3%A9"}  # as asked: URL-encoded
    for params, expected in [({"VersionIdMarker": "x" * 32}, "InvalidArgument"),
                             ({"KeyMarker": "a/1", "VersionIdMarker": "not-an-id"}, "InvalidArgument"),
                             ({"MaxKeys": -1}, "InvalidArgument")]:
        with pytest.raises(ClientError) as info:
            s3.list_object_versions(Bucket="vlist", **params)
        assert code(info) == expected, params


def test_an_unversioned_bucket_lists_null_versions_and_answers_without_version_ids(s3) -> None:
    s3.create_bucket(Bucket="plain")
    put = s3.put_object(Bucket="plain", Key="k", Body=b"x")
    assert "VersionId" not in put
    assert "VersionId" not in s3.get_object(Bucket="plain", Key="k")
    assert every_version(s3, "plain") == [("k", "null", True, False)]
    assert s3.get_object(Bucket="plain", Key="k", VersionId="null")["Body"].read() == b"x"
    deleted = s3.delete_object(Bucket="plain", Key="k")
    assert "DeleteMarker" not in deleted and every_version(s3, "plain") == []


# -- a stateful test against a reference model --


KEYS = ["k", "d/k", "d/e/f", "z"]


class VersionedBucket(RuleBasedStateMachine):
    """Puts, deletes with and without version ids, suspends and re-enables, copies of old versions and
    multipart uploads on a few keys of one bucket, checked after every step against a model of S3: per key, the
    list of (version id, body or None for a marker), newest first."""

    s3 = None  # set by the test

    @initialize()
    def start(self) -> None:
        self.bucket = "sm-" + os.urandom(6).hex()
        self.s3.create_bucket(Bucket=self.bucket)
        self.state = ""
        self.model: dict[str, list[tuple[str, bytes | None]]] = {}

    def _drop_null(self, key: str) -> None:
        self.model[key] = [v for v in self.model.get(key, []) if v[0] != "null"]

    def _add(self, key: str, vid: str, body: bytes | None) -> None:
        if self.state != "Enabled":
            assert vid == "null"
            self._drop_null(key)
        self.model.setdefault(key, []).insert(0, (vid, body))

    @rule(status=st.sampled_from(["Enabled", "Suspended"]))
    def set_versioning(self, status: str) -> None:
        self.s3.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": status})
        self.state = status

    @rule(key=st.sampled_from(KEYS), size=st.integers(0, 3000))
    def put(self, key: str, size: int) -> None:
        body = os.urandom(size)
        got = self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        self._add(key, got.get("VersionId", "null"), body)

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key: str) -> None:
        got = self.s3.delete_object(Bucket=self.bucket, Key=key)
        if not self.state:
            self.model.pop(key, None)
            assert "DeleteMarker" not in got
            return
        assert got["DeleteMarker"] is True
        self._add(key, got["VersionId"], None)

    @precondition(lambda self: any(self.model.values()))
    @rule(data=st.data())
    def delete_version(self, data) -> None:
        key = data.draw(st.sampled_from(sorted(k for k, v in self.model.items() if v)))
        vid, body = data.draw(st.sampled_from(self.model[key]))
        got = self.s3.delete_object(Bucket=self.bucket, Key=key, VersionId=vid)
        assert got["VersionId"] == vid and got.get("DeleteMarker", False) == (body is None)
        self.model[key] = [v for v in self.model[key] if v[0] != vid]

    @precondition(lambda self: any(b is not None for vs in self.model.values() for _, b in vs))
    @rule(data=st.data(), target_key=st.sampled_from(KEYS))
    def copy_old_version(self, data, target_key: str) -> None:
        source = data.draw(st.sampled_from(sorted((k, vid) for k, vs in self.model.items() for vid, b in vs
                                                  if b is not None)))
        body = dict(self.model[source[0]])[source[1]]
        got = self.s3.copy_object(Bucket=self.bucket, Key=target_key, MetadataDirective="REPLACE",
                                  CopySource={"Bucket": self.bucket, "Key": source[0], "VersionId": source[1]})
        assert got.get("CopySourceVersionId", "null") == source[1]
        self._add(target_key, got.get("VersionId", "null"), body)

    @rule(key=st.sampled_from(KEYS))
    def multipart(self, key: str) -> None:
        up = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        body = os.urandom(100)
        etag = self.s3.upload_part(Bucket=self.bucket, Key=key, UploadId=up, PartNumber=1, Body=body)["ETag"]
        got = self.s3.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=up,
                                                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
        self._add(key, got.get("VersionId", "null"), body)

    @rule(page=st.integers(1, 4), prefix=st.sampled_from(["", "d/"]), delimiter=st.sampled_from(["", "/"]))
    def list_versions(self, page: int, prefix: str, delimiter: str) -> None:
        seen: list = []
        kw: dict[str, str] = {}
        while True:
            got = self.s3.list_object_versions(Bucket=self.bucket, MaxKeys=page, Prefix=prefix, Delimiter=delimiter,
                                               **kw)
            seen += [("v", v["Key"], v["VersionId"], v["IsLatest"]) for v in got.get("Versions", [])]
            seen += [("m", d["Key"], d["VersionId"], d["IsLatest"]) for d in got.get("DeleteMarkers", [])]
            seen += [("p", p["Prefix"]) for p in got.get("CommonPrefixes", [])]
            if not got["IsTruncated"]:
                break
            kw = {"KeyMarker": got["NextKeyMarker"]}
            if got.get("NextVersionIdMarker"):
                kw["VersionIdMarker"] = got["NextVersionIdMarker"]
        expected: list = []
        for key in sorted(self.model, key=str.encode):
            if not key.startswith(prefix) or not self.model[key]:
                continue
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                if ("p", key[:cut + 1]) not in expected:
                    expected.append(("p", key[:cut + 1]))
                continue
            expected += [("m" if b is None else "v", key, vid, i == 0) for i, (vid, b) in enumerate(self.model[key])]
        assert sorted(seen, key=repr) == sorted(expected, key=repr)
        assert len(seen) == len(expected)  # nothing twice

    @invariant()
    def latest_is_what_get_answers(self) -> None:
        if not hasattr(self, "model"):
            return
        listed = self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        current = {k: vs[0] for k, vs in self.model.items() if vs and vs[0][1] is not None}
        assert [o["Key"] for o in listed] == sorted(current, key=str.encode)
        for o in listed:
            assert o["ETag"].strip('"') == hashlib.md5(current[o["Key"]][1]).hexdigest() or "-" in o["ETag"]
        for key, versions in self.model.items():
            if not versions:
                continue
            vid, body = versions[0]
            if body is None:
                with pytest.raises(ClientError) as info:
                    self.s3.head_object(Bucket=self.bucket, Key=key)
                assert headers(info).get("x-amz-delete-marker") == "true"
            else:
                assert self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read() == body


def test_versioned_bucket_matches_model(s3) -> None:
    VersionedBucket.s3 = s3
    run_state_machine_as_test(VersionedBucket, settings=settings(
        max_examples=12, stateful_step_count=25, deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]))
