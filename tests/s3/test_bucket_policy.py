"""Bucket policies, the public access block and object ownership on a real node, through boto3 (signed as alice
and bob, and unsigned) and the AWS CLI."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from botocore import UNSIGNED
from botocore.exceptions import ClientError

from tests.procs import make_certificate


STATUS = {"AccessDenied": 403, "MalformedPolicy": 400, "NoSuchBucketPolicy": 404, "MethodNotAllowed": 405,
          "NoSuchPublicAccessBlockConfiguration": 404, "OwnershipControlsNotFoundError": 404,
          "AccessControlListNotSupported": 400, "InvalidBucketAclWithObjectOwnership": 400, "MalformedXML": 400}


def code(call, *args, **kwargs) -> str:
    """The error code of a refused call, after checking its HTTP status is S3's for that code."""
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    found = info.value.response["Error"]["Code"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == STATUS[found], found
    return found


def policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def anyone(effect: str = "Allow", **kw) -> dict:
    return {"Effect": effect, "Principal": "*", **kw}


USER = "arn:aws:iam::000000000000:user/{}"


@pytest.fixture
def clients(node):
    return node.client(0), node.client(1), node.client(signature_version=UNSIGNED)


def test_put_get_delete_and_status(clients) -> None:
    alice, bob, _ = clients
    alice.create_bucket(Bucket="pol")
    assert code(alice.get_bucket_policy, Bucket="pol") == "NoSuchBucketPolicy"
    assert code(alice.get_bucket_policy_status, Bucket="pol") == "NoSuchBucketPolicy"
    private = policy({"Effect": "Allow", "Principal": {"AWS": USER.format("bob")}, "Action": "s3:GetObject",
                      "Resource": "arn:aws:s3:::pol/*"})
    alice.put_bucket_policy(Bucket="pol", Policy=private)
    assert json.loads(alice.get_bucket_policy(Bucket="pol")["Policy"]) == json.loads(private)
    assert alice.get_bucket_policy_status(Bucket="pol")["PolicyStatus"]["IsPublic"] is False
    public = policy(anyone(Action="s3:GetObject", Resource="arn:aws:s3:::pol/*"))
    alice.put_bucket_policy(Bucket="pol", Policy=public)
    assert alice.get_bucket_policy_status(Bucket="pol")["PolicyStatus"]["IsPublic"] is True
    # only the owner manages the policy: a caller the policy does not name is AccessDenied
    assert code(bob.get_bucket_policy, Bucket="pol") == "AccessDenied"
    assert code(bob.put_bucket_policy, Bucket="pol", Policy=public) == "AccessDenied"
    alice.delete_bucket_policy(Bucket="pol")
    assert code(alice.get_bucket_policy, Bucket="pol") == "NoSuchBucketPolicy"
    alice.delete_bucket_policy(Bucket="pol")  # again: still 204


@pytest.mark.parametrize("document", [
    "{not json",
    policy(anyone(Action="s3:GetObjekt", Resource="arn:aws:s3:::bad/*")),
    policy(anyone(Action="s3:GetObject", Resource="arn:aws:s3:::other-bucket/*")),
    policy({"Effect": "Allow", "Principal": {"AWS": USER.format("mallory")}, "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::bad/*"}),
    policy(anyone(Action="s3:GetObject", Resource="arn:aws:s3:::bad/*", Condition={"Nope": {"s3:prefix": "a"}})),
    policy(anyone(Action="s3:GetObject", Resource="arn:aws:s3:::bad/" + "x" * 21_000)),
])
def test_malformed_policies_are_refused_and_change_nothing(clients, document: str) -> None:
    alice, _, _ = clients
    alice.create_bucket(Bucket="bad")
    assert code(alice.put_bucket_policy, Bucket="bad", Policy=document) == "MalformedPolicy"
    assert code(alice.get_bucket_policy, Bucket="bad") == "NoSuchBucketPolicy"


def test_public_read_by_policy_for_anonymous_callers(clients) -> None:
    alice, bob, anonymous = clients
    alice.create_bucket(Bucket="site")
    alice.put_object(Bucket="site", Key="public/index.html", Body=b"<h1>hello</h1>")
    alice.put_object(Bucket="site", Key="private/notes", Body=b"secret")
    assert code(anonymous.get_object, Bucket="site", Key="public/index.html") == "AccessDenied"
    alice.put_bucket_policy(Bucket="site", Policy=policy(
        anyone(Sid="Read", Action="s3:GetObject", Resource="arn:aws:s3:::site/public/*"),
        anyone(Sid="List", Action="s3:ListBucket", Resource="arn:aws:s3:::site",
               Condition={"StringLike": {"s3:prefix": "public/*"}})))
    assert anonymous.get_object(Bucket="site", Key="public/index.html")["Body"].read() == b"<h1>hello</h1>"
    assert bob.get_object(Bucket="site", Key="public/index.html")["Body"].read() == b"<h1>hello</h1>"
    assert code(anonymous.get_object, Bucket="site", Key="private/notes") == "AccessDenied"
    assert code(anonymous.put_object, Bucket="site", Key="public/x", Body=b"x") == "AccessDenied"
    listed = anonymous.list_objects_v2(Bucket="site", Prefix="public/")
    assert [o["Key"] for o in listed["Contents"]] == ["public/index.html"]
    assert code(anonymous.list_objects_v2, Bucket="site") == "AccessDenied"  # no prefix: not the condition's
    # a missing key is AccessDenied without s3:ListBucket on the bucket as such (the grant above needs a prefix)
    assert code(anonymous.get_object, Bucket="site", Key="public/missing") == "AccessDenied"


def test_an_explicit_deny_wins_even_over_the_owner_but_not_over_the_policy_itself(clients) -> None:
    alice, _, _ = clients
    alice.create_bucket(Bucket="guard")
    alice.put_object(Bucket="guard", Key="keep/a", Body=b"a")
    alice.put_bucket_policy(Bucket="guard", Policy=policy(
        anyone("Deny", Action=["s3:DeleteObject", "s3:DeleteObjectVersion"], Resource="arn:aws:s3:::guard/keep/*")))
    assert code(alice.delete_object, Bucket="guard", Key="keep/a") == "AccessDenied"
    alice.put_object(Bucket="guard", Key="other", Body=b"o")
    result = alice.delete_objects(Bucket="guard", Delete={"Objects": [{"Key": "keep/a"}, {"Key": "other"}]})
    assert [e["Key"] for e in result["Deleted"]] == ["other"]
    assert [(e["Key"], e["Code"]) for e in result["Errors"]] == [("keep/a", "AccessDenied")]
    assert alice.get_object(Bucket="guard", Key="keep/a")["Body"].read() == b"a"
    # a policy that denies everything, the policy operations too, cannot lock the owner out
    alice.put_bucket_policy(Bucket="guard", Policy=policy(anyone("Deny", Action="s3:*", Resource=[
        "arn:aws:s3:::guard", "arn:aws:s3:::guard/*"])))
    assert code(alice.list_objects_v2, Bucket="guard") == "AccessDenied"
    alice.delete_bucket_policy(Bucket="guard")
    assert [o["Key"] for o in alice.list_objects_v2(Bucket="guard")["Contents"]] == ["keep/a"]


def test_a_user_limited_to_a_prefix_of_his_own(clients) -> None:
    alice, bob, _ = clients
    alice.create_bucket(Bucket="homes")
    alice.put_bucket_policy(Bucket="homes", Policy=policy(
        {"Effect": "Allow", "Principal": {"AWS": [USER.format("bob")]},
         "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],
         "Resource": "arn:aws:s3:::homes/home/${aws:username}/*"},
        {"Effect": "Allow", "Principal": {"CanonicalUser": "bob"}, "Action": "s3:ListBucket",
         "Resource": "arn:aws:s3:::homes", "Condition": {"StringLike": {"s3:prefix": "home/${aws:username}/*"}}}))
    bob.put_object(Bucket="homes", Key="home/bob/notes.txt", Body=b"mine")
    assert bob.get_object(Bucket="homes", Key="home/bob/notes.txt")["Body"].read() == b"mine"
    assert [o["Key"] for o in bob.list_objects_v2(Bucket="homes", Prefix="home/bob/")["Contents"]] == [
        "home/bob/notes.txt"]
    assert code(bob.put_object, Bucket="homes", Key="home/alice/x", Body=b"x") == "AccessDenied"
    assert code(bob.list_objects_v2, Bucket="homes", Prefix="home/") == "AccessDenied"
    assert code(bob.put_bucket_acl, Bucket="homes", ACL="public-read") == "AccessDenied"
    # what bob writes in alice's bucket is bob's (ownership ObjectWriter, the default here)
    acl = alice.get_bucket_acl(Bucket="homes")
    assert acl["Owner"]["ID"] == "alice"
    bob.delete_object(Bucket="homes", Key="home/bob/notes.txt")


def test_conditions_on_the_connection_and_the_object(node_factory, tmp_path) -> None:
    crt, key = make_certificate(tmp_path)
    node = node_factory(tls_cert=str(crt), tls_key=str(key), tls_listen="127.0.0.1:0")
    http_url, https_url = node.endpoints
    alice, bob = node.client(0), node.client(1)
    bob_tls = node.client(1, endpoint=https_url, verify=str(crt))
    alice.create_bucket(Bucket="cond")
    alice.put_object(Bucket="cond", Key="open", Body=b"o", Tagging="class=open")
    alice.put_object(Bucket="cond", Key="closed", Body=b"c", Tagging="class=closed")
    alice.put_bucket_policy(Bucket="cond", Policy=policy(
        {"Effect": "Allow", "Principal": {"AWS": USER.format("bob")}, "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::cond/*", "Condition": {"StringEquals": {"s3:ExistingObjectTag/class": "open"}}},
        anyone("Deny", Action="s3:*", Resource="arn:aws:s3:::cond/*",
               Condition={"Bool": {"aws:SecureTransport": "false"}, "StringEquals": {"aws:username": "bob"}}),
        {"Effect": "Allow", "Principal": {"AWS": USER.format("bob")}, "Action": "s3:PutObject",
         "Resource": "arn:aws:s3:::cond/*", "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"},
                                                          "StringEquals": {"s3:x-amz-acl": "bucket-owner-read"}}}))
    assert bob_tls.get_object(Bucket="cond", Key="open")["Body"].read() == b"o"
    assert code(bob.get_object, Bucket="cond", Key="open") == "AccessDenied"  # plain HTTP: denied
    assert code(bob_tls.get_object, Bucket="cond", Key="closed") == "AccessDenied"  # its tag does not match
    assert code(bob_tls.put_object, Bucket="cond", Key="up", Body=b"u") == "AccessDenied"  # no x-amz-acl
    bob_tls.put_object(Bucket="cond", Key="up", Body=b"u", ACL="bucket-owner-read")
    assert alice.get_object(Bucket="cond", Key="up")["Body"].read() == b"u"  # granted READ by that ACL
    # tags asked for in a PutObjectTagging body are condition keys too
    alice.put_bucket_policy(Bucket="cond", Policy=policy(
        anyone("Deny", Action="s3:PutObjectTagging", Resource="arn:aws:s3:::cond/*",
               Condition={"ForAnyValue:StringEquals": {"s3:RequestObjectTagKeys": "secret"}})))
    assert code(alice.put_object_tagging, Bucket="cond", Key="open", Tagging={"TagSet": [
        {"Key": "secret", "Value": "1"}]}) == "AccessDenied"
    alice.put_object_tagging(Bucket="cond", Key="open", Tagging={"TagSet": [{"Key": "fine", "Value": "1"}]})
    assert alice.get_object_tagging(Bucket="cond", Key="open")["TagSet"] == [{"Key": "fine", "Value": "1"}]
    assert http_url.startswith("http://")


