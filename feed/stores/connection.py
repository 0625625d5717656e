"""Connections to the engine's Redis. Clients are made here, and other layers hold them only to
hand them to the stores, as these types; the errors that say Redis is away are named here too."""

from __future__ import annotations

from redis import Redis as SyncRedis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

UNREACHABLE = (RedisConnectionError, RedisTimeoutError)  # Redis did not answer
__all__ = ["UNREACHABLE", "AsyncRedis", "RedisError", "SyncRedis", "connect", "connect_sync"]


def connect(url: str, max_connections: int | None = None) -> AsyncRedis:
    """An asyncio client (a pool of at most `max_connections`, unbounded when None)."""
    return AsyncRedis.from_url(url, max_connections=max_connections)


def connect_sync(url: str) -> SyncRedis:
    """A blocking client (the batch layer, the ingest workers, the evaluation's checks)."""
    return SyncRedis.from_url(url)
