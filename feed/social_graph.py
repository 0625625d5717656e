"""The host's social graph: `GET {BACKEND_URL}/internal/social-graph/{user_id}/`, cached in Redis
(`feed/stores/social_graphs.py`).

A fresh cached copy answers without a call. Otherwise the host is asked with a
short timeout, once per user at a time however many feeds wait for it; if it is
slow, failing or not configured, the last known copy (kept for a day) or an empty
graph is used and the failure is logged. A feed never fails because of the host.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import msgspec
import structlog

from feed.ids import HostId, id_key
from feed.stores.social_graphs import CachedGraph, SocialGraphCache

log = structlog.get_logger(__name__)


class _HostGraph(msgspec.Struct):
    following: list[HostId] = []
    blocked: list[HostId] = []
    muted: list[HostId] = []
    muted_keywords: list[str] = []


@dataclass(frozen=True, slots=True)
class SocialGraph:
    """Canonical author keys the user follows, blocked and muted, the words they muted (lower
    case), and `origin`: where it came from."""

    following: frozenset[str] = frozenset()
    blocked: frozenset[str] = frozenset()
    muted: frozenset[str] = frozenset()
    muted_keywords: frozenset[str] = frozenset()
    origin: str = "none"


class SocialGraphClient:
    """Fetches and caches users' social graphs."""

    def __init__(
        self,
        cache: SocialGraphCache,
        http: httpx.AsyncClient,
        backend_url: str | None,
        timeout_s: float = 0.3,
        ttl_s: int = 60,
    ) -> None:
        self._cache = cache
        self._http = http
        self._base = backend_url.rstrip("/") if backend_url else None
        self._timeout = timeout_s
        self._ttl = ttl_s
        self._inflight: dict[str, asyncio.Future[SocialGraph]] = {}

    async def get(self, user_id: int | str) -> SocialGraph:
        """The user's graph; never raises for host or cache trouble."""
        user_key = id_key(user_id)
        cached: CachedGraph | None = None
        try:
            cached = await self._cache.get(user_key)
        except Exception:
            log.warning("social_graph_cache_unreadable", user=user_key, exc_info=True)
        if cached is not None and time.time() - cached.fetched_at < self._ttl:
            return self._graph(cached, "cache")
        if self._base is None:
            return self._graph(cached, "stale") if cached else SocialGraph()
        # one call to the host per user at a time: concurrent cold feeds share it
        inflight = self._inflight.get(user_key)
        if inflight is None:
            inflight = asyncio.ensure_future(self._fetch(user_id, user_key, cached))
            self._inflight[user_key] = inflight
            inflight.add_done_callback(lambda _: self._inflight.pop(user_key, None))
        return await asyncio.shield(inflight)

    async def _fetch(self, user_id: int | str, user_key: str, cached: CachedGraph | None) -> SocialGraph:
        """Ask the host; on any failure fall back to the last known copy or an empty graph."""
        try:
            response = await self._http.get(
                f"{self._base}/internal/social-graph/{quote(str(user_id), safe='')}/", timeout=self._timeout
            )
            response.raise_for_status()
            host = msgspec.json.decode(response.content, type=_HostGraph)
        except Exception as exc:
            log.warning("social_graph_unavailable", user=user_key, error=repr(exc))
            return self._graph(cached, "stale") if cached else SocialGraph(origin="unavailable")
        fresh = CachedGraph(
            following=[id_key(a) for a in host.following],
            blocked=[id_key(a) for a in host.blocked],
            muted=[id_key(a) for a in host.muted],
            fetched_at=time.time(),
            muted_keywords=[w.strip().lower() for w in host.muted_keywords if w.strip()],
        )
        try:
            await self._cache.put(user_key, fresh)
        except Exception:
            log.warning("social_graph_cache_write_failed", user=user_key, exc_info=True)
        return self._graph(fresh, "host")

    @staticmethod
    def _graph(cached: CachedGraph, origin: str) -> SocialGraph:
        return SocialGraph(
            following=frozenset(cached.following),
            blocked=frozenset(cached.blocked),
            muted=frozenset(cached.muted),
            muted_keywords=frozenset(cached.muted_keywords),
            origin=origin,
        )
