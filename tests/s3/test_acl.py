"""Access control enforced on a real node: canned ACLs, grant headers, ACL documents, anonymous callers."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError


def anonymous_get(node, path: str, method: str = "GET") -> tuple[int, bytes]:
    req = urllib.request.Request(node.endpoint + path, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def denied(call, *args, **kwargs) -> None:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    assert info.value.response["Error"]["Code"] == "AccessDenied", info.value.response["Error"]


def test_private_by_default(node) -> None:
    alice, bob = node.client(0), node.client(1)
    alice.create_bucket(Bucket="private")
    alice.put_object(Bucket="private", Key="k", Body=b"secret")
    denied(bob.get_object, Bucket="private", Key="k")
    denied(bob.put_object, Bucket="private", Key="k2", Body=b"x")
    denied(bob.list_objects_v2, Bucket="private")
    denied(bob.get_bucket_acl, Bucket="private")
    denied(bob.delete_object, Bucket="private", Key="k")
    denied(bob.get_object, Bucket="private", Key="missing")  # no NoSuchKey leak without the right to list
    assert anonymous_get(node, "/private/k")[0] == 403
    assert anonymous_get(node, "/private")[0] == 403
    assert anonymous_get(node, "/")[0] == 403


def test_public_read_bucket_and_object(node) -> None:
    alice = node.client(0)
    alice.create_bucket(Bucket="pub", ACL="public-read")
    alice.put_object(Bucket="pub", Key="open", Body=b"for all", ACL="public-read")
    alice.put_object(Bucket="pub", Key="closed", Body=b"mine")
    status, body = anonymous_get(node, "/pub")
    assert status == 200 and b"<Key>open</Key>" in body and b"<Key>closed</Key>" in body
    assert anonymous_get(node, "/pub/open") == (200, b"for all")
    assert anonymous_get(node, "/pub/closed")[0] == 403
    assert anonymous_get(node, "/pub/nothing")[0] == 404  # may list, so may learn it is missing
    req = urllib.request.Request(node.endpoint + "/pub/anon", data=b"x", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 403
    grants = alice.get_object_acl(Bucket="pub", Key="open")["Grants"]
    assert {"Grantee": {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"},
            "Permission": "READ"} in grants


def test_grants_and_acl_documents(node) -> None:
    alice, bob = node.client(0), node.client(1)
    alice.create_bucket(Bucket="shared")
    alice.put_object(Bucket="shared", Key="doc", Body=b"shared doc", GrantRead='id="bob"')
    assert bob.get_object(Bucket="shared", Key="doc")["Body"].read() == b"shared doc"
    denied(bob.put_object_acl, Bucket="shared", Key="doc", ACL="public-read")
    denied(bob.list_objects_v2, Bucket="shared")
    acl = alice.get_bucket_acl(Bucket="shared")
    assert acl["Owner"]["ID"] == "alice"
    alice.put_bucket_acl(Bucket="shared", AccessControlPolicy={
        "Owner": acl["Owner"],
        "Grants": acl["Grants"] + [{"Grantee": {"Type": "CanonicalUser", "ID": "bob"}, "Permission": "READ"},
                                   {"Grantee": {"Type": "CanonicalUser", "ID": "bob"}, "Permission": "WRITE"}]})
    assert [o["Key"] for o in bob.list_objects_v2(Bucket="shared")["Contents"]] == ["doc"]
    bob.put_object(Bucket="shared", Key="from-bob", Body=b"b", ACL="bucket-owner-full-control")
    assert alice.get_object(Bucket="shared", Key="from-bob")["Body"].read() == b"b"
    bob.put_object(Bucket="shared", Key="bob-private", Body=b"b")
    denied(alice.get_object, Bucket="shared", Key="bob-private")  # objects belong to their writer
    alice.delete_object(Bucket="shared", Key="bob-private")  # but the bucket owner may delete them
    with pytest.raises(ClientError) as info:
        alice.put_bucket_acl(Bucket="shared", AccessControlPolicy={
            "Owner": acl["Owner"],
            "Grants": [{"Grantee": {"Type": "CanonicalUser", "ID": "nobody-known"}, "Permission": "READ"}]})
    assert info.value.response["Error"]["Code"] == "InvalidArgument"


def test_authenticated_read_and_email_grants(node) -> None:
    alice, bob = node.client(0), node.client(1)
    bob.create_bucket(Bucket="bobs", ACL="authenticated-read")
    bob.put_object(Bucket="bobs", Key="k", Body=b"v", GrantRead='emailAddress="alice@example.com"')
    assert [o["Key"] for o in alice.list_objects_v2(Bucket="bobs")["Contents"]] == ["k"]
    assert anonymous_get(node, "/bobs")[0] == 403
    assert alice.get_object(Bucket="bobs", Key="k")["Body"].read() == b"v"
    grants = bob.get_object_acl(Bucket="bobs", Key="k")["Grants"]
    assert grants[0]["Grantee"]["ID"] == "alice" and grants[0]["Grantee"]["DisplayName"] == "Alice"
    with pytest.raises(ClientError) as info:
        bob.put_object(Bucket="bobs", Key="k2", Body=b"v", GrantRead='emailAddress="nobody@example.com"')
    assert info.value.response["Error"]["Code"] == "UnresolvableGrantByEmailAddress"
    with pytest.raises(ClientError) as info:
        bob.put_object(Bucket="bobs", Key="k3", Body=b"v", ACL="public-read", GrantRead='id="alice"')
    assert info.value.response["Error"]["Code"] == "InvalidRequest"


def test_public_read_write_bucket_takes_anonymous_writes(node) -> None:
    alice = node.client(0)
    alice.create_bucket(Bucket="dropbox", ACL="public-read-write")
    req = urllib.request.Request(node.endpoint + "/dropbox/anon.txt", data=b"dropped", method="PUT")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    listed = alice.list_objects(Bucket="dropbox")["Contents"]
    assert listed[0]["Key"] == "anon.txt" and listed[0]["Owner"]["ID"] == "65a011a29cdf8ec533ec3d1ccaae921c"
    denied(alice.get_object, Bucket="dropbox", Key="anon.txt")  # the anonymous writer owns it, privately
