"""Browser-form uploads (PostObject) of every kind against a real node, with real multipart bodies (requests):
SigV2 policies as botocore signs them, anonymous forms into buckets an ACL or a policy opens, the acl and tagging
fields, field names in any case, and the errors of malformed forms. (SigV4 forms: test_multipart_copy.py.)"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from botocore import UNSIGNED

requests = pytest.importorskip("requests", reason="requests is not installed (the project's test extras have it)")

FILE = {"file": ("report.txt", b"quarterly numbers")}


def post(node, bucket: str, fields: dict, files=None) -> requests.Response:
    return requests.post(f"{node.endpoint}/{bucket}", data=fields, files=files or FILE, timeout=30,
                         allow_redirects=False)  # a redirect is checked, never followed


def test_signature_version_2_forms(node) -> None:
    s3 = node.client()
    s3.create_bucket(Bucket="v2forms")
    v2 = node.client(signature_version="s3")  # botocore signs POST policies with SigV2 this way
    form = v2.generate_presigned_post(
        Bucket="v2forms", Key="in/${filename}",
        Fields={"acl": "public-read", "tagging": "<Tagging><TagSet><Tag><Key>kind</Key><Value>report</Value></Tag>"
                                                 "</TagSet></Tagging>", "x-amz-meta-by": "form"},
        Conditions=[["starts-with", "$key", "in/"], {"acl": "public-read"}, ["starts-with", "$tagging", ""],
                    {"x-amz-meta-by": "form"}, ["content-length-range", 1, 100]], ExpiresIn=300)
    assert "AWSAccessKeyId" in form["fields"] and "signature" in form["fields"]
    resp = post(node, "v2forms", form["fields"])
    assert resp.status_code == 204, resp.text
    got = s3.get_object(Bucket="v2forms", Key="in/report.txt")
    assert got["Body"].read() == b"quarterly numbers" and got["Metadata"] == {"by": "form"}
    assert s3.get_object_tagging(Bucket="v2forms", Key="in/report.txt")["TagSet"] == [
        {"Key": "kind", "Value": "report"}]
    anonymous = node.client(signature_version=UNSIGNED)
    assert anonymous.get_object(Bucket="v2forms", Key="in/report.txt")["Body"].read() == b"quarterly numbers"
    # field names in another case are the same fields; a wrong signature or key is refused
    shouted = {k.upper() if k not in ("key", "policy") else k: v for k, v in form["fields"].items()}
    assert post(node, "v2forms", shouted).status_code == 204
    bad = dict(form["fields"], signature=base64.b64encode(b"x" * 20).decode())
    resp = post(node, "v2forms", bad)
    assert resp.status_code == 403 and b"SignatureDoesNotMatch" in resp.content
    unknown = dict(form["fields"], AWSAccessKeyId="AKIDNOBODY0000000000")
    resp = post(node, "v2forms", unknown)
    assert resp.status_code == 403 and b"InvalidAccessKeyId" in resp.content
    no_sig = {k: v for k, v in form["fields"].items() if k != "signature"}
    resp = post(node, "v2forms", no_sig)
    assert resp.status_code == 400 and b"InvalidArgument" in resp.content


def test_signed_by_hand_with_the_secret(node) -> None:
    """The SigV2 form signature computed here from the documented recipe, not by botocore."""
    s3 = node.client()
    s3.create_bucket(Bucket="handmade")
    user = node.users[0]
    policy = base64.b64encode(json.dumps({"expiration": "2099-01-01T00:00:00Z", "conditions": [
        {"bucket": "handmade"}, ["eq", "$key", "exact"], ["eq", "$Content-Type", "text/csv"]]}).encode()).decode()
    signature = base64.b64encode(hmac.new(user["secret_key"].encode(), policy.encode(), hashlib.sha1).digest())
    fields = {"key": "exact", "Content-Type": "text/csv", "AWSAccessKeyId": user["access_key"], "policy": policy,
              "signature": signature.decode()}
    assert post(node, "handmade", fields).status_code == 204
    assert s3.head_object(Bucket="handmade", Key="exact")["ContentType"] == "text/csv"
    resp = post(node, "handmade", dict(fields, **{"Content-Type": "TEXT/CSV"}))  # values are case-sensitive
    assert resp.status_code == 403 and b"Policy Condition failed" in resp.content


def test_anonymous_forms(node) -> None:
    alice = node.client()
    alice.create_bucket(Bucket="dropbox")
    resp = post(node, "dropbox", {"key": "anon.txt"})
    assert resp.status_code == 403 and b"AccessDenied" in resp.content  # a private bucket
    alice.put_bucket_policy(Bucket="dropbox", Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::dropbox/in/*",
         "Condition": {"StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control"}}}]}))
    assert post(node, "dropbox", {"key": "in/a.txt"}).status_code == 403  # no acl field: the condition fails
    resp = post(node, "dropbox", {"key": "in/${filename}", "acl": "bucket-owner-full-control",
                                  "success_action_status": "201"})
    assert resp.status_code == 201 and b"<Key>in/report.txt</Key>" in resp.content
    assert alice.get_object(Bucket="dropbox", Key="in/report.txt")["Body"].read() == b"quarterly numbers"
    assert post(node, "dropbox", {"key": "out/a.txt", "acl": "bucket-owner-full-control"}).status_code == 403
    # a policy field without a signature is not an anonymous form
    resp = post(node, "dropbox", {"key": "in/b.txt", "acl": "bucket-owner-full-control", "policy": "e30="})
    assert resp.status_code == 403
    # a public-write bucket by ACL takes anonymous forms too; the object is S3's anonymous id's
    alice.create_bucket(Bucket="public-drop", ACL="public-read-write")
    resp = post(node, "public-drop", {"key": "x", "success_action_redirect": "https://example.com/done"})
    assert resp.status_code == 303 and resp.headers["Location"].startswith("https://example.com/done?bucket=")
    assert post(node, "public-drop", {"key": "y", "tagging": "<Tagging><TagSet>"}).status_code == 400


@pytest.mark.parametrize(("fields", "status", "error"), [
    ({}, 400, b"InvalidArgument"),  # no key
    ({"key": "k" * 1100}, 400, b"KeyTooLongError"),
    ({"key": "k", "tagging": "not xml"}, 400, b"MalformedXML"),
    ({"key": "k", "acl": "public-everything"}, 400, b"InvalidArgument"),
    ({"key": "k", "AWSAccessKeyId": "AKIDTESTALICE0000001", "signature": "abc"}, 400, b"MalformedPOSTRequest"),
])
def test_malformed_forms(node, fields: dict, status: int, error: bytes) -> None:
    node.client().create_bucket(Bucket="open-drop", ACL="public-read-write")
    resp = post(node, "open-drop", fields)
    assert resp.status_code == status and error in resp.content, resp.content
    assert "Contents" not in node.client().list_objects_v2(Bucket="open-drop")
