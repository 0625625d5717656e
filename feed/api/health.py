"""GET /health (liveness) and GET /ready (readiness: the stores and the broker answer)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable

from litestar import Response, get

from feed.api.schemas import Health, Readiness
from feed.services import ServicesDep

READY_TIMEOUT_S = 2.0


@get("/health", tags=["health"])
async def health(services: ServicesDep) -> Health:
    """Liveness: the API process is up (and serving with its services open)."""
    return Health(status="ok", replica=services.replica, pid=os.getpid())


async def _check(probe: Awaitable[object]) -> str:
    try:
        answer = await asyncio.wait_for(probe, READY_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {READY_TIMEOUT_S}s"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok" if answer is not False else "not reachable"


@get("/ready", tags=["health"])
async def ready(services: ServicesDep) -> Response[Readiness]:
    """Readiness: 200 when Redis, the vector index and the event broker all answer, else 503
    naming what failed (each probe waits at most 2 s)."""
    names = ("redis", "vector_index", "broker")
    results = await asyncio.gather(
        _check(services.redis.ping()),
        _check(services.index.count()),
        _check(services.broker.ping(READY_TIMEOUT_S)),
    )
    checks = dict(zip(names, results, strict=True))
    ok = all(v == "ok" for v in checks.values())
    return Response(Readiness(ready=ok, checks=checks), status_code=200 if ok else 503)
