"""The IAM API subset on the S3 endpoint, through boto3's IAM client and the AWS CLI's ``iam`` commands, against
a real node: users, access keys (two per user, Active/Inactive), inline user policies — and what those policies
do to the user's S3 requests."""

from __future__ import annotations

import json
import os
import subprocess
from urllib.parse import urlencode

import boto3
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

STATUS = {"NoSuchEntity": 404, "EntityAlreadyExists": 409, "LimitExceeded": 409, "DeleteConflict": 409,
          "MalformedPolicyDocument": 400, "ValidationError": 400, "AccessDenied": 403, "InvalidClientTokenId": 403,
          "SignatureDoesNotMatch": 403, "UnmodifiableEntity": 400, "InvalidAction": 400, "InvalidInput": 400,
          "MissingAuthenticationToken": 403, "MissingAction": 400}
S3_STATUS = {"AccessDenied": 403, "InvalidAccessKeyId": 403}
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})


def code(call, *args, statuses=STATUS, **kwargs) -> str:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    found = info.value.response["Error"]["Code"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == statuses[found], found
    return found


def s3code(call, *args, **kwargs) -> str:
    return code(call, *args, statuses=S3_STATUS, **kwargs)


def iam_client(node, access_key: str, secret_key: str):
    return boto3.client("iam", endpoint_url=node.endpoint, region_name="us-east-1", aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key, config=NO_RETRIES)


def s3_client(node, access_key: str, secret_key: str):
    return boto3.client("s3", endpoint_url=node.endpoint, region_name="us-east-1", aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key,
                        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}))


def policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


@pytest.fixture
def admin_node(node_factory):
    """A node whose administrator (setting admin_users) is alice, a user of the config file."""
    return node_factory(admin_users=["alice"])


@pytest.fixture
def iam(admin_node):
    u = admin_node.users[0]
    return iam_client(admin_node, u["access_key"], u["secret_key"])


def new_user(iam, node, name: str):
    """A user made through the API, with one key: its IAM and S3 clients."""
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return iam_client(node, key["AccessKeyId"], key["SecretAccessKey"]), s3_client(node, key["AccessKeyId"],
                                                                                    key["SecretAccessKey"]), key


