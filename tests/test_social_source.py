"""The social source: posts the people a user follows liked, commented on or shared.

The write side (the event consumer keeping each user's public engagements) is tested with
the other effects of applying events, in test_event_apply.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from feed.pipeline.retrieval_cache import RetrievalCache
from feed.pipeline.sources import SocialEngagementSource
from feed.social_graph import SocialGraph
from feed.stores import keys
from feed.stores.catalog.model import PostCatalog
from feed.stores.feature_store import FeatureStore, UserFeatures
from tests.conftest import Engine
from tests.test_e2e import add_posts, feed, interact
from tests.test_pipeline_stages import catalog_of, query, record


async def engaged(redis_client: Any, user_key: str, **posts: float) -> None:
    """Record that `user_key` engaged with these posts (post key -> time), as the consumer does."""
    await redis_client.zadd(keys.user_engaged(user_key), posts)


def uncached(catalog: PostCatalog) -> RetrievalCache:
    return RetrievalCache(catalog, 0.0, 0)


def following(*authors: str, **affinity: float) -> dict[str, Any]:
    features = UserFeatures(vectors={}, events=1, seen=frozenset(), affinity=affinity)
    return {"graph": SocialGraph(following=frozenset(authors)), "user": features}


async def test_the_store_counts_the_users_who_engaged_over_their_newest_engagements(
    redis_client: Any,
) -> None:
    await engaged(redis_client, "f1", p1=10.0, p2=20.0, p3=30.0)
    await engaged(redis_client, "f2", p1=40.0, p3=5.0)
    await engaged(redis_client, "stranger", p2=99.0)
    store = FeatureStore(redis_client)
    assert await store.recent_engagements(["f1", "f2"], per_user=2) == {
        "p3": (2, 30.0),
        "p2": (1, 20.0),  # f1's p1 is older than its two newest
        "p1": (1, 40.0),
    }
    assert await store.recent_engagements([], per_user=2) == {}


async def test_posts_most_followees_engaged_with_come_first_then_the_newest(redis_client: Any) -> None:
    catalog = catalog_of(*(record(k, author="x") for k in ("a", "b", "c", "d", "gone")))
    catalog.remove(["gone"])
    for f in ("f1", "f2", "f3"):
        await engaged(redis_client, f, a=1.0, gone=1.0, unknown=1.0)
    await engaged(redis_client, "f1", b=50.0, c=10.0, d=70.0)
    await engaged(redis_client, "f2", b=30.0, c=60.0)
    store = FeatureStore(redis_client)
    q = query(**following("f1", "f2", "f3"))

    source = SocialEngagementSource(
        catalog, store, budget=10, per_user=50, max_followees=200, cache=uncached(catalog)
    )
    found = await source.fetch(q)
    assert [catalog.keys[r] for r in found.rows] == ["a", "c", "b", "d"]  # no unknown or deleted post
    assert found.source_score.tolist() == [3.0, 2.0, 2.0, 1.0]
    assert found.source_names == ("social",) and not found.in_network.any()

    within_budget = await SocialEngagementSource(catalog, store, 2, 50, 200, uncached(catalog)).fetch(q)
    assert [catalog.keys[r] for r in within_budget.rows] == ["a", "c"]


async def test_a_user_following_many_has_those_they_engage_with_most_read(redis_client: Any) -> None:
    catalog = catalog_of(record("from-f1"), record("from-f2"))
    await engaged(redis_client, "f1", **{"from-f1": 1.0})
    await engaged(redis_client, "f2", **{"from-f2": 1.0})
    source = SocialEngagementSource(catalog, FeatureStore(redis_client), 10, 50, 1, uncached(catalog))
    found = await source.fetch(query(**following("f1", "f2", f2=3.0)))
    assert [catalog.keys[r] for r in found.rows] == ["from-f2"]


async def test_the_answer_is_kept_until_the_user_interacts(redis_client: Any) -> None:
    catalog = catalog_of(record("a"), record("b"))
    await engaged(redis_client, "f1", a=1.0)
    cache = RetrievalCache(catalog, ttl_s=60.0, max_users=10)
    source = SocialEngagementSource(catalog, FeatureStore(redis_client), 10, 50, 200, cache)
    q = query(**following("f1"))
    assert [catalog.keys[r] for r in (await source.fetch(q)).rows] == ["a"]
    await engaged(redis_client, "f1", b=2.0)  # not read again: the kept answer serves
    assert [catalog.keys[r] for r in (await source.fetch(q)).rows] == ["a"]
    after = dataclasses.replace(q, user=dataclasses.replace(q.user, events=q.user.events + 1))
    assert [catalog.keys[r] for r in (await source.fetch(after)).rows] == ["b", "a"]


def test_the_source_is_skipped_for_a_user_who_follows_no_one(redis_client: Any) -> None:
    source = SocialEngagementSource(
        catalog_of(), FeatureStore(redis_client), 10, 50, 200, uncached(catalog_of())
    )
    assert not source.enabled(query())
    assert source.enabled(query(**following("f1")))


async def test_a_post_a_followee_liked_reaches_the_follower_through_the_social_source(engine: Engine) -> None:
    engine.host.graphs["follower"] = {"following": ["friend"], "blocked": []}
    await add_posts(
        engine,
        [
            ("liked", "stranger", "Watercolour painting of a harbour at dawn"),
            ("unliked", "stranger-2", "Notes from a long train journey"),
        ],
    )
    await interact(engine, "friend", "liked", "like")
    await interact(engine, "friend", "unliked", "view")  # private: not shown to followers
    await _wait_applied(engine, "friend", 2)
    # both posts are in the API's catalogue before the follower's feed is ranked (and kept)
    await _wait_in_feed(engine, "probe", {"liked", "unliked"})

    body = await feed(engine, "follower", limit=50)
    sources = {item["post_id"]: item["source"] for item in body["items"]}
    assert sources["liked"] == "social", sources
    assert sources["unliked"] != "social"


async def _wait_applied(engine: Engine, user_key: str, n: int) -> None:
    from tests.helpers import wait_for

    async def applied() -> bool:
        return int(await engine.redis.hget(keys.user(user_key), "events") or 0) >= n

    await wait_for(applied)


async def _wait_in_feed(engine: Engine, user_id: str, post_ids: set[str]) -> None:
    from tests.helpers import wait_for

    async def present() -> bool:
        return post_ids <= {item["post_id"] for item in (await feed(engine, user_id, limit=50))["items"]}

    await wait_for(present)
