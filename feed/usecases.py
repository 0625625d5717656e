"""What the HTTP controllers do, apart from HTTP: taking in posts and interactions, and serving
feeds. Each controller is given its own service (`services.py` builds them), so a handler only
validates, calls one method and shapes the answer.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import structlog
from celery import Celery

from feed.events.broker import EventPublisher
from feed.events.schemas import InteractionEvent
from feed.ids import HostId, id_key
from feed.ingest import INGEST_QUEUE, INGEST_TASK, IngestJob
from feed.pipeline.components import FeedQuery
from feed.pipeline.paging import PagedFeed
from feed.pipeline.runner import FeedResult
from feed.ranking.model import RankerSlot
from feed.stores.post_store import PostState, PostStore
from feed.stores.write_limits import WriteLimits

log = structlog.get_logger(__name__)


class Unavailable(Exception):
    """A write the engine cannot take now (its queue or broker is away): to be retried."""


class PostIntake:
    """Posts from the host: queued for ingest, looked up, deleted."""

    def __init__(self, posts: PostStore, celery: Celery, limits: WriteLimits) -> None:
        self._posts = posts
        self._celery = celery
        self._limits = limits

    async def accept(self, api_key: str, job: IngestJob) -> str:
        """Queue `job` for the ingest workers and return its task id. The post's state says
        `queued` before the task exists, and the mark is taken back when the queue cannot take
        the task (`Unavailable`): a post is never left queued without a task."""
        await self._limits.check(api_key, ("author_id", job.author_key))
        task_id = uuid.uuid4().hex
        await self._posts.mark_queued(job.key, task_id)
        try:
            await asyncio.to_thread(
                self._celery.send_task, INGEST_TASK, args=[job.to_dict()], task_id=task_id, queue=INGEST_QUEUE
            )
        except Exception as exc:
            await self._posts.forget(job.key, task_id)
            raise Unavailable("ingest queue unavailable, retry later") from exc
        return task_id

    async def state(self, post_id: str) -> PostState | None:
        """The post's ingest state; None for a post the engine never accepted."""
        return await self._posts.state(post_id)

    async def delete(self, api_key: str, post_id: str) -> bool:
        """Remove the post everywhere; False for a post the engine never had."""
        await self._limits.check(api_key)
        return await self._posts.delete(post_id)


class InteractionIntake:
    """User interactions, handed to the event broker."""

    def __init__(self, publisher: EventPublisher, limits: WriteLimits) -> None:
        self._publisher = publisher
        self._limits = limits

    async def accept(self, api_key: str, event: InteractionEvent) -> None:
        """Returns once the broker has stored the event; `Unavailable` if it could not."""
        await self._limits.check(api_key, ("user_id", event.user_key))
        try:
            await self._publisher.publish(event)
        except Exception as exc:
            log.warning("event_publish_failed", error=repr(exc))
            raise Unavailable("event broker unavailable, retry later") from exc


class FeedService:
    """Users' feeds, and the operator's previews of them."""

    def __init__(self, home_feed: PagedFeed, ranker: RankerSlot) -> None:
        self._home_feed = home_feed
        self.ranker = ranker  # the model serving now, for what an explained page says ranked it

    @staticmethod
    def query(
        user_id: HostId, limit: int, cursor: str | None = None, explain: bool = False, preview: bool = False
    ) -> FeedQuery:
        """The query for one request: a new session's cursor when none is given."""
        return FeedQuery(
            user_id=user_id,
            user_key=id_key(user_id),
            limit=limit,
            cursor=cursor or uuid.uuid4().hex,
            now=time.time(),
            preview=preview,
            explain=explain,
        )

    async def page(self, query: FeedQuery, continuing: bool) -> FeedResult:
        """The next page of the session `query.cursor` (a new one unless `continuing`)."""
        return await self._home_feed.page(query, continuing)

    async def preview(self, user_id: HostId, limit: int) -> FeedResult:
        """The user's first page ranked afresh, explained; nothing is recorded."""
        return await self._home_feed.preview(self.query(user_id, limit, explain=True, preview=True))
