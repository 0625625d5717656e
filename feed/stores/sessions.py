"""Feed sessions in Redis: what a cursor has served, and the ranked rest still to serve.

A session is the set of post keys already served under a cursor, plus the ranked
candidates the pipeline had left after the last page it ran, stored as one columnar value
(one SET per ranking, not one list element per candidate) beside a counter of how many of
them later pages took. The next page increments the counter by its size and reads the
ranking in one transaction, so two API replicas answering the same cursor take disjoint
stretches of it and never hand out the same post; pages keep the order the first ranking
gave.
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
    """A ranking as stored: names once, then columns; `sources` indexes `source_names` (uint8),
    `scores` float64, `in_network` bool and `values` float32 (candidates x (parts + factors),
    NaN where a candidate lacks one), all little-endian bytes."""

    post_keys: list[str]
    source_names: list[str]
    sources: bytes
    scores: bytes
    in_network: bytes
    parts: list[str]
    factors: list[str]
    values: bytes


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Stored).decode


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


def _pack(ranking: SessionRanking) -> bytes:
    parts, factors = sorted(ranking.parts), sorted(ranking.factors)
    columns = [ranking.parts[n] for n in parts] + [ranking.factors[n] for n in factors]
    n = len(ranking.post_keys)
    values = np.column_stack(columns).astype("<f4") if columns else np.zeros((n, 0), dtype="<f4")
    names, codes = np.unique(np.asarray(ranking.sources, dtype=object), return_inverse=True)
    return _encode(
        _Stored(
            ranking.post_keys,
            [str(name) for name in names],
            codes.astype(np.uint8).tobytes(),
            np.asarray(ranking.scores, dtype="<f8").tobytes(),
            np.asarray(ranking.in_network, dtype=bool).tobytes(),
            parts,
            factors,
            np.ascontiguousarray(values).tobytes(),
        )
    )


def _unpack(raw: bytes, start: int, stop: int) -> list[SessionItem]:
    """Items [start, stop) of a stored ranking."""
    stored = _decode(raw)
    stop = min(stop, len(stored.post_keys))
    if start >= stop:
        return []
    width = len(stored.parts) + len(stored.factors)
    values = np.frombuffer(stored.values, dtype="<f4").reshape(-1, width)[start:stop].tolist()
    sources = np.frombuffer(stored.sources, dtype=np.uint8)[start:stop].tolist()
    scores = np.frombuffer(stored.scores, dtype="<f8")[start:stop].tolist()
    in_network = np.frombuffer(stored.in_network, dtype=bool)[start:stop].tolist()
    n = len(stored.parts)
    return [
        SessionItem(
            key,
            stored.source_names[source],
            score,
            {k: v for k, v in zip(stored.parts, row[:n], strict=True) if not math.isnan(v)},
            {k: v for k, v in zip(stored.factors, row[n:], strict=True) if not math.isnan(v)},
            network,
        )
        for key, source, score, network, row in zip(
            stored.post_keys[start:stop], sources, scores, in_network, values, strict=True
        )
    ]


class FeedSessions:
    """Pagination state per cursor, shared by every API replica through Redis.

    The served set lives `ttl_s` after the session's last page; the stored ranking
    (about 30 bytes a candidate) `ranking_ttl_s`, usually shorter: after it expires the next
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
        """Take the next `n` ranked items of the session (fewer when it runs out)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.incrby(keys.session_taken(cursor), n)
        pipe.get(keys.session_ranking(cursor))
        taken, raw = await pipe.execute()
        if raw is None:
            return []
        return _unpack(raw, int(taken) - n, int(taken))

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
        served, ranking, taken = keys.served(cursor), keys.session_ranking(cursor), keys.session_taken(cursor)
        if page:
            pipe.sadd(served, *page)
        pipe.expire(served, self._ttl_s)
        if rest is not None:
            pipe.delete(ranking, taken)
            if rest.post_keys:
                pipe.set(ranking, _pack(rest))
        pipe.expire(ranking, self._ranking_ttl_s)
        pipe.expire(taken, self._ranking_ttl_s)
        await pipe.execute()
