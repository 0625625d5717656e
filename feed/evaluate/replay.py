"""Replaying a split through the engine's public HTTP API, as a host backend would.

Times are shifted so that the split is "now": posts are created at their first rating and
interactions carry `occurred_at`, both in the past, so freshness and trending see the
history as it happened. Each user's interactions are sent one after another in time
order (users in parallel), so every user's interest vectors come out the same in every
run. Each movie is its own author (`movie-{id}`: the data sets have no authors). The follow
graph is not sent: the engine asks the host for it (`feed.evaluate.host`).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx

from feed.evaluate.dataset import Rating, Split

Idle = Callable[[int], Awaitable[bool]]  # idle(events sent) -> every event applied and every post indexed


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


async def _bounded(items: Iterable[Any], run: Callable[[Any], Awaitable[Any]], concurrency: int) -> list[Any]:
    """Run `run` over items taken in order by `concurrency` workers; results in item order."""
    todo = list(enumerate(items))
    results: list[Any] = [None] * len(todo)
    queue = iter(todo)

    async def worker() -> None:
        for i, item in queue:  # workers share the iterator, so items start in order
            results[i] = await run(item)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def _ok(send: Callable[[], Awaitable[httpx.Response]], expected: int) -> dict[str, Any]:
    """The JSON answer of `send()`, which must be `expected`; a request the loaded machine's
    loopback dropped (a reset connection) is sent again, up to 5 times: every request of a
    replay is idempotent (posts and events carry their ids)."""
    for attempt in range(5):
        try:
            answer = await send()
            break
        except httpx.TransportError:
            if attempt == 4:
                raise
            await asyncio.sleep(0.5 * (attempt + 1))
    if answer.status_code != expected:
        raise RuntimeError(
            f"{answer.request.method} {answer.request.url}: {answer.status_code} {answer.text}"
        )
    body: dict[str, Any] = answer.json()
    return body


async def replay(
    client: httpx.AsyncClient,
    split: Split,
    idle: Idle,
    *,
    retrain: Callable[[], Awaitable[None]] | None = None,
    limit: int = 20,
    concurrency: int = 32,
    timeout_s: float = 1800.0,
) -> tuple[dict[int, list[int]], dict[str, float]]:
    """Send the catalogue and the history, retrain the batch models (as an operator would
    after a backfill), then ask each evaluated user for a feed.

    Returns the feeds (post ids, best first) and the seconds each phase took.
    """
    shift = time.time() - split.split_ts
    timings: dict[str, float] = {}
    start = time.perf_counter()
    await _bounded(
        split.catalogue.values(),
        lambda m: _ok(
            lambda: client.post(
                "/posts",
                json={
                    "post_id": m.movie_id,
                    "author_id": f"movie-{m.movie_id}",
                    "text": m.text,
                    "created_at": _iso(m.created_at + shift),
                },
            ),
            202,
        ),
        concurrency,
    )
    waiting = list(split.catalogue)
    deadline = time.monotonic() + timeout_s
    while waiting:
        # the posts sent last finish last: poll those until done, then check the rest once
        probe = waiting[-concurrency:] if len(waiting) > concurrency else waiting
        states = await _bounded(probe, lambda p: _ok(lambda: client.get(f"/posts/{p}"), 200), concurrency)
        failed = [s for s in states if s["state"] == "failed"]
        if failed:
            raise RuntimeError(f"{len(failed)} posts failed to ingest, e.g. {failed[0]}")
        if all(s["state"] == "ingested" for s in states):
            waiting = waiting[: -len(probe)]
            continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(waiting)} posts not ingested")
        await asyncio.sleep(0.5)
    timings["posts"] = time.perf_counter() - start

    start = time.perf_counter()

    async def send_history(ratings: list[Rating]) -> None:
        for r in ratings:  # one user's events one after another, in time order
            body = {
                "user_id": r.user_id,
                "post_id": r.movie_id,
                "action": r.action,
                "occurred_at": _iso(r.ts + shift),
                "event_id": f"ev-{r.user_id}-{r.movie_id}-{int(r.ts)}",
            }
            await _ok(partial(client.post, "/interaction", json=body), 202)

    by_user: dict[int, list[Rating]] = defaultdict(list)
    for r in split.train:
        by_user[r.user_id].append(r)
    # users in parallel, the longest histories first so the workers finish together
    await _bounded(sorted(by_user.values(), key=len, reverse=True), send_history, concurrency)
    while not await idle(len(split.train)):
        if time.monotonic() > deadline:
            raise TimeoutError("events not applied in time")
        await asyncio.sleep(0.2)
    timings["events"] = time.perf_counter() - start

    if retrain is not None:
        start = time.perf_counter()
        await retrain()
        timings["retrain"] = time.perf_counter() - start

    start = time.perf_counter()
    feeds = await ask_feeds(client, split.users, limit)
    timings["feeds"] = time.perf_counter() - start
    return feeds, timings


async def ask_feeds(client: httpx.AsyncClient, users: list[int], limit: int = 20) -> dict[int, list[int]]:
    """Each user's first feed page (post ids, best first), 8 requests at a time."""
    pages = await _bounded(
        users, lambda u: _ok(lambda: client.post("/feed", json={"user_id": u, "limit": limit}), 200), 8
    )
    return {u: [int(item["post_id"]) for item in page["items"]] for u, page in zip(users, pages, strict=True)}
