"""Strangers' bytes: malformed frames, fuzz, hang-ups and crowds get an error or a closed connection, and the
agent keeps serving everyone else, without writing outside its data dir."""

from __future__ import annotations

import os
import socket
import struct

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_sos.agent import Status, open_agent_pool
from trio_sos.agent import protocol as p

from .raw import RawConn, put_frames

fuzz_settings = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])


def still_serves(agent) -> None:
    assert agent.alive()
    conn = RawConn(agent.address)
    chunk_id, body = os.urandom(16), os.urandom(1000)
    conn.sock.sendall(put_frames(1, chunk_id, body, None))
    assert conn.result(1)[0] == Status.OK
    conn.send(p.Op.GET, 2, p.get_payload(chunk_id, 0, None))
    status, _, data = conn.result(2)
    assert status == Status.OK and data == body
    conn.close()


def only_inside(agent) -> None:
    root = agent.data_dir.parent
    assert sorted(x.name for x in root.iterdir()) == ["agent.log", "data"]
    assert sorted(x.name for x in agent.data_dir.iterdir()) == ["agent-id", "chunks", "tmp"]


def test_oversized_frame_closes_that_connection(agent) -> None:
    conn = RawConn(agent.address)
    conn.sock.sendall(struct.pack(">IBBHQ", (1 << 20) + 1, p.Op.PUT_DATA, 0, 0, 7))
    op, request, payload = conn.recv_frame()
    assert op == p.Op.RESULT and request == 7 and p.split_result(payload)[0] == Status.BAD_FRAME
    assert conn.closed_by_peer()
    still_serves(agent)


def test_reserved_bits_and_missing_hello(agent) -> None:
    conn = RawConn(agent.address)
    conn.sock.sendall(struct.pack(">IBBHQ", 0, p.Op.PING, 0, 1, 3))
    assert p.split_result(conn.recv_frame()[2])[0] == Status.BAD_FRAME and conn.closed_by_peer()
    conn = RawConn(agent.address, hello=False)
    assert conn.request(p.Op.PING, 1)[0] == Status.PROTOCOL and conn.closed_by_peer()
    conn = RawConn(agent.address, hello=False)
    assert conn.request(p.Op.HELLO, 1, b"XXXX\x00\x01\x00\x01")[0] != Status.OK and conn.closed_by_peer()
    conn = RawConn(agent.address, hello=False)
    assert conn.request(p.Op.HELLO, 1, p.hello_payload(7, 9))[0] == Status.VERSION and conn.closed_by_peer()
    still_serves(agent)


def test_errors_that_keep_the_connection(agent) -> None:
    conn = RawConn(agent.address)
    assert conn.request(0x77, 2, b"junk payload")[0] == Status.UNKNOWN_OP
    for op, payload in [
        (p.Op.GET, b"\x00" * 31),
        (p.Op.STAT, b"../../../etc/passwd"),
        (p.Op.DELETE, b"\x00" * 17),
        (p.Op.LINK, b"\x00" * 31),
        (p.Op.LIST, b"\x00" * 20),
        (p.Op.PING, b"x"),
        (p.Op.PUT_BEGIN, b"../etc/passwd"),
    ]:
        assert conn.request(op, 3, payload)[0] == Status.BAD_REQUEST, op
        if op == p.Op.PUT_BEGIN:
            conn.send(p.Op.PUT_ABORT, 3)  # the failed stream still needs its end; no second RESULT comes
    assert conn.request(p.Op.PING, 4)[0] == Status.OK
    # sixteen bytes that look like a path are just an id: stored under their hex name, inside the data dir
    tricky = b"../../etc/passwd"
    conn.sock.sendall(put_frames(5, tricky, b"data", None))
    assert conn.result(5)[0] == Status.OK
    assert agent.chunk_path(tricky).read_bytes()[:4] == b"data"
    still_serves(agent)
    only_inside(agent)


