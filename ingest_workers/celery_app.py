"""The Celery application and its settings (Redis is the broker)."""

from __future__ import annotations

import sys

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


app = create_celery_app()


def main() -> None:
    """Run an ingest worker (`feed-worker`); Celery worker options pass through, e.g. `--concurrency 2`."""
    app.worker_main(["worker", "--pool", "solo", "--loglevel", "INFO", *sys.argv[1:]])
