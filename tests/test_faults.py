"""Faults on real processes: a Redis of the test's own (append-only), `feed-api` and
`feed-consumer` started as processes, then killed or restarted while they work."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from bench.samples import image_bytes
from feed.events.apply import EventApplier
from feed.events.schemas import InteractionEvent
from feed.redis_server import free_port, start_server
from feed.stores import keys
from feed.stores.interaction_writes import InteractionWrites
from feed.stores.post_store import commit_ingested
from feed.stores.records import PostRecord
from ingest_workers.celery_app import app as celery_app
from tests.conftest import HostBackend
from tests.helpers import api_client, health_answers, start_tansu, unit

BIN = Path(sys.executable).parent


@dataclass
class Stack:
    """The processes of one test and how to restart them."""

    folder: Path
    redis_port: int
    api_port: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "DATA_DIR": str(self.folder / "data"),
            "API_PORT": str(self.api_port),
            "LOG_LEVEL": "WARNING",
            "EVENT_RECLAIM_IDLE_MS": "2000",
            "STREAM_TRIM_EVERY_S": "0",  # the tests count the stream's entries
        }

    def start_redis(self) -> None:
        self.procs["redis"] = start_server(self.redis_port, self.folder / "redis")

    def start(self, name: str, **env: str) -> None:
        """Start `feed-api` or `feed-consumer` (with more environment in `env`); the API is
        waited for until it answers."""
        self.procs[name] = subprocess.Popen([str(BIN / name)], env={**self.env(), **env})
        if name == "feed-api":
            deadline = time.monotonic() + 60
            while not health_answers(self.api):
                assert self.procs[name].poll() is None and time.monotonic() < deadline, (
                    "feed-api did not start"
                )
                time.sleep(0.1)

    def start_engine(self) -> redis.Redis:
        """Commit text post `p1`, start `feed-api` and `feed-consumer`; returns a Redis client."""
        r = redis.Redis.from_url(self.redis_url)
        commit_ingested(r, text_post("p1", 0))
        self.start("feed-api")
        self.start("feed-consumer")
        return r

    def stop(self, name: str, sig: signal.Signals = signal.SIGTERM) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        proc.wait(timeout=30)


def text_post(key: str, i: int, author: str = "a1") -> PostRecord:
    return PostRecord(key, key, author, author, time.time(), "text", "x", {"text": unit(1, i)})


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, free_port(), free_port())
    s.start_redis()
    try:
        yield s
    finally:
        for name in list(s.procs)[::-1]:
            s.stop(name)


def wait_until(predicate: object, timeout: float, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(every)


class Sender(threading.Thread):
    """Sends interactions one after another until stopped; keeps the ids answered 202 and every
    answer's status (`error` for no answer at all)."""

    def __init__(self, api: str) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.accepted: list[str] = []
        self.statuses: Counter[str] = Counter()
        self.retry_hints: set[str] = set()
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.api, timeout=5.0) as client:
            n = 0
            while not self.halt.is_set():
                n += 1
                event = {"event_id": f"e{n}", "user_id": f"u{n % 1000}", "post_id": "p1", "action": "like"}
                try:
                    answer = client.post("/interaction", json=event)
                except httpx.HTTPError:
                    self.statuses["error"] += 1
                    continue
                self.statuses[str(answer.status_code)] += 1
                if answer.status_code == 202:
                    self.accepted.append(event["event_id"])
                elif answer.status_code == 503:
                    self.retry_hints.add(answer.headers.get("retry-after", ""))
                    time.sleep(0.05)


@pytest.mark.timeout(180)
def test_redis_restarted_while_events_stream_in_loses_no_accepted_event(stack: Stack) -> None:
    r = stack.start_engine()
    sender = Sender(stack.api)
    sender.start()
    wait_until(lambda: int(r.get(keys.APPLIED_EVENTS) or 0) >= 100, 60)  # the consumer is applying
    stack.stop("redis")  # graceful: the append-only file is flushed
    down = Counter(sender.statuses)
    time.sleep(1.5)
    stack.start_redis()
    wait_until(lambda: sender.statuses["202"] >= down["202"] + 200, 60)  # accepted again
    sender.halt.set()
    sender.join(10)

    r = redis.Redis.from_url(stack.redis_url)

    def all_applied() -> bool:
        pipe = r.pipeline(transaction=False)
        for event_id in sender.accepted:
            pipe.exists(keys.event_done(event_id))
        return all(pipe.execute())

    wait_until(all_applied, 60)  # the consumer resumed by itself
    assert sender.statuses["503"] > 0 and sender.retry_hints == {"1"}  # refused while Redis was down
    assert set(sender.statuses) <= {"202", "503", "error"}, sender.statuses
    # each event the broker took is applied once; that can be one more than were answered 202 (a
    # publish whose answer was lost as Redis stopped: answered 503, so the host retries it, and
    # its event id makes the retry a no-op)
    assert int(r.get(keys.APPLIED_EVENTS) or 0) == r.xlen("feed.events") >= len(sender.accepted)
    assert _answers(f"{stack.api}/ready")
    print(f"redis restart: answers {dict(sender.statuses)}; applied {r.get(keys.APPLIED_EVENTS)!r}")
    r.close()


