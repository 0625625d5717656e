"""Bad input gets a 4xx whose message names the field; the API contract's shapes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ingest_workers.celery_app import app as celery_app
from tests.helpers import api_client


@pytest.fixture
async def api(settings: Any) -> AsyncIterator[Any]:
    async with api_client(settings, celery=celery_app) as client:
        yield client


BAD_REQUESTS = [
    ("/posts", {"author_id": 1, "text": "x"}, "post_id"),
    ("/posts", {"post_id": 1, "text": "x"}, "author_id"),
    ("/posts", {"post_id": 1, "author_id": 1, "text": "x" * 20_001}, "text"),
    ("/posts", {"post_id": 1, "author_id": 1}, "text"),
    ("/posts", {"post_id": 1, "author_id": 1, "text": "   "}, "text"),
    ("/posts", {"post_id": 1.5, "author_id": 1, "text": "x"}, "post_id"),
    ("/posts", {"post_id": "x" * 65, "author_id": 1, "text": "x"}, "post_id"),
    ("/posts", {"post_id": 1, "author_id": 1, "post_type": "image"}, "media_url"),
    ("/posts", {"post_id": 1, "author_id": 1, "post_type": "image", "media_url": "h/a"}, "media_url"),
    (
        "/posts",
        {"post_id": 1, "author_id": 1, "post_type": "image", "media_url": "file:///etc/passwd"},
        "media_url",
    ),
    (
        "/posts",
        {"post_id": 1, "author_id": 1, "post_type": "video", "media_url": "ftp://h/v.mp4"},
        "media_url",
    ),
    (
        "/posts",
        {"post_id": 1, "author_id": 1, "post_type": "image", "media_url": "http://u:p@h/a.png"},
        "media_url",
    ),
    (
        "/posts",
        {"post_id": 1, "author_id": 1, "post_type": "image", "media_urls": ["http://h/1.png"] * 5},
        "media_urls",
    ),
    (
        "/posts",
        {"post_id": 1, "author_id": 1, "post_type": "image", "media_urls": ["http://h/a", "h"]},
        "media_urls",
    ),
    (
        "/posts",
        {"post_id": 1, "author_id": 1, "post_type": "audio", "media_urls": ["http://h/a", "http://h/b"]},
        "media_urls",
    ),
    ("/posts", {"post_id": 1, "author_id": 1, "post_type": "audio", "media_url": ""}, "media_url"),
    ("/posts", {"post_id": 1, "author_id": 1, "text": "x", "media_url": "http://h/a.png"}, "media_url"),
    ("/posts", {"post_id": 1, "author_id": 1, "post_type": "gif", "text": "x"}, "post_type"),
    ("/posts", {"post_id": 1, "author_id": 1, "text": "x", "created_at": "yesterday"}, "created_at"),
    ("/interaction", {"post_id": 1, "action": "like"}, "user_id"),
    ("/interaction", {"user_id": 1, "action": "like"}, "post_id"),
    ("/interaction", {"user_id": 1, "post_id": 1, "action": "love"}, "action"),
    ("/interaction", {"user_id": 1, "post_id": 1}, "action"),
    ("/interaction", {"user_id": 1, "post_id": 1, "action": "dwell"}, "dwell_ms"),
    ("/interaction", {"user_id": 1, "post_id": 1, "action": "dwell", "dwell_ms": -5}, "dwell_ms"),
    ("/interaction", {"user_id": [1], "post_id": 1, "action": "like"}, "user_id"),
    ("/interaction", {"user_id": 1, "post_id": 1, "action": "like", "occurred_at": "soon"}, "occurred_at"),
    (
        "/interaction",
        {"user_id": 1, "post_id": 1, "action": "like", "occurred_at": "2020-01-01T10:00:00"},
        "occurred_at",
    ),
    (
        "/interaction",
        {"user_id": 1, "post_id": 1, "action": "like", "occurred_at": "2999-01-01T00:00:00Z"},
        "occurred_at",
    ),
    ("/feed", {}, "user_id"),
    ("/feed", {"user_id": 1, "limit": 0}, "limit"),
    ("/feed", {"user_id": 1, "limit": 201}, "limit"),
    ("/feed", {"user_id": 1, "limit": "ten"}, "limit"),
    ("/feed", {"user_id": True}, "user_id"),
    ("/feed", {"user_id": 1, "cursor": "not a cursor!"}, "cursor"),
]


@pytest.mark.parametrize(("path", "body", "field"), BAD_REQUESTS)
async def test_bad_input_names_the_field(api: Any, path: str, body: dict[str, Any], field: str) -> None:
    response = await api.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith(f"{field}:"), response.json()


async def test_malformed_json_is_a_400(api: Any) -> None:
    response = await api.post("/feed", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400


async def test_unknown_post_is_a_404_naming_post_id(api: Any) -> None:
    for response in (await api.get("/posts/nope"), await api.delete("/posts/nope")):
        assert response.status_code == 404
        assert response.json()["detail"].startswith("post_id:")


async def test_health_and_openapi(api: Any) -> None:
    assert (await api.get("/health")).json() == {"status": "ok", "replica": 0, "pid": os.getpid()}
    schema = (await api.get("/schema/openapi.json")).json()
    assert {"/posts", "/posts/{post_id}", "/interaction", "/feed", "/health"} <= set(schema["paths"])


async def test_interaction_is_202_with_event_id_once_in_the_broker(api: Any, redis_client: Any) -> None:
    response = await api.post("/interaction", json={"user_id": "u", "post_id": 9, "action": "like"})
    assert response.status_code == 202
    event_id = response.json()["event_id"]
    assert await redis_client.xlen("feed.events") == 1
    own = await api.post(
        "/interaction", json={"user_id": "u", "post_id": 9, "action": "share", "event_id": "host-42"}
    )
    assert own.json() == {"event_id": "host-42"} and event_id != "host-42"


async def test_post_is_queued_with_a_task_id(api: Any) -> None:
    response = await api.post("/posts", json={"post_id": "slug-1", "author_id": 3, "text": "hello"})
    assert response.status_code == 202
    body = response.json()
    assert body["state"] == "queued" and body["post_id"] == "slug-1"
    status = (await api.get("/posts/slug-1")).json()
    assert status["state"] == "queued" and status["task_id"] == body["task_id"]


async def test_post_is_503_and_not_kept_when_the_ingest_queue_is_down(settings: Any) -> None:
    from celery import Celery

    from feed.redis_server import free_port

    down = Celery("down", broker=f"redis://127.0.0.1:{free_port()}/0")
    down.conf.update(task_publish_retry=False, broker_connection_retry=False, broker_connection_timeout=0.5)
    async with api_client(settings, celery=down) as client:
        response = await client.post("/posts", json={"post_id": 7, "author_id": 1, "text": "hello"})
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert (await client.get("/posts/7")).status_code == 404  # never reported as accepted


async def test_interaction_is_503_when_the_broker_does_not_take_it(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feed.events.broker import EventPublisher

    async def refuse(self: EventPublisher, event: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(EventPublisher, "publish", refuse)
    response = await api.post("/interaction", json={"user_id": "u", "post_id": 9, "action": "like"})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"


async def test_a_body_over_the_size_limit_is_413(api: Any) -> None:
    from feed.app import MAX_BODY_BYTES

    huge = b'{"post_id": 1, "author_id": 1, "text": "' + b"x" * MAX_BODY_BYTES + b'"}'
    answer = await api.post("/posts", content=huge, headers={"content-type": "application/json"})
    assert answer.status_code == 413


FIELD = {"/feed": "user_id", "/interaction": "user_id", "/posts": "author_id"}  # one each requires


def nested(field: str, depth: int) -> bytes:
    """`{"user_id": [[[...]]]}` with `depth` lists: about 2 kB at depth 1,000."""
    return b'{"%s": ' % field.encode() + b"[" * depth + b"]" * depth + b"}"


def wide_array(field: str, n: int) -> bytes:
    return b'{"%s": [' % field.encode() + b",".join([b"0"] * n) + b"]}"


def wide_object(field: str, n: int) -> bytes:
    return b'{"%s": "u", ' % field.encode() + b", ".join(b'"k%d": 0' % i for i in range(n)) + b"}"


@pytest.mark.parametrize("path", list(FIELD))
@pytest.mark.parametrize(
    ("body", "named"),
    [
        (lambda f: nested(f, 100), "field"),
        (lambda f: nested(f, 1_000), "body"),  # beyond what the decoder follows
        (lambda f: nested(f, 100_000), "body"),
        (lambda f: wide_array(f, 200_000), "field"),
    ],
    ids=["nested-100", "nested-1000", "nested-100000", "wide-array"],
)
async def test_deep_or_wide_bodies_are_400s_naming_the_field(
    api: Any, path: str, body: Any, named: str
) -> None:
    field = FIELD[path]
    response = await api.post(path, content=body(field), headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith(f"{field if named == 'field' else 'body'}:"), response.json()


@pytest.mark.parametrize("path", list(FIELD))
async def test_a_body_with_fifty_thousand_unknown_fields_is_not_a_5xx(api: Any, path: str) -> None:
    body = wide_object(FIELD[path], 50_000)
    response = await api.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text  # unknown fields are ignored (400: another is missing)


async def test_an_unhandled_error_is_a_500_logged_with_its_traceback_and_request_id(api: Any) -> None:
    import structlog

    services = api.app.dependencies["services"].dependency()

    async def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("feature store exploded")

    services.home_feed.page = broken
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        response = await api.post("/feed", json={"user_id": "u"}, headers={"X-Request-ID": "host-7"})
    assert response.status_code == 500
    assert "exploded" not in response.text  # nothing internal leaks to the caller
    errors = [entry for entry in logs if entry["event"] == "unhandled_error"]
    assert len(errors) == 1, logs
    assert errors[0]["request_id"] == "host-7" and errors[0]["path"] == "/feed"
    assert isinstance(errors[0]["exc_info"], RuntimeError)
