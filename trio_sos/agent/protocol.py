"""The storage agent's wire format (docs/agent-protocol.md), as pure functions: no sockets, no Trio.

Everything here is deterministic and testable alone; ``client.py`` does the I/O.
"""

from __future__ import annotations

import enum
import struct

import attrs

VERSION = 1
MAGIC = b"TSOS"
HEADER = struct.Struct(">IBBHQ")  # length, op, flags, reserved, request id
HEADER_SIZE = HEADER.size
ID_SIZE = 16
TO_END = 0xFFFF_FFFF_FFFF_FFFF
DEFAULT_MAX_FRAME = 1 << 20


class Op(enum.IntEnum):
    HELLO = 0x01
    PING = 0x02
    INFO = 0x03
    PUT_BEGIN = 0x10
    PUT_DATA = 0x11
    PUT_END = 0x12
    PUT_ABORT = 0x13
    GET = 0x20
    DELETE = 0x30
    STAT = 0x31
    LINK = 0x32
    LIST = 0x40
    RESULT = 0x80
    DATA = 0x81


class Status(enum.IntEnum):
    OK = 0
    BAD_FRAME = 1
    UNKNOWN_OP = 2
    BAD_REQUEST = 3
    PROTOCOL = 4
    VERSION = 5
    NOT_FOUND = 6
    EXISTS = 7
    TOO_LARGE = 8
    CHECKSUM_MISMATCH = 9
    CORRUPT = 10
    NO_SPACE = 11
    IO_ERROR = 12
    RANGE = 13
    BUSY = 14


class ProtocolError(Exception):
    """The peer broke the framing or sent something this client cannot parse: the connection is unusable."""


class AgentError(Exception):
    """A RESULT frame with a status other than OK."""

    def __init__(self, status: int, message: str) -> None:
        try:
            self.status: Status | int = Status(status)
            name = self.status.name
        except ValueError:
            self.status = status
            name = f"STATUS_{status}"
        self.message = message
        super().__init__(f"{name}: {message}" if message else name)


@attrs.frozen
class FrameHeader:
    length: int
    op: int
    flags: int
    request: int


def encode_header(op: int, request: int, length: int, flags: int = 0) -> bytes:
    return HEADER.pack(length, op, flags, 0, request)


def encode_frame(op: int, request: int, payload: bytes = b"", flags: int = 0) -> bytes:
    return HEADER.pack(len(payload), op, flags, 0, request) + payload


def decode_header(data: bytes | bytearray | memoryview, max_frame: int) -> FrameHeader:
    length, op, flags, reserved, request = HEADER.unpack(data)
    if reserved != 0:
        raise ProtocolError(f"frame header has reserved field {reserved:#x}")
    if length > max_frame:
        raise ProtocolError(f"frame payload of {length} bytes exceeds max_frame {max_frame}")
    return FrameHeader(length, op, flags, request)


def check_id(chunk_id: bytes) -> bytes:
    if not isinstance(chunk_id, (bytes, bytearray)) or len(chunk_id) != ID_SIZE:
        raise ValueError("a chunk id is exactly 16 bytes")
    return bytes(chunk_id)


# --- request payloads -------------------------------------------------------------------------------------

def hello_payload(min_version: int = VERSION, max_version: int = VERSION) -> bytes:
    return MAGIC + struct.pack(">HH", min_version, max_version)


def put_end_payload(length: int, crc32c: int | None) -> bytes:
    return struct.pack(">QBI", length, 0 if crc32c is None else 1, crc32c or 0)


def get_payload(chunk_id: bytes, offset: int, length: int | None) -> bytes:
    return check_id(chunk_id) + struct.pack(">QQ", offset, TO_END if length is None else length)


def stat_payload(chunk_id: bytes, verify: bool) -> bytes:
    return check_id(chunk_id) + struct.pack(">B", 1 if verify else 0)


def link_payload(chunk_id: bytes, source: bytes) -> bytes:
    """LINK: store the chunk ``source`` also as ``chunk_id`` (the new name first)."""
    return check_id(chunk_id) + check_id(source)


def list_payload(cursor: bytes | None, limit: int) -> bytes:
    if cursor is None:
        return struct.pack(">B", 0) + bytes(ID_SIZE) + struct.pack(">I", limit)
    return struct.pack(">B", 1) + check_id(cursor) + struct.pack(">I", limit)


# --- result bodies ----------------------------------------------------------------------------------------

@attrs.frozen
class Hello:
    version: int
    agent_id: bytes
    max_frame: int
    max_chunk: int
    block_size: int


@attrs.frozen
class Info:
    agent_id: bytes
    version: int
    capacity: int
    used: int
    chunks: int
    fs_free: int


@attrs.frozen
class PutResult:
    length: int
    crc32c: int


@attrs.frozen
class GetResult:
    chunk_length: int
    chunk_crc32c: int


@attrs.frozen
class Stat:
    length: int
    crc32c: int
    mtime: int


@attrs.frozen
class ListPage:
    entries: tuple[tuple[bytes, int], ...]
    more: bool


def split_result(payload: bytes) -> tuple[int, bytes]:
    """Status and body of a RESULT payload."""
    if len(payload) < 2:
        raise ProtocolError("RESULT payload shorter than its status")
    return struct.unpack_from(">H", payload)[0], payload[2:]


def raise_for_status(payload: bytes) -> bytes:
    status, body = split_result(payload)
    if status != Status.OK:
        raise AgentError(status, body.decode("utf-8", "replace"))
    return body


def _unpack(fmt: str, body: bytes, what: str) -> tuple:
    s = struct.Struct(fmt)
    if len(body) != s.size:
        raise ProtocolError(f"{what} body is {len(body)} bytes, expected {s.size}")
    return s.unpack(body)


def parse_hello(body: bytes) -> Hello:
    version, agent_id, max_frame, max_chunk, block_size = _unpack(">H16sIQI", body, "HELLO")
    return Hello(version, agent_id, max_frame, max_chunk, block_size)


def parse_info(body: bytes) -> Info:
    return Info(*_unpack(">16sHQQQQ", body, "INFO"))


def parse_put(body: bytes) -> PutResult:
    return PutResult(*_unpack(">QI", body, "PUT"))


def parse_get(body: bytes) -> GetResult:
    return GetResult(*_unpack(">QI", body, "GET"))


def parse_stat(body: bytes) -> Stat:
    return Stat(*_unpack(">QIQ", body, "STAT"))


def parse_link(body: bytes) -> PutResult:
    return PutResult(*_unpack(">QI", body, "LINK"))


def parse_list(body: bytes) -> ListPage:
    if len(body) < 5:
        raise ProtocolError("LIST body too short")
    (count,) = struct.unpack_from(">I", body)
    entry = struct.Struct(">16sQ")
    if len(body) != 4 + count * entry.size + 1:
        raise ProtocolError(f"LIST body of {len(body)} bytes does not hold {count} entries")
    entries = tuple(entry.unpack_from(body, 4 + i * entry.size) for i in range(count))
    return ListPage(entries, body[-1] != 0)
