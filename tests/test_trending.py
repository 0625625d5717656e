"""Trending: decayed engagement in one sorted set, backfills, rebasing, a changed half-life.

Increments are written as the event applier's script writes them (`TrendingBase.units`) and
read back through the API's read path: a `PostCatalog` loaded by `CatalogSync`.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from feed.stores import keys
from feed.stores.catalog import PostCatalog
from feed.stores.catalog_sync import CatalogSync
from feed.stores.post_store import commit_ingested
from feed.stores.records import PostRecord
from feed.stores.trending import REBASE_AFTER, Trending
from feed.stores.vectors import space_dims
from tests.helpers import unit

HOUR = 3600.0


def ingest(settings: Any, *post_keys: str) -> None:
    """Store these posts as records, so the catalogue holds them."""
    r = redis.Redis.from_url(settings.redis_url)
    for key in post_keys:
        assert commit_ingested(r, PostRecord(key, key, "a", "a", 0.0, "text", key, {"text": unit(1)}))
    r.close()


async def add(redis_client: Any, trending: Trending, post: str, weight: float, ts: float) -> None:
    base = await trending.base()
    pipe = redis_client.pipeline(transaction=True)
    pipe.zincrby(keys.TRENDING, base.units(weight, ts), post)
    await pipe.execute()


async def load(settings: Any, redis_client: Any) -> PostCatalog:
    catalog = PostCatalog(space_dims(settings))
    await CatalogSync(redis_client, catalog).load()
    return catalog


def top(catalog: PostCatalog, now: float) -> list[tuple[str, float]]:
    """The catalogue's trending posts, best first, with their values at `now`."""
    rows = catalog.top_trending(10)
    worth = catalog.trending_values(rows, now).tolist()
    return [(catalog.keys[r], v) for r, v in zip(rows.tolist(), worth, strict=True)]


def values(catalog: PostCatalog, post_keys: list[str], now: float) -> dict[str, float]:
    worth = catalog.trending_values(catalog.rows_of(post_keys), now).tolist()
    return dict(zip(post_keys, worth, strict=True))


async def test_order_and_values_follow_the_decay(settings: Any, redis_client: Any) -> None:
    ingest(settings, "old-hit", "new", "steady", "never")
    trending = Trending(redis_client, half_life_s=HOUR)
    now = (await trending.base()).base
    await add(redis_client, trending, "old-hit", 8.0, now - 4 * HOUR)  # worth 8 / 16 = 0.5 now
    await add(redis_client, trending, "new", 1.0, now)
    await add(redis_client, trending, "steady", 0.5, now - HOUR)
    await add(redis_client, trending, "steady", 0.5, now)
    catalog = await load(settings, redis_client)
    ranked = top(catalog, now)
    assert [k for k, _ in ranked] == ["new", "steady", "old-hit"]  # "never" has none
    assert dict(ranked) == pytest.approx({"new": 1.0, "steady": 0.75, "old-hit": 0.5})
    # an hour later everything has halved, the order is the same
    assert dict(top(catalog, now + HOUR)) == pytest.approx({"new": 0.5, "steady": 0.375, "old-hit": 0.25})
    assert values(catalog, ["steady", "never"], now) == pytest.approx({"steady": 0.75, "never": 0.0})


async def test_rebase_keeps_values_and_drops_what_decayed_away(settings: Any, redis_client: Any) -> None:
    ingest(settings, "faded", "hot")
    trending = Trending(redis_client, half_life_s=HOUR)
    start = (await trending.base()).base
    await add(redis_client, trending, "faded", 1.0, start)
    later = start + (REBASE_AFTER - 10) * HOUR
    await add(redis_client, trending, "hot", 3.0, later)
    assert not await trending.rebase_if_due(later)
    due = start + REBASE_AFTER * HOUR
    before = dict(top(await load(settings, redis_client), due))
    assert set(before) == {"hot", "faded"}
    assert await trending.rebase_if_due(due)
    assert (await trending.base()).base == due
    after = dict(top(await load(settings, redis_client), due))
    assert after == pytest.approx({"hot": before["hot"]})  # "faded" is gone
    assert before["hot"] == pytest.approx(3.0 / 2**10)


async def test_a_writer_with_a_new_half_life_starts_afresh_but_readers_never_wipe(
    settings: Any, redis_client: Any
) -> None:
    ingest(settings, "p")
    catalog = await load(settings, redis_client)
    assert top(catalog, 0.0) == [] and values(catalog, ["p"], 0.0) == {"p": 0.0}  # nothing yet
    hourly = Trending(redis_client, half_life_s=HOUR)
    now = (await hourly.base()).base
    await add(redis_client, hourly, "p", 1.0, now - HOUR)
    # the reader decodes with the stored half-life and writes nothing
    assert dict(top(await load(settings, redis_client), now)) == pytest.approx({"p": 0.5})
    assert await redis_client.zcard(keys.TRENDING) == 1
    other = Trending(redis_client, half_life_s=2 * HOUR)
    assert (await other.base()).half_life_s == 2 * HOUR  # the writer path resets
    assert top(await load(settings, redis_client), now) == []
