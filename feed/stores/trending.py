"""Trending: every post's positive engagement, decayed with a half-life, in one Redis sorted set.

An event of weight w at time t adds w * 2**((t - base) / half_life) to its post's score.
All scores decay by the same factor as time passes, so the set's order is the decayed
order at any moment, top-k is one ZREVRANGE, and a post's value at `now` is
score * 2**((base - now) / half_life). Backfilled events count at the time they happened.
Before the scores grow too large, `rebase` rescales the set to a later base (one
transaction, which also drops posts whose value has decayed to nothing). The base and
the half-life are kept in a hash. The writer (the event consumer) starts the counts afresh
when its configured half-life differs from the stored one; readers never write, and decode
with the stored half-life, so a process configured differently cannot wipe the set.

Written by hand: it is a handful of Redis calls, and the hourly-bucket alternative needs one
key per hour of the window (thousands for a catalogue's months-long window).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from feed.stores import keys

REBASE_AFTER = 128.0  # half-lives from base to now before rescaling (2**128 is far from float limits)
NEGLIGIBLE = 1e-6  # values below this (in event-weight units) are dropped at a rebase


@dataclass(frozen=True, slots=True)
class TrendingBase:
    """The time that stored scores are relative to."""

    base: float
    half_life_s: float

    def units(self, weight: float, ts: float) -> float:
        """What an event of `weight` at `ts` adds to its post's stored score."""
        return float(weight * 2.0 ** ((ts - self.base) / self.half_life_s))

    def value(self, stored: float, now: float) -> float:
        """A stored score as decayed engagement at `now`."""
        return float(stored * 2.0 ** ((self.base - now) / self.half_life_s))


class Trending:
    """Reads and maintains the trending set for one half-life."""

    def __init__(self, redis: Redis, half_life_s: float) -> None:
        self._redis = redis
        self._half_life_s = half_life_s

    async def base(self, reader: Redis | Pipeline | None = None) -> TrendingBase:
        """The current base for writing (created, or reset for a changed half-life, on first use)."""
        raw: Any = await (reader or self._redis).hgetall(keys.TRENDING_META)
        if raw and float(raw[b"half_life_s"]) == self._half_life_s:
            return TrendingBase(float(raw[b"base"]), self._half_life_s)
        fresh = TrendingBase(time.time(), self._half_life_s)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.TRENDING)
            pipe.hset(keys.TRENDING_META, mapping={"base": fresh.base, "half_life_s": self._half_life_s})
            await pipe.execute()
        return fresh

    @staticmethod
    def increment(pipe: Pipeline, base: TrendingBase, post_key: str, weight: float, ts: float) -> None:
        """Queue an event's contribution on a MULTI pipeline (whose transaction watches TRENDING_META)."""
        pipe.zincrby(keys.TRENDING, base.units(weight, ts), post_key)

    async def rebase_if_due(self, now: float | None = None) -> bool:
        """Rescale to base `now` once base is REBASE_AFTER half-lives old; True if it did."""
        now = time.time() if now is None else now
        async with self._redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(keys.TRENDING_META)
                current = await self.base(pipe)
                if (now - current.base) / self._half_life_s < REBASE_AFTER:
                    return False
                factor = 2.0 ** ((current.base - now) / self._half_life_s)
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.zunionstore(keys.TRENDING, {keys.TRENDING: factor})
                pipe.zremrangebyscore(keys.TRENDING, "-inf", NEGLIGIBLE)
                pipe.hset(keys.TRENDING_META, "base", now)
                await pipe.execute()
                return True
            except WatchError:
                return False  # someone else rebased

    async def _read(self, queue: Callable[[Pipeline], object]) -> tuple[TrendingBase | None, Any]:
        """The stored base (None before any event) and one queued read, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(keys.TRENDING_META)
        queue(pipe)
        raw, rows = await pipe.execute()
        stored = TrendingBase(float(raw[b"base"]), float(raw[b"half_life_s"])) if raw else None
        return stored, rows

    async def top(self, limit: int, now: float) -> list[tuple[str, float]]:
        """The `limit` posts with the most decayed engagement at `now`, with their values."""
        base, rows = await self._read(lambda p: p.zrevrange(keys.TRENDING, 0, limit - 1, withscores=True))
        if base is None:
            return []
        return [(m.decode(), base.value(float(s), now)) for m, s in rows]

    async def values(self, post_keys: list[str], now: float) -> dict[str, float]:
        """Decayed engagement at `now` of these posts (0 for posts with none)."""
        if not post_keys:
            return {}
        base, scores = await self._read(lambda p: p.zmscore(keys.TRENDING, post_keys))
        return {
            k: base.value(float(s), now) if base is not None and s is not None else 0.0
            for k, s in zip(post_keys, scores, strict=True)
        }