@pytest.mark.timeout(180)
def test_api_and_consumer_started_while_redis_is_down_wait_for_it(stack: Stack) -> None:
    stack.stop("redis")
    for name in ("feed-consumer", "feed-api"):
        stack.procs[name] = subprocess.Popen([str(BIN / name)], env=stack.env())
    time.sleep(4.0)
    assert all(stack.procs[name].poll() is None for name in ("feed-consumer", "feed-api"))  # waiting
    assert not health_answers(stack.api)
    stack.start_redis()  # from this thread: the server dies with the thread that started it
    wait_until(lambda: health_answers(stack.api), 30)
    r = redis.Redis.from_url(stack.redis_url)
    commit_ingested(r, text_post("p1", 0))
    like = {"user_id": "u", "post_id": "p1", "action": "like"}
    assert httpx.post(f"{stack.api}/interaction", json=like).status_code == 202
    wait_until(lambda: int(r.get(keys.APPLIED_EVENTS) or 0) == 1, 30)  # the consumer is consuming
    r.close()


@pytest.mark.timeout(240)
def test_kafka_broker_down_interactions_answer_503_then_202_once_it_is_back(stack: Stack) -> None:
    kafka_port = free_port()
    stack.procs["kafka"] = start_tansu(kafka_port)
    kafka = {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
        "EVENTS_TOPIC": "faults.events",
        "EVENT_PUBLISH_TIMEOUT_S": "2",
    }
    stack.start("feed-api", **kafka)
    like = {"user_id": "u", "post_id": "p1", "action": "like"}
    with httpx.Client(base_url=stack.api, timeout=60) as client:
        assert client.post("/interaction", json=like).status_code == 202
        stack.stop("kafka", signal.SIGKILL)
        started = time.perf_counter()
        down = client.post("/interaction", json=like)
        took = time.perf_counter() - started
        print(f"kafka down: {down.status_code} in {took:.1f} s, {down.headers.get('retry-after')}")
        assert down.status_code == 503 and down.headers["retry-after"] == "1"
        assert took < 4  # the publish timeout, not the Kafka client's 40 s
        assert client.get("/ready").status_code == 503
        stack.procs["kafka"] = start_tansu(kafka_port)
        wait_until(lambda: client.post("/interaction", json=like).status_code == 202, 60, every=1.0)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fault", ["slow", "failing"])
def test_host_social_graph_slow_or_failing_the_feed_keeps_its_budget_and_the_last_known_graph(
    stack: Stack, host: HostBackend, fault: str
) -> None:
    r = redis.Redis.from_url(stack.redis_url)
    for i, author in enumerate(("a1", "a2", "a3")):
        commit_ingested(
            r, PostRecord(f"p{i}", f"p{i}", author, author, time.time(), "text", "x", {"text": unit(1, i)})
        )
    r.close()
    host.graphs["u"] = {"following": ["a1"], "blocked": ["a2"]}
    stack.start("feed-api", BACKEND_URL=host.url, SOCIAL_GRAPH_TTL_S="0")  # asked on every feed
    query = {"user_id": "u", "limit": 10}

    def served() -> tuple[dict[str, str], float]:
        answer = httpx.post(f"{stack.api}/feed", json=query, timeout=10)
        assert answer.status_code == 200
        body = answer.json()
        return {i["post_id"]: i["source"] for i in body["items"]}, body["took_ms"] / 1000

    known, _ = served()
    assert known == {"p0": "thunder", "p2": "fresh"}  # a1 followed, a2 blocked
    calls = host.calls
    if fault == "slow":
        host.delay_s = 2.0
    else:
        host.fail = True
    items, took = served()
    assert host.calls > calls  # the host was asked
    assert items == known  # from the last known graph
    assert took < 1.5  # the server's own time: SOCIAL_GRAPH_TIMEOUT_S is 0.3 s, not the host's 2 s
    print(f"host graph {fault}: /feed 200 in {1000 * took:.0f} ms with the last known graph")