def test_users(iam) -> None:
    created = iam.create_user(UserName="carol")["User"]
    assert created["UserName"] == "carol" and created["Path"] == "/"
    assert created["Arn"] == "arn:aws:iam::000000000000:user/carol"
    assert iam.get_user(UserName="carol")["User"]["Arn"] == created["Arn"]
    assert iam.get_user()["User"]["UserName"] == "alice"  # no UserName: the caller
    assert code(iam.create_user, UserName="carol") == "EntityAlreadyExists"
    assert code(iam.create_user, UserName="bob") == "EntityAlreadyExists"  # a user of the config file
    assert code(iam.get_user, UserName="nobody") == "NoSuchEntity"
    assert code(iam.create_user, UserName="bad/name") == "ValidationError"
    assert code(iam.create_user, UserName="x" * 65) == "ValidationError"
    assert code(iam.create_user, UserName="tagged", Tags=[{"Key": "k", "Value": "v"}]) == "InvalidInput"
    assert code(iam.create_user, UserName="pathed", Path="/division/") == "InvalidInput"
    for name in ("dave", "erin", "frank"):
        iam.create_user(UserName=name)
    names = [u["UserName"] for u in iam.list_users()["Users"]]
    assert names == sorted(names) and {"alice", "bob", "carol", "dave", "erin", "frank"} <= set(names)
    # paging: MaxItems and Marker, as the SDK's paginator drives them
    paged = [u["UserName"] for page in iam.get_paginator("list_users").paginate(PaginationConfig={"PageSize": 2})
             for u in page["Users"]]
    assert paged == names
    first = iam.list_users(MaxItems=2)
    assert first["IsTruncated"] is True and len(first["Users"]) == 2
    assert iam.delete_user(UserName="dave")["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert code(iam.delete_user, UserName="dave") == "NoSuchEntity"
    assert code(iam.delete_user, UserName="bob") == "UnmodifiableEntity"


def test_access_keys(iam, admin_node) -> None:
    node = admin_node
    iam.create_user(UserName="carol")
    assert iam.list_access_keys(UserName="carol")["AccessKeyMetadata"] == []
    one = iam.create_access_key(UserName="carol")["AccessKey"]
    two = iam.create_access_key(UserName="carol")["AccessKey"]
    assert one["Status"] == "Active" and one["UserName"] == "carol" and len(one["SecretAccessKey"]) == 40
    assert code(iam.create_access_key, UserName="carol") == "LimitExceeded"  # two per user
    listed = iam.list_access_keys(UserName="carol")["AccessKeyMetadata"]
    assert sorted(k["AccessKeyId"] for k in listed) == sorted([one["AccessKeyId"], two["AccessKeyId"]])
    assert all("SecretAccessKey" not in k for k in listed)

    s3 = s3_client(node, one["AccessKeyId"], one["SecretAccessKey"])
    s3.create_bucket(Bucket="carols")
    assert s3_client(node, two["AccessKeyId"], two["SecretAccessKey"]).list_buckets()["Buckets"][0]["Name"] == \
        "carols"
    # Inactive: the key stops signing at once, and works again when made Active
    iam.update_access_key(UserName="carol", AccessKeyId=one["AccessKeyId"], Status="Inactive")
    assert {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName="carol")["AccessKeyMetadata"]}[
        one["AccessKeyId"]] == "Inactive"
    assert s3code(s3.list_buckets) == "InvalidAccessKeyId"
    assert code(iam_client(node, one["AccessKeyId"], one["SecretAccessKey"]).get_user) == "InvalidClientTokenId"
    iam.update_access_key(UserName="carol", AccessKeyId=one["AccessKeyId"], Status="Active")
    assert s3.list_buckets()["Buckets"][0]["Name"] == "carols"
    assert code(iam.update_access_key, UserName="carol", AccessKeyId=one["AccessKeyId"],
                Status="Sleeping") == "ValidationError"
    assert code(iam.update_access_key, UserName="carol", AccessKeyId="AKIANOSUCHKEY0000000",
                Status="Inactive") == "NoSuchEntity"
    # deleting a key: it stops working, the other goes on; a user with keys cannot be deleted
    assert code(iam.delete_user, UserName="carol") == "DeleteConflict"
    iam.delete_access_key(UserName="carol", AccessKeyId=one["AccessKeyId"])
    assert s3code(s3.list_buckets) == "InvalidAccessKeyId"
    assert code(iam.delete_access_key, UserName="carol", AccessKeyId=one["AccessKeyId"]) == "NoSuchEntity"
    three = iam.create_access_key(UserName="carol")["AccessKey"]  # room for one again
    # keys of the config file's users are changed in the file only
    assert code(iam.create_access_key, UserName="bob") == "UnmodifiableEntity"
    assert [k["AccessKeyId"] for k in iam.list_access_keys(UserName="bob")["AccessKeyMetadata"]] == [
        node.users[1]["access_key"]]
    # keys, statuses and users outlive a restart of the node
    iam.update_access_key(UserName="carol", AccessKeyId=two["AccessKeyId"], Status="Inactive")
    node.restart()
    assert s3code(s3_client(node, two["AccessKeyId"], two["SecretAccessKey"]).list_buckets) == "InvalidAccessKeyId"
    assert s3_client(node, three["AccessKeyId"], three["SecretAccessKey"]).list_buckets()["Buckets"][0]["Name"] == \
        "carols"
    # a user owning buckets is not deleted (one created again under its name would own them)
    for key in (two, three):
        iam.delete_access_key(UserName="carol", AccessKeyId=key["AccessKeyId"])
    assert code(iam.delete_user, UserName="carol") == "DeleteConflict"


