"""Candidate hydrators: add stored features to candidates (one Redis round trip each)."""

from __future__ import annotations

from feed.pipeline.framework import Candidate, FeedQuery
from feed.stores.feature_store import FeatureStore


class PostRecordHydrator:
    """Attaches each candidate's stored post (author, time, vector); deleted posts get none."""

    name = "post_records"

    def __init__(self, store: FeatureStore) -> None:
        self._store = store

    def enabled(self, query: FeedQuery) -> bool:
        return True

    async def hydrate(self, query: FeedQuery, candidates: list[Candidate]) -> None:
        records = await self._store.posts(sorted({c.post_key for c in candidates}))
        for c in candidates:
            c.record = records.get(c.post_key)
            if c.record is not None and c.record.author_key in query.graph.following:
                c.in_network = True


class EngagementCountsHydrator:
    """Attaches each candidate's interaction counts per action."""

    name = "engagement_counts"

    def __init__(self, store: FeatureStore) -> None:
        self._store = store

    def enabled(self, query: FeedQuery) -> bool:
        return True

    async def hydrate(self, query: FeedQuery, candidates: list[Candidate]) -> None:
        counts = await self._store.post_counts(sorted({c.post_key for c in candidates}))
        for c in candidates:
            c.counts = counts.get(c.post_key, {})


class TrendingHydrator:
    """Attaches each candidate's decayed positive engagement (its trending value now)."""

    name = "trending_values"

    def __init__(self, store: FeatureStore) -> None:
        self._store = store

    def enabled(self, query: FeedQuery) -> bool:
        return True

    async def hydrate(self, query: FeedQuery, candidates: list[Candidate]) -> None:
        values = await self._store.trending.values(sorted({c.post_key for c in candidates}), query.now)
        for c in candidates:
            c.trending = values.get(c.post_key, 0.0)


class CFFactorsHydrator:
    """Attaches each candidate's item factors from the current collaborative-filtering model."""

    name = "cf_factors"

    def __init__(self, store: FeatureStore) -> None:
        self._store = store

    def enabled(self, query: FeedQuery) -> bool:
        return query.user.cf is not None

    async def hydrate(self, query: FeedQuery, candidates: list[Candidate]) -> None:
        factors = await self._store.cf_factors(sorted({c.post_key for c in candidates}))
        for c in candidates:
            c.cf = factors.get(c.post_key)


class ImpressionsHydrator:
    """Attaches how many times each candidate was served (for exploration)."""

    name = "impressions"

    def __init__(self, store: FeatureStore) -> None:
        self._store = store

    def enabled(self, query: FeedQuery) -> bool:
        return True

    async def hydrate(self, query: FeedQuery, candidates: list[Candidate]) -> None:
        counts = await self._store.impressions(sorted({c.post_key for c in candidates}))
        for c in candidates:
            c.impressions = counts.get(c.post_key, 0.0)


class AuthorReachHydrator:
    """Attaches how many interactions each candidate's author has received (after `post_records`)."""

    name = "author_reach"

    def __init__(self, store: FeatureStore) -> None:
        self._store = store

    def enabled(self, query: FeedQuery) -> bool:
        return True

    async def hydrate(self, query: FeedQuery, candidates: list[Candidate]) -> None:
        authors = sorted({c.record.author_key for c in candidates if c.record is not None})
        reach = await self._store.author_reach(authors)
        for c in candidates:
            if c.record is not None:
                c.author_reach = reach.get(c.record.author_key, 0.0)
