"""Redis Streams helpers shared by the stream consumers (vector-index sync, interaction events)."""

from __future__ import annotations

from typing import Any

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


def _stream_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


async def trim_consumed(redis: Redis, stream: str) -> int:
    """Remove the entries of `stream` that every consumer group has read and acknowledged
    (`XTRIM MINID`: the oldest entry still pending in any group, else the oldest last-read
    entry, stays); returns how many were removed. A stream without groups is left as it is:
    nobody has said what they consumed. A group that stopped reading keeps everything after
    its position (its backlog shows on `/metrics`)."""
    try:
        groups: list[dict[str, Any]] = await redis.xinfo_groups(stream)
    except ResponseError:  # no such stream
        return 0
    if not groups:
        return 0
    keep: list[tuple[int, int]] = []
    for group in groups:
        keep.append(_stream_id(group["last-delivered-id"]))
        if group["pending"]:
            oldest = (await redis.xpending(stream, group["name"]))["min"]
            if oldest is not None:
                keep.append(_stream_id(oldest))
    ms, seq = min(keep)
    if (ms, seq) == (0, 0):
        return 0
    return int(await redis.xtrim(stream, minid=f"{ms}-{seq}", approximate=False))


_encode_keys = msgspec.msgpack.Encoder().encode
_decode_keys = msgspec.msgpack.Decoder(list[str]).decode


def pack_keys(values: list[str]) -> bytes:
    """A stream field holding a list of keys (msgpack)."""
    return _encode_keys(values)


def unpack_keys(raw: bytes | None) -> list[str]:
    """Inverse of `pack_keys`; an absent field is an empty list."""
    return _decode_keys(raw) if raw else []