def test_user_policies_documents(iam) -> None:
    iam.create_user(UserName="carol")
    doc = policy({"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
                  "Resource": ["arn:aws:s3:::shared", "arn:aws:s3:::shared/*"]})
    iam.put_user_policy(UserName="carol", PolicyName="read-shared", PolicyDocument=doc)
    got = iam.get_user_policy(UserName="carol", PolicyName="read-shared")
    assert got["PolicyDocument"] == json.loads(doc) and got["PolicyName"] == "read-shared"  # URL-encoded, decoded
    iam.put_user_policy(UserName="carol", PolicyName="b-other", PolicyDocument=policy(
        {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "*"}))
    assert iam.list_user_policies(UserName="carol")["PolicyNames"] == ["b-other", "read-shared"]
    assert code(iam.get_user_policy, UserName="carol", PolicyName="nope") == "NoSuchEntity"
    for bad in ("not json", json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action":
                                                                               "s3:GetObject"}]}),
                policy({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "*"}),
                policy({"Effect": "Maybe", "Action": "s3:GetObject", "Resource": "*"}),
                policy({"Effect": "Allow", "Action": "GetObject", "Resource": "*"}),
                policy({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "bucket"}),
                policy({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
                        "Condition": {"StringWobbles": {"aws:username": "x"}}})):
        assert code(iam.put_user_policy, UserName="carol", PolicyName="bad", PolicyDocument=bad) == \
            "MalformedPolicyDocument", bad
    huge = policy(*({"Sid": f"S{i}", "Effect": "Allow", "Action": "s3:GetObject",
                     "Resource": f"arn:aws:s3:::bucket-{i:04d}-{'x' * 40}/*"} for i in range(120)))
    assert code(iam.put_user_policy, UserName="carol", PolicyName="huge", PolicyDocument=huge) == "LimitExceeded"
    assert code(iam.put_user_policy, UserName="nobody", PolicyName="p", PolicyDocument=doc) == "NoSuchEntity"
    assert code(iam.put_user_policy, UserName="bob", PolicyName="p", PolicyDocument=doc) == "UnmodifiableEntity"
    assert code(iam.delete_user, UserName="carol") == "DeleteConflict"  # its policies first
    iam.delete_user_policy(UserName="carol", PolicyName="b-other")
    iam.delete_user_policy(UserName="carol", PolicyName="read-shared")
    assert code(iam.delete_user_policy, UserName="carol", PolicyName="read-shared") == "NoSuchEntity"
    assert iam.list_user_policies(UserName="carol")["PolicyNames"] == []
    iam.delete_user(UserName="carol")


def test_who_may_call_it(iam, admin_node) -> None:
    node = admin_node
    bob = iam_client(node, node.users[1]["access_key"], node.users[1]["secret_key"])
    assert code(bob.create_user, UserName="mallory") == "AccessDenied"  # not an administrator
    assert code(bob.list_users) == "AccessDenied"
    # a user whose policy lets it manage its own keys, and nothing else
    carol_iam, _, key = new_user(iam, node, "carol")
    iam.create_user(UserName="dave")
    iam.put_user_policy(UserName="carol", PolicyName="own-keys", PolicyDocument=policy(
        {"Effect": "Allow", "Action": ["iam:CreateAccessKey", "iam:ListAccessKeys", "iam:UpdateAccessKey",
                                       "iam:DeleteAccessKey", "iam:GetUser"],
         "Resource": "arn:aws:iam::*:user/${aws:username}"}))
    assert [k["AccessKeyId"] for k in carol_iam.list_access_keys()["AccessKeyMetadata"]] == [key["AccessKeyId"]]
    second = carol_iam.create_access_key()["AccessKey"]  # no UserName: its own
    assert second["UserName"] == "carol"
    assert carol_iam.get_user()["User"]["UserName"] == "carol"
    assert code(carol_iam.create_access_key, UserName="dave") == "AccessDenied"
    assert code(carol_iam.get_user, UserName="dave") == "AccessDenied"
    assert code(carol_iam.put_user_policy, UserName="carol", PolicyName="more",
                PolicyDocument=policy({"Effect": "Allow", "Action": "*", "Resource": "*"})) == "AccessDenied"
    assert code(carol_iam.list_users) == "AccessDenied"
    # an explicit Deny wins over the Allow
    iam.put_user_policy(UserName="carol", PolicyName="no-deletes", PolicyDocument=policy(
        {"Effect": "Deny", "Action": "iam:Delete*", "Resource": "*"}))
    assert code(carol_iam.delete_access_key, AccessKeyId=second["AccessKeyId"]) == "AccessDenied"
    # a user allowed iam:* administers
    iam.put_user_policy(UserName="dave", PolicyName="iam-admin", PolicyDocument=policy(
        {"Effect": "Allow", "Action": "iam:*", "Resource": "*"}))
    dave_key = iam.create_access_key(UserName="dave")["AccessKey"]
    dave = iam_client(node, dave_key["AccessKeyId"], dave_key["SecretAccessKey"])
    dave.create_user(UserName="erin")
    assert "erin" in [u["UserName"] for u in dave.list_users()["Users"]]


