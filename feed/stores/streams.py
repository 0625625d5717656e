"""Redis Streams helpers shared by the stream consumers (vector-index sync, interaction events)."""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError


async def ensure_group(redis: Redis, stream: str, group: str) -> None:
    """Create consumer group `group` at the start of `stream` (creating the stream) unless it exists."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


_encode_keys = msgspec.msgpack.Encoder().encode
_decode_keys = msgspec.msgpack.Decoder(list[str]).decode


def pack_keys(values: list[str]) -> bytes:
    """A stream field holding a list of keys (msgpack)."""
    return _encode_keys(values)


def unpack_keys(raw: bytes | None) -> list[str]:
    """Inverse of `pack_keys`; an absent field is an empty list."""
    return _decode_keys(raw) if raw else []
