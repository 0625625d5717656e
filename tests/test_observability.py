"""Prometheus /metrics, request ids in responses and logs, and /ready."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from litestar import Litestar, get
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY

from feed.api.request_ids import RequestIdMiddleware
from feed.events.broker import CONSUMER_GROUP
from feed.metrics import refresh_backlogs
from feed.stores import keys
from feed.stores.backlog import Backlogs
from feed.stores.post_store import commit_ingested
from feed.stores.records import PostRecord
from ingest_workers.celery_app import app as celery_app
from tests.helpers import api_client, unit


@pytest.fixture
async def api(settings: Any) -> AsyncIterator[Any]:
    async with api_client(settings, celery=celery_app) as client:
        yield client


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of metric `name` with exactly these labels in a Prometheus text exposition."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        metric, _, value = line.rpartition(" ")
        head, _, rest = metric.partition("{")
        if head == name and ",".join(sorted(rest.rstrip("}").split(","))) == wanted:
            return float(value)
    return None


async def test_metrics_show_requests_stages_and_caches(api: Any, settings: Any) -> None:
    import redis

    r = redis.Redis.from_url(settings.redis_url)
    commit_ingested(r, PostRecord("p1", 1, "a1", "1", time.time(), "text", "hi", {"text": unit(1)}))
    r.close()
    before = (await api.get("/metrics")).text
    for _ in range(2):  # one post: a ranking too short to keep, so both rank in full
        assert (await api.post("/feed", json={"user_id": "u1", "limit": 5})).status_code == 200
    after = (await api.get("/metrics")).text

    def grew(name: str, **labels: str) -> float:
        return (sample(after, name, **labels) or 0.0) - (sample(before, name, **labels) or 0.0)

    http = {"app_name": "feed", "method": "POST", "path": "/feed", "status_code": "200"}
    assert grew("feed_http_requests_total", **http) == 2
    assert grew("feed_http_request_duration_seconds_count", **http) == 2
    assert grew("feed_pipeline_stage_runs_total", stage="source", component="fresh", status="ok") == 2
    assert grew("feed_pipeline_stage_runs_total", stage="source", component="fresh", status="cached") == 0
    assert grew("feed_pipeline_stage_seconds_count", stage="scorer", component="similarity") == 2
    assert grew("feed_pipeline_stage_candidates_bucket", stage="source", component="fresh", le="0.0") == 0
    assert grew("feed_pipeline_stage_candidates_bucket", stage="source", component="fresh", le="10.0") == 2
    assert grew("feed_cache_lookups_total", cache="ranking", result="miss") == 2
    assert sample(after, "feed_backlog", queue="ingest_queue") is not None
    assert sample(after, "feed_events_applied") is not None
    assert sample(after, "feed_http_requests_total", **{**http, "method": "GET", "path": "/metrics"}) is None


async def test_backlogs_are_read_from_redis(redis_client: Any) -> None:
    await redis_client.xgroup_create("events", CONSUMER_GROUP, id="0", mkstream=True)
    for i in range(3):
        await redis_client.xadd("events", {"n": i})
    await redis_client.xreadgroup(CONSUMER_GROUP, "c1", {"events": ">"}, count=1)  # read, not acknowledged
    await redis_client.rpush("ingest", "t1", "t2")
    for i in range(4):
        await redis_client.xadd(keys.INDEX_STREAM, {"op": "upsert", "post": f"p{i}"})
    await redis_client.set(keys.APPLIED_EVENTS, 7)
    await refresh_backlogs(Backlogs(redis_client, "events", CONSUMER_GROUP, "indexer-9", "ingest"))
    queues = ("events_unread", "events_pending", "index_ops", "ingest_queue")
    values = {q: REGISTRY.get_sample_value("feed_backlog", {"queue": q}) for q in queues}
    assert values == {"events_unread": 2, "events_pending": 1, "index_ops": 4, "ingest_queue": 2}
    assert REGISTRY.get_sample_value("feed_events_applied") == 7


async def test_a_request_id_follows_the_request_into_its_logs_and_back() -> None:
    log = structlog.get_logger("test")

    @get("/work", sync_to_thread=False)
    def work() -> str:
        log.info("working")
        return "done"

    app = Litestar([work], middleware=[RequestIdMiddleware()])
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        async with AsyncTestClient(app) as client:
            fresh = await client.get("/work")
            given = await client.get("/work", headers={"X-Request-ID": "host-42.a"})
            refused = await client.get("/work", headers={"X-Request-ID": "bad id\n"})
    assert len(fresh.headers["x-request-id"]) == 32
    assert given.headers["x-request-id"] == "host-42.a"
    assert refused.headers["x-request-id"] not in ("bad id\n", fresh.headers["x-request-id"])
    assert [entry["request_id"] for entry in logs] == [
        fresh.headers["x-request-id"],
        "host-42.a",
        refused.headers["x-request-id"],
    ]
    assert "request_id" not in structlog.contextvars.get_contextvars()  # unbound after the request


async def test_ready_names_the_dependency_that_does_not_answer(api: Any) -> None:
    ok = await api.get("/ready")
    assert ok.status_code == 200
    assert ok.json() == {"ready": True, "checks": {"redis": "ok", "vector_index": "ok", "broker": "ok"}}
    index = api.app.dependencies["services"].dependency().index  # the app's own services

    async def broken() -> int:
        raise ConnectionError("index down")

    index.count = broken
    down = await api.get("/ready")
    assert down.status_code == 503
    assert down.json()["checks"] == {
        "redis": "ok",
        "vector_index": "ConnectionError: index down",
        "broker": "ok",
    }


async def test_the_ingest_queue_gauge_counts_the_tasks_celery_queued(redis_client: Any) -> None:
    from feed.ingest import INGEST_TASK, create_celery_app
    from feed.services import ingest_queue_key

    app = create_celery_app()  # as configured, with a key prefix the suite's worker does not read
    options = app.conf.broker_transport_options
    app.conf.broker_transport_options = {**options, "global_keyprefix": "gauge-test:"}
    for i in range(3):
        app.send_task(INGEST_TASK, args=[f"p{i}"])
    key = ingest_queue_key(app)
    assert key == f"gauge-test:{app.conf.task_default_queue}"
    await refresh_backlogs(Backlogs(redis_client, "events", CONSUMER_GROUP, "indexer-9", key))
    assert REGISTRY.get_sample_value("feed_backlog", {"queue": "ingest_queue"}) == 3
    assert ingest_queue_key(celery_app).startswith(options["global_keyprefix"])  # the shipped app's
