"""Reading the interaction log the event consumer appends to (`keys.INTERACTION_LOG`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from feed.stores import keys


@dataclass(frozen=True, slots=True)
class LoggedInteraction:
    """One applied interaction: who did what to which post, when (epoch seconds)."""

    user: str
    post: str
    action: str
    ts: float


async def read_interactions(redis: Redis, chunk: int = 10_000) -> list[LoggedInteraction]:
    """The whole log, oldest applied first (sort by `ts` for event time: backfills arrive late)."""
    out: list[LoggedInteraction] = []
    start = "-"
    while True:
        rows: Any = await redis.xrange(keys.INTERACTION_LOG, min=start, count=chunk)
        out.extend(
            LoggedInteraction(
                f[b"user"].decode(), f[b"post"].decode(), f[b"action"].decode(), float(f[b"ts"])
            )
            for _, f in rows
        )
        if len(rows) < chunk:
            return out
        start = "(" + rows[-1][0].decode()
