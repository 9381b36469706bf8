"""Each integer and date a request carries is parsed strictly, and answered with S3's error for its parameter —
never a 500 (the inputs below each gave a 500 with a traceback before). The random sweep of ``test_fuzz.py``
covers the rest; this file pins the error each one gets."""

from __future__ import annotations

import base64
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError
from hypothesis import example, given
from hypothesis import strategies as st

from trio_sos.auth.sigv4 import derive_signing_key
from trio_sos.s3 import params
from trio_sos.s3.ranges import Unsatisfiable, parse_range

from .test_fuzz import fz, send  # noqa: F401  (fixture)

SUPERSCRIPT_TWO = "²"
HUGE = "9" * 5000


@given(st.text(max_size=30))
@example("²")
@example("٣")
@example("１")
@example(HUGE)
@example("-1")
@example("+1")
@example(" 1")
def test_uint_takes_ascii_digits_only(text: str) -> None:
    value = params.uint(text)
    if value is None:
        assert not (text.isascii() and text.isdigit() and len(text) <= params.MAX_DIGITS)
    else:
        assert text.isascii() and text.isdigit() and value == int(text)


@given(st.text(alphabet="0123456789-=bytes ²٣", max_size=40), st.integers(0, 10**12))
@example("bytes=0-" + HUGE, 100)
@example("bytes=" + HUGE + "-", 100)
@example("bytes=-" + HUGE, 100)
@example("bytes=²-5", 100)
@example("bytes=٣-٤", 100)
def test_range_parser_never_raises_but_unsatisfiable(header: str, size: int) -> None:
    try:
        selected = parse_range(header, size)
    except Unsatisfiable:
        return
    if selected is not None:
        start, end = selected
        assert 0 <= start < end <= size


def code_of(answer: bytes) -> str:
    return answer.split(b"<Code>", 1)[1].split(b"</Code>", 1)[0].decode()


@pytest.mark.parametrize(("method", "path", "query", "headers", "status", "code"), [
    ("GET", "/fzz/obj", [], {"Range": "bytes=" + SUPERSCRIPT_TWO + "-5"}, 200, None),  # not a range: ignored
    ("GET", "/fzz/obj", [], {"Range": "bytes=0-" + HUGE}, 206, None),  # to the end
    ("GET", "/fzz/obj", [], {"Range": "bytes=" + HUGE + "-"}, 416, "InvalidRange"),
    ("GET", "/fzz/obj", [("partNumber", SUPERSCRIPT_TWO)], {}, 400, "InvalidArgument"),
    ("GET", "/fzz/obj", [("partNumber", HUGE)], {}, 400, "InvalidArgument"),
    ("GET", "/fzz", [("max-keys", SUPERSCRIPT_TWO)], {}, 400, "InvalidArgument"),
    ("GET", "/fzz", [("max-keys", HUGE)], {}, 400, "InvalidArgument"),
    ("GET", "/fzz", [("uploads", ""), ("max-uploads", SUPERSCRIPT_TWO)], {}, 400, "InvalidArgument"),
    ("GET", "/fzz", [("uploads", ""), ("max-uploads", HUGE)], {}, 400, "InvalidArgument"),
    ("GET", "/fzz/upkey", [("uploadId", "UPLOAD"), ("max-parts", SUPERSCRIPT_TWO)], {}, 400, "InvalidArgument"),
    ("GET", "/fzz/upkey", [("uploadId", "UPLOAD"), ("part-number-marker", HUGE)], {}, 400, "InvalidArgument"),
    ("PUT", "/fzz/upkey", [("uploadId", "UPLOAD"), ("partNumber", SUPERSCRIPT_TWO)], {}, 400, "InvalidArgument"),
    ("PUT", "/fzz/upkey", [("uploadId", "UPLOAD"), ("partNumber", "1")],
     {"x-amz-copy-source": "fzz/obj", "x-amz-copy-source-range": "bytes=0-" + HUGE}, 416, "InvalidRange"),
    ("PUT", "/fzz/upkey", [("uploadId", "UPLOAD"), ("partNumber", "1")],
     {"x-amz-copy-source": "fzz/obj", "x-amz-copy-source-range": "bytes=" + SUPERSCRIPT_TWO + "-3"}, 400,
     "InvalidArgument"),
    ("GET", "/fzz/obj", [("response-content-type", "a\r\nSet-Cookie: x")], {}, 400, "InvalidArgument"),
])
def test_strict_numbers(fz, method, path, query, headers, status, code) -> None:  # noqa: F811
    query = [(k, fz.upload_id if v == "UPLOAD" else v) for k, v in query]
    got, answer = send(fz.node, method, path, query, headers, b"x" if method == "PUT" and not headers else b"")
    assert got == status, answer
    if code:
        assert code_of(answer) == code


@pytest.mark.parametrize(("number", "code"), [(SUPERSCRIPT_TWO, "MalformedXML"), (HUGE, "MalformedXML"),
                                              ("0", "InvalidPart"), ("10001", "InvalidPart")])
