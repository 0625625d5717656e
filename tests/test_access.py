"""API keys (401 without a valid one on every route except health, readiness and metrics) and
write limits (429 per API key, per user and per author, in one-second windows)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ingest_workers.celery_app import app as celery_app
from tests.helpers import api_client

OPEN_PATHS = {"/health", "/ready", "/metrics"}


class Clock:
    """Wall-clock seconds the test moves by hand: the write windows are one second."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(1_800_000_000.5)


@pytest.fixture
async def api(settings: Any, clock: Clock) -> AsyncIterator[Any]:
    settings = settings.model_copy(
        update={"api_keys": ["key-one", "key-two"], "write_limit_per_key": 5, "write_limit_per_user": 2}
    )
    async with api_client(settings, celery=celery_app, clock=clock) as client:
        yield client


def routes(api: Any) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, path parameters filled in."""
    out = []
    for route in api.app.routes:
        path = re.sub(r"\{[^}]+\}", "x", route.path)
        out += [(method, path) for method in sorted(route.methods) if method not in ("HEAD", "OPTIONS")]
    return out


async def test_every_route_but_health_readiness_and_metrics_needs_a_valid_key(api: Any) -> None:
    for path in OPEN_PATHS:
        assert (await api.get(path)).status_code == 200, path
    closed = [(method, path) for method, path in routes(api) if path not in OPEN_PATHS]
    assert {("POST", "/posts"), ("DELETE", "/posts/x"), ("POST", "/interaction"), ("POST", "/feed")} <= set(
        closed
    )
    assert any(path.startswith("/admin") for _, path in closed)
    for method, path in closed:
        for headers in ({}, {"X-API-Key": "key-three"}, {"X-API-Key": "key-one "}, {"X-API-Key": ""}):
            refused = await api.request(method, path, headers=headers, json={})
            assert refused.status_code == 401, (method, path, headers)
            assert refused.json()["detail"].startswith("X-API-Key:")
    feed = {"user_id": "u1", "limit": 5}
    for key in ("key-one", "key-two"):
        assert (await api.post("/feed", json=feed, headers={"X-API-Key": key})).status_code == 200


def like(api: Any, user: str, key: str = "key-one") -> Any:
    event = {"user_id": user, "post_id": "p1", "action": "like"}
    return api.post("/interaction", json=event, headers={"X-API-Key": key})


async def test_writes_over_the_per_user_or_per_key_limit_get_429(api: Any) -> None:
    assert [(await like(api, "u1")).status_code for _ in range(2)] == [202, 202]
    over = await like(api, "u1")
    assert over.status_code == 429 and over.headers["retry-after"] == "1"
    assert over.json()["detail"] == "user_id: over 2 writes per second, retry later"
    assert (await like(api, "u2")).status_code == 202  # another user; the key has had 4 writes
    assert (await like(api, "u3")).status_code == 202  # its 5th
    over_key = await like(api, "u4")
    assert over_key.status_code == 429
    assert over_key.json()["detail"] == "X-API-Key: over 5 writes per second, retry later"
    assert (await like(api, "u4", key="key-two")).status_code == 202  # each key has its own limit
    deleted = await api.delete("/posts/p9", headers={"X-API-Key": "key-one"})
    assert deleted.status_code == 429  # deletes count against the key too


async def test_posts_over_the_per_author_limit_get_429(api: Any) -> None:
    def post(n: int, author: str) -> Any:
        body = {"post_id": f"p{n}", "author_id": author, "text": "hello"}
        return api.post("/posts", json=body, headers={"X-API-Key": "key-two"})

    assert [(await post(n, "anna")).status_code for n in range(2)] == [202, 202]
    over = await post(2, "anna")
    assert over.status_code == 429
    assert over.json()["detail"] == "author_id: over 2 writes per second, retry later"
    assert (await post(3, "ben")).status_code == 202


async def test_the_limits_start_again_in_the_next_second(api: Any, clock: Clock) -> None:
    assert [(await like(api, "u1")).status_code for _ in range(3)] == [202, 202, 429]
    clock.now += 0.4  # the same window
    assert (await like(api, "u1")).status_code == 429
    clock.now += 0.6
    assert [(await like(api, "u1")).status_code for _ in range(3)] == [202, 202, 429]


async def test_an_open_api_has_no_key_to_limit(redis_client: Any) -> None:
    from feed.stores.write_limits import OPEN, OverWriteLimit, WriteLimits

    limits = WriteLimits(redis_client, per_key=1, per_user=0)
    for _ in range(3):
        await limits.check(OPEN)
    await limits.check("k1")
    with pytest.raises(OverWriteLimit, match="X-API-Key: over 1 writes per second"):
        await limits.check("k1")


async def test_writes_are_not_limited_while_redis_does_not_answer() -> None:
    from redis.asyncio import Redis

    from feed.redis_server import free_port
    from feed.stores.write_limits import WriteLimits

    down = Redis(port=free_port(), socket_connect_timeout=0.5)  # nothing listens there
    limits = WriteLimits(down, per_key=1, per_user=1)
    for _ in range(3):  # no count, no limit: the write itself decides whether it can be taken
        await limits.check("k1", ("user_id", "u1"))
    await down.aclose()
