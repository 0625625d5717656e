"""Pages of a feed session: a stable order with no repeats, on any API replica.

The first page runs the pipeline and stores the ranked candidates after the page
under the cursor (`FeedSessions`). A later page pops its posts from that list, in
the first ranking's order, and passes them through the pipeline's hydrators and
filters only (a post deleted or an author blocked meanwhile still drops out). When
the stored ranking runs out (or filters keep dropping what it holds), the pipeline
runs again, skipping every post served under the cursor, and its rest replaces the
stored list.
"""

from __future__ import annotations

import dataclasses

from feed.pipeline.framework import Candidate, FeedQuery, FeedResult, Pipeline, StageReport
from feed.stores.sessions import FeedSessions, SessionItem


def to_item(c: Candidate) -> SessionItem:
    """The stored form of a ranked candidate."""
    return SessionItem(c.post_key, c.source, c.score, c.parts, c.factors, c.in_network)


def to_candidate(item: SessionItem) -> Candidate:
    """A stored candidate back in the pipeline, with its earlier score and parts."""
    return Candidate(
        item.post_key,
        item.source,
        in_network=item.in_network,
        parts=dict(item.parts),
        factors=dict(item.factors),
        score=item.score,
    )


class PagedFeed:
    """Serves pages of a pipeline's ranking; `keep` ranked candidates are stored per session."""

    STORED_TRIES = 3  # pops from the stored ranking per page (more when filters drop some) before re-ranking

    def __init__(self, pipeline: Pipeline, sessions: FeedSessions, keep: int) -> None:
        self.pipeline = pipeline
        self._sessions = sessions
        self._keep = keep

    async def page(self, query: FeedQuery, continuing: bool) -> FeedResult:
        """The next `query.limit` posts of the session `query.cursor` (a new one unless `continuing`)."""
        items: list[Candidate] = []
        stages: list[StageReport] = []
        popped: list[str] = []
        for _ in range(self.STORED_TRIES if continuing else 0):
            need = query.limit - len(items)
            stored = await self._sessions.take(query.cursor, need)
            popped += [s.post_key for s in stored]
            if stored:
                result = await self.pipeline.run(
                    dataclasses.replace(query, limit=need), ranked=[to_candidate(s) for s in stored]
                )
                items, stages = items + result.items, stages + result.stages
            if len(stored) < need or len(items) == query.limit:
                break
        if len(items) < query.limit and popped:  # the fresh run below must skip these too
            await self._sessions.mark_served(query.cursor, popped)
        rest = None
        if len(items) < query.limit:
            result = await self.pipeline.run(dataclasses.replace(query, limit=query.limit - len(items)))
            items, stages = items + result.items, stages + result.stages
            rest = [to_item(c) for c in result.rest[: self._keep]]
        await self._sessions.save(query.cursor, [c.post_key for c in items], rest)
        return FeedResult(items, stages)
