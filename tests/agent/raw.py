"""A blocking, deliberately minimal client for the agent, to send what the real client never would."""

from __future__ import annotations

import socket
import struct

from trio_sos.agent import protocol as p


class RawConn:
    def __init__(self, address: str, *, hello: bool = True, timeout: float = 10.0) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        if hello:
            status, body = self.request(p.Op.HELLO, 1, p.hello_payload())
            assert status == p.Status.OK, body
            self.hello = p.parse_hello(body)

    def send(self, op: int, request: int, payload: bytes = b"", flags: int = 0) -> None:
        self.sock.sendall(p.encode_frame(op, request, payload, flags))

    def _exactly(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            data = self.sock.recv(n - len(out))
            if not data:
                raise EOFError(f"connection closed after {len(out)} of {n} bytes")
            out += data
        return bytes(out)

    def recv_frame(self) -> tuple[int, int, bytes]:
        length, op, _flags, _reserved, request = p.HEADER.unpack(self._exactly(p.HEADER_SIZE))
        return op, request, self._exactly(length)

    def result(self, request: int) -> tuple[int, bytes, bytes]:
        """Status, body and the DATA received, for ``request`` (frames of other requests are an error here)."""
        data = bytearray()
        while True:
            op, req, payload = self.recv_frame()
            assert req == request, (req, request)
            if op == p.Op.DATA:
                data += payload
                continue
            assert op == p.Op.RESULT
            status, body = p.split_result(payload)
            return status, body, bytes(data)

    def request(self, op: int, request: int, payload: bytes = b"") -> tuple[int, bytes]:
        self.send(op, request, payload)
        status, body, _ = self.result(request)
        return status, body

    def closed_by_peer(self) -> bool:
        """True when the agent has closed this connection (reads EOF), after draining anything it sent."""
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def put_frames(request: int, chunk_id: bytes, data: bytes, crc: int | None, frame: int = 1 << 20) -> bytes:
    out = [p.encode_frame(p.Op.PUT_BEGIN, request, chunk_id)]
    out += [p.encode_frame(p.Op.PUT_DATA, request, data[i : i + frame]) for i in range(0, len(data), frame)]
    out.append(p.encode_frame(p.Op.PUT_END, request, p.put_end_payload(len(data), crc)))
    return b"".join(out)


def status_of(result: tuple[int, bytes] | tuple[int, bytes, bytes]) -> p.Status:
    return p.Status(result[0])


__all__ = ["RawConn", "put_frames", "status_of", "struct"]
