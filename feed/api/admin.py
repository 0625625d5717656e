"""The operator page: `GET /admin`, behind the API key like every endpoint but health and
metrics (a browser sends the key as the password of HTTP Basic authentication).

One HTML file (`static/admin.html`: no build step, no outside assets) that reads two JSON
endpoints: `GET /admin/overview`, the API's metrics summed up (requests, pipeline stages,
caches, backlogs) and the learned ranker (serving model, newest trainings, retrain schedule),
polled every few seconds, and `GET /admin/feed`, a user's feed ranked afresh with each item's
source, score parts, the learned ranker's feature contributions and every stage's timing. A
preview records nothing: no impressions, no session, no ranking kept in the ranking cache.
"""

from __future__ import annotations

import asyncio
import os
import time
from importlib.resources import files
from typing import Annotated

import msgspec
from litestar import Controller, MediaType, get
from litestar.di import Provide
from litestar.params import Parameter

from feed.api.feed import feed_item, feed_service, ranker_out, stage_out
from feed.api.metrics_summary import summarize_metrics
from feed.api.schemas import (
    FeedPreview,
    ImportanceOut,
    Overview,
    PreviewItem,
    RankerOverview,
    ScheduleOut,
    ServingRanker,
    TrainingOut,
)
from feed.config import MAX_PAGE
from feed.services import Services, ServicesDep
from feed.stores.batch_state import batch_status
from feed.usecases import FeedService

PAGE = files("feed.api").joinpath("static/admin.html").read_text(encoding="utf-8")
TRAININGS_SHOWN = 5  # newest training reports on the page
IMPORTANCE_SHOWN = 12  # features of the newest model's importance


class _Importance(msgspec.Struct):
    """The part of a stored training report (`TrainingReport`) the importance bars need."""

    version: int
    deployed: bool
    importance: dict[str, float]


class AdminController(Controller):
    """The operator page and what it reads."""

    path = "/admin"
    tags = ["admin"]
    dependencies = {"feeds": Provide(feed_service, sync_to_thread=False)}

    @get("/", media_type=MediaType.HTML)
    async def page(self) -> str:
        """The operator page (HTML)."""
        return PAGE

    @get("/overview")
    async def overview(self, services: ServicesDep) -> Overview:
        """This API's metrics summed up, and the answering process's catalogue size."""
        return Overview(
            replica=services.replica,
            pid=os.getpid(),
            posts=len(services.catalog),
            metrics=summarize_metrics(),
            ranker=await ranker_overview(services),
        )

    @get("/feed")
    async def preview(
        self,
        services: ServicesDep,
        feeds: FeedService,
        user_id: Annotated[str, Parameter(min_length=1, max_length=64, description="the host's user id")],
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = 20,
    ) -> FeedPreview:
        """The user's feed ranked afresh, with every stage's report; records nothing."""
        start = time.perf_counter()
        result = await feeds.preview(user_id, limit)
        records = await services.features.posts([p.post_key for p in result.items])
        items = []
        for post in result.items:
            item, record = feed_item(post, explain=True), records.get(post.post_key)
            items.append(
                PreviewItem(
                    post_id=item.post_id,
                    author_id=item.author_id,
                    score=item.score,
                    source=item.source,
                    score_parts=item.score_parts,
                    post_type=record.post_type if record else None,
                    text=record.text if record else None,
                    tags=record.tags if record else {},
                    contributions=item.contributions or {},  # always a dict with `explain`
                )
            )
        return FeedPreview(
            user_id=user_id,
            items=items,
            stages=[stage_out(r) for r in result.stages],
            took_ms=round((time.perf_counter() - start) * 1000, 3),
            ranker=ranker_out(result.stages, feeds.ranker),
        )


async def ranker_overview(services: Services) -> RankerOverview:
    """The learned ranker as the operator page shows it: this process's model, the deployed
    version, the newest training reports and the retrain bookkeeping (three Redis reads)."""
    model = services.ranker.model
    deployed, reports, status = await asyncio.gather(
        services.rankers.version(), services.rankers.reports(TRAININGS_SHOWN), batch_status(services.redis)
    )
    fitted = (
        report
        for report in (msgspec.json.decode(raw, type=_Importance) for raw in reports)
        if report.importance
    )
    newest = next(fitted, None)
    snapshot = status.snapshot
    return RankerOverview(
        serving=(
            ServingRanker("learned", model.version, model.trained_at)
            if model is not None
            else ServingRanker("formula", None, None)
        ),
        deployed_version=deployed,
        trainings=[msgspec.json.decode(raw, type=TrainingOut) for raw in reports],
        importance=(
            ImportanceOut(
                newest.version,
                newest.deployed,
                dict(list(newest.importance.items())[:IMPORTANCE_SHOWN]),
            )
            if newest is not None
            else None
        ),
        schedule=ScheduleOut(
            applied=snapshot.applied,
            new_events=snapshot.new_events,
            last_started_at=snapshot.started_at,
            last_finished_at=status.finished_at,
            last_outcome=status.outcome,
            last_error=status.error,
            last_trained_at=snapshot.trained_at,
            running=status.running,
        ),
    )
