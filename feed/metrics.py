"""Prometheus metrics of the API process, served at `GET /metrics` (prometheus-client).

HTTP request latency per route comes from Litestar's Prometheus middleware (`feed_http_*`).
This module defines the pipeline's stage timings and candidate counts (recorded by
`feed/pipeline/stage_metrics.py`), the caches' lookups, and backlogs read from Redis every
few seconds (`feed/stores/backlog.py`): the event consumer's unread and pending events,
this process's vector-index operations still to apply, the ingest queue, and the count of
applied events. The operator page's summary of them is `feed/api/metrics_summary.py`.

With several API processes (`API_WORKERS` > 1) `feed-api` points `PROMETHEUS_MULTIPROC_DIR`
at a fresh folder before starting them, and every scrape sums all processes' metrics.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import structlog
from litestar.plugins.prometheus import PrometheusConfig
from prometheus_client import Counter, Gauge, Histogram

from feed.stores.backlog import BacklogCounts, Backlogs

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
    per method, route template and status); /metrics and the operator page are not counted."""
    return PrometheusConfig(
        app_name="feed", prefix="feed_http", group_path=True, exclude=["^/metrics", "^/admin"]
    )


def prepare_multiprocess(folder: Path) -> None:
    """Point this process and the API processes it starts at an empty metrics folder."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(folder)


def set_backlogs(counts: BacklogCounts) -> None:
    """Show `counts` in the backlog gauges."""
    BACKLOG.labels("events_unread").set(counts.events_unread)
    BACKLOG.labels("events_pending").set(counts.events_pending)
    BACKLOG.labels("index_ops").set(counts.index_ops)
    BACKLOG.labels("ingest_queue").set(counts.ingest_queue)
    EVENTS_APPLIED.set(counts.events_applied)


async def refresh_backlogs(backlogs: Backlogs) -> None:
    """Read the backlogs and the applied-events count from Redis into their gauges."""
    set_backlogs(await backlogs.read())