def test_complete_part_number(fz, number: str, code: str) -> None:  # noqa: F811
    doc = (f"<CompleteMultipartUpload><Part><PartNumber>{number}</PartNumber><ETag>x</ETag></Part>"
           "</CompleteMultipartUpload>").encode()
    status, answer = send(fz.node, "POST", "/fzz/upkey", [("uploadId", fz.upload_id)], {}, doc)
    assert status == 400 and code_of(answer) == code, answer


@pytest.mark.parametrize("age", [SUPERSCRIPT_TWO, HUGE, "1.5", "99999999999"])
def test_cors_max_age(fz, age: str) -> None:  # noqa: F811
    fz.node.client().create_bucket(Bucket="ages")
    doc = ("<CORSConfiguration><CORSRule><AllowedMethod>GET</AllowedMethod><AllowedOrigin>*</AllowedOrigin>"
           f"<MaxAgeSeconds>{age}</MaxAgeSeconds></CORSRule></CORSConfiguration>").encode()
    status, answer = send(fz.node, "PUT", "/ages", [("cors", "")], {}, doc)
    assert status == 400 and code_of(answer) == "MalformedXML", answer


def post_form(fz, policy_json: str) -> tuple[int, bytes]:  # noqa: F811
    u = fz.node.users[0]
    date = datetime.now(UTC).strftime("%Y%m%d")
    encoded = base64.b64encode(policy_json.encode()).decode()
    signature = hmac.new(derive_signing_key(u["secret_key"], date, "us-east-1", "s3"), encoded.encode(),
                         "sha256").hexdigest()
    fields = {"key": "posted", "x-amz-algorithm": "AWS4-HMAC-SHA256", "policy": encoded,
              "x-amz-credential": f"{u['access_key']}/{date}/us-east-1/s3/aws4_request", "x-amz-signature": signature}
    body = "".join(f'--B\r\nContent-Disposition: form-data; name="{n}"\r\n\r\n{v}\r\n' for n, v in fields.items())
    body += '--B\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\ndata\r\n--B--\r\n'
    return send(fz.node, "POST", "/fzz", [], {"Content-Type": "multipart/form-data; boundary=B"}, body.encode(),
                signed=False)


EXPIRES = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("policy", [
    "[]", "null", "1e400", '"text"',
    json.dumps({"expiration": EXPIRES, "conditions": [["content-length-range", 0, 0]]}).replace("0]", "1e400]"),
    json.dumps({"expiration": EXPIRES, "conditions": [["content-length-range", True, 5]]}),
    json.dumps({"expiration": EXPIRES, "conditions": [["content-length-range", 10, 5]]}),
    json.dumps({"expiration": 5, "conditions": []}),
    json.dumps({"expiration": "0001-01-01T00:00:00+05:00", "conditions": []}),
    "[" * 50_000 + "]" * 50_000,
])
def test_post_policy_shapes(fz, policy: str) -> None:  # noqa: F811
    status, answer = post_form(fz, policy)
    assert status == 400 and code_of(answer) == "MalformedPOSTRequest", answer


def test_post_user_metadata_limit(fz) -> None:  # noqa: F811
    """PostObject once skipped the 2 KiB user-metadata limit (150 KB were stored; boto3 then could not read the
    object back)."""
    u = fz.node.users[0]
    date = datetime.now(UTC).strftime("%Y%m%d")
    policy = json.dumps({"expiration": EXPIRES, "conditions": [
        {"bucket": "fzz"}, ["starts-with", "$key", ""], ["starts-with", "$x-amz-meta-big", ""],
        {"x-amz-algorithm": "AWS4-HMAC-SHA256"}, ["starts-with", "$x-amz-credential", ""]]})
    encoded = base64.b64encode(policy.encode()).decode()
    signature = hmac.new(derive_signing_key(u["secret_key"], date, "us-east-1", "s3"), encoded.encode(),
                         "sha256").hexdigest()
    for size, expected in ((150_000, 400), (2000, 204), (3000, 400)):
        fields = {"key": f"meta-{size}", "x-amz-algorithm": "AWS4-HMAC-SHA256", "policy": encoded,
                  "x-amz-credential": f"{u['access_key']}/{date}/us-east-1/s3/aws4_request",
                  "x-amz-signature": signature, "x-amz-meta-big": "m" * size}
        body = "".join(f'--B\r\nContent-Disposition: form-data; name="{n}"\r\n\r\n{v}\r\n' for n, v in fields.items())
        body += '--B\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\ndata\r\n--B--\r\n'
        status, answer = send(fz.node, "POST", "/fzz", [], {"Content-Type": "multipart/form-data; boundary=B"},
                              body.encode(), signed=False)
        assert status == expected, answer
    assert code_of(answer) == "MetadataTooLarge"
    s3 = fz.node.client()
    assert s3.head_object(Bucket="fzz", Key="meta-2000")["Metadata"] == {"big": "m" * 2000}
    for size in (3000, 150_000):
        with pytest.raises(ClientError):
            s3.head_object(Bucket="fzz", Key=f"meta-{size}")

