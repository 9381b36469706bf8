"""The HTTP layer of a real node: limits, framing errors, 100-continue after auth, chunked bodies, fuzz, shutdown."""

from __future__ import annotations

import os
import signal
import socket
import time

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.s3.rawhttp import closed, connect, head_bytes, read_response, sign


@pytest.fixture
def fast_node(node_factory):
    return node_factory(http_head_timeout=1, http_idle_timeout=5, http_body_timeout=2)


def exchange(node, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    sock = connect(node)
    try:
        sock.sendall(raw)
        return read_response(sock)
    finally:
        sock.close()


def still_serves(node) -> None:
    s3 = node.client()
    s3.list_buckets()


@pytest.mark.parametrize("raw, expected", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
    (b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"PUT /b/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 17000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"\r\n", 431),
])
def test_bad_http_is_refused_and_closed(node, raw, expected) -> None:
    sock = connect(node)
    sock.sendall(raw)
    status, headers, _ = read_response(sock)
    assert status == expected
    assert headers.get("connection") == "close" and closed(sock)
    still_serves(node)


def test_missing_content_length_on_put(node) -> None:
    node.client().create_bucket(Bucket="bkt")
    headers = sign(node, "PUT", "/bkt/k")
    headers.pop("Content-Length", None)  # not signed, so it can go
    status, _, body = exchange(node, head_bytes("PUT", "/bkt/k", headers))
    assert status == 411 and b"MissingContentLength" in body


def test_oversized_put_is_refused_before_its_body(node) -> None:
    node.client().create_bucket(Bucket="bkt")
    headers = sign(node, "PUT", "/bkt/k", {"Content-Length": str(6 << 30), "Expect": "100-continue"})
    status, _, body = exchange(node, head_bytes("PUT", "/bkt/k", headers))
    assert status == 400 and b"EntityTooLarge" in body


def test_method_not_allowed(node) -> None:
    node.client().create_bucket(Bucket="bkt")
    for method, target in [("POST", "/bkt/k"), ("PATCH", "/bkt"), ("DELETE", "/")]:
        headers = sign(node, method, target)
        status, _, body = exchange(node, head_bytes(method, target, headers))
        assert status == 405 and b"MethodNotAllowed" in body, (method, target)


def test_slow_head_times_out(fast_node) -> None:
    sock = connect(fast_node)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
    status, _, _ = read_response(sock)
    assert status == 408 and closed(sock)


def test_stalled_body_is_dropped_and_nothing_stored(fast_node) -> None:
    s3 = fast_node.client()
    s3.create_bucket(Bucket="bkt")
    headers = sign(fast_node, "PUT", "/bkt/k", {"Content-Length": "100"})
    sock = connect(fast_node)
    sock.sendall(head_bytes("PUT", "/bkt/k", headers) + b"only ten b")
    assert closed(sock)  # after http_body_timeout
    assert "Contents" not in s3.list_objects_v2(Bucket="bkt")


def test_expect_100_continue_only_after_auth(node) -> None:
    node.client().create_bucket(Bucket="bkt")
    body = os.urandom(1000)
    # a wrong signature: refused before any body is sent, without a 100 Continue
    headers = sign(node, "PUT", "/bkt/k", {"Content-Length": str(len(body)), "Expect": "100-continue"})
    headers["Authorization"] = headers["Authorization"][:-4] + "0000"
    sock = connect(node)
    sock.sendall(head_bytes("PUT", "/bkt/k", headers))
    status, _, answer = read_response(sock)
    assert status == 403 and b"SignatureDoesNotMatch" in answer
    sock.close()
    # another user's bucket: also refused before the body
    headers = sign(node, "PUT", "/bkt/k", {"Content-Length": str(len(body)), "Expect": "100-continue"}, user=1)
    sock = connect(node)
    sock.sendall(head_bytes("PUT", "/bkt/k", headers))
    status, _, answer = read_response(sock)
    assert status == 403 and b"AccessDenied" in answer
    sock.close()
    # the right one: 100 Continue, then the body, then 200
    headers = sign(node, "PUT", "/bkt/k", {"Content-Length": str(len(body)), "Expect": "100-continue"})
    sock = connect(node)
    sock.sendall(head_bytes("PUT", "/bkt/k", headers))
    status, _, _ = read_response(sock)
    assert status == 100
    sock.sendall(body)
    status, _, answer = read_response(sock)
    assert status == 200, answer
    assert node.client().get_object(Bucket="bkt", Key="k")["Body"].read() == body


def test_every_request_on_a_connection_gets_its_100_continue(node) -> None:
    """A keep-alive connection: each PUT asking for 100-continue gets one (clients otherwise wait a second)."""
    node.client().create_bucket(Bucket="bkt")
    sock = connect(node)
    for i in range(3):
        body = b"body %d" % i
        headers = sign(node, "PUT", f"/bkt/k{i}", {"Content-Length": str(len(body)), "Expect": "100-continue"})
        sock.sendall(head_bytes("PUT", f"/bkt/k{i}", headers))
        status, _, _ = read_response(sock)
        assert status == 100, i
        sock.sendall(body)
        status, headers_, _ = read_response(sock)
        assert status == 200 and headers_.get("connection") != "close"
    sock.close()


def test_chunked_transfer_encoding_upload(node) -> None:
    node.client().create_bucket(Bucket="bkt")
    body = os.urandom(300_000)
    headers = sign(node, "PUT", "/bkt/chunked", {"Transfer-Encoding": "chunked"})
    pieces = [body[i : i + 70_000] for i in range(0, len(body), 70_000)]
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    status, _, _ = exchange(node, head_bytes("PUT", "/bkt/chunked", headers) + encoded)
    assert status == 200
    assert node.client().get_object(Bucket="bkt", Key="chunked")["Body"].read() == body


def test_pipelined_large_bodies_keep_their_framing(node) -> None:
    """Large Content-Length bodies are read from the socket past h11 (1 MiB pieces): back-to-back requests in one
    send, each body signed by its SHA-256 and of a length that is no multiple of a piece, all land whole and in
    order, and the connection goes on serving."""
    node.client().create_bucket(Bucket="bkt")
    bodies = [os.urandom((1 << 20) * n + 12_345 * n) for n in (3, 1, 2)]
    raw = b"".join(head_bytes("PUT", f"/bkt/p{i}", sign(node, "PUT", f"/bkt/p{i}", body=body)) + body
                   for i, body in enumerate(bodies))
    sock = connect(node)
    sock.sendall(raw + head_bytes("GET", "/bkt/p1", sign(node, "GET", "/bkt/p1")))
    for _ in bodies:
        status, headers, answer = read_response(sock)
        assert status == 200 and headers.get("connection") != "close", answer
    status, _, got = read_response(sock)
    assert status == 200 and got == bodies[1]
    sock.close()
    s3 = node.client()
    for i, body in enumerate(bodies):
        assert s3.get_object(Bucket="bkt", Key=f"p{i}")["Body"].read() == body


def test_a_large_body_cut_short_stores_nothing(node) -> None:
    node.client().create_bucket(Bucket="bkt")
    headers = sign(node, "PUT", "/bkt/cut", {"Content-Length": str(5 << 20)})
    sock = connect(node)
    sock.sendall(head_bytes("PUT", "/bkt/cut", headers) + os.urandom(3 << 20))
    sock.close()  # 2 MiB short
    still_serves(node)
    assert "Contents" not in node.client().list_objects_v2(Bucket="bkt")


def test_keep_alive_serves_many_requests_on_one_connection(node) -> None:
    sock = connect(node)
    for _ in range(20):
        sock.sendall(head_bytes("GET", "/", sign(node, "GET", "/")))
        status, headers, _ = read_response(sock)
        assert status == 200 and headers["x-amz-request-id"] and headers["date"]
    sock.close()


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.one_of(
    st.binary(max_size=300),
    st.builds(lambda m, t, h: f"{m} {t} HTTP/1.1\r\nHost: x\r\n{h}\r\n".encode("utf-8", "surrogatepass"),
              st.sampled_from(["GET", "PUT", "HEAD", "DELETE", "POST", "OPTIONS", "BREW"]),
              st.text(min_size=1, max_size=60).map(lambda s: "/" + s.replace(" ", "%20").replace("\r", "")
                                                   .replace("\n", "")),
              st.text(max_size=80).map(lambda s: s.replace("\r", "").replace("\n", "")).map(
                  lambda s: f"X-Junk: {s}\r\n" if s else "")),
))
def test_fuzzed_requests_get_an_answer_or_a_close(node, junk: bytes) -> None:
    sock = connect(node, timeout=10)
    try:
        sock.sendall(junk)
        sock.shutdown(socket.SHUT_WR)
        try:
            status, _, _ = read_response(sock)
            assert 400 <= status < 500 or status == 501, status  # never a 500, never a success unsigned
        except EOFError:
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        sock.close()
    assert node.proc.poll() is None
    still_serves(node)


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "PUT", "HEAD", "DELETE"]),
       path=st.text(st.characters(blacklist_categories=("Cs",)), max_size=30),
       query=st.dictionaries(st.sampled_from(["list-type", "max-keys", "prefix", "delimiter", "marker", "location",
                                              "continuation-token", "encoding-type", "start-after", "x", "acl"]),
                             st.text(max_size=8), max_size=4))
