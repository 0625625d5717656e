"""The ingest workers' Celery application (`feed-worker`), configured by the ingest contract
(`feed/ingest.py`); the tasks are in `tasks.py`."""

from __future__ import annotations

import sys

from feed.ingest import create_celery_app

app = create_celery_app()


def main() -> None:
    """Run an ingest worker (`feed-worker`); Celery worker options pass through, e.g. `--concurrency 2`."""
    app.worker_main(["worker", "--pool", "solo", "--loglevel", "INFO", *sys.argv[1:]])
