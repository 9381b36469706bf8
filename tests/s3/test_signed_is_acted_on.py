"""What is signed is exactly what is acted on: headers a presigned URL did not sign change nothing, a signed header
cannot be split into two to make a handler read half of it, and repeated query parameters are refused.

Each attack here worked before: an anonymously readable copy of a private object was made with a presigned PUT
URL and two unsigned headers.
"""

from __future__ import annotations

import urllib.parse

import boto3
import pytest
import requests
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from .rawhttp import connect, head_bytes, read_response, sign


def v2_client(node):
    u = node.users[0]
    return boto3.client("s3", endpoint_url=node.endpoint, region_name="us-east-1",
                        aws_access_key_id=u["access_key"], aws_secret_access_key=u["secret_key"],
                        config=Config(signature_version="s3", s3={"addressing_style": "path"},
                                      retries={"total_max_attempts": 1, "mode": "standard"}))


def anonymous(node):
    from botocore import UNSIGNED

    return boto3.client("s3", endpoint_url=node.endpoint, region_name="us-east-1",
                        config=Config(signature_version=UNSIGNED, s3={"addressing_style": "path"},
                                      retries={"total_max_attempts": 1, "mode": "standard"}))


@pytest.fixture
def setup(node):
    s3 = node.client()
    s3.create_bucket(Bucket="bkt")
    s3.put_object(Bucket="bkt", Key="public-src", Body=b"anyone may copy this")
    s3.put_object(Bucket="bkt", Key="secret", Body=b"private data")
    return s3


def test_v2_presigned_put_ignores_unsigned_acl_and_metadata_headers(node, setup) -> None:
    s3 = setup
    url = v2_client(node).generate_presigned_url(
        "put_object", Params={"Bucket": "bkt", "Key": "up", "ACL": "private", "Metadata": {"colour": "blue"}},
        ExpiresIn=300)
    assert "x-amz-acl=private" in url and "x-amz-meta-colour=blue" in url
    resp = requests.put(url, data=b"uploaded", headers={"x-amz-acl": "public-read", "x-amz-meta-colour": "red"},
                        timeout=30)
    assert resp.status_code == 200, resp.text
    head = s3.head_object(Bucket="bkt", Key="up")
    assert head["Metadata"] == {"colour": "blue"}
    with pytest.raises(ClientError) as info:
        anonymous(node).get_object(Bucket="bkt", Key="up")
    assert info.value.response["Error"]["Code"] == "AccessDenied"
    grants = s3.get_object_acl(Bucket="bkt", Key="up")["Grants"]
    assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]


