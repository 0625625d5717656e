"""Side effects: work after the response is computed, off its path."""

from __future__ import annotations

from feed.pipeline.framework import FeedQuery, RankedPost
from feed.stores.feature_store import FeatureStore


class RecordImpressionsSideEffect:
    """Counts an impression for every served post (exploration learns from these)."""

    name = "record_impressions"

    def __init__(self, store: FeatureStore) -> None:
        self._store = store

    def enabled(self, query: FeedQuery) -> bool:
        return True

    async def run(self, query: FeedQuery, selected: list[RankedPost]) -> None:
        await self._store.record_impressions([c.post_key for c in selected])
