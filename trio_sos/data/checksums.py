"""Incremental checksums of object bodies, by the names S3 gives them (x-amz-checksum-<name>)."""

from __future__ import annotations

import base64
import hashlib
import zlib
from typing import Protocol

import crc32c as _crc32c
from awscrt import checksums as _crt


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...
    def digest(self) -> bytes: ...


class _Crc:
    def __init__(self, fn, width: int = 4) -> None:
        self._fn = fn
        self._value = 0
        self._width = width

    def update(self, data: bytes | memoryview, /) -> None:
        self._value = self._fn(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._width, "big")


def new_hasher(algorithm: str) -> Hasher:
    """A hasher for an S3 checksum algorithm name (upper case: CRC32, CRC32C, SHA1, SHA256, or MD5)."""
    if algorithm == "CRC32":
        return _Crc(zlib.crc32)
    if algorithm == "CRC32C":
        return _Crc(_crc32c.crc32c)
    if algorithm == "CRC64NVME":
        return _Crc(_crt.crc64nvme, 8)
    if algorithm in ("SHA1", "SHA256", "MD5"):
        return hashlib.new(algorithm.lower())
    raise KeyError(algorithm)


SUPPORTED = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")
