"""Side effects: work after the response is computed, off its path."""

from __future__ import annotations

from feed.pipeline.framework import Candidate, FeedQuery
from feed.stores.feature_store import FeatureStore


class RecordServedSideEffect:
    """Records the served posts under the feed session's cursor, so the next page skips them."""

    name = "record_served"

    def __init__(self, store: FeatureStore, ttl_s: int) -> None:
        self._store = store
        self._ttl_s = ttl_s

    def enabled(self, query: FeedQuery) -> bool:
        return True

    async def run(self, query: FeedQuery, selected: list[Candidate]) -> None:
        await self._store.record_served(query.cursor, [c.post_key for c in selected], self._ttl_s)
