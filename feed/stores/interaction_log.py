"""Reading the interaction log the event consumer appends to (`keys.INTERACTION_LOG`)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from feed.stores import keys
from feed.stores.messages import LoggedInteraction


async def read_interactions(redis: Redis, chunk: int = 10_000) -> list[LoggedInteraction]:
    """The whole log, oldest applied first (sort by `ts` for event time: backfills arrive late)."""
    out: list[LoggedInteraction] = []
    start = "-"
    while True:
        rows: Any = await redis.xrange(keys.INTERACTION_LOG, min=start, count=chunk)
        out.extend(LoggedInteraction.of(fields) for _, fields in rows)
        if len(rows) < chunk:
            return out
        start = "(" + rows[-1][0].decode()