def test_v2_presigned_copy_ignores_an_unsigned_copy_source(node, setup) -> None:
    s3 = setup
    url = v2_client(node).generate_presigned_url(
        "copy_object", Params={"Bucket": "bkt", "Key": "copy", "CopySource": "bkt/public-src"}, ExpiresIn=300)
    resp = requests.put(url, headers={"x-amz-copy-source": "bkt/secret"}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert s3.get_object(Bucket="bkt", Key="copy")["Body"].read() == b"anyone may copy this"
    # an x-amz-* header the URL does not carry at all is part of the string to sign: the signature fails
    resp = requests.put(url, headers={"x-amz-acl": "public-read"}, timeout=30)
    assert resp.status_code == 403 and "SignatureDoesNotMatch" in resp.text
    with pytest.raises(ClientError):
        anonymous(node).get_object(Bucket="bkt", Key="copy")


def test_v2_presigned_url_still_works_as_signed(node, setup) -> None:
    url = v2_client(node).generate_presigned_url(
        "put_object", Params={"Bucket": "bkt", "Key": "ok", "ContentType": "text/plain",
                              "Metadata": {"colour": "green"}}, ExpiresIn=300)
    assert requests.put(url, data=b"fine", timeout=30).status_code == 200
    head = setup.head_object(Bucket="bkt", Key="ok")
    assert head["ContentType"] == "text/plain" and head["Metadata"] == {"colour": "green"}


def send_split(node, method: str, path: str, name: str, signed_value: str, parts: list[str]) -> tuple[int, bytes]:
    """Sign ``name: signed_value`` (SigV4), then send it as one header per part — whose values, joined with ',',
    are what SigV4 canonicalises, so the signature still matches."""
    headers = sign(node, method, path, {name: signed_value})
    del headers[name]
    head = head_bytes(method, path, headers)[:-2] + "".join(f"{name}: {p}\r\n" for p in parts).encode() + b"\r\n"
    sock = connect(node)
    sock.sendall(head)
    status, _, body = read_response(sock)
    sock.close()
    return status, body


def test_sigv4_split_copy_source_is_refused(node, setup) -> None:
    s3 = setup
    s3.put_object(Bucket="bkt", Key="a,b", Body=b"the object the signer named")
    status, body = send_split(node, "PUT", "/bkt/dest", "x-amz-copy-source", "bkt/a,b", ["bkt/secret", "b"])
    assert status == 400 and b"InvalidArgument" in body, body
    with pytest.raises(ClientError):
        s3.head_object(Bucket="bkt", Key="dest")
    # the same request sent as signed works
    status, body = send_split(node, "PUT", "/bkt/dest", "x-amz-copy-source", "bkt/a,b", ["bkt/a,b"])
    assert status == 200, body
    assert s3.get_object(Bucket="bkt", Key="dest")["Body"].read() == b"the object the signer named"


def test_sigv4_split_range_is_refused(node, setup) -> None:
    status, body = send_split(node, "GET", "/bkt/secret", "Range", "bytes=0-1,bytes=8-11", ["bytes=0-1", "bytes=8-11"])
    assert status == 400 and b"InvalidArgument" in body, body


def test_repeated_list_valued_headers_are_joined_as_signed(node, setup) -> None:
    status, body = send_split(node, "PUT", "/bkt/meta", "x-amz-meta-tags", "a,b", ["a", "b"])
    assert status == 200, body
    assert setup.head_object(Bucket="bkt", Key="meta")["Metadata"] == {"tags": "a,b"}


def test_repeated_query_parameters_are_refused(node, setup) -> None:
    path = "/bkt/secret?response-content-type=a&response-content-type=b"
    headers = sign(node, "GET", path)
    sock = connect(node)
    sock.sendall(head_bytes("GET", path, headers))
    status, _, body = read_response(sock)
    assert status == 400 and b"InvalidArgument" in body, body


def test_sigv4_presigned_headers_in_the_query_are_applied(node, setup) -> None:
    """x-amz-* headers carried in a SigV4 presigned URL's query (as the AWS SDK for JavaScript sends them) are
    signed with the query, and applied."""
    u = node.users[0]
    url = node.endpoint + "/bkt/hoisted?" + urllib.parse.urlencode({"x-amz-acl": "public-read",
                                                                    "x-amz-meta-colour": "teal"})
    request = AWSRequest(method="PUT", url=url, headers={})
    S3SigV4QueryAuth(Credentials(u["access_key"], u["secret_key"]), "s3", "us-east-1", expires=300).add_auth(request)
    resp = requests.put(request.url, data=b"hoisted", timeout=30)
    assert resp.status_code == 200, resp.text
    assert anonymous(node).get_object(Bucket="bkt", Key="hoisted")["Body"].read() == b"hoisted"
    assert setup.head_object(Bucket="bkt", Key="hoisted")["Metadata"] == {"colour": "teal"}


@pytest.mark.parametrize("expires", [604801, 10**9])
def test_presigned_expires_beyond_a_week_is_access_denied(node, setup, expires: int) -> None:
    u = node.users[0]
    request = AWSRequest(method="GET", url=node.endpoint + "/bkt/secret", headers={})
    S3SigV4QueryAuth(Credentials(u["access_key"], u["secret_key"]), "s3", "us-east-1",
                     expires=expires).add_auth(request)
    resp = requests.get(request.url, timeout=30)
    assert resp.status_code == 403 and "<Code>AccessDenied</Code>" in resp.text, resp.text


def test_v2_presigned_far_future_expiry_is_no_500(node, setup) -> None:
    """Expires past year 9999 is a valid (if silly) V2 URL; it used to overflow a datetime."""
    url = v2_client(node).generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": "secret"},
                                                 ExpiresIn=300)
    parts = urllib.parse.urlsplit(url)
    query = [(k, "999999999999" if k == "Expires" else v) for k, v in urllib.parse.parse_qsl(parts.query)]
    resp = requests.get(parts._replace(query=urllib.parse.urlencode(query)).geturl(), timeout=30)
    assert resp.status_code == 403 and "SignatureDoesNotMatch" in resp.text  # re-dated, so no longer signed