def test_signatures(iam, admin_node) -> None:
    node = admin_node
    u = node.users[0]
    assert code(iam_client(node, u["access_key"], "wrong-secret-0123456789").list_users) == "SignatureDoesNotMatch"
    assert code(iam_client(node, "AKIANOSUCHKEY0000000", "x" * 40).list_users) == "InvalidClientTokenId"
    body = urlencode({"Action": "CreateUser", "Version": "2010-05-08", "UserName": "eve"})
    assert_iam_error(requests.post(node.endpoint, data=body, allow_redirects=False, timeout=10,
                                   headers={"Content-Type": "application/x-www-form-urlencoded"}),
                     "MissingAuthenticationToken")
    # what is signed is what is done: the signed form for "eve", sent with another body, creates nobody
    signed = signed_request(node, body, u)
    tampered = body.replace("eve", "mal")
    assert_iam_error(requests.post(node.endpoint, data=tampered, headers=signed, allow_redirects=False,
                                   timeout=10), "SignatureDoesNotMatch")
    assert code(iam.get_user, UserName="mal") == "NoSuchEntity"
    done = requests.post(node.endpoint, data=body, headers=signed, allow_redirects=False, timeout=10)
    assert done.status_code == 200 and b"<UserName>eve</UserName>" in done.content
    assert_iam_error(post_signed(node, "Action=Frobnicate&Version=2010-05-08", u), "InvalidAction")
    assert_iam_error(post_signed(node, "Version=2010-05-08", u), "MissingAction")
    assert_iam_error(post_signed(node, "Action=ListUsers&Action=DeleteUser", u), "InvalidInput")


