"""Trending: decayed engagement in one sorted set, backfills, rebasing, a changed half-life."""

from __future__ import annotations

from typing import Any

import pytest

from feed.stores import keys
from feed.stores.trending import REBASE_AFTER, Trending

HOUR = 3600.0


async def add(redis: Any, trending: Trending, post: str, weight: float, ts: float) -> None:
    base = await trending.base()
    pipe = redis.pipeline(transaction=True)
    Trending.increment(pipe, base, post, weight, ts)
    await pipe.execute()


async def test_order_and_values_follow_the_decay(redis_client: Any) -> None:
    trending = Trending(redis_client, half_life_s=HOUR)
    now = (await trending.base()).base
    await add(redis_client, trending, "old-hit", 8.0, now - 4 * HOUR)  # worth 8 / 16 = 0.5 now
    await add(redis_client, trending, "new", 1.0, now)
    await add(redis_client, trending, "steady", 0.5, now - HOUR)
    await add(redis_client, trending, "steady", 0.5, now)
    top = await trending.top(10, now)
    assert [k for k, _ in top] == ["new", "steady", "old-hit"]
    assert dict(top) == pytest.approx({"new": 1.0, "steady": 0.75, "old-hit": 0.5})
    # an hour later everything has halved, the order is the same
    assert dict(await trending.top(10, now + HOUR)) == pytest.approx(
        {"new": 0.5, "steady": 0.375, "old-hit": 0.25}
    )
    assert await trending.values(["steady", "never"], now) == pytest.approx({"steady": 0.75, "never": 0.0})


async def test_rebase_keeps_values_and_drops_what_decayed_away(redis_client: Any) -> None:
    trending = Trending(redis_client, half_life_s=HOUR)
    start = (await trending.base()).base
    await add(redis_client, trending, "faded", 1.0, start)
    later = start + (REBASE_AFTER - 10) * HOUR
    await add(redis_client, trending, "hot", 3.0, later)
    assert not await trending.rebase_if_due(later)
    due = start + REBASE_AFTER * HOUR
    before = dict(await trending.top(10, due))
    assert await trending.rebase_if_due(due)
    assert (await trending.base()).base == due
    assert dict(await trending.top(10, due)) == pytest.approx({"hot": before["hot"]})  # "faded" is gone
    assert before["hot"] == pytest.approx(3.0 / 2**10)


async def test_a_writer_with_a_new_half_life_starts_afresh_but_readers_never_wipe(redis_client: Any) -> None:
    hourly = Trending(redis_client, half_life_s=HOUR)
    assert await hourly.top(10, 0.0) == [] and await hourly.values(["p"], 0.0) == {"p": 0.0}  # nothing yet
    now = (await hourly.base()).base
    await add(redis_client, hourly, "p", 1.0, now - HOUR)
    other = Trending(redis_client, half_life_s=2 * HOUR)
    # a reader configured differently decodes with the stored half-life and writes nothing
    assert dict(await other.top(10, now)) == pytest.approx({"p": 0.5})
    assert await redis_client.zcard(keys.TRENDING) == 1
    assert (await other.base()).half_life_s == 2 * HOUR  # the writer path resets
    assert await other.top(10, now) == []
