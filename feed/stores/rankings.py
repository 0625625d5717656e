"""Finished rankings shared by the API processes: one Redis string per user, expiring after the
ranking cache's time to live (`feed/pipeline/ranking_cache.py` keeps them)."""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis

from feed.stores import keys


class Column(msgspec.Struct, array_like=True, frozen=True):
    """A numpy column as bytes: its dtype (`np.dtype.str`), its shape and its data."""

    dtype: str
    shape: list[int]
    data: bytes


class SharedRanking(msgspec.Struct, array_like=True, frozen=True):
    """A kept ranking as other API processes can use it (their catalogues number rows
    differently): post keys in ranked order, the batch's source names, and its columns."""

    fingerprint: str  # what the ranking was made from: another one is stale
    post_keys: list[str]
    source_names: list[str]
    ranker_version: int
    columns: dict[str, Column]  # candidate field (`parts.<name>`, `factors.<name>`) -> column


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(SharedRanking).decode


class SharedRankings:
    """The latest kept ranking per user, each kept `ttl_s`."""

    def __init__(self, redis: Redis, ttl_s: float) -> None:
        self._redis = redis
        self._ttl_ms = int(ttl_s * 1000)

    async def get(self, user_key: str) -> SharedRanking | None:
        raw: bytes | None = await self._redis.get(keys.ranking(user_key))  # type: ignore[assignment]
        return None if raw is None else _decode(raw)

    async def put(self, user_key: str, ranking: SharedRanking) -> None:
        await self._redis.set(keys.ranking(user_key), _encode(ranking), px=self._ttl_ms)
