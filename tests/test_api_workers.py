"""`feed-api` with API_WORKERS=2, as real processes: one index owner keeps the host's embedded
shard in step with the index stream and answers both workers' searches, both serve feeds, and a
killed worker or owner is replaced (the replacement logged with its cause), the worker taking
its slot back."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from feed.config import Settings
from feed.events.apply import EventApplier
from feed.events.schemas import InteractionEvent
from feed.stores import keys
from feed.stores.interaction_writes import InteractionWrites
from feed.stores.post_store import commit_ingested
from feed.stores.records import PostRecord
from feed.stores.streams import MARK_PREFIX
from tests.helpers import feed_api, unit, wait_for


def replicas_answering(url: str, tries: int) -> dict[int, int]:
    """Process id by replica number, from `tries` calls of /health, each on a new connection."""
    seen: dict[int, int] = {}
    for _ in range(tries):
        with contextlib.suppress(httpx.HTTPError):
            health = httpx.get(f"{url}/health", timeout=2.0).json()
            seen[health["replica"]] = health["pid"]
    return seen


@pytest.fixture
def api(settings: Settings) -> Iterator[str]:
    def both_answer(url: str) -> bool:
        return set(replicas_answering(url, 4)) == {0, 1}

    # no trimming: the test counts the index stream's entries
    output = settings.data_dir / "api.log"
    with feed_api(settings, both_answer, output=output, API_WORKERS="2", STREAM_TRIM_EVERY_S="0") as url:
        yield url


def post(key: str, *values: float) -> PostRecord:
    return PostRecord(key, key, "author", "author", time.time(), "text", key, {"text": unit(*values)})


def caught_up(r: redis.Redis) -> dict[str, bool]:
    """Per index-stream group (marks left out): has it read and acknowledged the whole stream."""
    groups: Any = [
        g for g in r.xinfo_groups(keys.INDEX_STREAM) if not g["name"].startswith(MARK_PREFIX.encode())
    ]
    last: Any = r.xinfo_stream(keys.INDEX_STREAM)["last-generated-id"]
    return {g["name"].decode(): g["last-delivered-id"] == last and g["pending"] == 0 for g in groups}


async def test_two_api_workers_search_one_owner_and_killed_processes_come_back(
    api: str, settings: Settings, redis_client: Any
) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    for i in range(5):
        commit_ingested(r, post(f"p{i}", 1, i / 10))
    # the owner reads the stream through one group and acknowledges after applying
    expected = {keys.INDEX_GROUP: True}
    await wait_for(lambda: caught_up(r) == expected)
    await EventApplier(InteractionWrites(redis_client, settings), settings).apply(
        [InteractionEvent("e1", "u", "u", "p0", "p0", "like", time.time())]
    )
    for _ in range(6):  # new connections: either worker answers, searching through the owner
        assert nearest(api, "u") == {f"p{i}" for i in range(1, 5)}  # p0 is the one the user liked
    # any worker's /metrics sums both workers' (prometheus-client's multiprocess mode)
    metrics = httpx.get(f"{api}/metrics").text
    served = [line for line in metrics.splitlines() if line.startswith("feed_http_requests_total{")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in served if 'path="/feed"' in line) == 6

    pids = await wait_for(lambda: (found := replicas_answering(api, 8)).keys() == {0, 1} and found)
    os.kill(pids[0], signal.SIGKILL)  # uvicorn's supervisor starts another, which takes slot 0 again
    await wait_for(lambda: (found := replicas_answering(api, 8)).keys() == {0, 1} and found[0] != pids[0], 90)
    # the supervisor said which process went, how and why (the way the kernel's OOM killer ends one)
    replaced = [
        json.loads(line)
        for line in (settings.data_dir / "api.log").read_text().splitlines()
        if "api_process_replaced" in line
    ]
    assert [(e["pid"], e["ended_by"], e["reason"]) for e in replaced] == [(pids[0], "SIGKILL", "it ended")]

    (owner,) = index_owners(settings.data_dir)
    os.kill(owner, signal.SIGKILL)
    commit_ingested(r, post("p5", 1, 0.5))  # while no owner runs: applied by the next one
    await wait_for(lambda: caught_up(r) == expected, 60)
    assert r.xlen(keys.INDEX_STREAM) == 6
    await EventApplier(InteractionWrites(redis_client, settings), settings).apply(
        [InteractionEvent("e2", "w", "w", "p0", "p0", "like", time.time())]
    )  # a new user: u's retrievals are cached
    await wait_for(lambda: nearest(api, "w") == {f"p{i}" for i in range(1, 6)}, 30)
    replaced = [
        json.loads(line)
        for line in (settings.data_dir / "api.log").read_text().splitlines()
        if "index_owner_replaced" in line
    ]
    assert [(e["pid"], e["ended_by"]) for e in replaced] == [(owner, "SIGKILL")]
    assert index_owners(settings.data_dir) not in ([], [owner])
    r.close()


def nearest(api: str, user: str) -> set[str]:
    """The nearest-neighbour posts of `user`'s first page."""
    page = httpx.post(f"{api}/feed", json={"user_id": user, "limit": 10}).raise_for_status().json()
    return {item["post_id"] for item in page["items"] if item["source"] == "phoenix"}


def index_owners(data_dir: Path) -> list[int]:
    """Process ids of the index owners running on `data_dir`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if b"feed.index_owner" in (proc / "cmdline").read_bytes() and (
                f"DATA_DIR={data_dir}".encode() in (proc / "environ").read_bytes().split(b"\0")
            ):
                found.append(int(proc.name))
    return found
