"""Trending: decayed engagement in one sorted set, backfills, rebasing, a changed half-life,
and the extra horizons (one set per half-life of `RankingConfig.trending_horizons_s`).

Increments are written as the event applier's script writes them (`TrendingBase.units`) and
read back through the API's read path: a `PostCatalog` loaded by `CatalogSync`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import redis
from msgspec.structs import replace

from feed.events.apply import EventApplier
from feed.events.ema import action_weight
from feed.stores import keys
from feed.stores.catalog.model import PostCatalog
from feed.stores.catalog.sync import CatalogSync
from feed.stores.index.vectors import space_dims
from feed.stores.interaction_writes import InteractionWrites
from feed.stores.messages import pack_keys
from feed.stores.post_store import commit_ingested
from feed.stores.records import PostRecord
from feed.stores.trending import REBASE_AFTER, Trending
from tests.helpers import unit
from tests.test_event_apply import event

HOUR = 3600.0
DAY = 24 * HOUR


def ingest(settings: Any, *post_keys: str) -> None:
    """Store these posts as records, so the catalogue holds them."""
    r = redis.Redis.from_url(settings.redis_url)
    for key in post_keys:
        assert commit_ingested(r, PostRecord(key, key, "a", "a", 0.0, "text", key, {"text": unit(1)}))
    r.close()


async def add(redis_client: Any, trending: Trending, post: str, weight: float, ts: float) -> None:
    base = await trending.base()
    pipe = redis_client.pipeline(transaction=True)
    pipe.zincrby(trending.key, base.units(weight, ts), post)
    await pipe.execute()


async def following(settings: Any, redis_client: Any) -> tuple[PostCatalog, CatalogSync]:
    """A loaded catalogue, as the API holds it, and the sync that keeps it in step."""
    catalog = PostCatalog(space_dims(settings), horizons_s=settings.ranking.trending_horizons_s)
    sync = CatalogSync(redis_client, catalog)
    await sync.load()
    return catalog, sync


async def load(settings: Any, redis_client: Any) -> PostCatalog:
    catalog, _ = await following(settings, redis_client)
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


async def test_events_add_to_every_horizon_with_its_decay_and_the_catalogue_follows(
    settings: Any, redis_client: Any
) -> None:
    ingest(settings, "p", "q", "bad")
    horizons = settings.ranking.trending_horizons_s
    assert len(horizons) == 3
    now = time.time()
    history = [
        ("e1", "p", "like", now - 30 * DAY),
        ("e2", "p", "share", now - DAY),
        ("e3", "q", "like", now),
        ("e4", "bad", "hide", now),  # negative actions count for no horizon
        ("e5", "bad", "not_interested", now),
    ]
    applier = EventApplier(InteractionWrites(redis_client, settings), settings)

    async def apply(*events: tuple[str, str, str, float]) -> None:
        await applier.apply([replace(event(i, post, action), ts=ts) for i, post, action, ts in events])

    def by_hand(post: str, at: float) -> list[float]:
        """Each horizon's decayed sum of the post's positive engagement at `at`."""
        weights = [(action_weight(a, None, settings.ranking), ts) for _, p, a, ts in history if p == post]
        return [sum(w * 2.0 ** ((ts - at) / h) for w, ts in weights if w > 0) for h in horizons]

    await apply(*history)
    for column, half_life in enumerate(horizons):
        base = (await Trending.horizon(redis_client, half_life).base()).base
        assert await redis_client.zscore(keys.trending_horizon(half_life), "p") == pytest.approx(
            by_hand("p", base)[column]
        )
        assert await redis_client.zscore(keys.trending_horizon(half_life), "bad") is None
    catalog, sync = await following(settings, redis_client)
    rows = catalog.rows_of(["p", "q", "bad"])
    later = now + 7 * DAY
    assert catalog.horizon_values(rows, later).shape == (3, 3)
    assert np.allclose(catalog.horizon_values(rows, later), [by_hand(k, later) for k in ("p", "q", "bad")])
    # a new event reaches the catalogue through the changes stream
    history.append(("e6", "q", "share", now + HOUR))
    await apply(history[-1])
    assert await sync.poll() > 0
    assert np.allclose(catalog.horizon_values(rows, later), [by_hand(k, later) for k in ("p", "q", "bad")])
    assert by_hand("q", later)[0] < by_hand("q", later)[2]  # the short horizon has forgotten more


async def test_rebasing_one_horizon_keeps_values_and_the_catalogue_reloads(
    settings: Any, redis_client: Any
) -> None:
    ingest(settings, "faded", "hot")
    short, month, _ = settings.ranking.trending_horizons_s
    horizon, other = Trending.horizon(redis_client, short), Trending.horizon(redis_client, month)
    start = (await horizon.base()).base
    due = start + REBASE_AFTER * short
    await add(redis_client, horizon, "faded", 1.0, start)
    await add(redis_client, horizon, "hot", 3.0, due - short)  # worth 1.5 at `due`
    await add(redis_client, other, "hot", 1.0, start)
    other_base, untouched = (await other.base()).base, await redis_client.zscore(other.key, "hot")
    catalog, sync = await following(settings, redis_client)
    rows = catalog.rows_of(["faded", "hot"])
    assert catalog.horizon_values(rows, due)[:, 0] == pytest.approx([2.0**-REBASE_AFTER, 1.5])
    assert await horizon.rebase_if_due(due)
    assert (await horizon.base()).base == due and (await other.base()).base == other_base
    assert await redis_client.zscore(horizon.key, "faded") is None  # decayed away
    assert await redis_client.zscore(other.key, "hot") == untouched
    assert await redis_client.zcard(keys.TRENDING) == 0  # the main set is another set
    # the next refresh sees the new base and reloads every stored score
    await redis_client.xadd(keys.CHANGES_STREAM, {"posts": pack_keys(["hot"]), "authors": pack_keys([])})
    await sync.poll()
    assert catalog.horizon_bases[0] is not None and catalog.horizon_bases[0].base == due
    assert catalog.horizon_values(rows, due)[:, 0] == pytest.approx([0.0, 1.5])
    assert catalog.horizon_values(rows, start)[:, 1] == pytest.approx([0.0, 1.0])
