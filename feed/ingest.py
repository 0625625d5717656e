"""The ingest contract between the API and the ingest workers: the queue and task names, the job
message, and the Celery application's configuration. The API sends tasks with it without
importing the worker package (`ingest_workers/` implements the tasks and imports this).
"""

from __future__ import annotations

from typing import Any

import msgspec
from celery import Celery

from feed.config import get_settings

INGEST_QUEUE = "feed.ingest"
# retrain checks have a queue of their own, so a backlog of posts to ingest does not delay them
BATCH_QUEUE = "feed.batch"
INGEST_TASK = "ingest_workers.ingest_post"
RETRAIN_CHECK_TASK = "ingest_workers.check_retrain"


def create_celery_app() -> Celery:
    """Celery app configured from `Settings`: late acks, redelivery of tasks lost with a worker."""
    settings = get_settings()
    app = Celery("feed_ingest", broker=settings.redis_url, include=["ingest_workers.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_default_queue=INGEST_QUEUE,
        task_queues={INGEST_QUEUE: {}, BATCH_QUEUE: {}},  # a worker consumes both
        task_routes={RETRAIN_CHECK_TASK: {"queue": BATCH_QUEUE}},
        worker_prefetch_multiplier=max(settings.ingest_batch_size, 1),
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.ingest_visibility_timeout_s,
            "unacked_restore_interval": 10,  # look for tasks of dead workers every 10 s
            "unacked_restore_throttle": 1,
            "global_keyprefix": "feed:celery:",
        },
    )
    if settings.retrain_check_every_s > 0:  # runs where a worker is started with --beat (one per deployment)
        app.conf.beat_schedule = {
            "check-retrain": {
                "task": RETRAIN_CHECK_TASK,
                "schedule": settings.retrain_check_every_s,
                "options": {"expires": settings.retrain_check_every_s},  # checks do not pile up unread
            },
        }
    return app


class IngestJob(msgspec.Struct, frozen=True):
    """An accepted post, with canonical keys already computed by the API."""

    key: str
    post_id: int | str
    author_id: int | str
    author_key: str
    created_at: float
    post_type: str
    text: str
    media_urls: tuple[str, ...] = ()
    accepted_at: float = 0.0  # when the API accepted it (0: not known), for the ingest latency

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the Celery message."""
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> IngestJob:
        """Inverse of `to_dict`; raises `msgspec.ValidationError` on a malformed message."""
        return msgspec.convert(payload, cls)
