"""The wire format as pure functions: encoding and decoding agree, and bad headers are refused."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_sos.agent import protocol as p

u64 = st.integers(0, 2**64 - 1)
u32 = st.integers(0, 2**32 - 1)
ids = st.binary(min_size=16, max_size=16)


@given(op=st.integers(0, 255), request=u64, flags=st.integers(0, 255), payload=st.binary(max_size=300))
def test_frame_round_trip(op: int, request: int, flags: int, payload: bytes) -> None:
    frame = p.encode_frame(op, request, payload, flags)
    header = p.decode_header(frame[: p.HEADER_SIZE], max_frame=1 << 20)
    assert (header.op, header.request, header.flags, header.length) == (op, request, flags, len(payload))
    assert frame[p.HEADER_SIZE :] == payload


@given(length=st.integers(0, 2**32 - 1), max_frame=st.integers(0, 2**21))
def test_header_length_limit(length: int, max_frame: int) -> None:
    raw = struct.pack(">IBBHQ", length, 1, 0, 0, 7)
    if length > max_frame:
        with pytest.raises(p.ProtocolError):
            p.decode_header(raw, max_frame)
    else:
        assert p.decode_header(raw, max_frame).length == length


@given(reserved=st.integers(1, 0xFFFF))
def test_reserved_must_be_zero(reserved: int) -> None:
    with pytest.raises(p.ProtocolError):
        p.decode_header(struct.pack(">IBBHQ", 0, 1, 0, reserved, 1), 1 << 20)


@given(chunk_id=ids, offset=u64, length=st.one_of(st.none(), u64))
def test_get_payload_layout(chunk_id: bytes, offset: int, length: int | None) -> None:
    payload = p.get_payload(chunk_id, offset, length)
    assert len(payload) == 32
    got_id, got_offset, got_length = struct.unpack(">16sQQ", payload)
    assert (got_id, got_offset) == (chunk_id, offset)
    assert got_length == (p.TO_END if length is None else length)


@given(bad=st.binary(max_size=40).filter(lambda b: len(b) != 16))
def test_ids_must_be_16_bytes(bad: bytes) -> None:
    with pytest.raises(ValueError):
        p.get_payload(bad, 0, None)


@given(entries=st.lists(st.tuples(ids, u64), max_size=50), more=st.booleans())
def test_list_body_round_trip(entries: list[tuple[bytes, int]], more: bool) -> None:
    body = struct.pack(">I", len(entries)) + b"".join(struct.pack(">16sQ", *e) for e in entries) + bytes([more])
    page = p.parse_list(body)
    assert list(page.entries) == entries and page.more == more
    with pytest.raises(p.ProtocolError):
        p.parse_list(body[:-2])


@given(status=st.integers(1, 0xFFFF), message=st.text(max_size=80))
def test_error_results_raise_with_status(status: int, message: str) -> None:
    payload = struct.pack(">H", status) + message.encode()
    with pytest.raises(p.AgentError) as info:
        p.raise_for_status(payload)
    assert int(info.value.status) == status and info.value.message == message


@given(length=u64, crc=st.one_of(st.none(), u32))
def test_put_end_payload(length: int, crc: int | None) -> None:
    got_length, has_crc, got_crc = struct.unpack(">QBI", p.put_end_payload(length, crc))
    assert got_length == length and has_crc == (crc is not None) and got_crc == (crc or 0)
