"""No request a stranger can send gets a 500: hypothesis drives every query parameter, header, XML document and
POST policy field the node parses, signed (so that it reaches the handlers) and anonymous, against a real node.

Every response must be below 500, or a 501 for what is not built. The node's log is checked when the test ends
(``tests/procs.py``): a traceback or an ERROR line there fails the test too, which catches a 500 whose answer never
made it out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import types
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_sos.auth.sigv4 import derive_signing_key

from .rawhttp import head_bytes, sign

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])

# Numbers the way strangers write them: Unicode digits, superscripts, huge, negative, float, hex, padded.
NASTY_NUMBERS = ["", "0", "-1", "1", "2", "5", "10000", "10001", "²", "¹", "٣", "１", "1e3", "0x10", " 1", "1 ",
                 "+1", "9" * 20, "9" * 5000, "2147483647", "2147483648", "-2147483649", "-0", "nan", "∞", "1.5",
                 "00000000000000000000001"]
NASTY_TEXT = ["", " ", "a", "*", "%", "%zz", "\x00", "\x7f", "é", "\U0001f600", "/", "//", "..", "a/b", "-", "=",
              "&", ",", ";", '"', "'", "<", "]]>", "null", "true", "STANDARD", "bytes=0-1", "bytes=-5",
              "bytes=5-", "bytes=1-0", "bytes=0-1,3-4", "Mon, 01 Jan 2001 00:00:00 GMT", "20130524T000000Z",
              "Thu, 31 Dec 9999 23:59:59 GMT", "Sat, 01 Jan 0001 00:00:00 GMT", "bucket/key", "/fzz/obj",
              "fz/obj?versionId=x", "COPY", "REPLACE", "ENABLED", "CRC32", "CRC64NVME", "SHA256", "MD5",
              "FULL_OBJECT", "COMPOSITE", "AAAA", "1B2M2Y8AsgTpgAmY7PhCfg==", "public-read", "uri=x",
              'id="alice"', "emailAddress=nobody@example.com", "k=v&k=w", "url", "x" * 300]
LATIN1 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=24)


def nasty(latin1_only: bool = False) -> st.SearchStrategy[str]:
    base = st.sampled_from(NASTY_NUMBERS + NASTY_TEXT)
    free = LATIN1 if latin1_only else st.text(max_size=24)
    if latin1_only:
        base = base.filter(lambda v: all(0x20 <= ord(c) <= 0xFF and c != "\x7f" for c in v))
    return st.one_of(base, free, st.integers(-(2**70), 2**70).map(str))


QUERY_NAMES = ["partNumber", "max-keys", "max-parts", "part-number-marker", "max-uploads", "uploadId", "versionId",
               "prefix", "delimiter", "marker", "continuation-token", "start-after", "encoding-type", "list-type",
               "fetch-owner", "key-marker", "upload-id-marker", "version-id-marker", "response-content-type",
               "response-expires", "response-content-disposition", "x-id", "acl", "tagging", "cors", "uploads",
               "location", "versioning", "versions", "policy", "lifecycle", "attributes", "delete"]
HEADER_NAMES = ["Range", "x-amz-copy-source", "x-amz-copy-source-range", "If-Match", "If-None-Match",
                "If-Modified-Since", "If-Unmodified-Since", "x-amz-copy-source-if-match",
                "x-amz-copy-source-if-none-match", "x-amz-copy-source-if-modified-since",
                "x-amz-copy-source-if-unmodified-since", "x-amz-acl", "x-amz-grant-read", "x-amz-grant-full-control",
                "x-amz-tagging", "x-amz-meta-a", "Content-MD5", "x-amz-checksum-crc32", "x-amz-checksum-sha256",
                "x-amz-checksum-crc64nvme", "x-amz-checksum-algorithm", "x-amz-checksum-type",
                "x-amz-checksum-mode", "x-amz-sdk-checksum-algorithm", "x-amz-metadata-directive",
                "x-amz-tagging-directive", "Content-Type", "Cache-Control", "Expires", "Content-Encoding",
                "Content-Disposition", "x-amz-decoded-content-length", "x-amz-trailer", "Origin",
                "Access-Control-Request-Method", "Access-Control-Request-Headers", "x-amz-storage-class",
                "x-amz-expected-bucket-owner", "x-amz-server-side-encryption", "x-amz-website-redirect-location"]


def read_answer(sock: socket.socket, method: str) -> tuple[int, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise AssertionError(f"connection closed without an answer: {buf[:200]!r}")
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    if status == 100:
        return read_answer_after(rest, sock, method)
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = 0 if method == "HEAD" or status in (204, 304) else int(headers.get("content-length", "0"))
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            break
        rest += data
    return status, rest[:length]


def read_answer_after(rest: bytes, sock: socket.socket, method: str) -> tuple[int, bytes]:
    class Replay:
        def __init__(self) -> None:
            self.pending = rest

        def recv(self, n: int) -> bytes:
            if self.pending:
                out, self.pending = self.pending, b""
                return out
            return sock.recv(n)

    return read_answer(Replay(), method)  # type: ignore[arg-type]


def send(node, method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str], body: bytes = b"",
         *, signed: bool = True) -> tuple[int, bytes]:
    target = path + ("?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" if v != "" else quote(k, safe="")
                                    for k, v in query) if query else "")
    headers = dict(headers)
    if body or method in ("PUT", "POST"):
        headers["Content-Length"] = str(len(body))
    if signed:
        headers = sign(node, method, target, headers)
    else:
        headers.setdefault("Host", f"127.0.0.1:{node.port}")
    with socket.create_connection(("127.0.0.1", node.port), timeout=30) as sock:
        sock.sendall(head_bytes(method, target, headers) + body)
        return read_answer(sock, method)


def assert_no_server_error(status: int, answer: bytes, what: str) -> None:
    assert status < 500 or status == 501, f"{status} for {what}: {answer[:500]!r}"


@pytest.fixture
def fz(node):
    """A node with a public bucket "fz" holding a small object, a two-part multipart object and an open upload."""
    s3 = node.client()
    s3.create_bucket(Bucket="fzz", ACL="public-read")
    s3.put_object(Bucket="fzz", Key="obj", Body=b"0123456789" * 10, ACL="public-read")
    up = s3.create_multipart_upload(Bucket="fzz", Key="mp")["UploadId"]
    etags = [s3.upload_part(Bucket="fzz", Key="mp", UploadId=up, PartNumber=n, Body=os.urandom(size))["ETag"]
             for n, size in ((1, 5 << 20), (2, 1000))]
    s3.complete_multipart_upload(Bucket="fzz", Key="mp", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    upload_id = s3.create_multipart_upload(Bucket="fzz", Key="upkey")["UploadId"]
    s3.upload_part(Bucket="fzz", Key="upkey", UploadId=upload_id, PartNumber=1, Body=b"part one")
    s3.put_bucket_cors(Bucket="fzz", CORSConfiguration={"CORSRules": [
        {"AllowedMethods": ["GET", "PUT"], "AllowedOrigins": ["*"], "AllowedHeaders": ["*"]}]})
    return types.SimpleNamespace(node=node, upload_id=upload_id, cors_bucket=False)


# Each operation with the query parameters and headers its handler reads: the sweep below sends every nasty value
# in each of them, one at a time, so no parser is left to chance.
GET_HEADERS = ["Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "x-amz-checksum-mode"]
RESPONSE_PARAMS = ["response-content-type", "response-expires", "response-content-disposition",
                   "response-cache-control", "response-content-language", "response-content-encoding"]
LIST_PARAMS = ["max-keys", "prefix", "delimiter", "encoding-type"]
PUT_HEADERS = ["Content-MD5", "x-amz-checksum-crc32", "x-amz-checksum-crc32c", "x-amz-checksum-sha1",
               "x-amz-checksum-sha256", "x-amz-checksum-crc64nvme", "x-amz-acl", "x-amz-grant-read", "x-amz-tagging",
               "x-amz-meta-a", "If-Match", "If-None-Match", "Content-Type", "Cache-Control", "Expires",
               "Content-Encoding", "x-amz-storage-class", "x-amz-sdk-checksum-algorithm"]
COPY_HEADERS = ["x-amz-copy-source", "x-amz-copy-source-if-match", "x-amz-copy-source-if-none-match",
                "x-amz-copy-source-if-modified-since", "x-amz-copy-source-if-unmodified-since",
                "x-amz-metadata-directive", "x-amz-tagging-directive", "x-amz-acl"]


def operations(upload_id: str) -> list[tuple[str, str, list[tuple[str, str]], dict[str, str], bytes,
                                           list[str], list[str]]]:
    """(method, path, query, headers, body, query parameters read, headers read)."""
    return [
        ("GET", "/fzz/obj", [], {}, b"", ["partNumber", "versionId", *RESPONSE_PARAMS], GET_HEADERS),
        ("HEAD", "/fzz/obj", [], {}, b"", ["partNumber", "versionId"], GET_HEADERS),
        ("GET", "/fzz/mp", [("partNumber", "1")], {}, b"", ["partNumber"], GET_HEADERS),
        ("GET", "/fzz", [], {}, b"", [*LIST_PARAMS, "marker"], []),
        ("GET", "/fzz", [("list-type", "2")], {}, b"",
         [*LIST_PARAMS, "continuation-token", "start-after", "fetch-owner", "list-type"], []),
        ("GET", "/fzz", [("uploads", "")], {}, b"", [*LIST_PARAMS, "max-uploads", "key-marker", "upload-id-marker"],
         []),
        ("GET", "/fzz", [("versions", "")], {}, b"", [*LIST_PARAMS, "key-marker", "version-id-marker"], []),
        ("GET", "/fzz/upkey", [("uploadId", upload_id)], {}, b"", ["max-parts", "part-number-marker", "uploadId"],
         []),
        ("PUT", "/fzz/new", [], {}, b"fresh body", [], PUT_HEADERS),
        ("PUT", "/fzz/upkey", [("uploadId", upload_id), ("partNumber", "2")], {}, b"second part",
         ["partNumber", "uploadId"], ["Content-MD5", "x-amz-checksum-crc32", "x-amz-checksum-sha256"]),
        ("PUT", "/fzz/copied", [], {"x-amz-copy-source": "fzz/obj"}, b"", [], COPY_HEADERS),
        ("PUT", "/fzz/upkey", [("uploadId", upload_id), ("partNumber", "3")],
         {"x-amz-copy-source": "fzz/obj", "x-amz-copy-source-range": "bytes=0-9"}, b"", ["partNumber"],
         ["x-amz-copy-source-range", "x-amz-copy-source", "x-amz-copy-source-if-match"]),
        ("POST", "/fzz/created", [("uploads", "")], {}, b"", [],
         ["x-amz-checksum-algorithm", "x-amz-checksum-type", "x-amz-acl", "x-amz-tagging", "x-amz-grant-read"]),
        ("GET", "/fzz", [("location", "")], {}, b"", [], []),
        ("GET", "/fzz", [("acl", "")], {}, b"", [], []),
        ("GET", "/fzz/obj", [("acl", "")], {}, b"", [], []),
        ("GET", "/fzz/obj", [("tagging", "")], {}, b"", [], []),
        ("GET", "/fzz", [("cors", "")], {}, b"", [], []),
        ("DELETE", "/fzz/nokey", [], {}, b"", [], []),
        ("OPTIONS", "/fzz/obj", [], {"Origin": "https://example.com", "Access-Control-Request-Method": "GET"}, b"",
         [], ["Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"]),
        ("GET", "/", [], {}, b"", [], []),
    ]


SWEEP_VALUES = NASTY_NUMBERS + ["bytes=²-5", "bytes=0-" + "9" * 5000, "bytes=" + "9" * 5000 + "-",
                                "bytes=-" + "9" * 5000, "bytes=٣-٤", "Thu, 31 Dec 9999 23:59:59 GMT",
                                "Sat, 01 Jan 0001 00:00:00 GMT", "fzz/obj?versionId=²", "%ff%fe", "x" * 300]


def test_sweep_every_parameter_and_header(fz) -> None:
    """Every nasty value in every query parameter and header each operation reads, signed and anonymous."""
    failures = []
    for method, path, query, headers, body, params, header_names in operations(fz.upload_id):
        cases = [("q", name) for name in params] + [("h", name) for name in header_names]
        for kind, name in cases:
            for value in SWEEP_VALUES:
                if kind == "h" and not all(0x20 <= ord(c) <= 0xFF and c != "\x7f" for c in value):
                    continue
                q = [(k, v) for k, v in query if k != name] + ([(name, value)] if kind == "q" else [])
                h = dict(headers, **({name: value.strip()} if kind == "h" else {}))
                for signed in (True, False):
                    status, answer = send(fz.node, method, path, q, h, body, signed=signed)
                    if status >= 500 and status != 501:
                        failures.append((status, method, path, kind, name, value[:40], signed, answer[:200]))
    assert not failures, failures[:10]


@st.composite
def mutated_request(draw, upload_id: str):
    method, path, query, headers, body, _, _ = draw(st.sampled_from(operations(upload_id)))
    query = list(query)
    headers = dict(headers)
    for name in draw(st.lists(st.sampled_from(QUERY_NAMES), max_size=4, unique=True)):
        query = [(k, v) for k, v in query if k != name] + [(name, draw(nasty()))]
    for name in draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=4, unique=True)):
        headers[name] = draw(nasty(latin1_only=True)).strip()
    return method, path, query, headers, body


@FUZZ
@given(data=st.data())
def test_signed_requests_with_nasty_parameters(fz, data) -> None:
    method, path, query, headers, body = data.draw(mutated_request(fz.upload_id))
    status, answer = send(fz.node, method, path, query, headers, body)
    assert_no_server_error(status, answer, f"{method} {path} {query} {headers}")


@FUZZ
@given(data=st.data())
def test_anonymous_requests_with_nasty_parameters(fz, data) -> None:
    method, path, query, headers, body = data.draw(mutated_request(fz.upload_id))
    status, answer = send(fz.node, method, path, query, headers, body, signed=False)
    assert_no_server_error(status, answer, f"anonymous {method} {path} {query} {headers}")


XML_NAMES = ["AccessControlPolicy", "Owner", "ID", "DisplayName", "AccessControlList", "Grant", "Grantee",
             "Permission", "URI", "EmailAddress", "Tagging", "TagSet", "Tag", "Key", "Value", "CORSConfiguration",
             "CORSRule", "AllowedMethod", "AllowedOrigin", "AllowedHeader", "ExposeHeader", "MaxAgeSeconds",
             "Delete", "Object", "Quiet", "VersionId", "CompleteMultipartUpload", "Part", "PartNumber", "ETag",
             "ChecksumCRC32", "ChecksumSHA256", "CreateBucketConfiguration", "LocationConstraint",
             "PublicAccessBlockConfiguration", "BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
             "RestrictPublicBuckets", "OwnershipControls", "Rule", "ObjectOwnership", "BucketOwnerEnforced", "true",
             "x"]
XML_ROOTS = {"acl": "AccessControlPolicy", "tagging": "Tagging", "cors": "CORSConfiguration", "delete": "Delete",
             "complete": "CompleteMultipartUpload", "create": "CreateBucketConfiguration",
             "publicAccessBlock": "PublicAccessBlockConfiguration", "ownershipControls": "OwnershipControls"}


def xml_escape(text: str) -> str:
    return "".join(c for c in text if c in "\t\n\r" or 0x20 <= ord(c) <= 0xD7FF or 0xE000 <= ord(c) <= 0xFFFD
                   ).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def element(name: str, children: list[str], text: str, typed: bool) -> str:
    attrs = (' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="' +
             ("CanonicalUser" if "ID" in "".join(children) else "Group") + '"') if typed else ""
    return f"<{name}{attrs}>{''.join(children) or xml_escape(text)}</{name}>"


xml_tree = st.recursive(
    st.builds(lambda n, t: element(n, [], t, False), st.sampled_from(XML_NAMES), nasty()),
    lambda kids: st.builds(element, st.sampled_from(XML_NAMES), st.lists(kids, max_size=5), st.just(""),
                           st.booleans()),
    max_leaves=25,
)


@st.composite
def xml_document(draw, kind: str) -> bytes:
    children = draw(st.lists(xml_tree, max_size=6))
    ns = draw(st.sampled_from(['', ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"']))
    root = XML_ROOTS[kind] if draw(st.integers(0, 9)) else draw(st.sampled_from(XML_NAMES))
    doc = f'<?xml version="1.0" encoding="UTF-8"?><{root}{ns}>{"".join(children)}</{root}>'.encode()
    if draw(st.integers(0, 9)) == 0:  # sometimes cut short or corrupted
        cut = draw(st.integers(0, len(doc)))
        doc = doc[:cut] + draw(st.binary(max_size=8))
    return doc


@FUZZ
@given(data=st.data(), kind=st.sampled_from(sorted(XML_ROOTS)))
def test_xml_documents(fz, data, kind: str) -> None:
    doc = data.draw(xml_document(kind))
    md5 = {"Content-MD5": base64.b64encode(hashlib.md5(doc).digest()).decode()}
    method, path, query, headers = {
        "acl": ("PUT", "/fzz/obj", [("acl", "")], {}),
        "tagging": ("PUT", "/fzz/obj", [("tagging", "")], {}),
        "cors": ("PUT", "/fzz-cors", [("cors", "")], {}),
        "delete": ("POST", "/fzz", [("delete", "")], md5),
        "complete": ("POST", "/fzz/upkey", [("uploadId", fz.upload_id)], {}),
        "create": ("PUT", f"/fzz-{uuid.uuid4().hex[:10]}", [], {}),
        "publicAccessBlock": ("PUT", "/fzz-cors", [("publicAccessBlock", "")], {}),
        "ownershipControls": ("PUT", "/fzz-cors", [("ownershipControls", "")], {}),
    }[kind]
    if kind in ("cors", "publicAccessBlock", "ownershipControls") and not fz.cors_bucket:
        fz.node.client().create_bucket(Bucket="fzz-cors")
        fz.cors_bucket = True
    status, answer = send(fz.node, method, path, query, headers, doc)
    assert_no_server_error(status, answer, f"{kind}: {doc[:300]!r}")
    if kind == "acl" and status == 200:  # keep the fixture's object readable for the other examples
        fz.node.client().put_object_acl(Bucket="fzz", Key="obj", ACL="public-read")


json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.floats(allow_nan=False), nasty(),
              st.just(1e308), st.just(-0.0)),
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(nasty(), kids, max_size=4)),
    max_leaves=20,
)
conditions = st.lists(st.one_of(
    st.builds(lambda lo, hi: ["content-length-range", lo, hi], json_value, json_value),
    st.builds(lambda op, name, v: [op, name, v], st.sampled_from(["eq", "starts-with", "EQ", "lt", ""]),
              st.sampled_from(["$key", "$bucket", "$Content-Type", "$x-amz-meta-a", "key", "$"]), json_value),
    st.dictionaries(st.sampled_from(["bucket", "key", "acl", "x-amz-meta-a"]), json_value, min_size=1, max_size=1),
    json_value,
), max_size=5)
policies = st.one_of(
    json_value,
    st.fixed_dictionaries({"expiration": st.one_of(
        st.just((datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")), nasty(), json_value,
        st.sampled_from(["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "2030-01-01"])),
        "conditions": st.one_of(conditions, json_value)}),
)


@FUZZ
@given(policy=policies, meta_size=st.sampled_from([0, 10, 2048, 3000]), extra=st.dictionaries(
    st.sampled_from(["x-amz-meta-a", "acl", "success_action_status", "success_action_redirect", "Content-Type",
                     "x-amz-storage-class", "tagging"]), nasty(), max_size=3))
def test_post_policies(fz, policy, meta_size: int, extra: dict[str, str]) -> None:
    """Browser-form uploads whose signed policy is any JSON at all (lists, 1e400-like numbers, nesting)."""
    u = fz.node.users[0]
    date = datetime.now(UTC).strftime("%Y%m%d")
    credential = f"{u['access_key']}/{date}/us-east-1/s3/aws4_request"
    try:
        text = json.dumps(policy)
    except ValueError:
        text = "[]"
    encoded = base64.b64encode(text.encode()).decode()
    signature = hmac.new(derive_signing_key(u["secret_key"], date, "us-east-1", "s3"), encoded.encode(),
                         "sha256").hexdigest()
    fields = {"key": "posted/${filename}", "x-amz-algorithm": "AWS4-HMAC-SHA256", "x-amz-credential": credential,
              "x-amz-date": date + "T000000Z", "policy": encoded, "x-amz-signature": signature, **extra}
    if meta_size:
        fields["x-amz-meta-big"] = "m" * meta_size
    boundary = "fuzzboundary" + uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{n}"\r\n\r\n{v}\r\n' for n, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f.txt"\r\n'
                 "Content-Type: text/plain\r\n\r\nfile body\r\n")
    body = ("".join(parts) + f"--{boundary}--\r\n").encode("utf-8", "surrogatepass")
    status, answer = send(fz.node, "POST", "/fzz", [], {"Content-Type": f"multipart/form-data; boundary={boundary}"},
                          body, signed=False)
    assert_no_server_error(status, answer, f"policy {text[:300]} extra {extra}")
    if meta_size > 2048:
        assert status >= 400, answer  # the 2 KiB user-metadata limit holds for forms too


policy_documents = st.one_of(
    json_value,
    st.fixed_dictionaries({"Version": st.one_of(st.just("2012-10-17"), json_value), "Statement": st.one_of(
        json_value, st.lists(st.fixed_dictionaries({
            "Effect": st.one_of(st.sampled_from(["Allow", "Deny"]), json_value),
            "Principal": st.one_of(st.just("*"), st.just({"AWS": "arn:aws:iam::000000000000:user/bob"}),
                                   json_value),
            "Action": st.one_of(st.sampled_from(["s3:*", "s3:GetObject", "s3:Get*", "*"]), json_value),
            "Resource": st.one_of(st.sampled_from(["arn:aws:s3:::fzz-cors", "arn:aws:s3:::fzz-cors/*"]),
                                  json_value),
            "Condition": st.one_of(json_value, st.dictionaries(
                st.sampled_from(["StringLike", "IpAddress", "DateLessThan", "Null", "ForAllValues:StringEquals",
                                 "NumericLessThanIfExists", "Bool"]),
                st.dictionaries(st.sampled_from(["aws:SourceIp", "s3:prefix", "aws:CurrentTime",
                                                 "s3:ExistingObjectTag/k", "aws:SecureTransport"]), json_value,
                                max_size=2), max_size=2)),
        }), max_size=3))}),
)


@FUZZ
@given(document=policy_documents)
def test_bucket_policies(fz, document) -> None:
    """PutBucketPolicy with any JSON, then a read under it: a policy or MalformedPolicy, and never a 5xx."""
    if not fz.cors_bucket:
        fz.node.client().create_bucket(Bucket="fzz-cors")
        fz.cors_bucket = True
    try:
        text = json.dumps(document)
    except ValueError:
        text = "{}"
    status, answer = send(fz.node, "PUT", "/fzz-cors", [("policy", "")], {}, text.encode())
    assert_no_server_error(status, answer, f"policy {text[:300]}")
    status, answer = send(fz.node, "GET", "/fzz-cors/k", [], {}, b"", signed=False)
    assert_no_server_error(status, answer, f"read under policy {text[:300]}")
    status, answer = send(fz.node, "DELETE", "/fzz-cors", [("policy", "")], {}, b"")
    assert status == 204, answer

