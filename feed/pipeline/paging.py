"""Pages of a feed session: a stable order with no repeats, on any API replica; where the
pipeline's rankings are kept and resumed.

The first page runs the pipeline and stores the ranked candidates after the page
under the cursor (`FeedSessions`). A later page pops its posts from that list, in
the first ranking's order, and passes them through the pipeline's hydrators and
filters only (a post deleted or an author blocked meanwhile still drops out). When
the stored ranking runs out (or filters keep dropping what it holds), the pipeline
runs again, skipping every post served under the cursor, and its rest replaces the
stored list.

A new session of a hot user may start from the ranking the `RankingCache` kept for them
(`ranking_cache.py`), and the whole ranking a fresh run makes is kept there. An operator's
preview ranks afresh and keeps nothing: no session, no cached ranking, no side effect.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from feed.pipeline.candidates import Candidates, RankedPost
from feed.pipeline.components import FeedQuery
from feed.pipeline.ranking_cache import RankingCache
from feed.pipeline.runner import FeedResult, Pipeline, StageReport
from feed.stores.catalog.model import PostCatalog
from feed.stores.sessions import FeedSessions, SessionItem, SessionRanking


def to_ranking(catalog: PostCatalog, batch: Candidates) -> SessionRanking:
    """The stored form of ranked candidates (columns, no object per candidate)."""
    keys = catalog.keys
    return SessionRanking(
        post_keys=[keys[r] for r in batch.rows.tolist()],
        sources=[batch.source_names[s] for s in batch.source.tolist()],
        scores=batch.score,
        in_network=batch.in_network,
        parts=batch.parts,
        factors=batch.factors,
    )


def to_candidates(catalog: PostCatalog, items: list[SessionItem]) -> Candidates:
    """Stored posts back in the pipeline as a batch, with their earlier scores and parts."""
    names = sorted({i.source for i in items})
    code = {name: c for c, name in enumerate(names)}
    return Candidates(
        rows=catalog.rows_of(i.post_key for i in items),
        source=np.array([code[i.source] for i in items], dtype=np.int16),
        source_score=np.zeros(len(items)),
        in_network=np.array([i.in_network for i in items], dtype=bool),
        source_names=tuple(names),
        parts={
            p: np.array([i.parts.get(p, 0.0) for i in items])
            for p in sorted({p for i in items for p in i.parts})
        },
        factors={
            f: np.array([i.factors.get(f, 1.0) for i in items])
            for f in sorted({f for i in items for f in i.factors})
        },
        score=np.array([i.score for i in items], dtype=np.float64),
    )


class PagedFeed:
    """Serves pages of a pipeline's ranking; `keep` ranked candidates are stored per session, and
    `cache` (when given) keeps each hot user's latest ranking for their next new session."""

    STORED_TRIES = 3  # pops from the stored ranking per page (more when filters drop some) before re-ranking

    def __init__(
        self, pipeline: Pipeline, sessions: FeedSessions, keep: int, cache: RankingCache | None = None
    ) -> None:
        self.pipeline = pipeline
        self._sessions = sessions
        self._keep = keep
        self._cache = cache

    async def preview(self, query: FeedQuery) -> FeedResult:
        """The first page ranked afresh, as `query.user_id` would get it now; nothing is kept (no
        session, no cached ranking; the side effects skip a preview query)."""
        return await self.pipeline.run(dataclasses.replace(query, preview=True))

    async def page(self, query: FeedQuery, continuing: bool) -> FeedResult:
        """The next `query.limit` posts of the session `query.cursor` (a new one unless `continuing`)."""
        items: list[RankedPost] = []
        stages: list[StageReport] = []
        popped: list[str] = []
        for _ in range(self.STORED_TRIES if continuing else 0):
            need = query.limit - len(items)
            stored = await self._sessions.take(query.cursor, need)
            popped += [s.post_key for s in stored]
            if stored:
                result = await self.pipeline.run(
                    dataclasses.replace(query, limit=need),
                    ranked=to_candidates(self.pipeline.catalog, stored),
                )
                items, stages = items + result.items, stages + result.stages
            if len(stored) < need or len(items) == query.limit:
                break
        if len(items) < query.limit and popped:  # the fresh run below must skip these too
            await self._sessions.mark_served(query.cursor, popped)
        rest = None
        if len(items) < query.limit:
            result = await self._ranked(dataclasses.replace(query, limit=query.limit - len(items)))
            items, stages = items + result.items, stages + result.stages
            rest = to_ranking(self.pipeline.catalog, result.rest) if result.rest is not None else None
        await self._sessions.save(query.cursor, [c.post_key for c in items], rest)
        return FeedResult(items, stages)

    async def _ranked(self, query: FeedQuery) -> FeedResult:
        """A fresh run for the page, started from the user's cached ranking when there is one
        (stages reported `cached`); a ranking made here is cached."""
        reports = await self.pipeline.hydrate(query)  # the cache's key needs the hydrated query
        cached = await self._cache.get(query) if self._cache is not None else None
        result = await self.pipeline.rank(query, reports, cached, "cached", keep=self._keep)
        if self._cache is not None and result.ranked is not None:
            await self._cache.put(query, result.ranked)
        return result
