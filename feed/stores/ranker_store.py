"""The learned ranker in Redis: the serving model, its version, and the training reports.

A deploy writes the model and its version in one MULTI/EXEC, so a reader that sees a new
version always finds that model; API processes poll the version (one GET) and load the
model only when it changed.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from feed.stores import keys


class RankerStore:
    """Model and reports on one Redis connection pool."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def version(self) -> int:
        """Version of the serving model (0: none)."""
        raw: Any = await self._redis.get(keys.RANKER_VERSION)
        return int(raw or 0)

    async def model(self) -> bytes | None:
        """The serving model's stored bytes."""
        raw: Any = await self._redis.get(keys.RANKER_MODEL)
        return bytes(raw) if raw is not None else None

    async def deploy(self, version: int, model: bytes) -> None:
        """Make this model the serving one."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.RANKER_MODEL, model)
            pipe.set(keys.RANKER_VERSION, version)
            await pipe.execute()

    async def add_report(self, report: bytes) -> None:
        """Keep a training report (JSON), newest first."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(keys.RANKER_REPORTS, report)
            pipe.ltrim(keys.RANKER_REPORTS, 0, keys.RANKER_REPORTS_KEEP - 1)
            await pipe.execute()

    async def reports(self, count: int = 1) -> list[bytes]:
        """The newest `count` training reports (JSON), newest first."""
        raw: Any = await self._redis.lrange(keys.RANKER_REPORTS, 0, count - 1)
        return [bytes(r) for r in raw]
