"""POST /feed."""

from __future__ import annotations

import time
import uuid

from litestar import Controller, post

from feed.api.schemas import FeedItem, FeedRequest, FeedResponse, StageOut
from feed.ids import id_key
from feed.metrics import observe_stages
from feed.pipeline.framework import FeedQuery
from feed.services import ServicesDep


class FeedController(Controller):
    """Personal feeds."""

    path = "/feed"
    tags = ["feed"]

    @post("/", status_code=200)
    async def get_feed(self, data: FeedRequest, services: ServicesDep) -> FeedResponse:
        """A ranked page of the user's feed; `next_cursor` continues the session without repeats."""
        start = time.perf_counter()
        query = FeedQuery(
            user_id=data.user_id,
            user_key=id_key(data.user_id),
            limit=data.limit,
            cursor=data.cursor or uuid.uuid4().hex,
            now=time.time(),
        )
        result = await services.home_feed.page(query, continuing=data.cursor is not None)
        observe_stages(result.stages)
        items = [
            FeedItem(
                post_id=p.post_id,
                author_id=p.author_id,
                score=round(p.score, 6),
                source=p.source,
                score_parts={**p.parts, **p.factors},
            )
            for p in result.items
        ]
        stages = None
        if data.explain:
            stages = [
                StageOut(r.stage, r.name, round(r.ms, 3), r.count_in, r.count_out, r.status, r.error)
                for r in result.stages
            ]
        return FeedResponse(
            user_id=data.user_id,
            items=items,
            next_cursor=query.cursor if len(items) == data.limit else None,
            took_ms=round((time.perf_counter() - start) * 1000, 3),
            stages=stages,
        )
