"""Prometheus metrics of the API process, served at `GET /metrics` (prometheus-client).

HTTP request latency per route comes from Litestar's Prometheus middleware (`feed_http_*`).
This module adds the pipeline's stage timings and candidate counts, the caches' lookups,
and backlogs read from Redis every few seconds: the event consumer's unread and pending
events, this process's vector-index operations still to apply, the ingest queue, and the
count of applied events.

With several API processes (`API_WORKERS` > 1) `feed-api` points `PROMETHEUS_MULTIPROC_DIR`
at a fresh folder before starting them, and every scrape sums all processes' metrics.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from litestar.plugins.prometheus import PrometheusConfig
from prometheus_client import Counter, Gauge, Histogram
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from feed.logging import log_failure
from feed.pipeline.framework import StageReport
from feed.stores import keys

log = structlog.get_logger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

STAGE_SECONDS = Histogram(
    "feed_pipeline_stage_seconds",
    "Time of one pipeline component for one feed request (components that ran)",
    ["stage", "component"],
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
STAGE_CANDIDATES = Histogram(
    "feed_pipeline_stage_candidates",
    "Candidates a component left (sources: found) for one feed request",
    ["stage", "component"],
    buckets=(0, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 25000),
)
STAGE_RUNS = Counter(
    "feed_pipeline_stage_runs_total",
    "Pipeline component runs by outcome (ok, failed, timeout, skipped, disabled, cached, ranked_before)",
    ["stage", "component", "status"],
)
CACHE_LOOKUPS = Counter(
    "feed_cache_lookups_total",
    "Cache lookups by cache (retrieval, ranking) and result (hit, shared_hit, miss)",
    ["cache", "result"],
)
BACKLOG = Gauge(
    "feed_backlog",
    "Work waiting, read from Redis: events_unread, events_pending, index_ops (this process's "
    "shard), ingest_queue (Celery tasks)",
    ["queue"],
    multiprocess_mode="mostrecent",
)
EVENTS_APPLIED = Gauge(
    "feed_events_applied",
    "Interaction events applied by the event consumers since the store was created",
    multiprocess_mode="mostrecent",
)


def prometheus_config() -> PrometheusConfig:
    """Litestar's request metrics (`feed_http_requests_total`, `feed_http_request_duration_seconds`,
    per method, route template and status); /metrics itself is not counted."""
    return PrometheusConfig(app_name="feed", prefix="feed_http", group_path=True, exclude=["/metrics"])


def prepare_multiprocess(folder: Path) -> None:
    """Point this process and the API processes it starts at an empty metrics folder."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(folder)


def observe_stages(stages: Sequence[StageReport]) -> None:
    """Record one request's stage reports."""
    for s in stages:
        STAGE_RUNS.labels(s.stage, s.name, s.status).inc()
        if s.status in ("ok", "failed", "timeout"):
            STAGE_SECONDS.labels(s.stage, s.name).observe(s.ms / 1000.0)
            STAGE_CANDIDATES.labels(s.stage, s.name).observe(s.count_out)


async def _group_backlog(redis: Redis, stream: str, group: str) -> tuple[int, int]:
    """(entries not yet delivered to `group`, entries delivered but not acknowledged)."""
    try:
        groups: list[dict[str, Any]] = await redis.xinfo_groups(stream)
    except ResponseError:  # the stream does not exist yet
        return 0, 0
    for g in groups:
        if g["name"] in (group, group.encode()):
            return int(g.get("lag") or 0), int(g["pending"])
    return int(await redis.xlen(stream)), 0


async def refresh_backlogs(
    redis: Redis, events_stream: str, events_group: str, index_group: str, queue: str
) -> None:
    """Read the backlogs and the applied-events count from Redis into their gauges."""
    unread, pending = await _group_backlog(redis, events_stream, events_group)
    index_unread, index_pending = await _group_backlog(redis, keys.INDEX_STREAM, index_group)
    BACKLOG.labels("events_unread").set(unread)
    BACKLOG.labels("events_pending").set(pending)
    BACKLOG.labels("index_ops").set(index_unread + index_pending)
    BACKLOG.labels("ingest_queue").set(await redis.llen(queue))
    EVENTS_APPLIED.set(int(await redis.get(keys.APPLIED_EVENTS) or 0))


async def refresh_backlogs_forever(
    redis: Redis, events_stream: str, events_group: str, index_group: str, queue: str, every_s: float = 5.0
) -> None:
    """`refresh_backlogs` every `every_s` until cancelled; a failure is logged and retried."""
    while True:
        try:
            await refresh_backlogs(redis, events_stream, events_group, index_group, queue)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_failure(log, "metrics_refresh_failed", exc)
        await asyncio.sleep(every_s)
