"""POST /feed."""

from __future__ import annotations

import time

from litestar import Controller, post
from litestar.di import Provide

from feed.api.schemas import FeedItem, FeedRequest, FeedResponse, RankerOut, StageOut
from feed.pipeline.candidates import RankedPost
from feed.pipeline.rerankers import LearnedRanker
from feed.pipeline.runner import StageReport
from feed.pipeline.stage_metrics import observe_stages
from feed.ranking.model import RankerSlot
from feed.services import ServicesDep
from feed.usecases import FeedService


def feed_service(services: ServicesDep) -> FeedService:
    return services.feeds


class FeedController(Controller):
    """Personal feeds."""

    path = "/feed"
    tags = ["feed"]
    dependencies = {"feeds": Provide(feed_service, sync_to_thread=False)}

    @post("/", status_code=200)
    async def get_feed(self, data: FeedRequest, feeds: FeedService) -> FeedResponse:
        """A ranked page of the user's feed; `next_cursor` continues the session without repeats."""
        start = time.perf_counter()
        query = feeds.query(data.user_id, data.limit, data.cursor, data.explain)
        result = await feeds.page(query, continuing=data.cursor is not None)
        observe_stages(result.stages)
        return FeedResponse(
            user_id=data.user_id,
            items=[feed_item(p, data.explain) for p in result.items],
            next_cursor=query.cursor if len(result.items) == data.limit else None,
            took_ms=round((time.perf_counter() - start) * 1000, 3),
            stages=[stage_out(r) for r in result.stages] if data.explain else None,
            ranker=ranker_out(result.stages, feeds.ranker) if data.explain else None,
        )


def feed_item(post: RankedPost, explain: bool = False) -> FeedItem:
    """A ranked post as the API returns it (with `explain`, the learned ranker's per-feature
    contributions when it scored the post)."""
    return FeedItem(
        post_id=post.post_id,
        author_id=post.author_id,
        score=round(post.score, 6),
        source=post.source,
        score_parts={**post.parts, **post.factors},
        contributions={k: round(v, 6) for k, v in post.contributions.items()} if explain else None,
    )


def ranker_out(stages: list[StageReport], slot: RankerSlot) -> RankerOut:
    """Which ranker ordered the page: the learned model (the version serving now), the hand-set
    formula, or an earlier ranking (a later page of a session, or a kept ranking)."""
    status = next((r.status for r in stages if r.name == LearnedRanker.name), "skipped")
    if status == "ok" and slot.model is not None:
        return RankerOut("learned", slot.model.version)
    return RankerOut("earlier" if status in ("ranked_before", "cached") else "formula", None)


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
