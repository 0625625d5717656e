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
import math
import os
import shutil
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import structlog
from litestar.plugins.prometheus import PrometheusConfig
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.samples import Sample
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
    per method, route template and status); /metrics and the operator page are not counted."""
    return PrometheusConfig(
        app_name="feed", prefix="feed_http", group_path=True, exclude=["^/metrics", "^/admin"]
    )


def prepare_multiprocess(folder: Path) -> None:
    """Point this process and the API processes it starts at an empty metrics folder."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(folder)


TIMED = frozenset({"ok", "failed", "timeout"})  # outcomes whose time and candidates are observed
# the labelled children per (stage, component, outcome): `labels()` per observation was more than
# half of the 0.13-0.15 ms a feed request spent recording its 40-odd reports (now 0.06 ms)
_stage_children: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}


def observe_stages(stages: Sequence[StageReport]) -> None:
    """Record one request's stage reports."""
    for s in stages:
        key = (s.stage, s.name, s.status)
        children = _stage_children.get(key)
        if children is None:
            children = _stage_children[key] = (
                STAGE_RUNS.labels(*key),
                STAGE_SECONDS.labels(s.stage, s.name),
                STAGE_CANDIDATES.labels(s.stage, s.name),
            )
        runs, seconds, candidates = children
        runs.inc()
        if s.status in TIMED:
            seconds.observe(s.ms / 1000.0)
            candidates.observe(s.count_out)


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


class RouteSummary(msgspec.Struct):
    """Requests to one route since the API started (all its processes)."""

    route: str  # method and path template, e.g. "POST /feed"
    requests: int
    client_errors: int  # 4xx
    server_errors: int  # 5xx
    mean_ms: float
    p99_ms: float | None  # upper bound of the latency bucket holding the 99th percentile


class StageSummary(msgspec.Struct):
    """One pipeline component over the feed requests since the API started."""

    stage: str
    component: str
    runs: dict[str, int]  # by outcome: ok, failed, timeout, skipped, disabled, cached, ...
    mean_ms: float | None  # over the runs that ran (ok, failed, timeout); None: none did
    p99_ms: float | None
    mean_candidates: float | None


class CacheSummary(msgspec.Struct):
    """Lookups of one cache."""

    cache: str
    hits: int
    misses: int
    hit_rate: float | None


class MetricsSummary(msgspec.Struct):
    """What `/metrics` says, summed up for people (the operator page)."""

    routes: list[RouteSummary]
    stages: list[StageSummary]
    caches: list[CacheSummary]
    backlog: dict[str, int]
    events_applied: int


def _samples() -> list[Sample]:
    """Every sample `/metrics` would serve (all API processes' in multiprocess mode)."""
    registry = REGISTRY
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return [sample for family in registry.collect() for sample in family.samples]


def _totals(samples: Iterable[Sample], *labels: str) -> dict[tuple[str, ...], float]:
    """Sample values summed by the values of `labels`."""
    totals: dict[tuple[str, ...], float] = defaultdict(float)
    for sample in samples:
        totals[tuple(sample.labels.get(label, "") for label in labels)] += sample.value
    return totals


def _quantile_bound(buckets: dict[float, float], q: float) -> float | None:
    """Upper bound (seconds) of the first bucket holding quantile `q` of the cumulative
    `buckets` (upper bound -> count); None when empty or beyond the largest finite bound."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return None
    bound = next(b for b in bounds if buckets[b] >= q * total)
    return None if math.isinf(bound) else bound


def summarize_metrics() -> MetricsSummary:
    """Summarise the request, stage, cache and backlog metrics of this API."""
    by_name: dict[str, list[Sample]] = defaultdict(list)
    for sample in _samples():
        by_name[sample.name].append(sample)

    def buckets_by(name: str, *labels: str) -> dict[tuple[str, ...], dict[float, float]]:
        grouped: dict[tuple[str, ...], dict[float, float]] = defaultdict(dict)
        for (*key, le), value in _totals(by_name[f"{name}_bucket"], *labels, "le").items():
            grouped[tuple(key)][float(le)] = value
        return grouped

    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else round(1000 * seconds, 3)

    http = "feed_http_request_duration_seconds"
    statuses = _totals(by_name["feed_http_requests_total"], "method", "path", "status_code")
    http_sum, http_count = (_totals(by_name[f"{http}{x}"], "method", "path") for x in ("_sum", "_count"))
    http_buckets = buckets_by(http, "method", "path")
    routes = []
    for (method, path), count in sorted(http_count.items(), key=lambda kv: kv[0][1]):
        codes = {code: n for (m, p, code), n in statuses.items() if (m, p) == (method, path)}
        routes.append(
            RouteSummary(
                route=f"{method} {path}",
                requests=int(count),
                client_errors=int(sum(n for code, n in codes.items() if code.startswith("4"))),
                server_errors=int(sum(n for code, n in codes.items() if code.startswith("5"))),
                mean_ms=round(1000 * http_sum[(method, path)] / count, 3) if count else 0.0,
                p99_ms=ms(_quantile_bound(http_buckets[(method, path)], 0.99)),
            )
        )

    runs = _totals(by_name["feed_pipeline_stage_runs_total"], "stage", "component", "status")
    seconds = "feed_pipeline_stage_seconds"
    stage_sum, stage_count = (
        _totals(by_name[f"{seconds}{x}"], "stage", "component") for x in ("_sum", "_count")
    )
    stage_buckets = buckets_by(seconds, "stage", "component")
    found_sum = _totals(by_name["feed_pipeline_stage_candidates_sum"], "stage", "component")
    components = list(dict.fromkeys((stage, component) for stage, component, _ in runs))
    stages = []
    for stage, component in components:
        n = stage_count.get((stage, component), 0.0)
        stages.append(
            StageSummary(
                stage=stage,
                component=component,
                runs={status: int(v) for (s, c, status), v in runs.items() if (s, c) == (stage, component)},
                mean_ms=round(1000 * stage_sum[(stage, component)] / n, 3) if n else None,
                p99_ms=ms(_quantile_bound(stage_buckets[(stage, component)], 0.99)),
                mean_candidates=round(found_sum[(stage, component)] / n, 1) if n else None,
            )
        )

    lookups = _totals(by_name["feed_cache_lookups_total"], "cache", "result")
    caches = []
    for cache in sorted({cache for cache, _ in lookups}):
        hits = int(sum(v for (c, result), v in lookups.items() if c == cache and result != "miss"))
        misses = int(lookups.get((cache, "miss"), 0.0))
        caches.append(
            CacheSummary(cache, hits, misses, round(hits / (hits + misses), 4) if hits + misses else None)
        )

    backlog = {queue: int(v) for (queue,), v in _totals(by_name["feed_backlog"], "queue").items()}
    applied = int(sum(s.value for s in by_name["feed_events_applied"]))
    return MetricsSummary(routes, stages, caches, backlog, applied)
