"""Sources: where candidates come from (run in parallel, each within its budget)."""

from __future__ import annotations

from feed.pipeline.framework import Candidate, FeedQuery
from feed.stores.feature_store import FeatureStore
from feed.stores.vectors import VectorIndex


class ThunderSource:
    """In-network: the newest posts of the authors the user follows, from Redis timelines."""

    name = "thunder"

    def __init__(self, store: FeatureStore, per_author: int, budget: int, max_age_s: float) -> None:
        self._store = store
        self._per_author = per_author
        self._budget = budget
        self._max_age_s = max_age_s

    def enabled(self, query: FeedQuery) -> bool:
        return bool(query.graph.following)

    async def fetch(self, query: FeedQuery) -> list[Candidate]:
        entries = await self._store.timelines(
            sorted(query.graph.following), self._per_author, query.now - self._max_age_s
        )
        entries.sort(key=lambda e: e.created_at, reverse=True)
        return [
            Candidate(e.post_key, self.name, source_score=e.created_at, in_network=True)
            for e in entries[: self._budget]
        ]


class PhoenixSource:
    """Out-of-network: nearest neighbours of the user's interest vectors in the vector index.

    Every interest vector the user has (long- and short-term, in each embedding space:
    text, image) is searched, and the lists are fused by reciprocal rank inside the index.
    """

    name = "phoenix"

    def __init__(self, index: VectorIndex, budget: int) -> None:
        self._index = index
        self._budget = budget

    def enabled(self, query: FeedQuery) -> bool:
        return bool(query.user.vectors)

    async def fetch(self, query: FeedQuery) -> list[Candidate]:
        excluded = sorted(query.graph.blocked | query.graph.muted | {query.user_key})
        hits = await self._index.nearest(query.user.interest_queries(), self._budget, excluded)
        return [Candidate(h.post_key, self.name, source_score=h.score) for h in hits]


class CollaborativeSource:
    """Out-of-network by collaborative filtering: the posts whose CF item factors have the
    highest dot product with the user's, found in the vector index (users who engaged like
    this user engaged with them), from the model the user's factors belong to."""

    name = "collaborative"

    def __init__(self, index: VectorIndex, budget: int) -> None:
        self._index = index
        self._budget = budget

    def enabled(self, query: FeedQuery) -> bool:
        return query.user.cf is not None and query.user.cf_version > 0

    async def fetch(self, query: FeedQuery) -> list[Candidate]:
        if query.user.cf is None:
            return []
        excluded = sorted(query.graph.blocked | query.graph.muted | {query.user_key})
        hits = await self._index.nearest_cf(query.user.cf, query.user.cf_version, self._budget, excluded)
        return [Candidate(h.post_key, self.name, source_score=h.score) for h in hits]


class TrendingSource:
    """Popular now: posts with the most positive engagement, decayed with a half-life."""

    name = "trending"

    def __init__(self, store: FeatureStore, budget: int) -> None:
        self._store = store
        self._budget = budget

    def enabled(self, query: FeedQuery) -> bool:
        return True

    async def fetch(self, query: FeedQuery) -> list[Candidate]:
        rows = await self._store.trending.top(self._budget, query.now)
        return [Candidate(key, self.name, source_score=score) for key, score in rows]


class FreshSource:
    """The newest posts engine-wide: cold start for new users and a first audience for new posts."""

    name = "fresh"

    def __init__(self, store: FeatureStore, budget: int) -> None:
        self._store = store
        self._budget = budget

    def enabled(self, query: FeedQuery) -> bool:
        return True

    async def fetch(self, query: FeedQuery) -> list[Candidate]:
        entries = await self._store.recent(self._budget)
        return [Candidate(e.post_key, self.name, source_score=e.created_at) for e in entries]