def test_public_access_block(clients) -> None:
    alice, bob, anonymous = clients
    alice.create_bucket(Bucket="blocked")
    assert code(alice.get_public_access_block, Bucket="blocked") == "NoSuchPublicAccessBlockConfiguration"
    alice.put_object(Bucket="blocked", Key="was-public", Body=b"p", ACL="public-read")
    assert anonymous.get_object(Bucket="blocked", Key="was-public")["Body"].read() == b"p"
    alice.put_bucket_policy(Bucket="blocked", Policy=policy(
        anyone(Action="s3:GetObject", Resource="arn:aws:s3:::blocked/policy/*")))
    alice.put_object(Bucket="blocked", Key="policy/k", Body=b"k")
    assert anonymous.get_object(Bucket="blocked", Key="policy/k")["Body"].read() == b"k"
    config = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
              "RestrictPublicBuckets": True}
    # even a policy granting everything to everyone leaves the block to the owner alone
    alice.put_bucket_policy(Bucket="blocked", Policy=policy(
        anyone(Action="s3:GetObject", Resource="arn:aws:s3:::blocked/policy/*"),
        {"Effect": "Allow", "Principal": {"AWS": USER.format("bob")}, "Action": "s3:*",
         "Resource": ["arn:aws:s3:::blocked"]}))
    assert code(bob.put_public_access_block, Bucket="blocked", PublicAccessBlockConfiguration=config) == \
        "MethodNotAllowed"
    alice.put_public_access_block(Bucket="blocked", PublicAccessBlockConfiguration=config)
    assert alice.get_public_access_block(Bucket="blocked")["PublicAccessBlockConfiguration"] == config
    assert code(anonymous.get_object, Bucket="blocked", Key="was-public") == "AccessDenied"  # IgnorePublicAcls
    assert code(anonymous.get_object, Bucket="blocked", Key="policy/k") == "AccessDenied"  # RestrictPublicBuckets
    assert code(bob.get_object, Bucket="blocked", Key="policy/k") == "AccessDenied"
    assert alice.get_object(Bucket="blocked", Key="policy/k")["Body"].read() == b"k"
    assert code(alice.put_object, Bucket="blocked", Key="x", Body=b"x", ACL="public-read") == "AccessDenied"
    assert code(alice.put_bucket_acl, Bucket="blocked", ACL="public-read-write") == "AccessDenied"
    assert code(alice.put_object_acl, Bucket="blocked", Key="policy/k", ACL="authenticated-read") == "AccessDenied"
    assert code(alice.put_bucket_policy, Bucket="blocked", Policy=policy(
        anyone(Action="s3:GetObject", Resource="arn:aws:s3:::blocked/*"))) == "AccessDenied"
    alice.put_object(Bucket="blocked", Key="fine", Body=b"f", ACL="private")
    alice.delete_public_access_block(Bucket="blocked")
    assert anonymous.get_object(Bucket="blocked", Key="was-public")["Body"].read() == b"p"
    assert code(alice.get_public_access_block, Bucket="blocked") == "NoSuchPublicAccessBlockConfiguration"


