"""The whole engine on real servers: API, Celery worker, consumer on Redis Streams, host backend.

Proves it learns: likes on cooking posts put cooking above sports in the next feed; a
followed author's new post arrives through Thunder; blocked authors never appear;
pagination never repeats; a deleted post leaves the feed.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Engine
from tests.helpers import wait_for

COOKING = [
    "Fresh homemade pasta with basil, garlic and olive oil",
    "How to bake crusty sourdough bread at home",
    "Slow-cooked beef stew with carrots and red wine",
    "A quick recipe for lemon garlic roast chicken",
    "Making spicy Thai green curry from scratch in the kitchen",
    "Chocolate chip cookies: the best baking recipe",
]
SPORTS = [
    "Late goal wins the football derby in stoppage time",
    "Tennis champion defends her title at the open",
    "Basketball playoffs: a buzzer beater decides game seven",
    "Marathon runner breaks the course record",
    "Cricket test match ends in a dramatic draw",
    "Formula one driver takes pole position in the rain",
]


async def add_posts(engine: Engine, posts: list[tuple[Any, Any, str]]) -> None:
    for post_id, author, text in posts:
        body = {"post_id": post_id, "author_id": author, "text": text}
        response = await engine.client.post("/posts", json=body)
        assert response.status_code == 202, response.text
        assert response.json()["state"] == "queued"
    for post_id, _, _ in posts:
        await wait_for(lambda p=post_id: _state(engine, p, "ingested"))


async def _state(engine: Engine, post_id: Any, state: str) -> bool:
    response = await engine.client.get(f"/posts/{post_id}")
    return bool(response.status_code == 200 and response.json()["state"] == state)


async def feed(engine: Engine, user: Any, **kw: Any) -> dict[str, Any]:
    response = await engine.client.post("/feed", json={"user_id": user, **kw})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def interact(engine: Engine, user: Any, post_id: Any, action: str) -> str:
    body = {"user_id": user, "post_id": post_id, "action": action}
    response = await engine.client.post("/interaction", json=body)
    assert response.status_code == 202, response.text
    event_id: str = response.json()["event_id"]
    return event_id


def ids(body: dict[str, Any]) -> list[Any]:
    return [item["post_id"] for item in body["items"]]


async def seed(engine: Engine) -> None:
    await add_posts(
        engine,
        [(100 + i, f"chef-{i}", t) for i, t in enumerate(COOKING)]
        + [(f"s-{i}", f"sports-{i}", t) for i, t in enumerate(SPORTS)],
    )
    # every post must be in the vector index (applied by the API's IndexSync) before ranking
    await wait_for(lambda: _all_indexed(engine, len(COOKING) + len(SPORTS)))


async def _all_indexed(engine: Engine, n: int) -> bool:
    body = await feed(engine, "probe-user", limit=200, explain=True)
    return len(body["items"]) >= n


async def test_likes_on_cooking_rank_cooking_above_sports(engine: Engine) -> None:
    await seed(engine)
    for post_id in (100, 101):
        await interact(engine, "u1", post_id, "like")
    await wait_for(lambda: _excludes(engine, "u1", {100, 101}))

    body = await feed(engine, "u1", limit=50, explain=True)
    order = ids(body)
    cooking_ranks = [order.index(100 + i) for i in range(2, len(COOKING))]
    sports_ranks = [order.index(f"s-{i}") for i in range(len(SPORTS))]
    assert max(cooking_ranks) < min(sports_ranks), [(i["post_id"], i["score_parts"]) for i in body["items"]]
    top = body["items"][0]
    assert top["source"] in {"phoenix", "trending", "fresh"}
    assert top["score_parts"]["similarity"] > 0
    assert body["took_ms"] > 0
    assert {s["stage"] for s in body["stages"]} >= {"hydrator", "source", "filter", "scorer", "reranker"}


async def _excludes(engine: Engine, user: Any, post_ids: set[Any]) -> bool:
    return not post_ids & set(ids(await feed(engine, user, limit=50)))


async def test_followed_author_arrives_via_thunder_and_blocked_never_appears(engine: Engine) -> None:
    engine.host.graphs["u2"] = {"following": ["friend"], "blocked": ["sports-0", "chef-1"]}
    await seed(engine)
    await add_posts(engine, [("friend-post", "friend", "My holiday photos from the mountains")])
    unblocked = {i["author_id"] for i in (await feed(engine, "u2-twin", limit=50))["items"]}
    assert {"sports-0", "chef-1"} <= unblocked  # their posts are there for a user who does not block them

    body = await wait_for(lambda: _has(engine, "u2", "friend-post"))
    item = next(i for i in body["items"] if i["post_id"] == "friend-post")
    assert item["source"] == "thunder"
    authors = {i["author_id"] for i in body["items"]}
    assert "sports-0" not in authors and "chef-1" not in authors
    assert engine.host.calls >= 1


async def _has(engine: Engine, user: Any, post_id: Any) -> dict[str, Any] | None:
    body = await feed(engine, user, limit=50)
    return body if post_id in ids(body) else None


async def test_pages_never_repeat_and_end(engine: Engine) -> None:
    await seed(engine)
    seen: list[Any] = []
    cursor = None
    for _ in range(10):
        body = await feed(engine, "u3", limit=5, **({"cursor": cursor} if cursor else {}))
        seen.extend(ids(body))
        cursor = body["next_cursor"]
        if cursor is None:
            break
        # no waiting: the session is stored before the page is answered
    assert cursor is None
    assert len(seen) == len(set(seen)) == len(COOKING) + len(SPORTS)
    await wait_for(lambda: _impressions(engine, seen))  # counted off the response path


async def _impressions(engine: Engine, post_ids: list[Any]) -> bool:
    from feed.stores import keys

    counted = await engine.redis.zmscore(keys.IMPRESSIONS, [str(p) for p in post_ids])
    return all(counted)


async def test_deleted_post_leaves_the_feed(engine: Engine) -> None:
    await seed(engine)
    assert 103 in ids(await feed(engine, "u4-twin", limit=50))  # there before it is deleted
    response = await engine.client.delete("/posts/103")
    assert response.status_code == 200 and response.json()["state"] == "deleted"
    await wait_for(lambda: _excludes(engine, "u4", {103}))
    assert (await engine.client.get("/posts/103")).json()["state"] == "deleted"
    assert (await engine.client.delete("/posts/never-sent")).status_code == 404


async def test_replayed_host_event_is_applied_once(engine: Engine) -> None:
    await seed(engine)
    body = {"user_id": "u5", "post_id": 100, "action": "like", "event_id": "host-evt-1"}
    for _ in range(3):
        response = await engine.client.post("/interaction", json=body)
        assert response.status_code == 202 and response.json()["event_id"] == "host-evt-1"
    # a later event of the same user (the same partition): once it is applied, the consumer
    # has read all three copies
    await interact(engine, "u5", 101, "like")
    from feed.stores import keys

    await wait_for(lambda: _count(engine, keys.post_counts("101"), "like", 1))
    assert float(await engine.redis.hget(keys.post_counts("100"), "like")) == 1.0
    assert await _excludes(engine, "u5", {100})


async def _count(engine: Engine, key: str, field: str, n: float) -> bool:
    raw = await engine.redis.hget(key, field)
    return raw is not None and float(raw) >= n


async def test_event_before_its_post_is_applied_when_the_post_arrives(engine: Engine) -> None:
    await interact(engine, "u6", "late-post", "like")
    await add_posts(engine, [("late-post", "chef-0", "Grilled vegetables with herbs")])
    from feed.stores import keys

    await wait_for(lambda: _count(engine, keys.post_counts("late-post"), "like", 1), timeout=30)


async def test_a_backfilled_event_counts_at_the_time_it_happened(engine: Engine) -> None:
    import time
    from datetime import UTC, datetime

    from feed.stores import keys
    from feed.stores.catalog.model import PostCatalog
    from feed.stores.catalog.sync import CatalogSync
    from feed.stores.index.vectors import space_dims

    await add_posts(engine, [("old-news", "desk", "Election results announced")])
    three_hours_ago = time.time() - 3 * 3600
    body = {
        "user_id": "u7",
        "post_id": "old-news",
        "action": "like",
        "occurred_at": datetime.fromtimestamp(three_hours_ago, UTC).isoformat(),
    }
    assert (await engine.client.post("/interaction", json=body)).status_code == 202
    await wait_for(lambda: engine.redis.zscore(keys.user_seen("u7"), "old-news"))
    seen_at = await engine.redis.zscore(keys.user_seen("u7"), "old-news")
    assert seen_at == pytest.approx(three_hours_ago, abs=1.0)
    half_life = engine.settings.ranking.trending_half_life_s
    catalog = PostCatalog(space_dims(engine.settings))  # read as the API reads it
    await CatalogSync(engine.redis, catalog).load()
    assert "old-news" in catalog.rows
    (value,) = catalog.trending_values(catalog.rows_of(["old-news"]), time.time())
    assert value == pytest.approx(0.5 ** (3 * 3600 / half_life), rel=0.01)  # a like, 3 hours old


async def test_hiding_a_post_removes_its_author_and_muted_words_stay_out(engine: Engine) -> None:
    engine.host.graphs["u8"] = {"following": [], "blocked": [], "muted_keywords": ["derby"]}
    await seed(engine)
    await add_posts(engine, [(200, "chef-0", "Another pasta recipe from the same chef")])
    before = set(ids(await feed(engine, "u8", limit=50)))
    assert 200 in before and "s-0" not in before  # s-0 is the football derby post
    await interact(engine, "u8", 100, "hide")  # post 100 is by chef-0
    await wait_for(lambda: _excludes(engine, "u8", {200}))
    assert not {100, 200, "s-0"} & set(ids(await feed(engine, "u8", limit=50)))
