"""The Celery application and its settings (Redis is the broker)."""

from __future__ import annotations

import sys

from celery import Celery

from feed.config import get_settings

INGEST_QUEUE = "feed.ingest"
INGEST_TASK = "ingest_workers.ingest_post"
RETRAIN_TASK = "ingest_workers.retrain_cf"


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
    if settings.cf_retrain_every_s > 0:  # runs where a worker is started with --beat (one per deployment)
        app.conf.beat_schedule = {
            "retrain-cf": {"task": RETRAIN_TASK, "schedule": settings.cf_retrain_every_s},
        }
    return app


app = create_celery_app()


def main() -> None:
    """Run an ingest worker (`feed-worker`); Celery worker options pass through, e.g. `--concurrency 2`."""
    app.worker_main(["worker", "--pool", "solo", "--loglevel", "INFO", *sys.argv[1:]])
