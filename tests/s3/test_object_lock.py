"""Object lock (WORM) through boto3 against a real node: buckets created with it, default retention, GOVERNANCE
and COMPLIANCE retention, legal holds, and that no request removes a locked version."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

MiB = 1 << 20


def code(info) -> str:
    return info.value.response["Error"]["Code"]


def status(info) -> int:
    return info.value.response["ResponseMetadata"]["HTTPStatusCode"]


def soon(seconds: float = 3600) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_bucket_created_with_object_lock(s3) -> None:
    s3.create_bucket(Bucket="worm", ObjectLockEnabledForBucket=True)
    assert s3.get_bucket_versioning(Bucket="worm")["Status"] == "Enabled"
    with pytest.raises(ClientError) as info:
        s3.put_bucket_versioning(Bucket="worm", VersioningConfiguration={"Status": "Suspended"})
    assert code(info) == "InvalidBucketState" and status(info) == 409
    got = s3.get_object_lock_configuration(Bucket="worm")["ObjectLockConfiguration"]
    assert got == {"ObjectLockEnabled": "Enabled"}
    s3.put_object_lock_configuration(Bucket="worm", ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 2}}})
    got = s3.get_object_lock_configuration(Bucket="worm")["ObjectLockConfiguration"]
    assert got["Rule"]["DefaultRetention"] == {"Mode": "GOVERNANCE", "Days": 2}
    for bad, expected in [({"Mode": "GOVERNANCE", "Days": 1, "Years": 1}, "MalformedXML"),
                          ({"Mode": "GOVERNANCE", "Days": 0}, "InvalidArgument"),
                          ({"Mode": "SOMETIMES", "Days": 1}, "MalformedXML"),
                          ({"Mode": "COMPLIANCE"}, "MalformedXML")]:
        with pytest.raises(ClientError) as info:
            s3.put_object_lock_configuration(Bucket="worm", ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": bad}})
        assert code(info) == expected, bad
    # the default applies to every new version
    vid = s3.put_object(Bucket="worm", Key="k", Body=b"kept")["VersionId"]
    head = s3.head_object(Bucket="worm", Key="k")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    left = head["ObjectLockRetainUntilDate"] - datetime.now(UTC)
    assert timedelta(days=2) - timedelta(minutes=5) < left <= timedelta(days=2)
    # and a bucket without object lock refuses its headers and configuration
    s3.create_bucket(Bucket="plainlock")
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="plainlock", Key="k", Body=b"x", ObjectLockMode="GOVERNANCE",
                      ObjectLockRetainUntilDate=soon())
    assert code(info) == "InvalidRequest"
    with pytest.raises(ClientError) as info:
        s3.get_object_lock_configuration(Bucket="plainlock")
    assert code(info) == "ObjectLockConfigurationNotFoundError"
    with pytest.raises(ClientError) as info:
        s3.put_object_lock_configuration(Bucket="plainlock", ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})
    assert code(info) == "InvalidBucketState"
    assert s3.get_object(Bucket="worm", Key="k", VersionId=vid)["Body"].read() == b"kept"


def test_governance_yields_to_the_owners_bypass_only(node) -> None:
    alice, bob = node.client(0), node.client(1)
    alice.create_bucket(Bucket="gov", ObjectLockEnabledForBucket=True)
    vid = alice.put_object(Bucket="gov", Key="k", Body=b"x", ObjectLockMode="GOVERNANCE",
                           ObjectLockRetainUntilDate=soon())["VersionId"]
    assert alice.get_object_retention(Bucket="gov", Key="k", VersionId=vid)["Retention"]["Mode"] == "GOVERNANCE"
    with pytest.raises(ClientError) as info:
        alice.delete_object(Bucket="gov", Key="k", VersionId=vid)
    assert code(info) == "AccessDenied" and status(info) == 403
    marker = alice.delete_object(Bucket="gov", Key="k")  # a delete marker is always allowed
    assert marker["DeleteMarker"] is True
    with pytest.raises(ClientError) as info:  # shortening GOVERNANCE retention needs the bypass
        alice.put_object_retention(Bucket="gov", Key="k", VersionId=vid,
                                   Retention={"Mode": "GOVERNANCE", "RetainUntilDate": soon(60)})
    assert code(info) == "AccessDenied"
    alice.put_object_retention(Bucket="gov", Key="k", VersionId=vid, BypassGovernanceRetention=True,
                               Retention={"Mode": "GOVERNANCE", "RetainUntilDate": soon(60)})
    with pytest.raises(ClientError) as info:  # bob is not allowed to bypass (and may not write here anyway)
        bob.delete_object(Bucket="gov", Key="k", VersionId=vid, BypassGovernanceRetention=True)
    assert code(info) == "AccessDenied"
    alice.delete_object(Bucket="gov", Key="k", VersionId=vid, BypassGovernanceRetention=True)
    with pytest.raises(ClientError) as info:
        alice.head_object(Bucket="gov", Key="k", VersionId=vid)
    assert status(info) == 404


def test_compliance_yields_to_nobody_and_is_only_extended(s3) -> None:
    s3.create_bucket(Bucket="comp", ObjectLockEnabledForBucket=True)
    until = soon()
    vid = s3.put_object(Bucket="comp", Key="k", Body=b"x", ObjectLockMode="COMPLIANCE",
                        ObjectLockRetainUntilDate=until)["VersionId"]
    for bypass in (False, True):
        with pytest.raises(ClientError) as info:
            s3.delete_object(Bucket="comp", Key="k", VersionId=vid, BypassGovernanceRetention=bypass)
        assert code(info) == "AccessDenied"
    for retention in ({"Mode": "COMPLIANCE", "RetainUntilDate": soon(60)},
                      {"Mode": "GOVERNANCE", "RetainUntilDate": soon(7200)}):
        with pytest.raises(ClientError) as info:
            s3.put_object_retention(Bucket="comp", Key="k", VersionId=vid, Retention=retention,
                                    BypassGovernanceRetention=True)
        assert code(info) == "AccessDenied", retention
    later = soon(7200)
    s3.put_object_retention(Bucket="comp", Key="k", VersionId=vid,
                            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": later})
    got = s3.get_object_retention(Bucket="comp", Key="k", VersionId=vid)["Retention"]
    assert got["Mode"] == "COMPLIANCE" and abs((got["RetainUntilDate"] - later).total_seconds()) < 1
    # DeleteObjects: the locked version is an error, the rest goes
    other = s3.put_object(Bucket="comp", Key="free", Body=b"y")["VersionId"]
    result = s3.delete_objects(Bucket="comp", Delete={"Objects": [{"Key": "k", "VersionId": vid},
                                                                  {"Key": "free", "VersionId": other}]})
    assert [(e["Key"], e["Code"]) for e in result["Errors"]] == [("k", "AccessDenied")]
    assert [d["Key"] for d in result["Deleted"]] == ["free"]
    assert s3.get_object(Bucket="comp", Key="k", VersionId=vid)["Body"].read() == b"x"


def test_lock_header_validation(s3) -> None:
    s3.create_bucket(Bucket="lockhdr", ObjectLockEnabledForBucket=True)
    for kw, expected in [({"ObjectLockMode": "GOVERNANCE"}, "InvalidArgument"),
                         ({"ObjectLockRetainUntilDate": soon()}, "InvalidArgument"),
                         ({"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": soon(-60)}, "InvalidArgument")]:
        with pytest.raises(ClientError) as info:
            s3.put_object(Bucket="lockhdr", Key="k", Body=b"x", **kw)
        assert code(info) == expected, kw
    with pytest.raises(ClientError) as info:
        s3.get_object_retention(Bucket="lockhdr", Key="nope")
    assert code(info) == "NoSuchKey"
    s3.put_object(Bucket="lockhdr", Key="unlocked", Body=b"x")
    with pytest.raises(ClientError) as info:
        s3.get_object_retention(Bucket="lockhdr", Key="unlocked")
    assert code(info) == "NoSuchObjectLockConfiguration"


def test_legal_hold_blocks_until_released(s3) -> None:
    s3.create_bucket(Bucket="hold", ObjectLockEnabledForBucket=True)
    vid = s3.put_object(Bucket="hold", Key="k", Body=b"x", ObjectLockLegalHoldStatus="ON")["VersionId"]
    assert s3.head_object(Bucket="hold", Key="k")["ObjectLockLegalHoldStatus"] == "ON"
    assert s3.get_object_legal_hold(Bucket="hold", Key="k", VersionId=vid)["LegalHold"]["Status"] == "ON"
    with pytest.raises(ClientError) as info:
        s3.delete_object(Bucket="hold", Key="k", VersionId=vid, BypassGovernanceRetention=True)
    assert code(info) == "AccessDenied"
    s3.put_object_legal_hold(Bucket="hold", Key="k", VersionId=vid, LegalHold={"Status": "OFF"})
    assert s3.get_object_legal_hold(Bucket="hold", Key="k", VersionId=vid)["LegalHold"]["Status"] == "OFF"
    s3.delete_object(Bucket="hold", Key="k", VersionId=vid)


def test_multipart_and_copy_carry_their_lock(s3) -> None:
    s3.create_bucket(Bucket="lockmp", ObjectLockEnabledForBucket=True)
    until = soon()
    up = s3.create_multipart_upload(Bucket="lockmp", Key="mp", ObjectLockMode="COMPLIANCE",
                                    ObjectLockRetainUntilDate=until, ObjectLockLegalHoldStatus="ON")["UploadId"]
    body = os.urandom(5 * MiB + 10)
    etag = s3.upload_part(Bucket="lockmp", Key="mp", UploadId=up, PartNumber=1, Body=body)["ETag"]
    vid = s3.complete_multipart_upload(Bucket="lockmp", Key="mp", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": etag}]})["VersionId"]
    head = s3.head_object(Bucket="lockmp", Key="mp")
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockLegalHoldStatus"] == "ON"
    assert abs((head["ObjectLockRetainUntilDate"] - until).total_seconds()) < 1
    assert not [k for k in head["ResponseMetadata"]["HTTPHeaders"] if k.startswith("x-amz-object-lock-")
                and k not in ("x-amz-object-lock-mode", "x-amz-object-lock-retain-until-date",
                              "x-amz-object-lock-legal-hold")]
    with pytest.raises(ClientError) as info:
        s3.delete_object(Bucket="lockmp", Key="mp", VersionId=vid)
    assert code(info) == "AccessDenied"
    # a copy takes the lock its request asks for, not its source's
    s3.copy_object(Bucket="lockmp", Key="copy", CopySource={"Bucket": "lockmp", "Key": "mp"})
    assert "ObjectLockMode" not in s3.head_object(Bucket="lockmp", Key="copy")
    s3.copy_object(Bucket="lockmp", Key="copy2", CopySource={"Bucket": "lockmp", "Key": "mp"},
                   ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=soon())
    assert s3.head_object(Bucket="lockmp", Key="copy2")["ObjectLockMode"] == "GOVERNANCE"
    assert s3.get_object(Bucket="lockmp", Key="copy2")["Body"].read() == body
    assert time.time() < until.timestamp()  # (the test ran within the retention it checked)
