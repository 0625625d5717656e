"""Ingest tasks: understand accepted posts in batches and commit them to the stores.

`ingest_post` is a celery-batches task: the worker buffers requests and runs
`ingest_batch` on up to INGEST_BATCH_SIZE posts at once (or what arrived within
INGEST_FLUSH_INTERVAL_S), so every model sees one batch instead of many single
inputs. Messages are acknowledged after the batch returns (late acks), so a worker
killed mid-batch gets them redelivered; committing the same post twice is harmless.

Per post: refused media or missing model weights mark the post failed with the
reason; a transient failure (media host down, slow) retries that post with backoff
and marks it failed after INGEST_MAX_RETRIES. An unexpected error retries the batch's
posts one by one the same way.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import structlog
from celery.signals import worker_ready
from celery_batches import Batches, SimpleRequest

from feed.batch import schedule
from feed.config import get_settings
from feed.ingest import INGEST_TASK, RETRAIN_CHECK_TASK, IngestJob
from feed.stores.connection import SyncRedis, connect_sync
from feed.stores.post_store import commit_ingested, mark_failed
from feed.stores.records import PostRecord
from ingest_workers import metrics
from ingest_workers.analyze import Failed, PostAnalyzer, Understood
from ingest_workers.celery_app import app
from ingest_workers.fetch import FetchPolicy, MediaFetcher
from models.files import ModelUnavailable
from models.registry import load_model_set

log = structlog.get_logger(__name__)


@lru_cache(maxsize=1)
def analyzer() -> PostAnalyzer:
    """The process's analyzer: its models load on first use."""
    settings = get_settings()
    return PostAnalyzer(load_model_set(settings), MediaFetcher(FetchPolicy.from_settings(settings)), settings)


@worker_ready.connect
def warm_up(**_: Any) -> None:
    """Load the models when the worker starts, so the first posts don't wait for them.

    A model that cannot load is logged, not fatal: posts that need it are marked failed
    with the same reason (text posts only need the text encoder).
    """
    port = get_settings().worker_metrics_port
    if port:
        metrics.serve_metrics(port)
    models = analyzer().models
    try:
        models.text.encode_texts(["warm up"])
    except ModelUnavailable as exc:
        log.error("text_encoder_unavailable", error=str(exc))
    for name, model in (("clip", models.clip), ("detector", models.detector), ("speech", models.speech)):
        try:
            model.load()
        except ModelUnavailable as exc:
            log.warning("media_model_unavailable", model=name, error=str(exc))


@lru_cache(maxsize=1)
def redis_client() -> SyncRedis:
    """The process's Redis client."""
    return connect_sync(get_settings().redis_url)


def build_record(job: IngestJob, understood: Understood) -> PostRecord:
    """The stored form of an understood post."""
    return PostRecord(
        key=job.key,
        post_id=job.post_id,
        author_id=job.author_id,
        author_key=job.author_key,
        created_at=job.created_at,
        post_type=job.post_type,
        text=job.text[: get_settings().text_snippet_chars],
        vectors=understood.vectors,
        tags=understood.tags,
        transcript=understood.transcript,
        language=understood.language,
    )


def ingest_batch(jobs: list[IngestJob], attempts: list[int]) -> None:
    """Ingest a batch; each post is committed, retried with backoff, or marked failed with the reason."""
    r = redis_client()
    started = time.perf_counter()
    try:
        results = analyzer().analyze(jobs)
    except Exception as exc:  # unexpected: retry each post on its own
        log.warning("ingest_retry", posts=len(jobs), error=repr(exc))
        results = [Failed(repr(exc), transient=True)] * len(jobs)
    analyzed = time.perf_counter()
    settings = get_settings()
    committed = 0
    for job, attempt, result in zip(jobs, attempts, results, strict=True):
        outcome = "failed"
        if isinstance(result, Understood):
            outcome = "ingested" if commit_ingested(r, build_record(job, result)) else "deleted"
            if outcome == "ingested":
                committed += 1
                if job.accepted_at:
                    metrics.LATENCY.labels(job.post_type).observe(max(time.time() - job.accepted_at, 0.0))
            else:
                log.info("ingest_skipped_deleted", post=job.key)
        elif result.transient and attempt < settings.ingest_max_retries:
            outcome = "retry"
            ingest_post.apply_async(
                args=[job.to_dict()], kwargs={"attempt": attempt + 1}, countdown=2**attempt
            )
        else:
            reason = (
                result.reason
                if not result.transient
                else f"gave up after {attempt + 1} attempts: {result.reason}"
            )
            mark_failed(r, job.key, reason)
            log.error("ingest_failed", post=job.key, error=reason)
        metrics.POSTS.labels(job.post_type, outcome).inc()
    finished = time.perf_counter()
    metrics.BATCH_SECONDS.labels("analyze").observe(analyzed - started)
    metrics.BATCH_SECONDS.labels("commit").observe(finished - analyzed)
    log.info(
        "ingested",
        posts=committed,
        batch=len(jobs),
        analyze_ms=round(1000 * (analyzed - started), 1),
        commit_ms=round(1000 * (finished - analyzed), 1),
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


@app.task(name=RETRAIN_CHECK_TASK)
def check_retrain() -> str:
    """Beat's check (every RETRAIN_CHECK_EVERY_S): start a retrain in a child process when one is
    due; returns the decision's reason. A few Redis reads, so this worker's ingestion goes on."""
    return schedule.check(redis_client(), get_settings(), schedule.launch_retrain).reason
