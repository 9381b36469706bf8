"""Numbers in a configuration document a stranger sends: what ``str.isdigit`` takes but ``int`` does not ('²'),
or a doubled sign, is MalformedXML (400), never a 500 — through the real server, unsigned bodies signed by SHA-256."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tests.s3.rawhttp import connect, head_bytes, read_response, sign

BAD_NUMBERS = ["²", "--5", "٣", "-"]


def put_document(node, target: str, xml: bytes) -> tuple[int, bytes]:
    headers = sign(node, "PUT", target, {"Content-MD5": base64.b64encode(hashlib.md5(xml).digest()).decode(),
                                         "Content-Length": str(len(xml))}, body=xml)
    sock = connect(node)
    try:
        sock.sendall(head_bytes("PUT", target, headers) + xml)
        status, _, body = read_response(sock)
    finally:
        sock.close()
    return status, body


@pytest.mark.parametrize("days", BAD_NUMBERS)
def test_lifecycle_days_that_are_not_a_number(node, days) -> None:
    node.client().create_bucket(Bucket="lcnum")
    xml = ("<LifecycleConfiguration><Rule><ID>r</ID><Filter><Prefix></Prefix></Filter><Status>Enabled</Status>"
           f"<Expiration><Days>{days}</Days></Expiration></Rule></LifecycleConfiguration>").encode()
    status, body = put_document(node, "/lcnum?lifecycle", xml)
    assert status == 400 and b"<Code>MalformedXML</Code>" in body, (status, body)


@pytest.mark.parametrize("days", BAD_NUMBERS)
def test_object_lock_days_that_are_not_a_number(node, days) -> None:
    node.client().create_bucket(Bucket="locknum", ObjectLockEnabledForBucket=True)
    xml = ("<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention>"
           f"<Mode>GOVERNANCE</Mode><Days>{days}</Days></DefaultRetention></Rule></ObjectLockConfiguration>").encode()
    status, body = put_document(node, "/locknum?object-lock", xml)
    assert status == 400 and b"<Code>MalformedXML</Code>" in body, (status, body)
