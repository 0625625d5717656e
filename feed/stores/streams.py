"""Redis Streams helpers shared by the stream consumers (vector-index sync, interaction events)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

log = structlog.get_logger(__name__)


async def ensure_group(redis: Redis, stream: str, group: str) -> bool:
    """Create consumer group `group` at the start of `stream` (creating the stream) unless it
    exists; returns whether it was created."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
        return False
    return True


def _stream_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


async def trim_consumed(redis: Redis, stream: str, drop_idle_s: float = 0.0) -> int:
    """Remove the entries of `stream` that every consumer group has read and acknowledged
    (`XTRIM MINID`: the oldest entry still pending in any group, else the oldest last-read
    entry, stays); returns how many were removed. A stream without groups is left as it is:
    nobody has said what they consumed. A group that stopped reading keeps everything after
    its position, unless `drop_idle_s` is set: a group whose consumers have all been idle
    that long is then destroyed first (its reader must rebuild what it kept from the stream
    if it ever comes back; a group no consumer ever read from is kept)."""
    try:
        groups: list[dict[str, Any]] = await redis.xinfo_groups(stream)
    except ResponseError:  # no such stream
        return 0
    if drop_idle_s > 0:
        groups = [g for g in groups if not await _drop_if_idle(redis, stream, g, drop_idle_s)]
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


MARK_PREFIX = "mark-"  # a group nobody reads from, holding a position (a snapshot's) against trimming


async def set_mark(redis: Redis, stream: str, name: str, position: str) -> None:
    """Point the mark `MARK_PREFIX + name` at `position` (creating it, and the stream): entries
    after it are kept from `trim_consumed` until the mark moves on, or is dropped once an entry
    it holds back is `drop_idle_s` old."""
    with contextlib.suppress(ResponseError):  # it exists: moved below
        await redis.xgroup_create(stream, MARK_PREFIX + name, id=position, mkstream=True)
    await redis.xgroup_setid(stream, MARK_PREFIX + name, position)


async def mark(redis: Redis, stream: str, name: str) -> str | None:
    """The position of mark `MARK_PREFIX + name` on `stream`, or None if there is none."""
    try:
        groups: list[dict[str, Any]] = await redis.xinfo_groups(stream)
    except ResponseError:  # no such stream
        return None
    for group in groups:
        if _text(group["name"]) == MARK_PREFIX + name:
            return _text(group["last-delivered-id"])
    return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _drop_if_idle(redis: Redis, stream: str, group: dict[str, Any], idle_s: float) -> bool:
    """Destroy `group` if it has consumers and all of them have been idle for `idle_s`, or if it
    is a mark that has held back an entry older than that (its writer moves it on well before,
    so it is gone)."""
    consumers: list[dict[str, Any]] = await redis.xinfo_consumers(stream, group["name"])
    if _text(group["name"]).startswith(MARK_PREFIX):
        after: Any = await redis.xrange(stream, min=f"({_text(group['last-delivered-id'])}", count=1)
        if not after or _stream_id(after[0][0])[0] >= (time.time() - idle_s) * 1000:
            return False
    elif not consumers or min(int(c["idle"]) for c in consumers) < idle_s * 1000:
        return False
    await redis.xgroup_destroy(stream, group["name"])
    log.warning("stream_group_dropped", stream=stream, group=_text(group["name"]), idle_s=idle_s)
    return True
