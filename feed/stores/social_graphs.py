"""The last known copy of each user's social graph, as the host gave it (`feed/social_graph.py`
asks the host and keeps the answer here, for every API process)."""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis

from feed.stores import keys

KEEP_S = 24 * 3600  # a copy older than its freshness still answers while the host is away, a day


class CachedGraph(msgspec.Struct):
    """Canonical author keys; `fetched_at` says how fresh the copy is."""

    following: list[str]
    blocked: list[str]
    muted: list[str]
    fetched_at: float
    muted_keywords: list[str] = []


class SocialGraphCache:
    """Copies per user, each kept KEEP_S after it was written."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def get(self, user_key: str) -> CachedGraph | None:
        raw = await self._redis.get(keys.social_graph(user_key))
        return msgspec.json.decode(raw, type=CachedGraph) if raw else None

    async def put(self, user_key: str, graph: CachedGraph) -> None:
        await self._redis.set(keys.social_graph(user_key), msgspec.json.encode(graph), ex=KEEP_S)
