"""Ingest tasks: embed accepted posts in batches and commit them to the stores.

`ingest_post` is a celery-batches task: the worker buffers requests and runs
`ingest_batch` on up to INGEST_BATCH_SIZE posts at once, so the text encoder sees
one batch instead of many single texts. Messages are acknowledged after the
batch returns (late acks), so a worker killed mid-batch gets them redelivered;
committing the same post twice is harmless.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import redis
import structlog
from celery.signals import worker_ready
from celery_batches import Batches, SimpleRequest

from feed.config import get_settings
from feed.stores.post_store import TimelineLimits, commit_ingested, mark_failed
from feed.stores.records import PostRecord
from ingest_workers.celery_app import INGEST_TASK, app
from ingest_workers.jobs import IngestJob
from models.text import TextEncoder

log = structlog.get_logger(__name__)


class PermanentIngestError(Exception):
    """An error that retrying cannot fix (bad content, missing model weights)."""


@lru_cache(maxsize=1)
def text_encoder() -> TextEncoder:
    """The process's text encoder (loaded on first use)."""
    return TextEncoder(get_settings().text_model_path)


@worker_ready.connect
def warm_up(**_: Any) -> None:
    """Load the encoder when the worker starts, so the first posts don't wait for it."""
    try:
        text_encoder().encode_texts(["warm up"])
    except FileNotFoundError as exc:  # posts will be marked failed with this reason
        log.error("text_encoder_unavailable", error=str(exc))


@lru_cache(maxsize=1)
def redis_client() -> redis.Redis:
    """The process's Redis client."""
    return redis.Redis.from_url(get_settings().redis_url)


def build_records(jobs: list[IngestJob], encoder: TextEncoder) -> list[PostRecord]:
    """Embed the jobs' texts in one batch and build their records."""
    snippet = get_settings().text_snippet_chars
    try:
        vectors = encoder.encode_texts([job.text for job in jobs])
    except FileNotFoundError as exc:
        raise PermanentIngestError(str(exc)) from exc
    return [
        PostRecord(
            key=job.key,
            post_id=job.post_id,
            author_id=job.author_id,
            author_key=job.author_key,
            created_at=job.created_at,
            post_type=job.post_type,
            text=job.text[:snippet],
            vectors={"text": vector},
        )
        for job, vector in zip(jobs, vectors, strict=True)
    ]


def ingest_batch(jobs: list[IngestJob], attempts: list[int]) -> None:
    """Ingest a batch; on failure, retry each post with backoff or mark it failed with the reason."""
    settings = get_settings()
    r = redis_client()
    limits = TimelineLimits(settings.timeline_max_len, settings.timeline_max_age_s, settings.recent_posts_max)
    try:
        records = build_records(jobs, text_encoder())
        for record in records:
            if not commit_ingested(r, record, limits):
                log.info("ingest_skipped_deleted", post=record.key)
        log.info("ingested", posts=len(records))
    except PermanentIngestError as exc:
        for job in jobs:
            mark_failed(r, job.key, str(exc))
        log.error("ingest_failed", posts=len(jobs), error=str(exc))
    except Exception as exc:  # transient: retry each post on its own
        log.warning("ingest_retry", posts=len(jobs), error=repr(exc))
        for job, attempt in zip(jobs, attempts, strict=True):
            if attempt >= settings.ingest_max_retries:
                mark_failed(r, job.key, f"gave up after {attempt + 1} attempts: {exc!r}")
            else:
                ingest_post.apply_async(
                    args=[job.to_dict()], kwargs={"attempt": attempt + 1}, countdown=2**attempt
                )


@app.task(
    base=Batches,
    name=INGEST_TASK,
    flush_every=get_settings().ingest_batch_size,
    flush_interval=get_settings().ingest_flush_interval_s,
    acks_late=True,
)
def ingest_post(requests: list[SimpleRequest]) -> None:
    """Celery entry: each request carries one `IngestJob` dict (and an `attempt` count)."""
    jobs: list[IngestJob] = []
    attempts: list[int] = []
    for request in requests:
        payload: dict[str, Any] = request.args[0]
        jobs.append(IngestJob.from_dict(payload))
        attempts.append(int(request.kwargs.get("attempt", 0)))
    ingest_batch(jobs, attempts)
