"""The operator page's summary of what `/metrics` says: requests per route, pipeline stages,
caches and backlogs, summed over every API process."""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterable

import msgspec
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.samples import Sample

from feed.metrics import MULTIPROC_ENV


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