@pytest.mark.timeout(180)
def test_the_same_event_sent_twice_is_applied_once(stack: Stack) -> None:
    r = stack.start_engine()
    like = {"event_id": "once", "user_id": "u", "post_id": "p1", "action": "like"}
    other = {"event_id": "other", "user_id": "u2", "post_id": "p1", "action": "like"}
    for event in (like, like, other):  # a host retrying a request whose answer it lost
        assert httpx.post(f"{stack.api}/interaction", json=event).status_code == 202
    wait_until(lambda: int(r.get(keys.APPLIED_EVENTS) or 0) == 2, 30)

    def consumed() -> bool:
        group: dict[str, Any] = r.xinfo_groups("feed.events")[0]
        return bool(group["pending"] == 0 and group["lag"] == 0)

    wait_until(consumed, 30)  # all three were read and acknowledged
    assert r.xlen("feed.events") == 3 and int(r.get(keys.APPLIED_EVENTS) or 0) == 2
    r.close()


@pytest.mark.timeout(180)
def test_api_killed_and_restarted_loses_nothing(stack: Stack) -> None:
    r = redis.Redis.from_url(stack.redis_url)
    for i in range(3):
        commit_ingested(
            r, PostRecord(f"p{i}", f"p{i}", "a1", "a1", time.time(), "text", "x", {"text": unit(1, i)})
        )
    stack.start("feed-api")
    stack.start("feed-consumer")
    liked = httpx.post(f"{stack.api}/interaction", json={"user_id": "u", "post_id": "p0", "action": "like"})
    assert liked.status_code == 202
    wait_until(lambda: int(r.get(keys.APPLIED_EVENTS) or 0) == 1, 30)
    first = httpx.post(f"{stack.api}/feed", json={"user_id": "u", "limit": 1}).json()
    assert first["next_cursor"]
    stack.stop("feed-api", signal.SIGKILL)
    stack.start("feed-api")
    # the session, the user's interests and seen posts, the posts and their vectors are all back
    page = httpx.post(
        f"{stack.api}/feed", json={"user_id": "u", "limit": 5, "cursor": first["next_cursor"]}
    ).json()
    served = {item["post_id"] for item in first["items"] + page["items"]}
    assert served == {"p1", "p2"}  # p0 is seen, nothing is served twice
    fresh = httpx.post(f"{stack.api}/feed", json={"user_id": "u", "limit": 5}).json()
    assert {i["post_id"] for i in fresh["items"] if i["source"] == "phoenix"} == {"p1", "p2"}
    r.close()


class StallingMediaHost:
    """Serves one JPEG; the first request is held without an answer until `release` is set
    (a fetch the worker is in the middle of), later ones are answered."""

    def __init__(self) -> None:
        self.fetching, self.release = threading.Event(), threading.Event()
        self.requests = 0
        body, host = image_bytes((200, 120, 40), "JPEG"), self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.requests += 1
                if host.requests == 1:
                    host.fetching.set()
                    host.release.wait(120)
                    return  # the connection closes unanswered
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/photo.jpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.timeout(240)
def test_ingest_worker_killed_mid_task_the_post_is_ingested_once_a_worker_is_back(
    stack: Stack, tiny_models: Any
) -> None:
    media = StallingMediaHost()
    worker_env = {
        **{name.upper(): str(value) for name, value in tiny_models.settings().items() if value is not None},
        "MEDIA_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        "INGEST_VISIBILITY_TIMEOUT_S": "5",
    }
    try:
        stack.start("feed-api")
        post = {"post_id": "photo", "author_id": "a1", "post_type": "image", "media_url": media.url}
        assert httpx.post(f"{stack.api}/posts", json=post).status_code == 202
        stack.start("feed-worker", **worker_env)
        assert media.fetching.wait(120), "the worker never fetched the photo"
        stack.stop("feed-worker", signal.SIGKILL)  # mid-task: the fetch is under way
        media.release.set()

        def state() -> str:
            return str(httpx.get(f"{stack.api}/posts/photo").json()["state"])

        assert state() == "queued"
        restarted = time.monotonic()
        metrics_port = free_port()
        stack.start("feed-worker", **worker_env, WORKER_METRICS_PORT=str(metrics_port))
        wait_until(lambda: state() == "ingested", 120, every=0.5)
        print(f"worker killed mid-task: ingested {time.monotonic() - restarted:.1f} s after the restart")
    finally:
        media.close()
    assert media.requests == 2  # taken again once, by the new worker
    scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text  # the worker's own metrics
    assert 'feed_ingest_posts_total{outcome="ingested",post_type="image"} 1.0' in scraped
    assert 'feed_ingest_latency_seconds_count{post_type="image"} 1.0' in scraped
    assert 'feed_ingest_batch_seconds_count{phase="analyze"} 1.0' in scraped
    feed = httpx.post(f"{stack.api}/feed", json={"user_id": "u", "limit": 5}).json()
    assert [item["post_id"] for item in feed["items"]] == ["photo"]


