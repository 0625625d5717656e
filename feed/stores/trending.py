"""Trending: every post's positive engagement, decayed with a half-life, in one Redis sorted set.

An event of weight w at time t adds w * 2**((t - base) / half_life) to its post's score
(`TrendingBase.units`; the event applier's script does the ZINCRBY). All scores decay by the
same factor as time passes, so the set's order is the decayed order at any moment, and a
post's value at `now` is score * 2**((base - now) / half_life). Backfilled events count at
the time they happened. Before the scores grow too large, `Trending.rebase_if_due` rescales
the set to a later base (one transaction, which also drops posts whose value has decayed to
nothing). The base and the half-life are kept in a hash. The writer (the event consumer)
starts the counts afresh when its configured half-life differs from the stored one; readers
(the API's post catalogue, loaded by catalog/sync.py) read the set and the hash directly,
never write, and decode with the stored half-life, so a process configured differently
cannot wipe the set.

The same is kept at several more half-lives (`RankingConfig.trending_horizons_s`), one set and
hash each (`Trending.horizon`), so the learned ranker can weigh horizons from days to a year.

Written by hand: it is a handful of Redis calls, and the hourly-bucket alternative needs one
key per hour of the window (thousands for a catalogue's months-long window).
"""

from __future__ import annotations

import time
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


class Trending:
    """Maintains a trending set's base for one half-life (the writer's side); by default the
    main set (`keys.TRENDING`), or another pair of set and meta hash keys."""

    def __init__(
        self, redis: Redis, half_life_s: float, key: str = keys.TRENDING, meta_key: str = keys.TRENDING_META
    ) -> None:
        self._redis = redis
        self._half_life_s = half_life_s
        self.key = key
        self.meta_key = meta_key

    @classmethod
    def horizon(cls, redis: Redis, half_life_s: float) -> Trending:
        """The extra trending horizon at this half-life (`keys.trending_horizon`)."""
        return cls(
            redis, half_life_s, keys.trending_horizon(half_life_s), keys.trending_horizon_meta(half_life_s)
        )

    async def base(self, reader: Redis | Pipeline | None = None) -> TrendingBase:
        """The current base for writing (created, or reset for a changed half-life, on first use)."""
        raw: Any = await (reader or self._redis).hgetall(self.meta_key)
        if raw and float(raw[b"half_life_s"]) == self._half_life_s:
            return TrendingBase(float(raw[b"base"]), self._half_life_s)
        fresh = TrendingBase(time.time(), self._half_life_s)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.key)
            pipe.hset(self.meta_key, mapping={"base": fresh.base, "half_life_s": self._half_life_s})
            await pipe.execute()
        return fresh

    async def rebase_if_due(self, now: float | None = None) -> bool:
        """Rescale to base `now` once base is REBASE_AFTER half-lives old; True if it did."""
        now = time.time() if now is None else now
        async with self._redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(self.meta_key)
                current = await self.base(pipe)
                if (now - current.base) / self._half_life_s < REBASE_AFTER:
                    return False
                factor = 2.0 ** ((current.base - now) / self._half_life_s)
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.zunionstore(self.key, {self.key: factor})
                pipe.zremrangebyscore(self.key, "-inf", NEGLIGIBLE)
                pipe.hset(self.meta_key, "base", now)
                await pipe.execute()
                return True
            except WatchError:
                return False  # someone else rebased