def test_fuzzed_signed_s3_requests_never_fail_inside(node, method: str, path: str, query: dict) -> None:
    """Signed requests with odd paths and query parameters: an S3 answer, never an internal error."""
    from urllib.parse import quote, urlencode

    s3 = node.client()
    if not any(b["Name"] == "fuzz" for b in s3.list_buckets()["Buckets"]):
        s3.create_bucket(Bucket="fuzz")
    target = "/fuzz/" + quote(path, safe="/") + ("?" + urlencode(query) if query else "")
    headers = sign(node, method, target, {"Content-Length": "0"} if method == "PUT" else None)
    status, _, body = exchange(node, head_bytes(method, target, headers))
    assert status < 500 or status == 501, (status, body)


def upload_begun(node) -> bool:
    """Whether an upload's intent is recorded (its handler has begun to store the body)."""
    import sqlite3

    db = sqlite3.connect(node.data_dir / "meta.sqlite3", timeout=10)
    try:
        return db.execute("SELECT count(*) FROM intents").fetchone()[0] > 0
    finally:
        db.close()


def test_graceful_shutdown_finishes_in_flight_upload(node_factory) -> None:
    node = node_factory(shutdown_grace=20)
    node.client().create_bucket(Bucket="bkt")
    agent_pids = [c.pid for c in psutil.Process(node.pid).children(recursive=True)]
    assert agent_pids
    body = os.urandom(2 << 20)
    headers = sign(node, "PUT", "/bkt/k", {"Content-Length": str(len(body))})
    sock = connect(node, timeout=30)
    sent = (1 << 20) + 1000  # past the first 1 MiB piece: its chunk is being written, so the intent is recorded
    sock.sendall(head_bytes("PUT", "/bkt/k", headers) + body[:sent])
    deadline = time.monotonic() + 30
    while not upload_begun(node):  # the handler is streaming the body: the SIGTERM finds a request in flight
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(node.pid, signal.SIGTERM)
    sock.sendall(body[sent:])
    status, headers_, _ = read_response(sock)
    assert status == 200 and headers_.get("connection") == "close"
    assert node.proc.wait(30) == 0
    node.proc = None
    gone, alive = psutil.wait_procs([psutil.Process(p) for p in agent_pids if psutil.pid_exists(p)], timeout=10)
    assert not alive
    node.start()
    assert node.client().get_object(Bucket="bkt", Key="k")["Body"].read() == body
