"""Redis Streams helpers shared by the stream consumers (vector-index sync, interaction events)."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import ResponseError


async def ensure_group(redis: Redis, stream: str, group: str) -> None:
    """Create consumer group `group` at the start of `stream` (creating the stream) unless it exists."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
