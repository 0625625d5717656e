"""Feed sessions in Redis: what a cursor has served, and the ranked rest still to serve.

A session is the set of post keys already served under a cursor, plus the ranked
candidates the pipeline had left after the last page it ran. The next page pops from
that list (LPOP with a count, in a transaction with the layout it needs to decode the
items, so two API replicas answering the same cursor never hand out the same post) and
keeps the order the first ranking gave.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
from redis.asyncio import Redis

from feed.stores import keys


class SessionItem(msgspec.Struct, frozen=True):
    """A ranked candidate as stored for a later page: where it came from and its score parts."""

    post_key: str
    source: str
    score: float
    parts: dict[str, float]
    factors: dict[str, float]
    in_network: bool = False


class _Stored(msgspec.Struct, array_like=True, frozen=True):
    """The compact stored form: part and factor values as float32 in the session's layout
    order (NaN where a candidate lacks one), so names are stored once per session."""

    post_key: str
    source: str
    score: float
    in_network: bool
    values: bytes


class _Layout(msgspec.Struct, array_like=True, frozen=True):
    parts: list[str]
    factors: list[str]


_encode = msgspec.msgpack.Encoder().encode
_decode_item = msgspec.msgpack.Decoder(_Stored).decode
_decode_layout = msgspec.msgpack.Decoder(_Layout).decode


@dataclass(frozen=True, slots=True)
class SessionRanking:
    """Ranked candidates to store for a session's next pages, as columns: entry i of each is
    candidate i; a NaN in a part or factor column means the candidate lacks it."""

    post_keys: list[str]
    sources: list[str]
    scores: np.ndarray
    in_network: np.ndarray
    parts: dict[str, np.ndarray]
    factors: dict[str, np.ndarray]


def _pack(ranking: SessionRanking, layout: _Layout) -> list[bytes]:
    columns = [ranking.parts[n] for n in layout.parts] + [ranking.factors[n] for n in layout.factors]
    n = len(ranking.post_keys)
    values = np.column_stack(columns).astype("<f4") if columns else np.zeros((n, 0), dtype="<f4")
    return [
        _encode(_Stored(key, source, score, in_network, row.tobytes()))
        for key, source, score, in_network, row in zip(
            ranking.post_keys,
            ranking.sources,
            ranking.scores.tolist(),
            ranking.in_network.tolist(),
            values,
            strict=True,
        )
    ]


def _unpack(raw: bytes, layout: _Layout) -> SessionItem:
    stored = _decode_item(raw)
    values = np.frombuffer(stored.values, dtype="<f4").tolist()
    n = len(layout.parts)
    return SessionItem(
        stored.post_key,
        stored.source,
        stored.score,
        {k: v for k, v in zip(layout.parts, values[:n], strict=True) if not math.isnan(v)},
        {k: v for k, v in zip(layout.factors, values[n:], strict=True) if not math.isnan(v)},
        stored.in_network,
    )


class FeedSessions:
    """Pagination state per cursor, shared by every API replica through Redis.

    The served set lives `ttl_s` after the session's last page; the stored ranking
    (about 70 bytes a candidate) `ranking_ttl_s`, usually shorter: after it expires the next
    page re-ranks, still without what was served.
    """

    def __init__(self, redis: Redis, ttl_s: int, ranking_ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._ranking_ttl_s = ranking_ttl_s

    async def served(self, cursor: str) -> frozenset[str]:
        """Post keys already served under this cursor."""
        members: set[Any] = await self._redis.smembers(keys.served(cursor))
        return frozenset(m.decode() for m in members)

    async def take(self, cursor: str, n: int) -> list[SessionItem]:
        """Pop the next `n` ranked items of the session (fewer when it runs out)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.lpop(keys.session_ranking(cursor), n)
        pipe.get(keys.session_layout(cursor))
        raw, layout = await pipe.execute()
        if not raw or layout is None:
            return []
        decoded = _decode_layout(layout)
        return [_unpack(r, decoded) for r in raw]

    async def mark_served(self, cursor: str, post_keys: Sequence[str]) -> None:
        """Add post keys to the session's served set."""
        if post_keys:
            pipe = self._redis.pipeline(transaction=True)
            pipe.sadd(keys.served(cursor), *post_keys)
            pipe.expire(keys.served(cursor), self._ttl_s)
            await pipe.execute()

    async def save(self, cursor: str, page: Sequence[str], rest: SessionRanking | None) -> None:
        """Record a served page; `rest` (when the pipeline ran) replaces the stored ranking."""
        pipe = self._redis.pipeline(transaction=True)
        served, ranking, layout_key = (
            keys.served(cursor),
            keys.session_ranking(cursor),
            keys.session_layout(cursor),
        )
        if page:
            pipe.sadd(served, *page)
        pipe.expire(served, self._ttl_s)
        if rest is not None:
            pipe.delete(ranking, layout_key)
            if rest.post_keys:
                layout = _Layout(sorted(rest.parts), sorted(rest.factors))
                pipe.rpush(ranking, *_pack(rest, layout))
                pipe.set(layout_key, _encode(layout))
        pipe.expire(ranking, self._ranking_ttl_s)
        pipe.expire(layout_key, self._ranking_ttl_s)
        await pipe.execute()
