"""Per-user cache of nearest-neighbour retrieval results, shared by the API processes.

An ANN search over every post is the one per-request cost that grows with the corpus
(milliseconds at 100k posts, holding the event loop while it runs), and its answer only
changes when the user's interest vectors or CF factors do, which happens when they
interact, or when posts arrive. So a source's result is kept per user under a key that
changes with the user's applied event count, CF model version and excluded authors, for
at most `ttl_s` (new posts reach a feed meanwhile through Thunder and Fresh; deleted ones
are dropped by the missing-post filter; blocked authors by their filter). Scoring always
uses the current vectors.

Two layers: this process's own (catalogue rows, bounded by `max_users`, least recently
used go first), and, when given `SharedRetrievals`, one every API process shares (post keys
and scores in Redis, expiring after `ttl_s`), so a user's next feed served by another API
process does not search again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

import numpy as np
from cachetools import TTLCache

from feed.metrics import CACHE_LOOKUPS
from feed.pipeline.candidates import Candidates
from feed.pipeline.components import FeedQuery
from feed.stores.catalog.model import PostCatalog
from feed.stores.index.vectors import VectorHit
from feed.stores.retrievals import SharedRetrieval, SharedRetrievals

LocalKey = tuple[str, str, int, int, frozenset[str]]
LOCAL_HITS, SHARED_HITS, MISSES = (
    CACHE_LOOKUPS.labels("retrieval", r) for r in ("hit", "shared_hit", "miss")
)


def _fingerprint(key: LocalKey) -> str:
    _, _, events, cf_version, excluded = key
    digest = hashlib.blake2b("\n".join(sorted(excluded)).encode(), digest_size=8).hexdigest()
    return f"{events}:{cf_version}:{digest}"


class RetrievalCache:
    """Retrieved candidates per (source, user, what the user's interests were retrieved from)."""

    def __init__(
        self, catalog: PostCatalog, ttl_s: float, max_users: int, shared: SharedRetrievals | None = None
    ) -> None:
        self._catalog = catalog
        on = ttl_s > 0 and max_users > 0
        self._local: TTLCache[LocalKey, Candidates] | None = (
            TTLCache(maxsize=max_users, ttl=ttl_s) if on else None
        )
        self._shared = shared if on else None

    async def fetch(
        self, source: str, query: FeedQuery, search: Callable[[], Awaitable[list[VectorHit]]]
    ) -> Candidates:
        """`source`'s candidates for `query`: a copy of the kept result (stages change batches
        in place), or what `search()` finds now, then kept."""
        excluded = query.graph.blocked | query.graph.muted
        key: LocalKey = (source, query.user_key, query.user.events, query.user.cf_version, excluded)
        if self._local is None:
            return self._candidates(source, await search())
        found = self._local.get(key)
        if found is None and self._shared is not None:
            found = await self._from_shared(key)
        elif found is not None:
            LOCAL_HITS.inc()
        if found is not None:
            return Candidates.of(found.rows.copy(), source, found.source_score.copy())
        MISSES.inc()
        hits = await search()
        found = self._candidates(source, hits)
        self._local[key] = Candidates.of(found.rows.copy(), source, found.source_score.copy())
        if self._shared is not None:
            scores = np.fromiter((h.score for h in hits), dtype=np.float64, count=len(hits))
            shared = SharedRetrieval(_fingerprint(key), [h.post_key for h in hits], scores.tobytes())
            await self._shared.put(source, query.user_key, shared)
        return found

    async def _from_shared(self, key: LocalKey) -> Candidates | None:
        """The result another API process kept for `key`, as this catalogue's rows (also kept
        locally), or None."""
        assert self._shared is not None and self._local is not None
        source, user_key = key[0], key[1]
        shared = await self._shared.get(source, user_key)
        if shared is None or shared.fingerprint != _fingerprint(key):
            return None
        SHARED_HITS.inc()
        found = Candidates.of(
            self._catalog.rows_of(shared.post_keys), source, np.frombuffer(shared.scores, dtype=np.float64)
        )
        self._local[key] = found
        return found

    def _candidates(self, source: str, hits: list[VectorHit]) -> Candidates:
        rows = self._catalog.rows_of(h.post_key for h in hits)
        return Candidates.of(
            rows, source, np.fromiter((h.score for h in hits), dtype=np.float64, count=len(hits))
        )
