"""POST /feed."""

from __future__ import annotations

import time
import uuid

from litestar import Controller, post

from feed.api.schemas import FeedItem, FeedRequest, FeedResponse, StageOut
from feed.ids import id_key
from feed.metrics import observe_stages
from feed.pipeline.framework import FeedQuery, RankedPost, StageReport
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
        return FeedResponse(
            user_id=data.user_id,
            items=[feed_item(p) for p in result.items],
            next_cursor=query.cursor if len(result.items) == data.limit else None,
            took_ms=round((time.perf_counter() - start) * 1000, 3),
            stages=[stage_out(r) for r in result.stages] if data.explain else None,
        )


def feed_item(post: RankedPost) -> FeedItem:
    """A ranked post as the API returns it."""
    return FeedItem(
        post_id=post.post_id,
        author_id=post.author_id,
        score=round(post.score, 6),
        source=post.source,
        score_parts={**post.parts, **post.factors},
    )


def stage_out(report: StageReport) -> StageOut:
    """A component's report as the API returns it."""
    return StageOut(
        report.stage,
        report.name,
        round(report.ms, 3),
        report.count_in,
        report.count_out,
        report.status,
        report.error,
    )
