"""What a stranger can send the admin listener (request heads, paths, presigned-URL parameters) and what an
administrator can send in a session (any JSON): a clear answer every time, and the listener and the node go on."""

from __future__ import annotations

import json
import socket
from urllib.parse import quote, urlsplit

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.admin.helpers import admin_settings, http_get, session, signed_url

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def admin_node(node_factory):
    return node_factory(**admin_settings())


def _exchange(node, raw: bytes) -> bytes:
    host, port = urlsplit(node.admin_endpoint).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


_token = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"), min_size=1, max_size=20)
_value = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
_path = st.one_of(st.just("/ws"), st.just("/"), st.just("/metrics"), st.just("/ready"),
                  st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=40).map(lambda p: "/" + p))
_params = st.dictionaries(st.sampled_from(["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                                           "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Content-Sha256", "x"]),
                          _value, max_size=7)


@FUZZ
@given(method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "BREW"]), path=_path,
       params=_params, headers=st.lists(st.tuples(_token, _value), max_size=6), upgrade=st.booleans())
def test_any_request_gets_a_clear_answer(admin_node, method, path, params, headers, upgrade) -> None:
    query = "&".join(f"{quote(k)}={quote(v)}" for k, v in params.items())
    target = path + ("?" + query if query else "")
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    if upgrade:
        lines += ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]
    lines += [f"{name}: {value}" for name, value in headers]
    answer = _exchange(admin_node, ("\r\n".join(lines) + "\r\n\r\n").encode())
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 "), answer[:200]
    status = int(status_line.split()[1])
    assert status in (200, 400, 401, 404, 405, 413, 503), answer[:300]
    if path == "/ws" and upgrade and method == "GET":
        assert status in (400, 401), answer[:300]  # never a session without a valid signature


@FUZZ
@given(raw=st.binary(max_size=600))
def test_any_bytes_get_an_answer_or_a_close(admin_node, raw) -> None:
    answer = _exchange(admin_node, raw)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 "), answer[:200]
    assert http_get(admin_node, "/health")[0] == 200


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=25)
ops = st.sampled_from(["ping", "status", "agents.list", "agents.drain", "agents.remove", "users.create",
                       "users.delete", "buckets.usage", "subscribe", "unsubscribe", "repair.pause", "scrub.resume",
                       "gc.status", "config", "nope"])


@FUZZ
@given(messages=st.lists(st.one_of(json_values, st.fixed_dictionaries(
    {"id": json_values, "op": st.one_of(ops, json_values), "args": json_values})), min_size=1, max_size=8))
async def test_any_message_gets_a_reply(admin_node, messages) -> None:
    async with session(admin_node) as s:
        for message in messages:
            await s.ws.send_message(json.dumps(message))
            with trio.fail_after(20):
                while True:
                    reply = json.loads(await s.ws.get_message())
                    if "event" not in reply:
                        break
            assert set(reply) == {"id", "ok", "result"} if reply["ok"] else {"id", "ok", "error"}, reply
            if not reply["ok"]:
                assert reply["error"]["code"] in ("bad_message", "unknown_op", "bad_args", "no_such_agent",
                                                  "no_such_user", "no_such_bucket", "user_exists", "not_cluster",
                                                  "not_drained"), reply
        await s.ok("repair.resume")  # leave nothing paused for the next example
        await s.ok("scrub.resume")
        assert (await s.ok("ping"))["pong"] is True


def test_a_stranger_cannot_reach_a_session_url_of_the_s3_listener(admin_node) -> None:
    # the admin URL on the S3 port is an S3 request for a bucket "ws": refused there, never an admin session
    url = urlsplit(signed_url(admin_node))
    s3 = urlsplit(admin_node.endpoint)
    with socket.create_connection((s3.hostname, s3.port), timeout=30) as sock:
        sock.sendall(f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: {s3.netloc}\r\nConnection: close\r\n\r\n"
                     .encode())
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    assert out.startswith(b"HTTP/1.1 4"), out[:200]
    assert b"trio-sos-admin" in out or b"AuthorizationQueryParametersError" in out
