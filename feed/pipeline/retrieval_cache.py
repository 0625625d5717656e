"""Per-user cache of nearest-neighbour retrieval results.

An ANN search over every post is the one per-request cost that grows with the corpus
(milliseconds at 100k posts, holding the event loop while it runs), and its answer only
changes when the user's interest vectors or CF factors do, which happens when they
interact, or when posts arrive. So a source's result is kept per user under a key that
changes with the user's applied event count and CF model version, for at most `ttl_s`
(new posts reach a feed meanwhile through Thunder and Fresh; deleted ones are dropped by
the missing-post filter; blocked authors by their filter). Scoring always uses the
current vectors. Bounded by `max_users` (least recently used go first); per process.
"""

from __future__ import annotations

from cachetools import TTLCache

from feed.pipeline.framework import Candidates, FeedQuery


class RetrievalCache:
    """Retrieved candidates per (source, user, what the user's interests were retrieved from)."""

    def __init__(self, ttl_s: float, max_users: int) -> None:
        self._cache: TTLCache[tuple[str, str, int, int, frozenset[str]], Candidates] | None = (
            TTLCache(maxsize=max_users, ttl=ttl_s) if ttl_s > 0 and max_users > 0 else None
        )
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _key(source: str, query: FeedQuery) -> tuple[str, str, int, int, frozenset[str]]:
        excluded = query.graph.blocked | query.graph.muted
        return (source, query.user_key, query.user.events, query.user.cf_version, excluded)

    def get(self, source: str, query: FeedQuery) -> Candidates | None:
        """A copy of the cached result (stages change batches in place), or None."""
        if self._cache is None:
            return None
        found = self._cache.get(self._key(source, query))
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        return Candidates.of(found.rows.copy(), source, found.source_score.copy())

    def put(self, source: str, query: FeedQuery, candidates: Candidates) -> None:
        """Keep a source's fresh result."""
        if self._cache is not None:
            self._cache[self._key(source, query)] = Candidates.of(
                candidates.rows.copy(), source, candidates.source_score.copy()
            )
