"""Feed sessions in Redis: what a cursor has served, and the ranked rest still to serve.

A session is the set of post keys already served under a cursor, plus the ranked
candidates the pipeline had left after the last page it ran. The next page pops from
that list (LPOP with a count is atomic, so two API replicas answering the same cursor
never hand out the same post) and keeps the order the first ranking gave. Both keys
expire `ttl_s` after the session's last page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis

from feed.stores import keys


class SessionItem(msgspec.Struct, array_like=True, frozen=True):
    """A ranked candidate as stored for a later page: where it came from and its score parts."""

    post_key: str
    source: str
    score: float
    parts: dict[str, float]
    factors: dict[str, float]
    in_network: bool = False


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(SessionItem).decode


class FeedSessions:
    """Pagination state per cursor, shared by every API replica through Redis."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s

    async def served(self, cursor: str) -> frozenset[str]:
        """Post keys already served under this cursor."""
        members: set[Any] = await self._redis.smembers(keys.served(cursor))
        return frozenset(m.decode() for m in members)

    async def take(self, cursor: str, n: int) -> list[SessionItem]:
        """Pop the next `n` ranked items of the session (fewer when it runs out)."""
        raw: list[bytes] | None = await self._redis.lpop(keys.session_ranking(cursor), n)  # type: ignore[assignment]
        return [_decode(r) for r in raw or []]

    async def mark_served(self, cursor: str, post_keys: Sequence[str]) -> None:
        """Add post keys to the session's served set."""
        if post_keys:
            pipe = self._redis.pipeline(transaction=True)
            pipe.sadd(keys.served(cursor), *post_keys)
            pipe.expire(keys.served(cursor), self._ttl_s)
            await pipe.execute()

    async def save(self, cursor: str, page: Sequence[str], rest: Sequence[SessionItem] | None) -> None:
        """Record a served page; `rest` (when the pipeline ran) replaces the stored ranking."""
        pipe = self._redis.pipeline(transaction=True)
        served, ranking = keys.served(cursor), keys.session_ranking(cursor)
        if page:
            pipe.sadd(served, *page)
        pipe.expire(served, self._ttl_s)
        if rest is not None:
            pipe.delete(ranking)
            if rest:
                pipe.rpush(ranking, *(_encode(item) for item in rest))
        pipe.expire(ranking, self._ttl_s)
        await pipe.execute()
