"""The host social-graph client: cache, timeout, failures, no backend."""

from __future__ import annotations

import time
from typing import Any

import httpx

from feed.social_graph import SocialGraphClient
from feed.stores.social_graphs import SocialGraphCache
from tests.conftest import HostBackend


async def client(redis_client: Any, url: str | None, ttl_s: int = 60) -> SocialGraphClient:
    return SocialGraphClient(
        SocialGraphCache(redis_client), httpx.AsyncClient(), url, timeout_s=0.3, ttl_s=ttl_s
    )


async def test_fetches_then_serves_from_cache(redis_client: Any, host: HostBackend) -> None:
    host.graphs["5"] = {
        "following": [1, "a"],
        "blocked": [2],
        "muted": [3],
        "muted_keywords": [" Spoilers ", ""],
    }
    sg = await client(redis_client, host.url)
    graph = await sg.get(5)
    assert graph.following == {"1", "a"} and graph.blocked == {"2"} and graph.origin == "host"
    assert graph.muted == {"3"} and graph.muted_keywords == {"spoilers"}
    again = await sg.get(5)
    assert again.origin == "cache" and again.following == graph.following
    assert again.muted_keywords == {"spoilers"}
    assert host.calls == 1


async def test_slow_host_gives_empty_graph_in_time(redis_client: Any, host: HostBackend) -> None:
    host.delay_s = 2.0
    start = time.perf_counter()
    graph = await (await client(redis_client, host.url)).get(5)
    assert time.perf_counter() - start < 1.0
    assert graph.following == frozenset() and graph.origin == "unavailable"


async def test_failing_host_falls_back_to_last_known_graph(redis_client: Any, host: HostBackend) -> None:
    host.graphs["5"] = {"following": [7], "blocked": []}
    sg = await client(redis_client, host.url, ttl_s=0)
    assert (await sg.get(5)).origin == "host"
    host.fail = True
    stale = await sg.get(5)
    assert stale.origin == "stale" and stale.following == {"7"}


async def test_no_backend_means_empty_graph(redis_client: Any) -> None:
    graph = await (await client(redis_client, None)).get(5)
    assert graph.following == frozenset() and graph.blocked == frozenset()


async def test_concurrent_cold_requests_share_one_host_call(redis_client: Any, host: HostBackend) -> None:
    import asyncio

    host.delay_s = 0.1
    host.graphs["7"] = {"following": ["x"], "blocked": []}
    sg = await client(redis_client, host.url)
    graphs = await asyncio.gather(*(sg.get(7) for _ in range(5)))
    assert all(g.following == {"x"} for g in graphs)
    assert host.calls == 1


async def test_string_user_ids_are_escaped_in_the_callback_path(redis_client: Any, host: HostBackend) -> None:
    host.graphs["chef anna?x=1"] = {"following": ["f"], "blocked": []}
    graph = await (await client(redis_client, host.url)).get("chef anna?x=1")
    assert graph.following == {"f"} and graph.origin == "host"
