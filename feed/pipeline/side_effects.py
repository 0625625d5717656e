"""Side effects: work after the response is computed, off its path."""

from __future__ import annotations

import numpy as np

from feed.pipeline.candidates import RankedPost
from feed.pipeline.components import BaseComponent, FeedQuery
from feed.pipeline.features import LAYOUT
from feed.stores.feature_store import FeatureStore
from feed.stores.served_log import ServedLog, ServedPage


class _RecordsServing(BaseComponent):
    """A side effect that records a serving: an operator's preview is not one."""

    def enabled(self, query: FeedQuery) -> bool:
        return not query.preview


class RecordImpressionsSideEffect(_RecordsServing):
    """Counts an impression for every served post (exploration learns from these)."""

    name = "record_impressions"

    def __init__(self, store: FeatureStore) -> None:
        self._store = store

    async def run(self, query: FeedQuery, selected: list[RankedPost]) -> None:
        await self._store.record_impressions([c.post_key for c in selected])


class LogServedFeaturesSideEffect(_RecordsServing):
    """Logs the served page with the features it was ranked with and the model that ranked it:
    the served-impressions kind of the learned ranker's training data (`feed/batch/impressions.py`).

    Only posts that carry features are logged: a later page of a session, popped from its
    stored ranking, has none (the stored ranking keeps no features), nor has a page no reranker
    attached them to. One XADD per page, after the response.
    """

    name = "log_served_features"

    def __init__(self, log: ServedLog) -> None:
        self._log = log

    async def run(self, query: FeedQuery, selected: list[RankedPost]) -> None:
        logged = [(p, p.features) for p in selected if p.features is not None]
        if not logged:
            return
        page = ServedPage.of(
            query.user_key,
            query.now,
            [p.post_key for p, _ in logged],
            np.stack([x for _, x in logged]),
            LAYOUT,
            logged[0][0].ranker_version,
        )
        await self._log.append(page)
