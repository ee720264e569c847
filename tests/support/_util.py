"""Small conversions shared by the helpers (clients may or may not decode responses)."""

from __future__ import annotations

from typing import Any


def as_bytes(value: Any) -> bytes:
    """``value`` as bytes: bytes as is, str encoded as UTF-8, anything else via ``str``."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return str(value).encode()


def as_text(value: Any) -> str:
    """``value`` as str (bytes decoded as UTF-8, undecodable bytes backslash-escaped)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


def zmembers(client: Any, key: str) -> list[tuple[bytes, float]]:
    """All ``(member, score)`` pairs of zset ``key``, lowest score first."""
    pairs = client.zrange(key, 0, -1, withscores=True)
    return [(as_bytes(member), float(score)) for member, score in pairs]