def test_duplicate_request_id_and_stray_data_are_protocol_errors(agent) -> None:
    conn = RawConn(agent.address)
    conn.send(p.Op.PUT_BEGIN, 5, os.urandom(16))
    assert conn.request(p.Op.PUT_BEGIN, 5, os.urandom(16))[0] == Status.PROTOCOL
    assert conn.closed_by_peer()
    conn = RawConn(agent.address)
    assert conn.request(p.Op.PUT_DATA, 9, b"data")[0] == Status.PROTOCOL and conn.closed_by_peer()
    still_serves(agent)
    _eventually_empty(agent)  # the stream opened before the violation is dropped with its connection


def _eventually_empty(agent, timeout: float = 10.0) -> bool:
    """The agent cleans a dropped connection's PUTs when its thread sees the close: wait for that state."""
    import time

    deadline = time.monotonic() + timeout
    while agent.temp_files():
        assert time.monotonic() < deadline, f"temp files left: {agent.temp_files()}"
        time.sleep(0.01)
    return True


frames = st.builds(
    lambda length, op, flags, reserved, request, payload: struct.pack(">IBBHQ", length, op, flags, reserved, request)
    + payload,
    length=st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)),
    op=st.one_of(st.sampled_from(list(p.Op)), st.integers(0, 255)),
    flags=st.integers(0, 255),
    reserved=st.one_of(st.just(0), st.integers(0, 0xFFFF)),
    request=st.integers(0, 2**64 - 1),
    payload=st.binary(max_size=64),
)


@fuzz_settings
@given(hello=st.booleans(), stream=st.lists(st.one_of(frames, st.binary(max_size=80)), max_size=6))
def test_fuzzed_frames(agent, hello: bool, stream: list[bytes]) -> None:
    conn = RawConn(agent.address, hello=hello, timeout=5)
    try:
        conn.sock.sendall(b"".join(stream))
        conn.sock.shutdown(socket.SHUT_WR)
        # whatever it answered, it must end the connection once we stop sending (not leave it to a timeout)
        assert conn.closed_by_peer(), "the agent kept the connection open after the client's end of stream"
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        conn.close()
    still_serves(agent)


def test_hang_up_mid_frame_and_mid_put(agent) -> None:
    conn = RawConn(agent.address)
    chunk_id, body = os.urandom(16), os.urandom(300_000)
    conn.sock.sendall(put_frames(1, chunk_id, body, None)[:200_000])
    conn.close()
    _eventually_empty(agent)
    assert not agent.chunk_path(chunk_id).exists()
    still_serves(agent)
    only_inside(agent)


async def test_a_thousand_idle_connections(agent) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    socks = []
    try:
        with trio.fail_after(60):
            for _ in range(1000):
                s = trio.socket.socket()
                await s.connect(("127.0.0.1", agent.port))
                socks.append(s)
            # every one of them is served: HELLO + PING on all, concurrently
            answered = 0

            async def talk(s) -> None:
                nonlocal answered
                stream = trio.SocketStream(s)
                await stream.send_all(p.encode_frame(p.Op.HELLO, 1, p.hello_payload()) + p.encode_frame(p.Op.PING, 2))
                got = b""
                frames = []
                while len(frames) < 2:
                    data = await stream.receive_some(4096)
                    assert data, "connection closed"
                    got += data
                    while len(got) >= p.HEADER_SIZE:
                        length, op, _, _, request = p.HEADER.unpack(got[: p.HEADER_SIZE])
                        if len(got) < p.HEADER_SIZE + length:
                            break
                        frames.append((op, request, p.split_result(got[p.HEADER_SIZE : p.HEADER_SIZE + length])[0]))
                        got = got[p.HEADER_SIZE + length :]
                assert frames == [(p.Op.RESULT, 1, Status.OK), (p.Op.RESULT, 2, Status.OK)]
                answered += 1

            async with trio.open_nursery() as nursery:
                for s in socks:
                    nursery.start_soon(talk, s)
            assert answered == 1000
            async with open_agent_pool(agent.address) as pool:
                chunk_id = os.urandom(16)
                await pool.put(chunk_id, b"still here")
                assert await pool.get(chunk_id) == b"still here"
    finally:
        for s in socks:
            s.close()
