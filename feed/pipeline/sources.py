"""Sources: where candidates come from (run in parallel, each within its budget)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from feed.pipeline.candidates import Candidates
from feed.pipeline.components import BaseComponent, FeedQuery
from feed.pipeline.retrieval_cache import RetrievalCache
from feed.stores.catalog.model import ACTIONS, NO_ROW, PostCatalog
from feed.stores.index.vectors import PostSearch, VectorHit


class ThunderSource(BaseComponent):
    """In-network: the newest posts of the authors the user follows (the catalogue's timelines)."""

    name = "thunder"

    def __init__(self, catalog: PostCatalog, per_author: int, budget: int, max_age_s: float) -> None:
        self._catalog = catalog
        self._per_author = per_author
        self._budget = budget
        self._max_age_s = max_age_s

    def enabled(self, query: FeedQuery) -> bool:
        return bool(query.graph.following)

    async def fetch(self, query: FeedQuery) -> Candidates:
        catalog = self._catalog
        authors = catalog.authors_of(query.graph.following)
        oldest = query.now - self._max_age_s if self._max_age_s > 0 else -np.inf
        rows = catalog.newest_by(authors, self._per_author, oldest)
        created = catalog.created_at[rows]
        newest = np.argsort(-created, kind="stable")[: self._budget]
        return Candidates.of(rows[newest], self.name, created[newest], in_network=True)


class EngagementReader(Protocol):
    """The social source's one read (`FeatureStore` in the API, a snapshot in training)."""

    async def recent_engagements(self, user_keys: list[str], per_user: int) -> dict[str, tuple[int, float]]:
        """Post key -> (how many of these users engaged with it, the newest such time)."""
        ...


class SocialEngagementSource(BaseComponent):
    """In-network engagement: posts the people the user follows recently liked, commented on or
    shared, most followees first, then the most recently engaged.

    `source_score` is the number of followees who engaged (a feature of the learned ranker).
    Recency comes from each user's kept engagements (`social_engaged_keep`), not a time window.
    For a user following more than `max_followees`, those they engage with most are read (author
    affinity, then key: the same followees for the same state). Reading them is the source's cost
    (up to `max_followees` x `per_user` entries), so the answer is kept like a nearest-neighbour
    search's (`RetrievalCache`): until the user interacts, for at most its TTL, within which
    newer engagements of followees (and a new follow) wait.
    """

    name = "social"

    def __init__(
        self,
        catalog: PostCatalog,
        engagements: EngagementReader,
        budget: int,
        per_user: int,
        max_followees: int,
        cache: RetrievalCache,
    ) -> None:
        self._catalog = catalog
        self._engagements = engagements
        self._budget = budget
        self._per_user = per_user
        self._max_followees = max_followees
        self._cache = cache

    def enabled(self, query: FeedQuery) -> bool:
        return bool(query.graph.following)

    async def fetch(self, query: FeedQuery) -> Candidates:
        return await self._cache.fetch(self.name, query, lambda: self._engaged(query))

    async def _engaged(self, query: FeedQuery) -> list[VectorHit]:
        affinity = query.user.affinity
        followees = sorted(query.graph.following, key=lambda a: (-affinity.get(a, 0.0), a))
        engaged = await self._engagements.recent_engagements(followees[: self._max_followees], self._per_user)
        post_keys = list(engaged)
        rows = self._catalog.rows_of(post_keys)
        users = np.array([n for n, _ in engaged.values()], dtype=np.float64)
        newest = np.array([ts for _, ts in engaged.values()], dtype=np.float64)
        known = rows != NO_ROW
        known[known] = self._catalog.alive[rows[known]]
        order = np.lexsort((-newest, -users))  # by users, then by newest
        best = order[known[order]][: self._budget]
        return [VectorHit(post_keys[i], float(users[i])) for i in best.tolist()]


class PhoenixSource(BaseComponent):
    """Out-of-network: nearest neighbours of the user's interest vectors in the vector index.

    Every interest vector the user has (long- and short-term, in each embedding space:
    text, image) is searched, and the lists are fused by reciprocal rank inside the index.
    Results are reused until the user interacts again (see `RetrievalCache`).
    """

    name = "phoenix"

    def __init__(self, index: PostSearch, budget: int, cache: RetrievalCache) -> None:
        self._index = index
        self._budget = budget
        self._cache = cache

    def enabled(self, query: FeedQuery) -> bool:
        return bool(query.user.vectors)

    async def fetch(self, query: FeedQuery) -> Candidates:
        excluded = sorted(query.graph.blocked | query.graph.muted | {query.user_key})
        return await self._cache.fetch(
            self.name,
            query,
            lambda: self._index.nearest(query.user.interest_queries(), self._budget, excluded),
        )


class CollaborativeSource(BaseComponent):
    """Out-of-network by collaborative filtering: the posts whose CF item factors have the
    highest dot product with the user's, found in the vector index (users who engaged like
    this user engaged with them), from the model the user's factors belong to."""

    name = "collaborative"

    def __init__(self, index: PostSearch, budget: int, cache: RetrievalCache) -> None:
        self._index = index
        self._budget = budget
        self._cache = cache

    def enabled(self, query: FeedQuery) -> bool:
        return query.user.cf is not None and query.user.cf_version > 0

    async def fetch(self, query: FeedQuery) -> Candidates:
        factors = query.user.cf
        if factors is None:
            return Candidates.of(np.empty(0, dtype=np.int64), self.name)
        excluded = sorted(query.graph.blocked | query.graph.muted | {query.user_key})
        return await self._cache.fetch(
            self.name,
            query,
            lambda: self._index.nearest_cf(factors, query.user.cf_version, self._budget, excluded),
        )


class TrendingSource(BaseComponent):
    """Popular now: posts with the most positive engagement, decayed with a half-life."""

    name = "trending"

    def __init__(self, catalog: PostCatalog, budget: int) -> None:
        self._catalog = catalog
        self._budget = budget

    async def fetch(self, query: FeedQuery) -> Candidates:
        rows = self._catalog.top_trending(self._budget)
        return Candidates.of(rows, self.name, self._catalog.trending_values(rows, query.now))


class PopularSource(BaseComponent):
    """Popular over longer horizons: the posts with the most positive engagement of all time
    (counts weighted by action) and at each extra trending horizon (days to a year), the budget
    shared among them.

    Trending forgets in hours; in a catalogue (films, products, courses) what lasts is what
    many people liked over months. All are offered, and the learned ranker weighs them by what
    each deployment's users go on to engage with.
    """

    name = "popular"

    def __init__(self, catalog: PostCatalog, budget: int, action_weights: dict[str, float]) -> None:
        self._catalog = catalog
        self._budget = budget
        self._weights = np.array([max(action_weights.get(a, 0.0), 0.0) for a in ACTIONS])

    async def fetch(self, query: FeedQuery) -> Candidates:
        catalog = self._catalog
        share = max(1, self._budget // (1 + len(catalog.horizons_s)))
        lists = [catalog.top_popular(share, self._weights)]
        lists += [catalog.top_horizon(column, share) for column in range(len(catalog.horizons_s))]
        rows = np.unique(np.concatenate(lists)) if lists else np.empty(0, dtype=np.int64)
        return Candidates.of(rows, self.name, catalog.counts[rows] @ self._weights)


class FreshSource(BaseComponent):
    """The newest posts engine-wide: cold start for new users and a first audience for new posts."""

    name = "fresh"

    def __init__(self, catalog: PostCatalog, budget: int) -> None:
        self._catalog = catalog
        self._budget = budget

    async def fetch(self, query: FeedQuery) -> Candidates:
        rows = self._catalog.newest(self._budget)
        return Candidates.of(rows, self.name, self._catalog.created_at[rows])
