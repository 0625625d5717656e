"""API keys (401 without a valid one, except health and metrics) and write limits (429)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from feed.app import create_app
from ingest_workers.celery_app import app as celery_app


@pytest.fixture
async def api(settings: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    monkeypatch.setattr("feed.api.access.time.time", lambda: 1_800_000_000.5)  # one window throughout
    settings = settings.model_copy(
        update={"api_keys": ["key-one", "key-two"], "write_limit_per_key": 5, "write_limit_per_user": 2}
    )
    async with AsyncTestClient(create_app(settings, celery=celery_app)) as client:
        yield client


async def test_every_endpoint_but_health_and_metrics_needs_a_valid_key(api: Any) -> None:
    for path in ("/health", "/ready", "/metrics"):
        assert (await api.get(path)).status_code == 200, path
    feed = {"user_id": "u1", "limit": 5}
    for headers in ({}, {"X-API-Key": "key-three"}, {"X-API-Key": "key-one "}, {"X-API-Key": ""}):
        refused = await api.post("/feed", json=feed, headers=headers)
        assert refused.status_code == 401
        assert refused.json()["detail"].startswith("X-API-Key:")
        assert refused.headers["www-authenticate"] == "ApiKey"
    assert (await api.get("/posts/1")).status_code == 401
    assert (await api.get("/schema/openapi.json")).status_code == 401
    for key in ("key-one", "key-two"):
        assert (await api.post("/feed", json=feed, headers={"X-API-Key": key})).status_code == 200


async def test_writes_over_the_per_user_or_per_key_limit_get_429(api: Any) -> None:
    def like(user: str, key: str = "key-one") -> Any:
        event = {"user_id": user, "post_id": "p1", "action": "like"}
        return api.post("/interaction", json=event, headers={"X-API-Key": key})

    assert [(await like("u1")).status_code for _ in range(2)] == [202, 202]
    over = await like("u1")
    assert over.status_code == 429 and over.headers["retry-after"] == "1"
    assert over.json()["detail"] == "user_id: over 2 writes per second, retry later"
    assert (await like("u2")).status_code == 202  # another user; the key has had 4 writes
    assert (await like("u3")).status_code == 202  # its 5th
    over_key = await like("u4")
    assert over_key.status_code == 429
    assert over_key.json()["detail"] == "X-API-Key: over 5 writes per second, retry later"
    assert (await like("u4", key="key-two")).status_code == 202  # each key has its own limit
    deleted = await api.delete("/posts/p9", headers={"X-API-Key": "key-one"})
    assert deleted.status_code == 429  # deletes count against the key too


async def test_an_open_api_has_no_key_to_limit(redis_client: Any) -> None:
    from litestar.exceptions import TooManyRequestsException

    from feed.api.access import OPEN, WriteLimits

    limits = WriteLimits(redis_client, per_key=1, per_user=0)
    for _ in range(3):
        await limits.check(OPEN)
    await limits.check("k1")
    with pytest.raises(TooManyRequestsException):
        await limits.check("k1")
