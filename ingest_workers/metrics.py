"""Prometheus metrics of an ingest worker (prometheus-client), served on
`WORKER_METRICS_PORT` when it is set: posts finished by outcome, each batch's time by phase,
and each post's latency from the API accepting it to its commit (the queue wait included).
The queue's depth is on the API's `/metrics` (`feed_backlog{queue="ingest_queue"}`).
"""

from __future__ import annotations

import structlog
from prometheus_client import Counter, Histogram, start_http_server

log = structlog.get_logger(__name__)

POSTS = Counter(
    "feed_ingest_posts_total",
    "Posts an ingest worker finished, by type and outcome (ingested, retry, failed, deleted)",
    ["post_type", "outcome"],
)
BATCH_SECONDS = Histogram(
    "feed_ingest_batch_seconds",
    "Time of one ingest batch by phase (analyze: fetch, decode and models; commit: Redis writes)",
    ["phase"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
LATENCY = Histogram(
    "feed_ingest_latency_seconds",
    "From the API accepting a post to its commit by a worker (queue wait and retries included)",
    ["post_type"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0),
)


def serve_metrics(port: int) -> None:
    """Serve this process's metrics on `port` (all interfaces) in a background thread; a port
    already taken (two workers on one host with the same setting) is logged, not fatal."""
    try:
        start_http_server(port)
    except OSError as exc:
        log.error("worker_metrics_not_served", port=port, error=repr(exc))
        return
    log.info("worker_metrics_served", port=port)
