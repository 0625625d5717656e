"""Values that several API processes share for a while: msgspec structs as Redis strings that
expire on their own (the retrieval and ranking caches' shared layers)."""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec
from redis.asyncio import Redis

S = TypeVar("S", bound=msgspec.Struct)


class ExpiringValues(Generic[S]):
    """Structs of type `kind` under string keys, each kept `ttl_s` after it was written."""

    def __init__(self, redis: Redis, ttl_s: float, kind: type[S]) -> None:
        self._redis = redis
        self._ttl_ms = int(ttl_s * 1000)
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(kind).decode

    async def read(self, key: str) -> S | None:
        raw: bytes | None = await self._redis.get(key)  # type: ignore[assignment]
        return None if raw is None else self._decode(raw)

    async def write(self, key: str, value: S) -> None:
        await self._redis.set(key, self._encode(value), px=self._ttl_ms)
