"""Bucket lifecycle through boto3 against a real node: the configuration as S3 validates it, ``x-amz-expiration``,
and every kind of rule seen firing end to end, with the node's lifecycle "day" shortened to a second
(``lifecycle_day_seconds``) and a pass every half second."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError


def code(info) -> str:
    return info.value.response["Error"]["Code"]


def wait_for(condition, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def rule(rule_id: str, **kw) -> dict:
    return {"ID": rule_id, "Status": "Enabled", "Filter": kw.pop("Filter", {"Prefix": ""}), **kw}


def test_configuration_round_trip_and_validation(s3) -> None:
    s3.create_bucket(Bucket="lcconf")
    with pytest.raises(ClientError) as info:
        s3.get_bucket_lifecycle_configuration(Bucket="lcconf")
    assert code(info) == "NoSuchLifecycleConfiguration"
    rules = [
        rule("logs", Filter={"Prefix": "logs/"}, Expiration={"Days": 30}),
        rule("big-old", Filter={"And": {"Prefix": "data/", "Tags": [{"Key": "tier", "Value": "cold"}],
                                        "ObjectSizeGreaterThan": 1000}},
             NoncurrentVersionExpiration={"NoncurrentDays": 7, "NewerNoncurrentVersions": 2}),
        rule("markers", Expiration={"ExpiredObjectDeleteMarker": True},
             AbortIncompleteMultipartUpload={"DaysAfterInitiation": 3}),
        {"ID": "dated", "Status": "Disabled", "Filter": {"Prefix": "x"},
         "Expiration": {"Date": datetime(2030, 1, 1, tzinfo=UTC)}},
    ]
    s3.put_bucket_lifecycle_configuration(Bucket="lcconf", LifecycleConfiguration={"Rules": rules})
    got = s3.get_bucket_lifecycle_configuration(Bucket="lcconf")["Rules"]
    assert [r["ID"] for r in got] == ["logs", "big-old", "markers", "dated"]
    assert got[0]["Filter"] == {"Prefix": "logs/"} and got[0]["Expiration"] == {"Days": 30}
    assert got[1]["Filter"]["And"]["Tags"] == [{"Key": "tier", "Value": "cold"}]
    assert got[1]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 7, "NewerNoncurrentVersions": 2}
    assert got[2]["Expiration"] == {"ExpiredObjectDeleteMarker": True}
    assert got[2]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 3}
    assert got[3]["Status"] == "Disabled" and got[3]["Expiration"]["Date"] == datetime(2030, 1, 1, tzinfo=UTC)
    bad_rules = [
        ([rule("a" * 256, Expiration={"Days": 1})], "InvalidArgument"),
        ([rule("same", Expiration={"Days": 1}), rule("same", Expiration={"Days": 2})], "InvalidArgument"),
        ([rule("none")], "InvalidRequest"),
        ([rule("zero", Expiration={"Days": 0})], "InvalidArgument"),
        ([rule("noon", Expiration={"Date": datetime(2030, 1, 1, 12, tzinfo=UTC)})], "InvalidArgument"),
        ([rule("t", Filter={"Tag": {"Key": "a", "Value": "b"}}, Expiration={"ExpiredObjectDeleteMarker": True})],
         "InvalidRequest"),
        ([rule("t", Filter={"Tag": {"Key": "a", "Value": "b"}}, AbortIncompleteMultipartUpload={
            "DaysAfterInitiation": 1})], "InvalidRequest"),
        ([rule("n", NoncurrentVersionExpiration={"NoncurrentDays": 1, "NewerNoncurrentVersions": 101})],
         "InvalidArgument"),
        ([rule("glacier", Transitions=[{"Days": 30, "StorageClass": "GLACIER"}])], "InvalidStorageClass"),
    ]
    for bad, expected in bad_rules:
        with pytest.raises(ClientError) as info:
            s3.put_bucket_lifecycle_configuration(Bucket="lcconf", LifecycleConfiguration={"Rules": bad})
        assert code(info) == expected, bad
    assert len(s3.get_bucket_lifecycle_configuration(Bucket="lcconf")["Rules"]) == 4  # unchanged
    s3.delete_bucket_lifecycle(Bucket="lcconf")
    with pytest.raises(ClientError) as info:
        s3.get_bucket_lifecycle_configuration(Bucket="lcconf")
    assert code(info) == "NoSuchLifecycleConfiguration"


def test_expiration_header_names_the_rule_and_the_day(s3) -> None:
    s3.create_bucket(Bucket="lchdr")
    s3.put_bucket_lifecycle_configuration(Bucket="lchdr", LifecycleConfiguration={"Rules": [
        rule("week", Filter={"Prefix": "tmp/"}, Expiration={"Days": 7}),
        rule("day", Filter={"Prefix": "tmp/fast/"}, Expiration={"Days": 1})]})
    put = s3.put_object(Bucket="lchdr", Key="tmp/fast/x", Body=b"x")
    header = put["Expiration"]
    assert 'rule-id="day"' in header
    expected = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    if expected < datetime.now(UTC) + timedelta(days=1):
        expected += timedelta(days=1)  # the first midnight UTC at least a day away
    assert expected.strftime("%d %b %Y 00:00:00 GMT") in header
    assert s3.head_object(Bucket="lchdr", Key="tmp/fast/x")["Expiration"] == header
    assert 'rule-id="week"' in s3.put_object(Bucket="lchdr", Key="tmp/slow", Body=b"x")["Expiration"]
    assert "Expiration" not in s3.put_object(Bucket="lchdr", Key="kept", Body=b"x")


@pytest.fixture
def fast(node_factory):
    """A node whose lifecycle day lasts one second, with a pass every half second."""
    node = node_factory(lifecycle_day_seconds=1.0, lifecycle_interval=0.5)
    return node, node.client()


def keys_of(s3, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def versions_of(s3, bucket: str) -> list[tuple[str, str, bool]]:
    got = s3.list_object_versions(Bucket=bucket)
    out = [(v["Key"], v["VersionId"], False) for v in got.get("Versions", [])]
    return out + [(d["Key"], d["VersionId"], True) for d in got.get("DeleteMarkers", [])]


def test_expiration_fires_in_an_unversioned_bucket(fast) -> None:
    _, s3 = fast
    s3.create_bucket(Bucket="lcplain")
    s3.put_object(Bucket="lcplain", Key="tmp/a", Body=b"a")
    s3.put_object(Bucket="lcplain", Key="tmp/small", Body=b"s")
    s3.put_object(Bucket="lcplain", Key="keep/b", Body=b"b")
    s3.put_bucket_lifecycle_configuration(Bucket="lcplain", LifecycleConfiguration={"Rules": [
        rule("tmp", Filter={"And": {"Prefix": "tmp/", "ObjectSizeLessThan": 1000}}, Expiration={"Days": 2})]})
    wait_for(lambda: keys_of(s3, "lcplain") == ["keep/b"], what="tmp/ expired")
    assert versions_of(s3, "lcplain") == [("keep/b", "null", False)]  # removed, no marker


def test_every_rule_kind_fires_in_a_versioned_bucket(fast) -> None:
    _, s3 = fast
    s3.create_bucket(Bucket="lcver")
    s3.put_bucket_versioning(Bucket="lcver", VersioningConfiguration={"Status": "Enabled"})
    ids = [s3.put_object(Bucket="lcver", Key="doc", Body=f"v{i}".encode())["VersionId"] for i in range(4)]
    gone = s3.put_object(Bucket="lcver", Key="gone", Body=b"g")["VersionId"]
    s3.delete_object(Bucket="lcver", Key="gone", VersionId=gone)
    lone_marker = s3.delete_object(Bucket="lcver", Key="gone")["VersionId"]  # a marker over nothing
    s3.put_object(Bucket="lcver", Key="cur/x", Body=b"x")
    upload = s3.create_multipart_upload(Bucket="lcver", Key="stale")["UploadId"]
    s3.put_bucket_lifecycle_configuration(Bucket="lcver", LifecycleConfiguration={"Rules": [
        rule("old", Filter={"Prefix": "doc"}, NoncurrentVersionExpiration={"NoncurrentDays": 1,
                                                                           "NewerNoncurrentVersions": 1}),
        rule("markers", Filter={"Prefix": "gone"}, Expiration={"ExpiredObjectDeleteMarker": True}),
        rule("current", Filter={"Prefix": "cur/"}, Expiration={"Days": 2}),
        rule("uploads", AbortIncompleteMultipartUpload={"DaysAfterInitiation": 1})]})
    # noncurrent versions beyond the newest noncurrent one go; the latest and one noncurrent stay
    wait_for(lambda: sorted(v[1] for v in versions_of(s3, "lcver") if v[0] == "doc") == sorted(ids[2:]),
             what="noncurrent versions expired")
    assert s3.get_object(Bucket="lcver", Key="doc")["Body"].read() == b"v3"
    # the delete marker with nothing under it goes
    wait_for(lambda: not [v for v in versions_of(s3, "lcver") if v[0] == "gone"], what="expired marker removed")
    # the current version expires into a delete marker (the version is kept, noncurrent)
    wait_for(lambda: [v[2] for v in versions_of(s3, "lcver") if v[0] == "cur/x"] == [False, True],
             what="current version expired")
    assert "cur/x" not in keys_of(s3, "lcver")
    # the stale upload is aborted
    wait_for(lambda: not s3.list_multipart_uploads(Bucket="lcver").get("Uploads"), what="upload aborted")
    with pytest.raises(ClientError) as info:
        s3.list_parts(Bucket="lcver", Key="stale", UploadId=upload)
    assert code(info) == "NoSuchUpload"
    assert lone_marker not in [v[1] for v in versions_of(s3, "lcver")]


def test_lifecycle_never_removes_a_locked_version(fast) -> None:
    _, s3 = fast
    s3.create_bucket(Bucket="lclock", ObjectLockEnabledForBucket=True)
    until = datetime.now(UTC) + timedelta(hours=1)
    locked = s3.put_object(Bucket="lclock", Key="k", Body=b"locked", ObjectLockMode="COMPLIANCE",
                           ObjectLockRetainUntilDate=until)["VersionId"]
    free = s3.put_object(Bucket="lclock", Key="k", Body=b"free")["VersionId"]
    s3.put_object(Bucket="lclock", Key="k", Body=b"latest")
    later = s3.put_object(Bucket="lclock", Key="z", Body=b"old")["VersionId"]  # walked after every version of k
    s3.put_object(Bucket="lclock", Key="z", Body=b"new")
    s3.put_bucket_lifecycle_configuration(Bucket="lclock", LifecycleConfiguration={"Rules": [
        rule("all-old", NoncurrentVersionExpiration={"NoncurrentDays": 1})]})
    # once z's old version is gone, a pass has walked past every version of k, the locked one too
    wait_for(lambda: later not in [v[1] for v in versions_of(s3, "lclock")], what="z's old version expired")
    remaining = [v[1] for v in versions_of(s3, "lclock")]
    assert free not in remaining and locked in remaining
    assert s3.get_object(Bucket="lclock", Key="k", VersionId=locked)["Body"].read() == b"locked"
