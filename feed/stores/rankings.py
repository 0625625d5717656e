"""Finished rankings shared by the API processes: one Redis string per user, expiring after the
ranking cache's time to live (`feed/pipeline/ranking_cache.py` keeps them)."""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis

from feed.stores import keys
from feed.stores.expiring import ExpiringValues


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


class SharedRankings(ExpiringValues[SharedRanking]):
    """The latest kept ranking per user, each kept `ttl_s`."""

    def __init__(self, redis: Redis, ttl_s: float) -> None:
        super().__init__(redis, ttl_s, SharedRanking)

    async def get(self, user_key: str) -> SharedRanking | None:
        return await self.read(keys.ranking(user_key))

    async def put(self, user_key: str, ranking: SharedRanking) -> None:
        await self.write(keys.ranking(user_key), ranking)