class SilentServer:
    """A TCP server that accepts connections and never answers: a hung Qdrant."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.sock.accept()[0])

    def close(self) -> None:
        for conn in [*self.held, self.sock]:
            conn.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fault", ["down", "slow"])
def test_qdrant_server_down_or_slow_the_api_starts_and_feeds_from_the_other_sources(
    stack: Stack, fault: str
) -> None:
    r = redis.Redis.from_url(stack.redis_url)
    for i in range(4):
        commit_ingested(r, text_post(f"p{i}", i))
    silent = SilentServer() if fault == "slow" else None
    qdrant_port = silent.port if silent else free_port()  # down: nothing listens there
    try:
        stack.start("feed-api", QDRANT_URL=f"http://127.0.0.1:{qdrant_port}")
        stack.start("feed-consumer")
        like = {"user_id": "u", "post_id": "p0", "action": "like"}
        assert httpx.post(f"{stack.api}/interaction", json=like).status_code == 202
        wait_until(lambda: int(r.get(keys.APPLIED_EVENTS) or 0) == 1, 30)
        started = time.perf_counter()
        query = {"user_id": "u", "limit": 10, "explain": True}
        answer = httpx.post(f"{stack.api}/feed", json=query, timeout=10)
        took = time.perf_counter() - started
        ready = httpx.get(f"{stack.api}/ready", timeout=10)
    finally:
        if silent:
            silent.close()
    assert answer.status_code == 200
    body = answer.json()
    assert {item["post_id"] for item in body["items"]} == {"p1", "p2", "p3"}  # from fresh and trending
    phoenix = next(s for s in body["stages"] if s["name"] == "phoenix")
    assert phoenix["status"] == ("timeout" if fault == "slow" else "failed")
    assert phoenix["ms"] < 2500  # the server's own timing: the source's 0.5 s budget, not a hung read
    assert ready.status_code == 503 and ready.json()["checks"]["vector_index"] != "ok"
    assert ready.json()["checks"]["redis"] == "ok"
    print(f"qdrant {fault}: /feed 200 in {1000 * took:.0f} ms; ready {ready.json()['checks']}")
    r.close()


@pytest.mark.parametrize("fault", ["down", "slow"])
async def test_vector_index_down_or_slow_the_feed_answers_in_budget_from_the_other_sources(
    settings: Any, redis_client: Any, fault: str
) -> None:

    r = redis.Redis.from_url(settings.redis_url)
    for i in range(4):
        commit_ingested(
            r, PostRecord(f"p{i}", f"p{i}", "a1", "a1", time.time(), "text", "x", {"text": unit(1, i)})
        )
    r.close()
    await EventApplier(InteractionWrites(redis_client, settings), settings).apply(
        [InteractionEvent("e", "u", "u", "p0", "p0", "like", time.time())]
    )
    async with api_client(settings, celery=celery_app) as api:
        index = api.app.dependencies["services"].dependency().index

        async def broken(*_: Any) -> list[Any]:
            if fault == "slow":
                await asyncio.sleep(5.0)
            raise ConnectionError("vector index down")

        index.nearest = broken
        answer = await api.post("/feed", json={"user_id": "u", "limit": 10, "explain": True})
    assert answer.status_code == 200
    body = answer.json()
    assert {item["post_id"] for item in body["items"]} == {"p1", "p2", "p3"}  # from fresh and trending
    phoenix = next(s for s in body["stages"] if s["name"] == "phoenix")
    assert phoenix["status"] == ("timeout" if fault == "slow" else "failed")
    assert phoenix["ms"] < 1000 * (settings.ranking.source_timeout_s + 1.0)  # its budget, not the index's 5 s
