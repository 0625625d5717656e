"""Nearest-neighbour retrieval results shared by the API processes: one Redis string per user and
source, expiring after the cache's time to live (`feed/pipeline/retrieval_cache.py` keeps them)."""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis

from feed.stores import keys


class SharedRetrieval(msgspec.Struct, array_like=True):
    """A result as other API processes can use it (their catalogues number rows differently)."""

    fingerprint: str  # what the user's interests were retrieved from: another one is stale
    post_keys: list[str]
    scores: bytes  # float64, one per key


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(SharedRetrieval).decode


class SharedRetrievals:
    """Results per (source, user), each kept `ttl_s`."""

    def __init__(self, redis: Redis, ttl_s: float) -> None:
        self._redis = redis
        self._ttl_ms = int(ttl_s * 1000)

    async def get(self, source: str, user_key: str) -> SharedRetrieval | None:
        raw: bytes | None = await self._redis.get(keys.retrieval(source, user_key))  # type: ignore[assignment]
        return None if raw is None else _decode(raw)

    async def put(self, source: str, user_key: str, result: SharedRetrieval) -> None:
        await self._redis.set(keys.retrieval(source, user_key), _encode(result), px=self._ttl_ms)
