"""The collaborative-filtering batch layer: training from the interaction log, the atomic swap,
the scorer, and a retrain changing a feed."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import redis

from feed.batch import cf
from feed.events.apply import EventApplier
from feed.events.schemas import InteractionEvent
from feed.pipeline.candidate_hydrators import CFFactorsHydrator
from feed.pipeline.candidates import Candidates
from feed.pipeline.components import FeedQuery
from feed.pipeline.retrieval_cache import RetrievalCache
from feed.pipeline.scorers import CollaborativeScorer
from feed.pipeline.sources import CollaborativeSource
from feed.stores import keys
from feed.stores.catalog.model import NO_ROW, PostCatalog
from feed.stores.catalog.sync import CatalogSync
from feed.stores.feature_store import FeatureStore, UserFeatures
from feed.stores.index.edge import EdgeVectorIndex
from feed.stores.index.sync import IndexSync
from feed.stores.index.vectors import space_dims
from feed.stores.interaction_writes import InteractionWrites
from feed.stores.records import PostRecord, vector_from_bytes
from tests.conftest import Engine
from tests.helpers import unit, wait_for
from tests.test_e2e import feed, interact, seed
from tests.test_event_apply import store_post


def event(n: int, user: str, post: str, action: str = "like") -> InteractionEvent:
    return InteractionEvent(f"e{n}", user, user, post, post, action, time.time())


async def test_training_reads_the_log_and_swaps_the_model_in(settings: Any, redis_client: Any) -> None:
    for post in ("a", "b", "c", "d"):
        store_post(settings, post, f"author-{post}", unit(1))
    applier = EventApplier(InteractionWrites(redis_client, settings), settings)
    n = 0
    for user in ("u1", "u2", "u3"):
        for post in ("a", "b"):
            n += 1
            await applier.apply([event(n, user, post)])
    await applier.apply([event(100, "u4", "c"), event(101, "u4", "d", "report")])  # report cancels out
    assert await redis_client.xlen(keys.INTERACTION_LOG) == 8

    r = redis.Redis.from_url(settings.redis_url)
    settings = settings.model_copy(update={"cf_factors": 8, "cf_iterations": 5})
    result = cf.train(r, settings)
    assert (result.pairs, result.users, result.items) == (7, 4, 3)  # (u4, d) nets below zero
    users = await redis_client.hgetall(keys.CF_USERS)
    items = await redis_client.hgetall(keys.CF_ITEMS)
    assert set(users) == {b"u1", b"u2", b"u3", b"u4"} and set(items) == {b"a", b"b", b"c"}
    assert vector_from_bytes(users[b"u1"]).shape == (8,)
    assert not await redis_client.exists(keys.CF_USERS + ":staging", keys.CF_ITEMS + ":staging")
    assert int(await redis_client.hget(keys.CF_META, "factors")) == 8
    # users who liked a and b score b above c
    u1 = vector_from_bytes(users[b"u1"])
    assert u1 @ vector_from_bytes(items[b"b"]) > u1 @ vector_from_bytes(items[b"c"])

    # a retrain replaces the whole model: posts that left the log leave the model
    await redis_client.delete(keys.INTERACTION_LOG)
    await applier.apply([event(200, "u9", "d")])
    cf.train(r, settings)
    assert set(await redis_client.hkeys(keys.CF_ITEMS)) == {b"d"}
    r.close()


def test_empty_log_keeps_the_current_model(settings: Any) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    r.hset(keys.CF_USERS, "u", b"\x00" * 4)
    assert cf.train(r, settings).pairs == 0
    assert r.hexists(keys.CF_USERS, "u")
    r.close()


async def test_a_retrain_reaches_the_vector_index_and_the_collaborative_source(
    settings: Any, redis_client: Any, tmp_path: Any
) -> None:
    settings = settings.model_copy(update={"cf_factors": 8, "cf_iterations": 10})
    index = EdgeVectorIndex(tmp_path / "shard", space_dims(settings))
    sync = IndexSync(redis_client, index)
    posts = ["a", "b", "c", "d", "e"]
    for post in posts:
        store_post(settings, post, f"author-{post}", unit(1))
    applier = EventApplier(InteractionWrites(redis_client, settings), settings)
    n = 0
    for name, liked in (("u1", "abc"), ("u2", "abc"), ("u3", "ab"), ("u4", "de"), ("u5", "de")):
        for post in liked:
            n += 1
            await applier.apply([event(n, name, post)])
    await sync.catch_up()
    assert await index.count() == 5
    r = redis.Redis.from_url(settings.redis_url)
    cf.train(r, settings)
    await sync.catch_up()  # applies the retrain's `cf` operation

    user = await FeatureStore(redis_client).user_features("u3")
    assert user.cf is not None and user.cf_version > 0
    q = FeedQuery(user_id="u3", user_key="u3", limit=3, cursor="c", now=time.time(), user=user)
    catalog = PostCatalog(space_dims(settings))
    assert await CatalogSync(redis_client, catalog).load() == 5
    no_cache = RetrievalCache(catalog, ttl_s=0, max_users=0)  # every fetch below asks the index
    source = CollaborativeSource(index, budget=3, cache=no_cache)
    assert source.enabled(q)

    async def found() -> list[str]:
        rows = (await source.fetch(q)).rows.tolist()
        assert NO_ROW not in rows  # every hit is a post of the catalogue
        return [catalog.keys[r] for r in rows]

    assert set(await found()) == {"a", "b", "c"}  # users who liked what u3 liked also liked c, not d or e

    store_post(settings, "c", "author-c", unit(1))  # ingested again: the point is replaced
    await sync.catch_up()
    assert "c" in await found()  # its factors were copied back

    # a newer model hides the old model's factors until the index has the new ones
    old_version = user.cf_version
    cf.train(r, settings)
    newer = await FeatureStore(redis_client).user_features("u3")
    assert newer.cf is not None and newer.cf_version > old_version
    assert await index.nearest_cf(newer.cf, newer.cf_version, 3, []) == []
    await sync.catch_up()
    assert len(await index.nearest_cf(newer.cf, newer.cf_version, 3, [])) == 3
    r.close()
    await index.close()


async def test_collaborative_scorer_grows_with_the_users_history() -> None:
    catalog = PostCatalog({"text": 384})
    catalog.upsert(
        PostRecord(k, k, "a", "a", 0.0, "text", "", {"text": unit(1)}) for k in ("near", "far", "new")
    )
    catalog.set_cf(3, {"near": np.array([1.0, 0.0], np.float32), "far": np.array([0.0, 1.0], np.float32)}, 2)
    candidates = Candidates.concat(
        [
            Candidates.of(catalog.rows_of(["near", "far"]), "phoenix"),
            Candidates.of(catalog.rows_of(["new"]), "fresh"),  # no factors in the model
        ]
    )
    user_cf = np.array([1.5, -0.2], np.float32)  # predicted preference: near 1.5 -> 1, far -0.2 -> 0
    parts = []
    for events in (0, 20, 2000):
        q = FeedQuery(user_id="u", user_key="u", limit=10, cursor="c", now=0.0)
        q.user = UserFeatures(
            vectors={}, events=events, seen=frozenset(), affinity={}, cf=user_cf, cf_version=3
        )
        await CFFactorsHydrator(catalog).hydrate(q, candidates)
        CollaborativeScorer(weight=1.0, half_events=20.0).score(q, candidates)
        parts.append(tuple(candidates.parts["cf"].tolist()))
    assert parts[0] == (0.0, 0.0, 0.0)
    assert parts[1] == pytest.approx((0.5, 0.0, 0.0))
    assert parts[2][0] == pytest.approx(1.0, abs=0.01) and parts[2][1] == parts[2][2] == 0.0
    # factors of another model (the catalogue has not caught up with the user's) count for nothing
    q.user = UserFeatures(vectors={}, events=2000, seen=frozenset(), affinity={}, cf=user_cf, cf_version=4)
    await CFFactorsHydrator(catalog).hydrate(q, candidates)
    CollaborativeScorer(weight=1.0, half_events=20.0).score(q, candidates)
    assert candidates.parts["cf"].tolist() == [0.0, 0.0, 0.0]
    assert not CollaborativeScorer(1.0, 20.0).enabled(
        FeedQuery(user_id="u", user_key="u", limit=1, cursor="c", now=0)
    )


async def test_after_a_retrain_the_feed_carries_the_cf_part(engine: Engine) -> None:
    await seed(engine)
    for user in ("fan-1", "fan-2", "fan-3"):
        for post in (100, 101, 102):
            await interact(engine, user, post, "like")
    await interact(engine, "newcomer", 100, "like")
    await wait_for(lambda: _applied(engine, 10))
    r = redis.Redis.from_url(engine.settings.redis_url)
    cf.train(r, engine.settings.model_copy(update={"cf_factors": 8, "cf_iterations": 10}))
    r.close()
    body = await feed(engine, "newcomer", limit=50, explain=True)
    parts = {item["post_id"]: item["score_parts"] for item in body["items"]}
    assert parts[101]["cf"] > parts["s-0"]["cf"] and parts[102]["cf"] > parts["s-1"]["cf"]
    assert any(s["name"] == "cf" and s["status"] == "ok" for s in body["stages"])


async def _applied(engine: Engine, n: int) -> bool:
    return int(await engine.redis.get(keys.APPLIED_EVENTS) or 0) >= n
