"""Raw HTTP against a node, for what S3 SDKs never send: signed with botocore's own SigV4 signer."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials


def sign(node, method: str, path: str, headers: dict[str, str] | None = None, *,
         body: bytes | None = None, user: int = 0) -> dict[str, str]:
    """Headers (Host, X-Amz-Date, X-Amz-Content-SHA256, Authorization...) for a request to ``path``: the payload
    is signed as UNSIGNED-PAYLOAD, or by its SHA-256 when ``body`` is given."""
    u = node.users[user]
    request = AWSRequest(method=method, url=node.endpoint + path, headers=dict(headers or {}), data=body or b"")
    request.context["client_config"] = Config(s3={"payload_signing_enabled": body is not None})
    S3SigV4Auth(Credentials(u["access_key"], u["secret_key"]), "s3", "us-east-1").add_auth(request)
    prepared = request.prepare()
    out = dict(prepared.headers.items())
    out.setdefault("Host", urlsplit(node.endpoint).netloc)
    return out


def head_bytes(method: str, target: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def connect(node, timeout: float = 15.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", node.port), timeout=timeout)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response (status, headers, body by Content-Length); raises EOFError if the server closed first."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise EOFError(f"connection closed, got {buf!r}")
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    if status in (100, 304):
        length = 0
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            break
        rest += data
    return status, headers, rest[:length]


def closed(sock: socket.socket) -> bool:
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