def test_object_ownership(clients) -> None:
    alice, bob, _ = clients
    writers = policy({"Effect": "Allow", "Principal": {"AWS": USER.format("bob")},
                      "Action": ["s3:PutObject", "s3:GetObject", "s3:GetObjectAcl"], "Resource": "{}/*"})
    alice.create_bucket(Bucket="owned", ObjectOwnership="BucketOwnerEnforced")
    assert alice.get_bucket_ownership_controls(Bucket="owned")["OwnershipControls"]["Rules"] == [
        {"ObjectOwnership": "BucketOwnerEnforced"}]
    alice.put_bucket_policy(Bucket="owned", Policy=writers.replace("{}", "arn:aws:s3:::owned"))
    bob.put_object(Bucket="owned", Key="by-bob", Body=b"b")
    assert bob.get_object_acl(Bucket="owned", Key="by-bob")["Owner"]["ID"] == "alice"  # the bucket's owner's
    assert alice.get_object(Bucket="owned", Key="by-bob")["Body"].read() == b"b"
    assert code(bob.put_object, Bucket="owned", Key="k", Body=b"k", ACL="public-read") == \
        "AccessControlListNotSupported"
    bob.put_object(Bucket="owned", Key="k", Body=b"k", ACL="bucket-owner-full-control")
    assert code(alice.put_bucket_acl, Bucket="owned", ACL="public-read") == "AccessControlListNotSupported"
    assert code(alice.put_object_acl, Bucket="owned", Key="k", ACL="public-read") == "AccessControlListNotSupported"
    # preferred: the writer hands it over with bucket-owner-full-control, else keeps it
    alice.put_bucket_ownership_controls(Bucket="owned", OwnershipControls={
        "Rules": [{"ObjectOwnership": "BucketOwnerPreferred"}]})
    bob.put_object(Bucket="owned", Key="handed", Body=b"h", ACL="bucket-owner-full-control")
    bob.put_object(Bucket="owned", Key="kept", Body=b"k")
    assert bob.get_object_acl(Bucket="owned", Key="handed")["Owner"]["ID"] == "alice"
    assert bob.get_object_acl(Bucket="owned", Key="kept")["Owner"]["ID"] == "bob"
    alice.delete_bucket_ownership_controls(Bucket="owned")
    assert code(alice.get_bucket_ownership_controls, Bucket="owned") == "OwnershipControlsNotFoundError"
    # ACLs cannot be turned off while the bucket ACL grants others
    alice.create_bucket(Bucket="shared-acl", ACL="public-read")
    assert code(alice.put_bucket_ownership_controls, Bucket="shared-acl", OwnershipControls={
        "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}) == "InvalidBucketAclWithObjectOwnership"
    assert code(alice.put_bucket_ownership_controls, Bucket="shared-acl", OwnershipControls={
        "Rules": [{"ObjectOwnership": "Nobody"}]}) == "MalformedXML"


def test_aws_cli_manages_a_policy(node, tmp_path) -> None:
    node.client().create_bucket(Bucket="cli-pol")
    document = tmp_path / "policy.json"
    document.write_text(policy(anyone(Action="s3:GetObject", Resource="arn:aws:s3:::cli-pol/*")))
    user = node.users[0]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": user["access_key"], "AWS_SECRET_ACCESS_KEY": user["secret_key"],
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def aws(*args: str) -> str:
        done = subprocess.run(["aws", "--endpoint-url", node.endpoint, "s3api", *args], capture_output=True,
                              text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    aws("put-bucket-policy", "--bucket", "cli-pol", "--policy", f"file://{document}")
    got = json.loads(aws("get-bucket-policy", "--bucket", "cli-pol"))
    assert json.loads(got["Policy"]) == json.loads(document.read_text())
    assert json.loads(aws("get-bucket-policy-status", "--bucket", "cli-pol"))["PolicyStatus"]["IsPublic"] is True
    aws("delete-bucket-policy", "--bucket", "cli-pol")
