"""Nearest-neighbour retrieval results shared by the API processes: one Redis string per user and
source, expiring after the cache's time to live (`feed/pipeline/retrieval_cache.py` keeps them)."""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis

from feed.stores import keys
from feed.stores.expiring import ExpiringValues


class SharedRetrieval(msgspec.Struct, array_like=True):
    """A result as other API processes can use it (their catalogues number rows differently)."""

    fingerprint: str  # what the user's interests were retrieved from: another one is stale
    post_keys: list[str]
    scores: bytes  # float64, one per key


class SharedRetrievals(ExpiringValues[SharedRetrieval]):
    """Results per (source, user), each kept `ttl_s`."""

    def __init__(self, redis: Redis, ttl_s: float) -> None:
        super().__init__(redis, ttl_s, SharedRetrieval)

    async def get(self, source: str, user_key: str) -> SharedRetrieval | None:
        return await self.read(keys.retrieval(source, user_key))

    async def put(self, source: str, user_key: str, result: SharedRetrieval) -> None:
        await self.write(keys.retrieval(source, user_key), result)
