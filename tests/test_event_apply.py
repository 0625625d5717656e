"""Applying interaction events to real Redis: effects, idempotency, early events."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import redis
from msgspec.structs import replace

from feed.events.apply import EventApplier
from feed.events.schemas import InteractionEvent
from feed.stores import keys
from feed.stores.interaction_writes import InteractionWrites
from feed.stores.post_store import commit_ingested, mark_failed
from feed.stores.records import PostRecord, vector_from_bytes
from tests.helpers import unit


def store_post(
    settings: Any, key: str, author: str, vector: np.ndarray | None, image: np.ndarray | None = None
) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    vectors = {"text": vector} if vector is not None else {}
    if image is not None:
        vectors["image"] = image
    rec = PostRecord(
        key, key, author, author, time.time(), "image" if image is not None else "text", "t", vectors
    )
    assert commit_ingested(r, rec)
    r.close()


def event(eid: str, post: str, action: str = "like", user: str = "u1", **kw: Any) -> InteractionEvent:
    return InteractionEvent(
        event_id=eid,
        user_id=user,
        user_key=user,
        post_id=post,
        post_key=post,
        action=action,
        ts=time.time(),
        **kw,
    )


async def user_vector(r: Any, user: str, space: str = "text", horizon: str = "vec") -> np.ndarray | None:
    raw = await r.hget(keys.user(user), f"{horizon}:{space}")
    return vector_from_bytes(raw) if raw else None


async def test_like_updates_vector_counters_seen_affinity_trending(settings: Any, redis_client: Any) -> None:
    store_post(settings, "p1", "auth", unit(1, 0))
    applier = EventApplier(InteractionWrites(redis_client, settings), settings)
    result = await applier.apply([event("e1", "p1")])
    assert result.applied == 1
    vec = await user_vector(redis_client, "u1")
    assert vec is not None and np.allclose(vec, unit(1, 0), atol=1e-6)
    assert await redis_client.hget(keys.post_counts("p1"), "like") == b"1"
    assert await redis_client.zscore(keys.user_seen("u1"), "p1") is not None
    assert await redis_client.zscore(keys.user_affinity("u1"), "auth") == 1.0
    assert await redis_client.zscore(keys.TRENDING, "p1") is not None
    for half_life in settings.ranking.trending_horizons_s:
        assert await redis_client.zscore(keys.trending_horizon(half_life), "p1") is not None
    assert await redis_client.zscore(keys.AUTHOR_REACH, "auth") == 1.0
    assert await redis_client.hget(keys.user("u1"), "events") == b"1"


async def test_interest_is_learnt_per_space_from_the_vectors_each_post_has(
    settings: Any, redis_client: Any
) -> None:
    dog = unit(1, dim=512)
    store_post(settings, "photo", "a", None, image=dog)  # uncaptioned photo: image space only
    store_post(settings, "caption", "b", unit(0, 1), image=unit(0.9, 0.1, dim=512))
    applier = EventApplier(InteractionWrites(redis_client, settings), settings)
    await applier.apply([event("e1", "photo")])
    assert await user_vector(redis_client, "u1") is None
    image = await user_vector(redis_client, "u1", "image")
    assert image is not None and np.allclose(image, dog, atol=1e-6)
    await applier.apply([event("e2", "caption")])
    text = await user_vector(redis_client, "u1")
    assert text is not None and np.allclose(text, unit(0, 1), atol=1e-6)
    image = await user_vector(redis_client, "u1", "image")
    assert image is not None and 0.99 < float(image @ dog) < 1.0  # moved a step toward the caption post
    assert await redis_client.hget(keys.user("u1"), "events") == b"2"


async def test_the_short_term_vector_follows_recent_interests_faster_than_the_long_term_one(
    settings: Any, redis_client: Any
) -> None:
    for i in range(6):
        store_post(settings, f"sport{i}", "a", unit(1, 0.05 * i))
    for i in range(2):
        store_post(settings, f"cook{i}", "b", unit(0.05 * i, 1))
    applier = EventApplier(InteractionWrites(redis_client, settings), settings)
    await applier.apply([event(f"s{i}", f"sport{i}") for i in range(6)])
    await applier.apply([event(f"c{i}", f"cook{i}") for i in range(2)])
    cooking = unit(0, 1)
    long_term = await user_vector(redis_client, "u1")
    short_term = await user_vector(redis_client, "u1", horizon="svec")
    assert long_term is not None and short_term is not None
    assert float(short_term @ cooking) > 0.9  # two likes were enough to turn it
    assert float(long_term @ cooking) < 0.6  # still mostly sports
    assert float(long_term @ unit(1, 0)) > float(long_term @ cooking)


async def test_hiding_reporting_or_blocking_hides_the_author_but_not_interested_does_not(
    settings: Any, redis_client: Any
) -> None:
    for post, author in (("p1", "a1"), ("p2", "a2"), ("p3", "a3"), ("p4", "a4"), ("p5", "a5")):
        store_post(settings, post, author, unit(1))
    applier = EventApplier(InteractionWrites(redis_client, settings), settings)
    actions = ["hide", "report", "block_author", "not_interested", "like"]
    await applier.apply([event(f"e{i}", f"p{i + 1}", action=a) for i, a in enumerate(actions)])
    hidden = await redis_client.smembers(keys.user_hidden_authors("u1"))
    assert {h.decode() for h in hidden} == {"a1", "a2", "a3"}


async def test_negative_action_moves_vector_away(settings: Any, redis_client: Any) -> None:
    store_post(settings, "good", "a", unit(1, 0))
    store_post(settings, "bad", "b", unit(0, 1))
    applier = EventApplier(InteractionWrites(redis_client, settings), settings)
    await applier.apply([event("e1", "good")])
    await applier.apply([event("e2", "bad", action="not_interested")])
    vec = await user_vector(redis_client, "u1")
    assert vec is not None and float(vec @ unit(0, 1)) < 0
    assert await redis_client.zscore(keys.TRENDING, "bad") is None
    for half_life in settings.ranking.trending_horizons_s:
        assert await redis_client.zscore(keys.trending_horizon(half_life), "bad") is None
        assert await redis_client.zscore(keys.trending_horizon(half_life), "good") is not None
    assert (await redis_client.zscore(keys.user_affinity("u1"), "b")) < 0


async def test_replaying_the_same_event_applies_it_once(settings: Any, redis_client: Any) -> None:
    store_post(settings, "p1", "a", unit(1, 0))
    store_post(settings, "p2", "a", unit(0, 1))
    applier = EventApplier(InteractionWrites(redis_client, settings), settings)
    await applier.apply([event("e1", "p1")])
    await applier.apply([event("e2", "p2")])
    before = await user_vector(redis_client, "u1")
    again = await applier.apply([event("e2", "p2"), event("e2", "p2"), event("e1", "p1")])
    assert again.applied == 0 and again.duplicates == 3
    assert np.array_equal(before, await user_vector(redis_client, "u1"))  # type: ignore[arg-type]
    assert await redis_client.hget(keys.post_counts("p2"), "like") == b"1"
    assert await redis_client.hget(keys.user("u1"), "events") == b"2"


async def test_event_before_its_post_is_kept_and_applied_later(settings: Any, redis_client: Any) -> None:
    applier = EventApplier(InteractionWrites(redis_client, settings), settings)
    first = await applier.apply([event("e1", "late")])
    assert first.parked == 1 and await user_vector(redis_client, "u1") is None
    assert (await applier.retry_pending()).applied == 0
    store_post(settings, "late", "a", unit(0, 0, 1))
    assert (await applier.retry_pending()).applied == 1
    assert np.allclose(await user_vector(redis_client, "u1"), unit(0, 0, 1), atol=1e-6)  # type: ignore[arg-type]
    assert await redis_client.zcard(keys.PENDING_POSTS) == 0


async def test_events_for_posts_that_never_come_are_dropped_with_a_reason(
    settings: Any, redis_client: Any
) -> None:
    applier = EventApplier(InteractionWrites(redis_client, settings), settings)
    await applier.apply([event("e1", "ghost"), event("e2", "ghost")])
    result = await applier.retry_pending(now=time.time() + settings.pending_event_ttl_s + 1)
    assert result.dropped == 2
    assert await redis_client.hget(keys.DROPPED_EVENTS, "unknown_post") == b"2"
    assert await redis_client.zcard(keys.PENDING_POSTS) == 0


async def test_events_on_failed_posts_are_dropped_with_a_reason(settings: Any, redis_client: Any) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    r.hset(keys.post_state("f"), mapping={"state": "queued"})
    mark_failed(r, "f", "bad content")
    r.close()
    result = await EventApplier(InteractionWrites(redis_client, settings), settings).apply([event("e1", "f")])
    assert result.dropped == 1
    assert await redis_client.hget(keys.DROPPED_EVENTS, "failed_post") == b"1"


async def test_concurrent_batches_for_the_same_user_lose_no_update(settings: Any, redis_client: Any) -> None:
    """Optimistic transactions: a batch whose user changed after it read them retries."""
    import asyncio

    for i in range(40):
        store_post(settings, f"q{i}", "a", unit(1, 0.1 * i))
    appliers = [EventApplier(InteractionWrites(redis_client, settings), settings) for _ in range(4)]
    batches = [[event(f"c{k}-{i}", f"q{k * 10 + i}") for i in range(10)] for k in range(4)]
    results = await asyncio.gather(*(a.apply(b) for a, b in zip(appliers, batches, strict=True)))
    assert sum(r.applied for r in results) == 40
    assert await redis_client.hget(keys.user("u1"), "events") == b"40"
    assert await redis_client.zcard(keys.user_seen("u1")) == 40
    assert await redis_client.zscore(keys.user_affinity("u1"), "a") == 40.0


async def test_ids_with_separators_and_any_characters_apply_intact(settings: Any, redis_client: Any) -> None:
    """The batch script receives fields length-prefixed: ids containing ':' or digits survive."""
    store_post(settings, "12:post:9", "au:th 3", unit(1, 0))
    applier = EventApplier(InteractionWrites(redis_client, settings), settings)
    result = await applier.apply([event("ev:1:2", "12:post:9", user="u:7:ü")])
    assert result.applied == 1
    assert await redis_client.hget(keys.post_counts("12:post:9"), "like") == b"1"
    assert await redis_client.zscore(keys.user_seen("u:7:ü"), "12:post:9") is not None
    assert await redis_client.zscore(keys.user_affinity("u:7:ü"), "au:th 3") == 1.0
    assert await redis_client.exists(keys.event_done("ev:1:2"))
    assert await user_vector(redis_client, "u:7:ü") is not None


async def test_likes_comments_and_shares_are_kept_as_public_engagements_newest_first(
    settings: Any, redis_client: Any
) -> None:
    actions = ["like", "comment", "share", "view", "click", "dwell"]
    for i in range(len(actions)):
        store_post(settings, f"p{i}", "a", unit(1, 0))
    applier = EventApplier(InteractionWrites(redis_client, settings), settings)
    events = [event(f"e{i}", f"p{i}", action=a) for i, a in enumerate(actions)]
    await applier.apply(events)
    engaged = await redis_client.zrange(keys.user_engaged("u1"), 0, -1, withscores=True)
    assert {(k.decode(), s) for k, s in engaged} == {(e.post_key, e.ts) for e in events[:3]}
    older = replace(event("e-old", "p0"), ts=events[0].ts - 3600)  # a backfilled like keeps the newest time
    await applier.apply([older])
    assert await redis_client.zscore(keys.user_engaged("u1"), "p0") == events[0].ts


async def test_public_engagements_are_trimmed_to_the_newest_kept(settings: Any, redis_client: Any) -> None:
    for i in range(5):
        store_post(settings, f"p{i}", "a", unit(1, 0))
    applier = EventApplier(
        InteractionWrites(redis_client, settings.model_copy(update={"social_engaged_keep": 3})),
        settings.model_copy(update={"social_engaged_keep": 3}),
    )
    now = time.time()
    await applier.apply([replace(event(f"e{i}", f"p{i}"), ts=now + i) for i in range(5)])
    kept = await redis_client.zrange(keys.user_engaged("u1"), 0, -1)
    assert [k.decode() for k in kept] == ["p2", "p3", "p4"]


async def test_a_later_negative_action_takes_the_engagement_back(settings: Any, redis_client: Any) -> None:
    for post in ("p1", "p2", "p3"):
        store_post(settings, post, "a", unit(1, 0))
    applier = EventApplier(InteractionWrites(redis_client, settings), settings)
    await applier.apply([event(f"e-{post}", post) for post in ("p1", "p2", "p3")])
    await applier.apply([event("e4", "p1", user="u2")])
    await applier.apply([event("e5", "p1", action="report"), event("e6", "p2", action="not_interested")])
    assert [k.decode() for k in await redis_client.zrange(keys.user_engaged("u1"), 0, -1)] == ["p3"]
    assert await redis_client.zscore(keys.user_engaged("u2"), "p1") is not None  # another user's stays