def signed_request(node, body: str, user: dict, content_type: str = "application/x-www-form-urlencoded") -> dict:
    request = AWSRequest("POST", node.endpoint + "/", data=body.encode(), headers={"Content-Type": content_type})
    SigV4Auth(Credentials(user["access_key"], user["secret_key"]), "iam", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def post_signed(node, body: str | bytes, user: dict) -> requests.Response:
    data = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else body
    request = AWSRequest("POST", node.endpoint + "/", data=data,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    SigV4Auth(Credentials(user["access_key"], user["secret_key"]), "iam", "us-east-1").add_auth(request)
    return requests.post(node.endpoint + "/", data=data, headers=dict(request.headers.items()),
                         allow_redirects=False, timeout=10)


def assert_iam_error(response: requests.Response, expected: str) -> None:
    assert response.status_code == STATUS[expected], (response.status_code, response.text)
    assert f"<Code>{expected}</Code>" in response.text and "<ErrorResponse" in response.text, response.text


@pytest.mark.parametrize("max_items", ["²", "٣", "0", "1001", "-1", "9" * 30])
def test_max_items_out_of_range_or_not_ascii_digits_is_a_validation_error(admin_node, max_items) -> None:
    response = post_signed(admin_node, urlencode({"Action": "ListUsers", "Version": "2010-05-08",
                                                  "MaxItems": max_items}), admin_node.users[0])
    assert_iam_error(response, "ValidationError")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(
    st.sampled_from(["Action", "UserName", "PolicyName", "PolicyDocument", "AccessKeyId", "Status", "MaxItems",
                     "Marker", "Version", "PathPrefix", "Path", "Tags.member.1.Key", "x"]),
    st.one_of(st.sampled_from(["CreateUser", "GetUser", "ListUsers", "DeleteUser", "CreateAccessKey",
                               "ListAccessKeys", "UpdateAccessKey", "DeleteAccessKey", "PutUserPolicy",
                               "GetUserPolicy", "ListUserPolicies", "DeleteUserPolicy", "Active", "0", "1001",
                               "{}", '{"Statement": []}', "/", "alice"]),
              st.text(max_size=40)), max_size=6),
    raw=st.one_of(st.none(), st.binary(max_size=64)))
def test_fuzzed_forms_get_iam_errors_never_a_500(admin_node, params, raw) -> None:
    """Any form a signed-in administrator sends: an IAM answer, 2xx or 4xx, never a server error."""
    body = raw if raw is not None else urlencode(params).encode()
    response = post_signed(admin_node, body, admin_node.users[0])
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert "<ErrorResponse" in response.text and "<Code>" in response.text


# -- what user policies do to S3 requests --


def test_user_policies_limit_s3_requests(iam, admin_node) -> None:
    node = admin_node
    owner = node.client(0)  # alice: no policy, the owner of "shared"
    owner.create_bucket(Bucket="shared")
    for key in ("team/a.txt", "team/b.txt", "private/c.txt"):
        owner.put_object(Bucket="shared", Key=key, Body=b"data of " + key.encode())
    _, carol, _ = new_user(iam, node, "carol")
    # without a policy, carol is what every user has been: her own buckets, nothing of alice's
    carol.create_bucket(Bucket="carols")
    carol.put_object(Bucket="carols", Key="mine", Body=b"x")
    assert s3code(carol.get_object, Bucket="shared", Key="team/a.txt") == "AccessDenied"

    # limited to reading one prefix of one bucket: that is all she can do now, in her own bucket too
    iam.put_user_policy(UserName="carol", PolicyName="team-read", PolicyDocument=policy(
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::shared/team/*"},
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::shared",
         "Condition": {"StringLike": {"s3:prefix": "team/*"}}}))
    assert carol.get_object(Bucket="shared", Key="team/a.txt")["Body"].read() == b"data of team/a.txt"
    assert s3code(carol.get_object, Bucket="shared", Key="private/c.txt") == "AccessDenied"
    assert [o["Key"] for o in carol.list_objects_v2(Bucket="shared", Prefix="team/")["Contents"]] == [
        "team/a.txt", "team/b.txt"]
    assert s3code(carol.list_objects_v2, Bucket="shared") == "AccessDenied"
    assert s3code(carol.put_object, Bucket="shared", Key="team/new", Body=b"x") == "AccessDenied"
    assert s3code(carol.put_object, Bucket="carols", Key="other", Body=b"x") == "AccessDenied"  # read-only
    assert s3code(carol.get_object, Bucket="carols", Key="mine") == "AccessDenied"
    assert s3code(carol.create_bucket, Bucket="carols-2") == "AccessDenied"
    assert s3code(carol.list_buckets) == "AccessDenied"
    assert s3code(carol.delete_bucket, Bucket="carols") == "AccessDenied"

    # an explicit Deny wins over an Allow: her policy's, or the bucket policy's Allow
    iam.put_user_policy(UserName="carol", PolicyName="not-b", PolicyDocument=policy(
        {"Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::shared/team/b.txt"}))
    owner.put_bucket_policy(Bucket="shared", Policy=policy(
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::000000000000:user/carol"}, "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::shared/*"}))
    assert s3code(carol.get_object, Bucket="shared", Key="team/b.txt") == "AccessDenied"
    # ... and an Allow from the bucket's policy grants what her own does not mention
    assert carol.get_object(Bucket="shared", Key="private/c.txt")["Body"].read() == b"data of private/c.txt"
    owner.delete_bucket_policy(Bucket="shared")
    assert s3code(carol.get_object, Bucket="shared", Key="private/c.txt") == "AccessDenied"

    # from an address range: 127.0.0.0/8 is where the tests are, 10.0.0.0/8 is not
    iam.delete_user_policy(UserName="carol", PolicyName="not-b")
    iam.put_user_policy(UserName="carol", PolicyName="team-read", PolicyDocument=policy(
        {"Effect": "Allow", "Action": "s3:*", "Resource": ["arn:aws:s3:::carols", "arn:aws:s3:::carols/*"],
         "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}))
    assert s3code(carol.get_object, Bucket="carols", Key="mine") == "AccessDenied"
    iam.put_user_policy(UserName="carol", PolicyName="team-read", PolicyDocument=policy(
        {"Effect": "Allow", "Action": "s3:*", "Resource": ["arn:aws:s3:::carols", "arn:aws:s3:::carols/*"],
         "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}}))
    assert carol.get_object(Bucket="carols", Key="mine")["Body"].read() == b"x"
    # only over HTTPS: this node speaks plain HTTP, so the Deny applies
    iam.put_user_policy(UserName="carol", PolicyName="tls-only", PolicyDocument=policy(
        {"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport":
                                                                                         "false"}}}))
    assert s3code(carol.get_object, Bucket="carols", Key="mine") == "AccessDenied"
    # policies gone: she is back to an owner's rights over her buckets
    iam.delete_user_policy(UserName="carol", PolicyName="tls-only")
    iam.delete_user_policy(UserName="carol", PolicyName="team-read")
    carol.put_object(Bucket="carols", Key="again", Body=b"y")
    assert [b["Name"] for b in carol.list_buckets()["Buckets"]] == ["carols"]


def test_acl_grants_still_apply_to_a_limited_user(iam, admin_node) -> None:
    """Another owner's ACL grant is that owner's to give: a user limited by its policies is granted by it; its
    own buckets' owner grant, though, gives it nothing its policies do not allow."""
    node = admin_node
    owner = node.client(0)
    owner.create_bucket(Bucket="public-ish")
    owner.put_object(Bucket="public-ish", Key="k", Body=b"v", ACL="authenticated-read")
    _, carol, _ = new_user(iam, node, "carol")
    carol.create_bucket(Bucket="carols", ACL="private")
    iam.put_user_policy(UserName="carol", PolicyName="nothing-much", PolicyDocument=policy(
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::elsewhere/*"}))
    assert carol.get_object(Bucket="public-ish", Key="k")["Body"].read() == b"v"
    assert s3code(carol.put_object, Bucket="carols", Key="k", Body=b"v") == "AccessDenied"


AWS = "/usr/bin/aws"


@pytest.mark.skipif(not os.access(AWS, os.X_OK), reason="the AWS CLI (Debian's awscli) is not installed")
def test_aws_cli_iam(admin_node, tmp_path) -> None:
    node = admin_node
    u = node.users[0]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": u["access_key"],
           "AWS_SECRET_ACCESS_KEY": u["secret_key"], "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_PAGER": ""}

    def aws(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([AWS, "--endpoint-url", node.endpoint, "--output", "json", *args], env=env,
                              capture_output=True, text=True, timeout=120)
        assert not check or done.returncode == 0, done.stderr
        return done

    assert json.loads(aws("iam", "create-user", "--user-name", "cli-user").stdout)["User"]["UserName"] == "cli-user"
    key = json.loads(aws("iam", "create-access-key", "--user-name", "cli-user").stdout)["AccessKey"]
    listed = json.loads(aws("iam", "list-access-keys", "--user-name", "cli-user").stdout)["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in listed] == [key["AccessKeyId"]]
    doc = policy({"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"})
    (tmp_path / "p.json").write_text(doc)
    aws("iam", "put-user-policy", "--user-name", "cli-user", "--policy-name", "list",
        "--policy-document", f"file://{tmp_path / 'p.json'}")
    got = json.loads(aws("iam", "get-user-policy", "--user-name", "cli-user", "--policy-name", "list").stdout)
    assert got["PolicyDocument"] == json.loads(doc)
    assert json.loads(aws("iam", "list-user-policies", "--user-name", "cli-user").stdout)["PolicyNames"] == ["list"]
    users = [x["UserName"] for x in json.loads(aws("iam", "list-users").stdout)["Users"]]
    assert "cli-user" in users
    # the new key, through the CLI's s3 commands: listing allowed, creating a bucket not
    env_user = {**env, "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    listed_buckets = subprocess.run([AWS, "--endpoint-url", node.endpoint, "s3api", "list-buckets"], env=env_user,
                                    capture_output=True, text=True, timeout=120)
    assert listed_buckets.returncode == 0, listed_buckets.stderr
    made = subprocess.run([AWS, "--endpoint-url", node.endpoint, "s3", "mb", "s3://cli-bucket"], env=env_user,
                          capture_output=True, text=True, timeout=120)
    assert made.returncode != 0 and "AccessDenied" in made.stderr
    failed = aws("iam", "delete-user", "--user-name", "cli-user", check=False)
    assert failed.returncode != 0 and "DeleteConflict" in failed.stderr
    aws("iam", "update-access-key", "--user-name", "cli-user", "--access-key-id", key["AccessKeyId"],
        "--status", "Inactive")
    aws("iam", "delete-access-key", "--user-name", "cli-user", "--access-key-id", key["AccessKeyId"])
    aws("iam", "delete-user-policy", "--user-name", "cli-user", "--policy-name", "list")
    aws("iam", "delete-user", "--user-name", "cli-user")
    gone = aws("iam", "get-user", "--user-name", "cli-user", check=False)
    assert gone.returncode != 0 and "NoSuchEntity" in gone.stderr
